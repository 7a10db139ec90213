"""What views and the command line call: ask for a change or a job, and sweep operations the broker lost.

Every request is checked (role, parameters, one change at a time per account) and either refused with an
audit event saying why, or recorded as an `Operation` row plus its `operation.requested` event in one
transaction and handed to a worker once that transaction commits. No Azure call is made here: the worker
carries the operation out (encryption/operations.py).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from encryption import audit
from encryption.actors import SOURCE_CLI, SOURCE_SYSTEM, SOURCE_WEB, Actor
from encryption.key_uri import InvalidKeyUri, parse_key_uri
from encryption.models import Account, Operation, Subscription

__all__ = [
    "Actor",
    "InvalidRequest",
    "NotAllowed",
    "OperationConflict",
    "RequestRefused",
    "request_change",
    "request_job",
    "sweep_operations",
]

log = logging.getLogger(__name__)

Kind = Operation.Kind
CHANGE_PERM = "encryption.change_encryption"
# Read-only jobs need only what their result shows: help-desk may diagnose, anyone with a role may refresh.
JOB_PERMS: dict[str, str] = {
    Kind.PREFLIGHT: "encryption.view_account",
    Kind.REFRESH: "encryption.view_account",
    Kind.SYNC: "encryption.view_account",
    Kind.DIAGNOSE: "encryption.view_diagnosis",
}
VERSION_RE = re.compile(r"^[0-9a-f]{32}$")
SUBSCRIPTION_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
REVOKE_METHODS = ("access_policy", "disable_key")
# A row younger than this may still be publishing on its web process's commit; the sweeper leaves it.
PUBLISH_GRACE_SECONDS = 10


# Actors (the Actor type lives in encryption/actors.py so the audit trail can name actors; re-exported here)


def may(actor: Actor, perm: str) -> bool:
    """Whether the actor holds `perm`; Keyward itself (no user) runs read-only jobs but never a change."""
    if actor.user is None:
        return perm != CHANGE_PERM and actor.source in (SOURCE_SYSTEM, SOURCE_CLI)
    return bool(actor.user.is_active and actor.user.has_perm(perm))


def actor_of(operation: Operation) -> Actor:
    """The actor recorded on an operation, for the events a worker writes on its behalf."""
    return Actor(
        user=operation.requested_by,
        username=operation.actor,
        role=operation.actor_role,
        source=operation.source,
        ip=operation.source_detail if operation.source == SOURCE_WEB else "",
        detail=operation.source_detail if operation.source != SOURCE_WEB else "",
    )


# Errors


class RequestRefused(Exception):
    """A request Keyward will not record as an operation; the message says why, for a person."""

    outcome = "refused"


class InvalidRequest(RequestRefused, ValueError):
    pass


class NotAllowed(RequestRefused, PermissionError):
    pass


class NotRecorded(Exception):
    """The request could not be written down (its operation row and audit event), so nothing was done.

    Not a RequestRefused: a refusal is itself audited, and here the audit store is what failed.
    """


class OperationConflict(RequestRefused):
    def __init__(self, message: str, operation: Operation | None = None) -> None:
        super().__init__(message)
        self.operation = operation


# Requests


def request_change(*, actor: Actor, account: Account | None, kind: str, params: dict[str, Any]) -> Operation:
    """Record a change to Azure and hand it to a worker; raises a `RequestRefused` subclass after auditing it."""
    try:
        if kind not in Operation.CHANGE_KINDS:
            raise InvalidRequest(f"{kind!r} is not a change Keyward can make.")
        _require(actor, CHANGE_PERM, kind=kind, account=account)
        clean = _validate(kind, account, params)
        return _create(actor=actor, account=account, kind=kind, params=clean)
    except RequestRefused as exc:
        _record_refusal(actor, kind, account, params, exc)
        raise


def request_job(*, actor: Actor, account: Account | None, kind: str, params: dict[str, Any]) -> Operation:
    """Record a read-only job (preflight, refresh, diagnose, sync) and hand it to a worker."""
    try:
        if kind not in JOB_PERMS:
            raise InvalidRequest(f"{kind!r} is not a job Keyward runs.")
        _require(actor, JOB_PERMS[kind], kind=kind, account=account)
        clean = _validate(kind, account, params)
        return _create(actor=actor, account=account, kind=kind, params=clean)
    except RequestRefused as exc:
        _record_refusal(actor, kind, account, params, exc)
        raise


def _require(actor: Actor, perm: str, *, kind: str, account: Account | None) -> None:
    if not may(actor, perm):
        who = actor.username or "this user"
        raise NotAllowed(f"{who} may not {_kind_label(kind).lower()}: the role does not allow it ({perm}).")


def _create(*, actor: Actor, account: Account | None, kind: str, params: dict[str, Any]) -> Operation:
    if account is not None and kind in Operation.CHANGE_KINDS:
        _refuse_if_busy(account)
    try:
        with transaction.atomic():
            operation = Operation.objects.create(
                kind=kind,
                account=account,
                requested_by=actor.user,
                actor=actor.username,
                actor_role=actor.role,
                source=actor.source,
                source_detail=actor.detail or actor.ip,
                params=params,
                state_before=snapshot(account) if account is not None else None,
            )
            audit.record(
                actor=actor,
                action="operation.requested",
                outcome="requested",
                target=account.arm_id if account is not None else params.get("vault_uri", ""),
                key_id=_key_id_of(params),
                operation=operation,
                before=operation.state_before,
                message=f"{_kind_label(kind)} requested.",
            )
            # Not delay_on_commit: a broker that is down must leave the row queued, not fail the request.
            transaction.on_commit(lambda: publish(operation.pk))
    except IntegrityError as exc:
        # Two requests raced past the check above; the database constraint let exactly one in.
        if account is not None:
            _refuse_if_busy(account)
        raise _not_recorded(kind) from exc  # not the race: the store refused the rows (a trigger, a constraint)
    except DatabaseError as exc:
        raise _not_recorded(kind) from exc
    return operation


def _not_recorded(kind: str) -> NotRecorded:
    log.exception("%s not recorded: the database refused the operation row or its audit event", kind)
    return NotRecorded(
        f"{_kind_label(kind)} was not started: Keyward could not write it to its audit trail, so nothing "
        "was changed and nothing was sent to Azure. Try again in a moment; if this persists, ask whoever "
        "runs Keyward to check its database."
    )


def _refuse_if_busy(account: Account) -> None:
    running = (
        Operation.objects.filter(account=account, kind__in=Operation.CHANGE_KINDS, status__in=Operation.ACTIVE_STATUSES)
        .order_by("created_at")
        .first()
    )
    if running is not None:
        raise OperationConflict(
            f"{account.name} already has a change in progress: {running} ({running.get_status_display().lower()}, "
            f"asked by {running.actor}). Wait for it to finish, then try again.",
            operation=running,
        )


def _record_refusal(
    actor: Actor, kind: str, account: Account | None, params: dict[str, Any], exc: RequestRefused
) -> None:
    audit.record(
        actor=actor,
        action="access.refused" if isinstance(exc, NotAllowed) else "operation.requested",
        outcome="refused",
        target=account.arm_id if account is not None else "",
        operation=getattr(exc, "operation", None),
        message=f"{_kind_label(kind)} refused: {exc}",
    )


def publish(operation_id: int) -> bool:
    """Send the operation's task to the broker; False (row left queued for the sweeper) if it cannot."""
    from encryption.tasks import run_operation

    try:
        run_operation.delay(operation_id)
    except Exception:  # kombu raises many types for an unreachable broker; all mean "not sent"
        log.warning("operation %s stays queued: the broker did not take the task", operation_id, exc_info=True)
        return False
    Operation.objects.filter(pk=operation_id).update(enqueued_at=timezone.now())
    return True


