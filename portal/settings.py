"""Keyward settings: one file, read from the environment, with defaults that need no server.

Every variable is listed in `.env.example`. A variable that is present but malformed stops start-up
with `ImproperlyConfigured` naming it, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


# Environment helpers (healthchecks' envbool/envint/envsecret idea)


def envstr(name: str, default: str) -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {raw!r}")


def envint(name: str, default: int, *, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}")
    return value


def envsecret(name: str, default: str) -> str:
    """A secret from NAME, or from the file named by NAME_FILE (for Docker/Kubernetes secrets)."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE names a file that cannot be read: {exc}") from None
    return os.environ.get(name, default)


def envchoice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name) or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def envdatabase(name: str, default: dict[str, Any]) -> dict[str, Any]:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        config: dict[str, Any] = dict(dj_database_url.parse(raw, conn_max_age=60, conn_health_checks=True))
    except Exception as exc:  # dj-database-url raises several types for bad URLs
        raise ImproperlyConfigured(f"{name} is not a valid database URL: {exc}") from None
    if config.get("ENGINE") not in {"django.db.backends.postgresql", "django.db.backends.sqlite3"}:
        raise ImproperlyConfigured(f"{name} must be a postgres:// or sqlite:// URL")
    if config["ENGINE"].endswith("sqlite3"):
        config["OPTIONS"] = dict(SQLITE_OPTIONS)
    return config


def envbroker(name: str, default: str) -> str:
    value = os.environ.get(name) or default
    parts = urlsplit(value)
    # The message shows the URL without its password: start-up errors end up in logs.
    shown = value.replace(f":{parts.password}@", ":***@") if parts.password else value
    if parts.scheme not in {"filesystem", "redis", "rediss", "memory"}:
        raise ImproperlyConfigured(f"{name} must be a filesystem://, redis:// or rediss:// URL, not {shown!r}")
    try:
        parts.port  # noqa: B018 (urlsplit checks the port only when asked)
    except ValueError:
        raise ImproperlyConfigured(f"{name} has an invalid port: {shown!r}") from None
    return value


# Core

DEBUG = envbool("DEBUG", True)
VAR_DIR = Path(envstr("KEYWARD_VAR_DIR", str(BASE_DIR / "var")))
# The embedded defaults keep their SQLite files, broker queue and signing key here; make sure it exists
# so the first `migrate` on a fresh checkout (or with a new KEYWARD_VAR_DIR) can open its database.
VAR_DIR.mkdir(parents=True, exist_ok=True)

_DEV_SECRET_KEY = "dev-only-insecure-key-change-me-with-SECRET_KEY-in-production-0123456789"
SECRET_KEY = envsecret("SECRET_KEY", _DEV_SECRET_KEY if DEBUG else "")
if not SECRET_KEY:
    raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is false")

ALLOWED_HOSTS = [h.strip() for h in envstr("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in envstr("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

AZURE_BACKEND = envchoice("AZURE_BACKEND", "emulator", ("emulator", "azure"))
AZURE_CLOUD = envchoice("AZURE_CLOUD", "public", ("public", "china", "usgov"))
EMULATOR_ENABLED = AZURE_BACKEND == "emulator"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "axes",
    "csp",
    "encryption",
]
if EMULATOR_ENABLED:
    # Production settings (AZURE_BACKEND=azure) never load the emulator.
    INSTALLED_APPS.append("emulator")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Remembers the request so audit events raised by signals (a role changed in the admin) name who did it.
    "encryption.actors.ActorMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # After the CSP and security headers (its 400 carries them), before any view reads input.
    "encryption.input_guard.RefuseNulMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # A request that could not be written to the audit trail: a 503 saying nothing changed, not a 500.
    "encryption.not_recorded.NotRecordedMiddleware",
    # Last, as django-axes asks, so it sees the outcome of authentication.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "encryption.context_processors.portal",
            ],
        },
    }
]


# Databases
#
# SQLite is shared by the web process and workers: IMMEDIATE transactions take the write lock up front
# (no lock-upgrade deadlocks), WAL lets readers run beside a writer, and the busy timeout makes a
# second writer wait instead of failing with "database is locked".

SQLITE_OPTIONS: dict[str, Any] = {
    "transaction_mode": "IMMEDIATE",
    "timeout": 30,
    "init_command": (
        "PRAGMA busy_timeout=30000; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;"
    ),
}

