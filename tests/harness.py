"""The harness for tests that cross a process boundary: a real Celery worker, a live server, Chromium.

Use it instead of writing your own; it knows the traps.

Worker tests
    class MyTest(CrossProcessTestCase):
        def test_it_runs_on_a_worker(self):
            with start_worker() as worker:
                with transaction.atomic():
                    op = make_operation(...)
                    run_operation.delay_on_commit(op.pk)      # the web side enqueues, as views do
                wait_until(lambda: Operation.objects.get(pk=op.pk).is_finished, message="operation ended")

    - `CrossProcessTestCase` is a `TransactionTestCase`: rows are committed, so another process sees them.
      It uses every database (`default`, and `emulator` when that app is installed) and sets
      `serialized_rollback`, so the data migrations' rows (the role groups) are back for the next test.
    - The test databases are files (SQLite) or real PostgreSQL databases; an in-memory SQLite database
      would be invisible to the worker. `start_worker()` hands the worker the *test* databases through
      `DATABASE_URL` / `EMULATOR_DATABASE_URL`, plus this run's `KEYWARD_VAR_DIR`, `CELERY_BROKER_URL` and
      `CELERY_TASK_DEFAULT_QUEUE` (a queue of this run's own, so concurrent runs never steal each other's
      tasks). Settings changed with `override_settings` are NOT seen by the worker: pass environment
      variables with `start_worker(env={...})` instead.
    - The worker is built by `portal.processes.worker_argv`, the same command line `bin/run` uses, with
      concurrency 1 and no beat. `start_worker()` returns once the worker logs that it is ready, and on
      exit kills it with its whole process group (a warm shutdown costs seconds; call
      `worker.stop(graceful=True)` inside the block when a test is about shutting down). If the block
      fails, the worker's log is attached to the exception; `worker.log()` reads it at any time.
    - `start_worker(broker_url="filesystem://")` runs a worker on another broker than the suite's; publish
      to it with `publish(task, args, broker_url=...)`.

Live server and browser tests
    class MyBrowserTest(BrowserTestCase):
        def test_it_signs_in(self):
            page = self.new_page()
            page.goto(self.live_server_url + "/")

    - `BrowserTestCase` is Django's `StaticLiveServerTestCase` on top of `CrossProcessTestCase`, with
      `DJANGO_ALLOW_ASYNC_UNSAFE=true` (Playwright's sync API runs an event loop in the test's thread,
      which Django would otherwise take for async code) and one Chromium per class.
    - While Playwright runs, Django hands the test's thread other connection objects (Playwright swaps
      the context variables Django keys them on). `django_browser()` (used by `BrowserTestCase` and the
      `chromium` fixture) carries over what `serialized_rollback` needs and closes them afterwards; do
      not start Playwright any other way in a test that touches the database.
    - `browser()` launches Debian's `/usr/bin/chromium` through Playwright (never `playwright install`).
    - `self.sign_in(page, username, password)` signs in through the real login form.

Services
    Under CI=true a test that needs PostgreSQL, Redis or Chromium FAILS when it is missing; elsewhere it
    skips. Call `require_postgresql()`, `require_redis()` or `require_chromium()` at the top of the test.
    Sign-in in tests: use `self.client.force_login(user)`; `client.login()` fails because django-axes
    needs the request.

Settings
    pytest uses `tests.settings` (pyproject.toml): `portal.settings` with every run's databases, broker
    folder, `KEYWARD_VAR_DIR` and queue in a temporary folder of its own (removed after a run that
    passed), and a fast password hasher. Processes started by tests inherit those folders through the
    environment. Do not set DJANGO_SETTINGS_MODULE when running pytest: it would take precedence.

Helpers: `wait_until(fn, timeout=..., message=...)`, `free_port()`, `processes_in_session(sid)`,
`database_url(alias)`, `worker_environment(...)`. Pytest fixtures wrapping them are in tests/plugins.py.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from django.conf import settings
from django.contrib.staticfiles.testing import StaticLiveServerTestCase
from django.core.management import call_command
from django.db import connections
from django.test import TransactionTestCase

from portal.processes import worker_argv

T = TypeVar("T")

CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ALL_DATABASES = set(settings.DATABASES)


# Services: fail under CI, skip elsewhere


def require(available: bool, what: str) -> None:
    """Carry on if `available`; otherwise fail under CI=true (CI must run every test) or skip."""
    if available:
        return
    if CI:
        pytest.fail(f"{what} is required under CI=true but is not available")
    pytest.skip(f"{what} is not available")


def redis_url() -> str:
    broker = str(settings.CELERY_BROKER_URL)
    return broker if broker.startswith(("redis://", "rediss://")) else "redis://127.0.0.1:6379/0"


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def require_redis() -> str:
    """The Redis URL to use; under CI the suite's broker must be that Redis, and it must answer."""
    url = redis_url()
    if CI:
        require(str(settings.CELERY_BROKER_URL).startswith("redis"), "Redis as the suite's broker")
    require(redis_answers(url), f"Redis at {url.split('@')[-1]}")
    return url


