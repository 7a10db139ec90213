"""Pytest fixtures over tests/harness.py, for tests written as functions rather than TestCase classes."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from tests import harness


@pytest.fixture
def worker(transactional_db: None) -> Iterator[harness.Worker]:
    """A real Celery worker process on this run's test databases (see harness.start_worker)."""
    with harness.start_worker() as running:
        yield running


@pytest.fixture
def chromium() -> Iterator[Any]:
    """Debian's Chromium through Playwright; pair it with pytest-django's live_server.

    One per test, not per session: while Playwright runs, Django's connections in this thread are other
    objects (see tests/harness.py), which must not leak into the tests that follow."""
    with harness.django_browser() as browser:
        yield browser


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Each run's databases, broker folder and worker logs live in a folder of its own (tests/settings.py):
    # kept after a failure for the logs, removed after a run that passed.
    folder = os.environ.get("KEYWARD_TEST_DIR", "")
    if exitstatus == 0 and folder and getattr(settings, "KEYWARD_TEST_DIR_CREATED", False):
        shutil.rmtree(folder, ignore_errors=True)
