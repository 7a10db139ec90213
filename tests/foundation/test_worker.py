from __future__ import annotations

import json
import os
import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import connections, transaction

from portal.tasks import ping, receipt_path
from tests.harness import CrossProcessTestCase, publish, require_redis, start_worker, wait_until


def _receipt(token: str) -> dict[str, Any] | None:
    path = receipt_path(token)
    return json.loads(path.read_text()) if path.exists() else None


class WorkerTestCase(CrossProcessTestCase):
    def _assert_ran_in_worker(self, token: str, worker_pid: int) -> None:
        receipt = wait_until(lambda: _receipt(token), timeout=60, message="the worker's ping receipt")
        # Another OS process ran it (the prefork child of the worker), not this test process.
        assert receipt["pid"] != os.getpid()
        assert receipt["pid"] in (worker_pid, *_children(worker_pid))
        # ...on this run's test database, where it saw the user this test committed.
        assert receipt["database"] == str(connections["default"].settings_dict["NAME"])
        assert receipt["users"] == 1

    def setUp(self) -> None:
        User.objects.create_user("seen-by-the-worker")

    def test_it_runs_a_task_enqueued_on_commit_by_the_web_side(self):
        token = uuid.uuid4().hex
        with start_worker() as worker:
            with transaction.atomic():
                ping.delay_on_commit(token)  # type: ignore[attr-defined]  # celery-types lags Celery 5.4
                # Nothing is sent before the transaction commits, so the worker cannot run ahead of it.
                assert _receipt(token) is None
            self._assert_ran_in_worker(token, worker.pid)

    def test_it_runs_a_task_on_the_filesystem_broker(self):
        token = uuid.uuid4().hex
        with start_worker(broker_url="filesystem://") as worker:
            publish(ping, (token,), broker_url="filesystem://")
            self._assert_ran_in_worker(token, worker.pid)
        # The message went through this run's broker folder, nowhere else.
        assert os.path.isdir(str(settings.FILESYSTEM_BROKER_OPTIONS["data_folder_in"]))

    def test_it_runs_a_task_on_redis(self):
        url = require_redis()
        token = uuid.uuid4().hex
        with start_worker(broker_url=url) as worker:
            publish(ping, (token,), broker_url=url)
            self._assert_ran_in_worker(token, worker.pid)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []
