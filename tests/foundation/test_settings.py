from __future__ import annotations

import os
import secrets
import subprocess
import sys

from django.conf import settings
from django.test import SimpleTestCase

# Every variable that portal/settings.py (or a test run) reads: a child process starts from none of them,
# so what it sees is exactly what each test sets.
_CONFIG_PREFIXES = ("KEYWARD_", "CELERY_", "DJANGO_", "AZURE_", "AXES_", "SECURE_", "OPERATION_", "AUDIT_")


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_CONFIG_PREFIXES)}
    for name in ("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DATABASE_URL", "EMULATOR_DATABASE_URL", "LOG_LEVEL"):
        clean.pop(name, None)
    clean.update(env)
    clean["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=settings.BASE_DIR,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )


class MalformedSettingsTestCase(SimpleTestCase):
    def _assert_refused(self, name: str, value: str, *expected: str) -> str:
        result = _manage("check", **{name: value})
        # Start-up stops, and the message names the variable so the operator knows what to fix.
        assert result.returncode != 0, result.stdout
        message = result.stderr.strip().splitlines()[-1]
        assert "ImproperlyConfigured" in message
        assert name in message
        for text in expected:
            assert text in message
        return message

    def test_it_refuses_a_malformed_database_url(self):
        self._assert_refused("DATABASE_URL", "postgres://keyward@db:not-a-port/keyward")

    def test_it_refuses_a_database_url_of_another_engine(self):
        self._assert_refused("DATABASE_URL", "mysql://keyward@db/keyward", "postgres://")

    def test_it_refuses_a_broker_url_of_another_transport(self):
        self._assert_refused("CELERY_BROKER_URL", "amqp://guest@localhost//", "redis://")

    def test_it_refuses_a_broker_url_with_a_bad_port_without_showing_its_password(self):
        message = self._assert_refused("CELERY_BROKER_URL", "redis://:hunter2-secret@127.0.0.1:63x79/0", "port")
        assert "hunter2-secret" not in message

    def test_it_refuses_a_debug_that_is_not_a_boolean(self):
        self._assert_refused("DEBUG", "maybe", "true or false")

    def test_it_refuses_an_unknown_azure_backend(self):
        self._assert_refused("AZURE_BACKEND", "aws", "emulator", "azure")

    def test_it_refuses_production_without_a_secret_key(self):
        result = _manage("check", DEBUG="false", ALLOWED_HOSTS="keyward.example.com")
        assert result.returncode != 0
        assert "SECRET_KEY" in result.stderr.strip().splitlines()[-1]

    def test_it_accepts_the_embedded_defaults(self):
        result = _manage("check", KEYWARD_VAR_DIR=os.environ["KEYWARD_VAR_DIR"])
        assert result.returncode == 0, result.stderr
        assert "no issues" in result.stdout


class DeployCheckTestCase(SimpleTestCase):
    def test_it_passes_the_deploy_check_with_only_the_three_production_variables(self):
        # Production defaults are the secure ones: nothing but these three may be needed for a clean report.
        result = _manage(
            "check",
            "--deploy",
            "--fail-level",
            "WARNING",
            DEBUG="false",
            SECRET_KEY=secrets.token_urlsafe(50),
            ALLOWED_HOSTS="keyward.example.com",
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "System check identified no issues" in result.stdout

    def test_it_fails_the_deploy_check_when_debug_is_on(self):
        # The same check does catch an insecure setting, so the test above can fail.
        result = _manage(
            "check",
            "--deploy",
            "--fail-level",
            "WARNING",
            DEBUG="true",
            SECRET_KEY=secrets.token_urlsafe(50),
            ALLOWED_HOSTS="keyward.example.com",
        )
        assert result.returncode != 0
        assert "security.W018" in result.stdout + result.stderr