# Tests put their databases in a folder of their own run (tests/conftest.py sets it), so that
# concurrent test runs on one machine never share a file or a PostgreSQL test database.
TEST_RUN_ID = envstr("KEYWARD_TEST_RUN_ID", "")
TEST_DB_DIR = Path(envstr("KEYWARD_TEST_DB_DIR", str(VAR_DIR / "test")))


def _test_settings(engine: str, label: str) -> dict[str, Any]:
    if engine.endswith("sqlite3"):
        return {"NAME": str(TEST_DB_DIR / f"{label}.sqlite3")}
    return {"NAME": f"test_keyward_{label}{'_' + TEST_RUN_ID if TEST_RUN_ID else ''}"}


def _sqlite(path: Path) -> dict[str, Any]:
    return {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path), "OPTIONS": dict(SQLITE_OPTIONS)}


DATABASES: dict[str, dict[str, Any]] = {
    "default": envdatabase("DATABASE_URL", _sqlite(VAR_DIR / "keyward.sqlite3")),
}
if EMULATOR_ENABLED:
    # The emulated Azure keeps its own tables on its own connection (its own file by default), so what it
    # did stays done whatever the portal's transaction does, and every process on the machine sees it.
    DATABASES["emulator"] = envdatabase("EMULATOR_DATABASE_URL", _sqlite(VAR_DIR / "emulator.sqlite3"))
    DATABASE_ROUTERS = ["emulator.router.EmulatorRouter"]
for _alias, _config in DATABASES.items():
    _config["TEST"] = _test_settings(_config["ENGINE"], _alias)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


# Sign-in and sessions

AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "encryption:account-list"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_AGE = envint("SESSION_COOKIE_AGE", 8 * 3600, minimum=60)
SESSION_EXPIRE_AT_BROWSER_CLOSE = True
SESSION_SAVE_EVERY_REQUEST = False

