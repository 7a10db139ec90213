from __future__ import annotations

from unittest import mock

from django.conf import settings
from django.test import override_settings

from emulator.testing import inject_faults
from encryption import tasks
from encryption.azure_gateway import TransientAzureError
from encryption.models import AuditEvent, Operation
from portal.celery import app
from tests.encryption.engine_helpers import EngineTestCase, broker_ready


class TaskDeclarationTests(EngineTestCase):
    def test_the_tasks_carry_the_fault_tolerance_settings(self):
        task = tasks.run_operation
        # Late acknowledgement and rejection on a lost worker are safe only because operations are idempotent.
        assert task.acks_late and task.reject_on_worker_lost and task.ignore_result
        assert TransientAzureError in task.autoretry_for
        assert task.retry_backoff and task.retry_jitter and task.max_retries == settings.OPERATION_MAX_RETRIES

    def test_the_beat_schedule_names_registered_tasks(self):
        for entry in settings.CELERY_BEAT_SCHEDULE.values():
            assert entry["task"] in app.tasks
        assert {"encryption.tasks.sweep_operations", "encryption.tasks.sync_estate"} <= set(app.tasks)


class RunOperationTaskTests(EngineTestCase):
    def test_it_runs_the_operation(self):
        op = self.ask("disable_cmk", "face-cmk-eastus")
        tasks.run_operation(op.pk)  # called directly, like any function
        op.refresh_from_db()
        self.assert_succeeded(op)

    @override_settings(AZURE_RETRY_TOTAL=0)
    def test_it_retries_after_transient_errors_and_succeeds(self):
        # Two throttled answers surface at once (no SDK retries); the task retries and the operation succeeds.
        inject_faults(429, host="management.azure.com", method="GET", count=2, retry_after=3)
        op = self.ask("disable_cmk", "face-cmk-eastus")
        with mock.patch.object(tasks.run_operation, "retry", wraps=tasks.run_operation.retry) as retry:
            tasks.run_operation.apply(args=(op.pk,))  # eager: Celery runs the retries in this thread
        assert retry.call_count == 2
        # The server's Retry-After is the countdown, not a blind backoff.
        assert all(call.kwargs["countdown"] == 3 for call in retry.call_args_list)
        op.refresh_from_db()
        self.assert_succeeded(op)
        assert op.deliveries == 1  # retries after a clean release are not lost deliveries

    @override_settings(AZURE_RETRY_TOTAL=0)
    def test_past_its_retries_the_operation_fails_with_a_reason(self):
        inject_faults(503, host="management.azure.com", retry_after=0)
        op = self.ask("disable_cmk", "face-cmk-eastus")
        with mock.patch.object(tasks.run_operation, "max_retries", 2):
            tasks.run_operation.apply(args=(op.pk,))
        op.refresh_from_db()
        assert op.status == "failed" and "temporary errors" in op.reason and op.lease_expires_at is None
        assert AuditEvent.objects.filter(operation=op, action="operation.failed").count() == 1


class PeriodicTaskTests(EngineTestCase):
    def setUp(self):
        super().setUp()
        broker_ready()

    def test_sync_estate_asks_for_an_audited_sync_as_the_system(self):
        with self.captureOnCommitCallbacks(execute=True):
            tasks.sync_estate()
        op = Operation.objects.get(kind="sync")
        assert op.actor == "system" and op.enqueued_at is not None
        assert AuditEvent.objects.filter(operation=op, action="operation.requested").exists()
        tasks.sync_estate()  # one waiting already: no pile-up
        assert Operation.objects.filter(kind="sync").count() == 1

    def test_sweep_operations_runs_the_sweeper(self):
        op = self.ask("disable_cmk", "face-cmk-eastus")
        Operation.objects.filter(pk=op.pk).update(status="running", lease_expires_at="2000-01-01T00:00:00Z")
        with mock.patch("encryption.services.publish", return_value=True) as publish:
            tasks.sweep_operations()
        publish.assert_called_once_with(op.pk)
