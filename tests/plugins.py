"""Pytest fixtures over tests/harness.py, for tests written as functions rather than TestCase classes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests import harness


@pytest.fixture
def worker(transactional_db: None) -> Iterator[harness.Worker]:
    """A real Celery worker process on this run's test databases (see harness.start_worker)."""
    with harness.start_worker() as running:
        yield running


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Debian's Chromium through Playwright, one per session; pair it with pytest-django's live_server."""
    with harness.environ(DJANGO_ALLOW_ASYNC_UNSAFE="true"), harness.browser() as browser:
        yield browser


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    try:
        yield context.new_page()
    finally:
        context.close()