def require_postgresql() -> None:
    require(connections["default"].vendor == "postgresql", "PostgreSQL as the default database")


def require_chromium() -> None:
    require(os.access(CHROMIUM, os.X_OK), f"Chromium at {CHROMIUM}")


# Waiting and processes


def wait_until(
    predicate: Callable[[], T | None], *, timeout: float = 30, interval: float = 0.1, message: str = ""
) -> T:
    """Poll `predicate` until it returns something truthy, and return that; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message or predicate!r}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def processes_in_session(sid: int) -> dict[int, str]:
    """pid -> command line of every live process in session `sid` (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # it ended while we looked
        # Fields after the command name (which may contain spaces) start after the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        state, session = fields[0], int(fields[3])
        if session == sid and state != "Z":
            found[int(entry.name)] = cmdline
    return found


def kill_session(sid: int) -> None:
    """SIGKILL whatever is left in session `sid`; a test's last line of defence against leftovers."""
    for pid in processes_in_session(sid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# Handing the test databases to another process


def database_url(alias: str) -> str:
    """A URL for the database that `alias` points at now (the test database, once tests have started)."""
    cfg = connections[alias].settings_dict
    if cfg["ENGINE"].endswith("sqlite3"):
        name = str(cfg["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            raise RuntimeError(f"the {alias!r} test database is in memory: another process cannot see it")
        return f"sqlite:///{Path(name).resolve()}"
    credentials = quote(cfg.get("USER") or "", safe="")
    if cfg.get("PASSWORD"):
        credentials += ":" + quote(cfg["PASSWORD"], safe="")
    host = cfg.get("HOST") or "127.0.0.1"
    port = f":{cfg['PORT']}" if cfg.get("PORT") else ""
    return f"postgres://{credentials}@{host}{port}/{quote(str(cfg['NAME']), safe='')}"


def worker_environment(*, broker_url: str = "", env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a process that must share this test run's databases, broker, queue and folders."""
    result = dict(os.environ)
    result.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "DATABASE_URL": database_url("default"),
            "CELERY_BROKER_URL": broker_url or str(settings.CELERY_BROKER_URL),
            "CELERY_TASK_DEFAULT_QUEUE": str(settings.CELERY_TASK_DEFAULT_QUEUE),
            "KEYWARD_VAR_DIR": str(settings.VAR_DIR),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if "emulator" in settings.DATABASES:
        result["EMULATOR_DATABASE_URL"] = database_url("emulator")
    result.update(env or {})
    return result


def ensure_filesystem_broker_folders() -> None:
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        os.makedirs(str(settings.FILESYSTEM_BROKER_OPTIONS[key]), exist_ok=True)


def publish(task: Any, args: tuple[Any, ...] = (), *, broker_url: str = "") -> None:
    """Send `task` through `broker_url` (default: the suite's broker), as the web side would."""
    if not broker_url or broker_url == settings.CELERY_BROKER_URL:
        task.apply_async(args)
        return
    from portal.celery import app

    options = settings.FILESYSTEM_BROKER_OPTIONS if broker_url.startswith("filesystem://") else {}
    with app.connection_for_write(broker_url, transport_options=options) as connection:
        task.apply_async(args, connection=connection)


# Workers

_worker_numbers = itertools.count(1)


class Worker:
    def __init__(self, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def is_ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"the worker exited with {self.process.returncode} before it was ready")
        return " ready." in self.log()

    def stop(self, *, graceful: bool = False, grace: float = 15) -> None:
        """Kill the worker and its pool (SIGKILL to its group), or with `graceful` first ask for Celery's
        warm shutdown (SIGTERM), which takes a few seconds even when idle."""
        if graceful and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=grace)
        # Pool processes live in the worker's group; none may outlive the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


@contextlib.contextmanager
def start_worker(
    *,
    broker_url: str = "",
    pool: str = "prefork",
    concurrency: int = 1,
    env: dict[str, str] | None = None,
    ready_timeout: float = 60,
) -> Iterator[Worker]:
    """A real `celery -A portal worker` process on this run's test databases; stopped on exit."""
    number = next(_worker_numbers)
    log_dir = Path(settings.VAR_DIR) / "workers"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"worker-{os.getpid()}-{number}.log"
    environment = worker_environment(broker_url=broker_url, env=env)
    if environment["CELERY_BROKER_URL"].startswith("filesystem://"):
        ensure_filesystem_broker_folders()
    argv = worker_argv(
        concurrency=concurrency,
        beat=False,
        pool=pool,
        queue=environment["CELERY_TASK_DEFAULT_QUEUE"],
        nodename=f"test-{os.getpid()}-{number}@%h",
    )
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=settings.BASE_DIR,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
    worker = Worker(process, log_path)
    try:
        try:
            wait_until(worker.is_ready, timeout=ready_timeout, interval=0.2, message="the worker to be ready")
        except BaseException as exc:
            exc.add_note(f"--- worker log ({log_path}) ---\n{worker.log()[-8000:]}")
            raise
        try:
            yield worker
        except BaseException as exc:
            exc.add_note(f"--- worker log ({log_path}) ---\n{worker.log()[-8000:]}")
            raise
    finally:
        worker.stop()


# Test case classes


class ReloadingTransactionTestCase(TransactionTestCase):
    """Committed rows (other connections and processes see them); what the migrations put in the tables
    (role groups, content types) is reloaded before each test, whatever test ran before."""

    # TransactionTestCase empties the tables afterwards; this reloads what the migrations put there.
    serialized_rollback = True

    @classmethod
    def _fixture_setup(cls) -> None:
        # A TransactionTestCase without serialized_rollback ends with a flush that re-creates content types
        # and permissions under new ids, which the reload would collide with: start from empty tables, the
        # way this class's own teardown leaves them.
        for alias in cls._databases_names(include_mirrors=False):  # type: ignore[attr-defined]
            if hasattr(connections[alias], "_test_serialized_contents"):
                call_command("flush", verbosity=0, interactive=False, database=alias, inhibit_post_migrate=True)
        super()._fixture_setup()  # type: ignore[misc]


class CrossProcessTestCase(ReloadingTransactionTestCase):
    """Committed rows on every test database, visible to worker processes and live servers."""

    databases = ALL_DATABASES


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright's sync API (a `playwright.sync_api.Browser`)."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@contextlib.contextmanager
def django_browser(aliases: Iterable[str] = ALL_DATABASES) -> Iterator[Any]:
    """`browser()` plus what Django's test databases need while Playwright runs in this thread."""
    with contextlib.ExitStack() as stack:
        # Playwright's sync API keeps an event loop running in this thread; Django's ORM would refuse to
        # run beside it without this (the test is not async code).
        stack.enter_context(environ(DJANGO_ALLOW_ASYNC_UNSAFE="true"))
        serialized = {alias: getattr(connections[alias], "_test_serialized_contents", None) for alias in aliases}
        chromium = stack.enter_context(browser())
        # While Playwright runs, this thread sees other context variables, so Django hands out new
        # connection objects: carry over what serialized_rollback reloads, and close them before it stops.
        for alias, contents in serialized.items():
            if contents is not None:
                setattr(connections[alias], "_test_serialized_contents", contents)  # noqa: B010 (private)
        stack.callback(connections.close_all)
        yield chromium


class BrowserTestCase(StaticLiveServerTestCase, CrossProcessTestCase):
    """A live server on this run's test databases and one Chromium for the class."""

    host = "127.0.0.1"
    chromium: Any  # a playwright.sync_api.Browser

    @classmethod
    def setUpClass(cls) -> None:
        require_chromium()
        super().setUpClass()
        cls.chromium = cls.enterClassContext(django_browser(cls.databases))

    def new_page(self) -> Any:
        context = self.chromium.new_context(viewport={"width": 1280, "height": 800})
        self.addCleanup(context.close)
        return context.new_page()

    def sign_in(self, page: Any, username: str, password: str) -> None:
        page.goto(f"{self.live_server_url}/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state()


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
