from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections
from django.test import SimpleTestCase

from tests.harness import CI, redis_answers

BASE_DIR = Path(settings.BASE_DIR)
_READ = re.compile(r'\benv(?:str|bool|int|secret|choice|database|broker)\(\s*"([A-Z][A-Z0-9_]*)"')


class EnvExampleTestCase(SimpleTestCase):
    def test_it_lists_every_variable_the_settings_read(self):
        read = set(_READ.findall((BASE_DIR / "portal" / "settings.py").read_text()))
        # The scan must find the settings' variables, or this test would pass on nothing.
        assert {"DATABASE_URL", "CELERY_BROKER_URL", "DEBUG", "SECRET_KEY", "AZURE_BACKEND"} <= read
        example = (BASE_DIR / ".env.example").read_text()
        listed = set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=", example, re.MULTILINE))
        assert read - listed == set(), "add these to .env.example, each with a comment"

    def test_every_variable_has_a_comment(self):
        lines = (BASE_DIR / ".env.example").read_text().splitlines()
        for number, line in enumerate(lines):
            if re.match(r"^[A-Z][A-Z0-9_]*=", line):
                # A variable's line follows its explanation (or another variable of the same group).
                previous = lines[number - 1]
                assert previous.startswith("#") or re.match(r"^[A-Z]", previous), line


class CIServicesTestCase(SimpleTestCase):
    """Under CI=true the suite must really run on PostgreSQL and Redis, not fall back to the defaults."""

    def test_it_runs_on_postgresql_and_redis_under_ci(self):
        if not CI:
            pytest.skip("checked under CI=true, where bin/test points the suite at both")
        assert connections["default"].vendor == "postgresql"
        assert str(settings.CELERY_BROKER_URL).startswith("redis://")
        assert redis_answers(str(settings.CELERY_BROKER_URL))
