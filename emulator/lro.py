"""Account long-running operations (create, update, delete), kept in the emulator database so that any
client instance, in any process, can poll or resume one from a continuation token.

An operation finishes on its N-th status poll (`EMULATOR_LRO_POLLS`, default 1: the SDK's first poll,
sent at once), or, when nobody polls, on the first touch of the account after
`EMULATOR_LRO_TIMEOUT_SECONDS` of emulator time, so an abandoned poller never leaves an account stuck.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.db import transaction

from emulator import accounts, clock, data_at_rest, updates
from emulator.arm_common import ARM_BASE
from emulator.models import ArmOperation, CognitiveAccount
from emulator.models.arm import COGNITIVE_PROVIDER
from emulator.router import EMULATOR_ALIAS
from emulator.rules import CmkRefused

RETRY_AFTER_SECONDS = "1"
IN_PROGRESS_STATE = {"create": "Creating", "update": "Accepted", "delete": "Deleting"}


def polls_required() -> int:
    return max(1, int(getattr(settings, "EMULATOR_LRO_POLLS", 1)))


def timeout() -> timedelta:
    return timedelta(seconds=int(getattr(settings, "EMULATOR_LRO_TIMEOUT_SECONDS", 60)))


def active(account: CognitiveAccount) -> ArmOperation | None:
    return (
        ArmOperation.objects.filter(
            subscription_id=account.subscription_id,
            resource_group__iexact=account.resource_group,
            account_name__iexact=account.name,
            status=ArmOperation.STATUS_IN_PROGRESS,
        )
        .order_by("id")
        .first()
    )


def start(account: CognitiveAccount, action: str, changes: dict[str, Any], caller: str) -> ArmOperation:
    """Record the operation and mark the account as busy with it (the caller's write of the account)."""
    with transaction.atomic(using=EMULATOR_ALIAS):
        operation = ArmOperation.objects.create(
            operation_id=str(uuid.uuid4()),
            action=action,
            subscription_id=account.subscription_id,
            resource_group=account.resource_group,
            account_name=account.name,
            location=account.location,
            polls_remaining=polls_required(),
            changes=changes,
            caller=caller,
            started_at=clock.now(),
        )
        account.provisioning_state = IN_PROGRESS_STATE[action]
        accounts.touch(account, caller)
        account.save()
    return operation


# URLs and bodies


def _base(operation: ArmOperation) -> str:
    return (
        f"{ARM_BASE}/subscriptions/{operation.subscription_id}/providers/{COGNITIVE_PROVIDER}"
        f"/locations/{operation.location}"
    )


def status_url(operation: ArmOperation, api_version: str) -> str:
    return f"{_base(operation)}/operationStatuses/{operation.operation_id}?api-version={quote(api_version, safe='')}"


def result_url(operation: ArmOperation, api_version: str) -> str:
    return f"{_base(operation)}/operationResults/{operation.operation_id}?api-version={quote(api_version, safe='')}"


def headers(operation: ArmOperation, api_version: str) -> dict[str, str]:
    return {
        "Azure-AsyncOperation": status_url(operation, api_version),
        "Location": result_url(operation, api_version),
        "Retry-After": RETRY_AFTER_SECONDS,
    }


def status_json(operation: ArmOperation) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"{_base(operation)[len(ARM_BASE) :]}/operationStatuses/{operation.operation_id}",
        "name": operation.operation_id,
        "status": operation.status,
        "startTime": operation.started_at.isoformat(),
    }
    if operation.ended_at is not None:
        body["endTime"] = operation.ended_at.isoformat()
    if operation.error:
        body["error"] = operation.error
    return body


# Progress


def poll(operation: ArmOperation) -> ArmOperation:
    """Count one status poll; the poll that exhausts the count finishes the operation."""
    with transaction.atomic(using=EMULATOR_ALIAS):
        # The row lock (SQLite: the IMMEDIATE write lock) makes two pollers count, and finish, once.
        locked = ArmOperation.objects.select_for_update().get(pk=operation.pk)
        if locked.finished:
            return locked
        locked.polls_remaining = max(0, locked.polls_remaining - 1)
        if locked.polls_remaining == 0:
            finish(locked)
        else:
            locked.save(update_fields=["polls_remaining"])
    return locked


def settle_overdue(account: CognitiveAccount) -> None:
    """Finish the account's operation if nobody polled it within the timeout."""
    operation = active(account)
    if operation is not None and clock.now() - operation.started_at >= timeout():
        with transaction.atomic(using=EMULATOR_ALIAS):
            locked = ArmOperation.objects.select_for_update().get(pk=operation.pk)
            if not locked.finished:
                finish(locked)
        account.refresh_from_db()


def finish(operation: ArmOperation) -> None:
    account = CognitiveAccount.objects.filter(
        subscription_id=operation.subscription_id,
        resource_group__iexact=operation.resource_group,
        name__iexact=operation.account_name,
    ).first()
    try:
        if account is not None:
            _FINISHERS[operation.action](account, operation)
        operation.status = ArmOperation.STATUS_SUCCEEDED
    except CmkRefused as refused:
        if refused.status >= 500:
            return  # Key Vault failed transiently: the operation stays in progress and the next poll retries
        operation.status = ArmOperation.STATUS_FAILED
        operation.error = {"code": refused.code, "message": refused.message}
        if account is not None:
            account.refresh_from_db()
            account.provisioning_state = "Failed"
            accounts.touch(account, operation.caller)
            account.save()
    operation.ended_at = clock.now()
    operation.save()


def _finish_create(account: CognitiveAccount, operation: ArmOperation) -> None:
    account.provisioning_state = "Succeeded"
    accounts.touch(account, operation.caller)
    account.save()


def _finish_update(account: CognitiveAccount, operation: ArmOperation) -> None:
    revoked = updates.apply(account, operation.changes)
    account.provisioning_state = "Succeeded"
    accounts.touch(account, operation.caller)
    account.save()
    for principal in revoked:
        accounts.revoke_principal_access(principal)


def _finish_delete(account: CognitiveAccount, operation: ArmOperation) -> None:
    # The system identity's service principal is deleted with the account.
    if account.principal_id:
        accounts.revoke_principal_access(account.principal_id)
    data_at_rest.delete_data(account)
    account.delete()


_FINISHERS = {"create": _finish_create, "update": _finish_update, "delete": _finish_delete}