def is_published(operation: Operation) -> bool:
    operation.refresh_from_db(fields=["enqueued_at", "status"])
    return operation.enqueued_at is not None or operation.status != Operation.Status.QUEUED


# Parameters


def _validate(kind: str, account: Account | None, params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        raise InvalidRequest("Parameters must be a set of named values.")
    allowed = _PARAMS[kind]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise InvalidRequest(f"Unexpected parameter {unknown[0]!r} for {_kind_label(kind).lower()}.")
    if kind not in (Kind.ROTATE_KEY, Kind.SYNC) and account is None:
        raise InvalidRequest(f"{_kind_label(kind)} needs an account.")
    if account is not None and not isinstance(account, Account):
        raise InvalidRequest("Unknown account.")
    return _VALIDATORS[kind](account, params)


def _key_params(account: Account | None, params: dict[str, Any]) -> dict[str, Any]:
    key = _parse_key(params.get("key_uri"))
    subscription_id = params.get("vault_subscription_id") or (account.subscription.subscription_id if account else "")
    if not isinstance(subscription_id, str) or not SUBSCRIPTION_RE.match(subscription_id.lower()):
        raise InvalidRequest("The key vault's subscription must be a subscription id (a GUID).")
    subscription_id = subscription_id.lower()
    if not Subscription.objects.filter(subscription_id__iexact=subscription_id).exists():
        raise InvalidRequest(f"Keyward does not know subscription {subscription_id}; sync from Azure first.")
    return {"key_uri": key.id, "vault_subscription_id": subscription_id}


def _parse_key(value: Any) -> Any:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest("Enter the key's URI, like https://{vault}.vault.azure.net/keys/{name}.")
    try:
        return parse_key_uri(value)
    except InvalidKeyUri as exc:
        raise InvalidRequest(str(exc)) from None


def _needs_cmk(account: Account | None, what: str) -> None:
    if account is not None and not account.uses_cmk:
        raise InvalidRequest(f"{account.name} uses Microsoft-managed keys, so there is no key to {what}.")


def _enable_cmk(account: Account | None, params: dict[str, Any]) -> dict[str, Any]:
    return _key_params(account, params)


def _change_key(account: Account | None, params: dict[str, Any]) -> dict[str, Any]:
    _needs_cmk(account, "change (enable customer-managed keys instead)")
    return _key_params(account, params)


def _update_version(account: Account | None, params: dict[str, Any]) -> dict[str, Any]:
    _needs_cmk(account, "update")
    version = params.get("version")
    if not isinstance(version, str) or not VERSION_RE.match(version.strip().lower()):
        raise InvalidRequest("A key version is 32 hexadecimal characters, as in the last part of a key URI.")
    return {"version": version.strip().lower()}


def _rotate_key(account: Account | None, params: dict[str, Any]) -> dict[str, Any]:
    vault_uri, key_name = params.get("vault_uri"), params.get("key_name")
    if account is not None and not vault_uri and not key_name:
        _needs_cmk(account, "rotate")
        vault_uri, key_name = account.key_vault_uri, account.key_name
    if not isinstance(vault_uri, str) or not isinstance(key_name, str):
        raise InvalidRequest("Rotation needs the key vault's URI and the key's name.")
    key = _parse_key(f"{vault_uri.rstrip('/')}/keys/{key_name}")
    update_accounts = params.get("update_accounts", False)
    if not isinstance(update_accounts, bool):
        raise InvalidRequest("update_accounts must be true or false.")
    return {"vault_uri": key.vault_uri, "key_name": key.name, "update_accounts": update_accounts}


def _revoke_access(account: Account | None, params: dict[str, Any]) -> dict[str, Any]:
    _needs_cmk(account, "revoke")
    method = params.get("method", "access_policy")
    if method not in REVOKE_METHODS:
        raise InvalidRequest("Revoke access either by removing the access (access_policy) or by disabling the key.")
    return {"method": method}


def _restore_access(account: Account | None, params: dict[str, Any]) -> dict[str, Any]:
    _needs_cmk(account, "restore access to")
    return {}


def _disable_cmk(account: Account | None, params: dict[str, Any]) -> dict[str, Any]:
    if account is not None and not account.uses_cmk:
        raise InvalidRequest(f"{account.name} already uses Microsoft-managed keys.")
    return {}


def _no_params(account: Account | None, params: dict[str, Any]) -> dict[str, Any]:
    return {}


_PARAMS: dict[str, tuple[str, ...]] = {
    Kind.ENABLE_CMK: ("key_uri", "vault_subscription_id"),
    Kind.CHANGE_KEY: ("key_uri", "vault_subscription_id"),
    Kind.UPDATE_VERSION: ("version",),
    Kind.ROTATE_KEY: ("vault_uri", "key_name", "update_accounts"),
    Kind.REVOKE_ACCESS: ("method",),
    Kind.RESTORE_ACCESS: (),
    Kind.DISABLE_CMK: (),
    Kind.PREFLIGHT: ("key_uri", "vault_subscription_id"),
    Kind.REFRESH: (),
    Kind.DIAGNOSE: (),
    Kind.SYNC: (),
}
_VALIDATORS: dict[str, Callable[[Account | None, dict[str, Any]], dict[str, Any]]] = {
    Kind.ENABLE_CMK: _enable_cmk,
    Kind.CHANGE_KEY: _change_key,
    Kind.UPDATE_VERSION: _update_version,
    Kind.ROTATE_KEY: _rotate_key,
    Kind.REVOKE_ACCESS: _revoke_access,
    Kind.RESTORE_ACCESS: _restore_access,
    Kind.DISABLE_CMK: _disable_cmk,
    Kind.PREFLIGHT: _key_params,
    Kind.REFRESH: _no_params,
    Kind.DIAGNOSE: _no_params,
    Kind.SYNC: _no_params,
}


def _kind_label(kind: Any) -> str:
    if not isinstance(kind, str):  # hostile JSON: say nothing of what was sent
        return "That operation"
    return str(dict(Operation.Kind.choices).get(kind, kind))


def _key_id_of(params: dict[str, Any]) -> str:
    if params.get("key_uri"):
        return str(params["key_uri"])
    if params.get("vault_uri") and params.get("key_name"):
        return f"{str(params['vault_uri']).rstrip('/')}/keys/{params['key_name']}"
    return ""


# Snapshots


def snapshot(account: Account) -> dict[str, Any]:
    """The encryption state of an account as the mirror holds it: what 'before' and 'after' record."""
    return {
        "key_source": account.key_source,
        "key_vault_uri": account.key_vault_uri,
        "key_name": account.key_name,
        "key_version": account.key_version,
        "identity_type": account.identity_type,
        "principal_id": account.principal_id,
        "sku": account.sku,
        "provisioning_state": account.provisioning_state,
        "data_readable": account.data_readable,
        "last_synced_at": account.last_synced_at.isoformat() if account.last_synced_at else None,
    }


# The sweeper


@dataclass
class SweepReport:
    resent: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def sweep_operations() -> SweepReport:
    """Re-send queued rows the broker lost and take back running rows whose worker's lease expired.

    A row past OPERATION_MAX_DELIVERIES is failed with a reason instead of being sent again, so an
    operation that kills its worker every time ends rather than looping.
    """
    now = timezone.now()
    report = SweepReport()
    resend_before = now - timedelta(seconds=settings.OPERATION_REQUEUE_SECONDS)
    unsent = Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=resend_before)
    lost = Operation.objects.filter(unsent, status=Operation.Status.QUEUED, created_at__lt=now - _grace())
    for operation_id in lost.values_list("pk", flat=True):
        if publish(operation_id):
            report.resent.append(operation_id)
    expired = Operation.objects.filter(status=Operation.Status.RUNNING, lease_expires_at__lt=now)
    for operation in expired:
        if operation.deliveries >= settings.OPERATION_MAX_DELIVERIES:
            from encryption.operations import fail_abandoned

            if fail_abandoned(operation):
                report.failed.append(operation.pk)
        elif publish(operation.pk):
            report.resent.append(operation.pk)
    if report.resent or report.failed:
        log.info("sweeper re-sent %s and failed %s", report.resent, report.failed)
    return report


def _grace() -> timedelta:
    return timedelta(seconds=PUBLISH_GRACE_SECONDS)


# The periodic sync


def request_periodic_sync() -> Operation | None:
    """Ask for an estate sync as Keyward itself (so it is audited), unless one is already waiting or running."""
    if Operation.objects.filter(kind=Kind.SYNC, account=None, status__in=Operation.ACTIVE_STATUSES).exists():
        return None
    return request_job(actor=Actor.system(detail="beat"), account=None, kind=Kind.SYNC, params={})
