"""Thin Celery tasks: an id in, a service call, and the retry policy.

Late acknowledgement is safe because operations are idempotent and claimed by a conditional UPDATE: a
task delivered twice (worker killed, broker redelivery, sweeper resend) finds its row already claimed or
finished and leaves it alone, or resumes it step by step.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from django.conf import settings

from encryption import operations, services
from encryption.azure_gateway import TransientAzureError


@shared_task(
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    autoretry_for=(TransientAzureError,),
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=True,
    max_retries=settings.OPERATION_MAX_RETRIES,
    ignore_result=True,
)
def run_operation(self: Task[Any, Any], operation_id: int) -> None:
    try:
        operations.run_operation(operation_id)
    except TransientAzureError as exc:
        if self.request.retries >= (self.max_retries or 0):
            operations.give_up(operation_id, exc)  # past the retries: failed with a reason, never left queued
            return
        if exc.retry_after:
            raise self.retry(exc=exc, countdown=min(exc.retry_after, 60)) from exc  # the server said when
        raise  # autoretry: exponential backoff with jitter


@shared_task(ignore_result=True)
def sweep_operations() -> None:
    services.sweep_operations()


@shared_task(ignore_result=True)
def sync_estate() -> None:
    services.request_periodic_sync()
