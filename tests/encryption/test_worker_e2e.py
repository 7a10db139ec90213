"""The engine with real worker processes: what the web side enqueues runs, and a worker killed mid-operation
leaves the account, the operation and the audit trail consistent once another worker takes over."""

from __future__ import annotations

import io
import os
import signal
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from emulator.testing import request_count
from encryption import audit, services
from encryption.models import Account, AuditEvent, Operation
from tests.encryption.engine_helpers import engine_estate
from tests.harness import CrossProcessTestCase, start_worker, wait_until

PROD = "https://kv-prod-eastus.vault.azure.net/keys"

pytestmark = pytest.mark.worker


class WorkerTests(CrossProcessTestCase):
    def setUp(self):
        self.admin = engine_estate()

    def test_an_operation_enqueued_by_the_web_side_runs_to_succeeded(self):
        with start_worker():
            with transaction.atomic():  # as a view does: the row, its event, and the task sent on commit
                op = services.request_change(
                    actor=services.Actor.from_cli(self.admin),
                    account=Account.objects.get(name="face-prod-eastus"),
                    kind="enable_cmk",
                    params={"key_uri": f"{PROD}/face-cmk"},
                )
            wait_until(lambda: Operation.objects.get(pk=op.pk).is_finished, timeout=60, message="the operation")
            # The command line waits on the same row while a worker runs its job.
            out = io.StringIO()
            call_command("encryption", "diagnose", "face-prod-eastus", "--as", self.admin.username, stdout=out)
        op.refresh_from_db()
        assert op.status == "succeeded", op.reason
        account = Account.objects.get(name="face-prod-eastus")
        assert account.uses_cmk and account.data_readable is True
        assert "Data readable: yes" in out.getvalue()
        assert audit.verify_chain().ok

    def test_a_worker_killed_mid_operation_is_taken_over_by_another(self):
        # Each long-running PATCH needs 4 status polls a second apart: time enough to kill the worker mid-LRO.
        slow = {"EMULATOR_LRO_POLLS": "4"}
        with start_worker(env=slow) as first:
            with transaction.atomic():
                op = services.request_change(
                    actor=services.Actor.from_cli(self.admin),
                    account=Account.objects.get(name="face-shared-eastus"),
                    kind="enable_cmk",
                    params={"key_uri": f"{PROD}/face-cmk"},
                )
            wait_until(lambda: Operation.objects.get(pk=op.pk).lro_token, timeout=60, message="the PATCH to be sent")
            os.killpg(first.pid, signal.SIGKILL)  # the whole worker, pool child included: no goodbye
            first.process.wait()
        op.refresh_from_db()
        assert op.status == "running" and op.patch_attempts == 1 and not op.is_finished
        # Its lease runs out (shortened here rather than waited for), and the sweeper sends it again.
        Operation.objects.filter(pk=op.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
        assert services.sweep_operations().resent == [op.pk]
        with start_worker(env=slow):
            wait_until(lambda: Operation.objects.get(pk=op.pk).is_finished, timeout=90, message="the takeover")
        op.refresh_from_db()
        assert op.status == "succeeded", op.reason
        # The second worker resumed the LRO from its token: Azure saw exactly the PATCHes the row counted.
        assert request_count("PATCH", "/accounts/face-shared-eastus") == op.patch_attempts == 1
        assert op.deliveries == 2
        assert op.steps.filter(status="failed", detail__startswith="Interrupted").count() == 1
        assert op.steps.filter(name="set_key", status="succeeded", detail__contains="resumed").exists()
        account = Account.objects.get(name="face-shared-eastus")
        assert account.key_uri == f"{PROD}/face-cmk/{op.params['key_version']}" and account.data_readable is True
        assert AuditEvent.objects.filter(operation=op, action="operation.succeeded").count() == 1
        assert audit.verify_chain().ok