# Login throttling: a lock-out per username and IP pair, so one attacker cannot lock a colleague out.
AXES_FAILURE_LIMIT = envint("AXES_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = envint("AXES_COOLOFF_MINUTES", 15, minimum=1) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False


# Security: production defaults are the secure ones; DEBUG relaxes only what plain HTTP needs.

SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", not DEBUG)
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"
if envbool("SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# Strict Content-Security-Policy: no inline script or style anywhere; htmx is served from static/.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}


# Static files: WhiteNoise serves them with DEBUG off too, so a production deployment has its CSS and htmx.

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True


# Celery (CELERY_ prefix, read by portal/celery.py)
#
# Operations are idempotent and record their own progress, which is what makes late acknowledgement
# safe: a task whose worker died is delivered again and resumes. One visibility timeout, longer than
# the hard time limit, is used by broker and result transport alike so Redis never re-delivers a task
# that is still legitimately running.

BROKER_DIR = VAR_DIR / "broker"
CELERY_BROKER_URL = envbroker("CELERY_BROKER_URL", "filesystem://")
CELERY_TASK_TIME_LIMIT = envint("CELERY_TASK_TIME_LIMIT", 300, minimum=10)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 30 if CELERY_TASK_TIME_LIMIT > 60 else CELERY_TASK_TIME_LIMIT
CELERY_VISIBILITY_TIMEOUT = CELERY_TASK_TIME_LIMIT * 2
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}
# Named on its own so the test harness can talk to a filesystem broker while the suite runs on Redis.
FILESYSTEM_BROKER_OPTIONS = {
    "data_folder_in": str(BROKER_DIR / "queue"),
    "data_folder_out": str(BROKER_DIR / "queue"),
    "control_folder": str(BROKER_DIR / "control"),
    "store_processed": False,
}
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS.update(FILESYSTEM_BROKER_OPTIONS)
# Publishing retries are bounded: a broker that is down must not hang a web request. The operation
# row stays queued and the sweeper sends it once the broker is back.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_PUBLISH_RETRY = True
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_DEFAULT_QUEUE = envstr("CELERY_TASK_DEFAULT_QUEUE", "keyward")
# portal/ is not an installed app, so its diagnostic task (portal.ping) is imported explicitly.
CELERY_IMPORTS = ("portal.tasks",)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
SYNC_INTERVAL_SECONDS = envint("SYNC_INTERVAL_SECONDS", 300, minimum=10)
SWEEP_INTERVAL_SECONDS = envint("SWEEP_INTERVAL_SECONDS", 30, minimum=5)
CELERY_BEAT_SCHEDULE = {
    "sweep-operations": {"task": "encryption.tasks.sweep_operations", "schedule": float(SWEEP_INTERVAL_SECONDS)},
    "sync-estate": {"task": "encryption.tasks.sync_estate", "schedule": float(SYNC_INTERVAL_SECONDS)},
}


# Operations and the Azure gateway

OPERATION_LEASE_SECONDS = envint("OPERATION_LEASE_SECONDS", CELERY_TASK_TIME_LIMIT + 60, minimum=30)
OPERATION_MAX_DELIVERIES = envint("OPERATION_MAX_DELIVERIES", 5, minimum=1)
# A queued row whose task was sent this long ago and never picked up is sent again by the sweeper (a
# broker can lose a message; a duplicate is harmless because workers claim rows conditionally).
OPERATION_REQUEUE_SECONDS = envint("OPERATION_REQUEUE_SECONDS", 120, minimum=5)
# How many times a task is retried after a transient Azure error before the operation fails.
OPERATION_MAX_RETRIES = envint("OPERATION_MAX_RETRIES", 5, minimum=0)
# The longest the SDK may wait on Retry-After and backoff within one task before giving up as transient.
AZURE_RETRY_BUDGET_SECONDS = envint("AZURE_RETRY_BUDGET_SECONDS", 30, minimum=1)
AZURE_RETRY_TOTAL = envint("AZURE_RETRY_TOTAL", 4, minimum=0)
AZURE_POLLING_INTERVAL = envint("AZURE_POLLING_INTERVAL", 0 if EMULATOR_ENABLED else 10)
# The longest one task follows a long-running PATCH before handing it back as transient: the task's retry
# resumes it from its continuation token, so a slow Azure operation never runs into the task's time limit.
AZURE_LRO_WAIT_SECONDS = envint("AZURE_LRO_WAIT_SECONDS", min(120, CELERY_TASK_SOFT_TIME_LIMIT // 2), minimum=1)
# The emulator's transport really sleeps, capped so a test or demo never waits long.
EMULATOR_SLEEP_CAP_SECONDS = float(envint("EMULATOR_SLEEP_CAP_MS", 1000)) / 1000
# Page size of the emulated Key Vault data plane's lists (Key Vault caps it at 25); small in tests.
EMULATOR_KV_PAGE_SIZE = envint("EMULATOR_KV_PAGE_SIZE", 25, minimum=1)
# The emulator's ARM for Cognitive Services accounts (emulator/README.md): list page size, status polls
# before an account LRO finishes (and the emulator-clock seconds after which an unpolled one finishes
# anyway), SKUs with the CustomerManagedKey capability, 2048-bit-only CMK keys, and whether a CMK
# keyVersion may be empty (versionless).
EMULATOR_ARM_PAGE_SIZE = envint("EMULATOR_ARM_PAGE_SIZE", 5, minimum=1)
EMULATOR_LRO_POLLS = envint("EMULATOR_LRO_POLLS", 1, minimum=1)
EMULATOR_LRO_TIMEOUT_SECONDS = envint("EMULATOR_LRO_TIMEOUT_SECONDS", 60, minimum=1)
EMULATOR_CMK_SKUS = tuple(s.strip().upper() for s in envstr("EMULATOR_CMK_SKUS", "S0,E0").split(",") if s.strip())
EMULATOR_CMK_STRICT_KEY_SIZE = envbool("EMULATOR_CMK_STRICT_KEY_SIZE", False)
EMULATOR_CMK_REQUIRE_KEY_VERSION = envbool("EMULATOR_CMK_REQUIRE_KEY_VERSION", True)

# The audit trail's Ed25519 signing key (checkpoints and export manifests). The embedded default
# generates one under var/ on first use; production points this at a mounted secret file.
AUDIT_SIGNING_KEY_FILE = Path(envstr("AUDIT_SIGNING_KEY_FILE", str(VAR_DIR / "audit-signing-key.pem")))
AUDIT_CHECKPOINT_EVERY = envint("AUDIT_CHECKPOINT_EVERY", 100, minimum=1)
# Chain verification on PostgreSQL: a trail of at least AUDIT_VERIFY_PARALLEL_FROM events is cut into seq ranges
# that this many processes walk side by side (1: always in the calling process).
AUDIT_VERIFY_PROCESSES = envint("AUDIT_VERIFY_PROCESSES", min(os.cpu_count() or 1, 4), minimum=1)
AUDIT_VERIFY_PARALLEL_FROM = envint("AUDIT_VERIFY_PARALLEL_FROM", 200_000, minimum=0)


# Logging: to stderr; tokens are never logged (the gateway turns SDK HTTP logging off).

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    "loggers": {
        "azure": {"level": "WARNING"},
        "django.db.backends": {"level": "WARNING"},
    },
}
