"""The Celery and operation settings the fault drills rely on, pinned: if one of these changes, the drills
(and docs/reliability.md) no longer describe the system."""

from __future__ import annotations

from django.conf import settings
from django.test import SimpleTestCase

from encryption.tasks import run_operation
from portal.celery import app


class CelerySettingsTests(SimpleTestCase):
    def test_a_task_is_acknowledged_only_after_it_ran_and_put_back_when_its_process_dies(self):
        assert app.conf.task_acks_late is True
        assert app.conf.task_reject_on_worker_lost is True
        assert run_operation.acks_late is True and run_operation.reject_on_worker_lost is True

    def test_a_worker_holds_one_task_at_a_time(self):
        assert app.conf.worker_prefetch_multiplier == 1

    def test_one_visibility_timeout_longer_than_the_hard_time_limit(self):
        broker = app.conf.broker_transport_options["visibility_timeout"]
        results = app.conf.result_backend_transport_options["visibility_timeout"]
        assert broker == results == settings.CELERY_VISIBILITY_TIMEOUT
        assert broker > app.conf.task_time_limit > app.conf.task_soft_time_limit

    def test_a_dead_workers_lease_outlasts_a_live_task_and_deliveries_are_capped(self):
        assert settings.OPERATION_LEASE_SECONDS > settings.CELERY_TASK_TIME_LIMIT
        assert 1 <= settings.OPERATION_MAX_DELIVERIES <= 10

    def test_no_worker_waits_minutes_on_azure(self):
        # The SDK's retries and Retry-After waits inside one task are bounded well inside the soft limit,
        # and a task's own retries are capped; the LRO wait leaves room before the time limit too.
        assert settings.AZURE_RETRY_BUDGET_SECONDS <= 60 < settings.CELERY_TASK_SOFT_TIME_LIMIT
        assert settings.AZURE_LRO_WAIT_SECONDS < settings.CELERY_TASK_SOFT_TIME_LIMIT
        assert run_operation.max_retries == settings.OPERATION_MAX_RETRIES <= 10

    def test_publishing_to_a_broker_that_is_down_gives_up_quickly(self):
        policy = app.conf.task_publish_retry_policy
        assert policy["max_retries"] <= 3 and policy["interval_max"] <= 2
        assert app.conf.broker_connection_timeout <= 5
