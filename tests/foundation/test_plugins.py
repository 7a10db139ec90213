"""The pytest fixtures of tests/plugins.py, for tests written as functions."""

from __future__ import annotations

import json
import os
import uuid

from django.db import connections

from portal.tasks import ping, receipt_path
from tests.harness import wait_until


def test_the_worker_fixture_runs_tasks(worker):
    token = uuid.uuid4().hex
    ping.delay(token)
    receipt = wait_until(lambda: receipt_path(token).exists() and json.loads(receipt_path(token).read_text()))
    # Another OS process wrote it, on this test's database.
    assert receipt["pid"] != os.getpid()
    assert receipt["database"] == str(connections["default"].settings_dict["NAME"])
    assert worker.process.poll() is None


def test_the_page_fixture_browses_the_live_server(page, live_server):
    page.goto(live_server.url + "/")
    # Every page sends an anonymous visitor to sign in.
    assert "/accounts/login/" in page.url
    assert page.get_by_role("button", name="Sign in").is_visible()
