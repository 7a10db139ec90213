"""How the `encryption` command prints accounts and operations, for people and as JSON."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from encryption.models import Account, Operation, OperationStep

_MARKS: dict[str, str] = {
    OperationStep.Status.SUCCEEDED: "done",
    OperationStep.Status.SKIPPED: "already done",
    OperationStep.Status.FAILED: "FAILED",
    OperationStep.Status.RUNNING: "running",
}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def account_dict(account: Account) -> dict[str, Any]:
    return {
        "arm_id": account.arm_id,
        "name": account.name,
        "subscription_id": account.subscription.subscription_id,
        "subscription": account.subscription.display_name,
        "location": account.location,
        "sku": account.sku,
        "encryption": account.encryption_type_label,
        "key_source": account.key_source,
        "key_uri": account.key_uri,
        "identity_type": account.identity_type,
        "principal_id": account.principal_id,
        "data_readable": account.data_readable,
        "data_access_reason": account.data_access_reason,
        "last_synced_at": _iso(account.last_synced_at),
    }


def account_lines(account: Account) -> list[str]:
    readable = {True: "readable", False: "NOT readable", None: "not probed yet"}[account.data_readable]
    lines = [
        f"{account.name}  ({account.arm_id})",
        f"  Subscription:    {account.subscription.display_name} ({account.subscription.subscription_id})",
        f"  Location, SKU:   {account.location}, {account.sku}",
        f"  Encryption type: {account.encryption_type_label}",
    ]
    if account.uses_cmk:
        lines.append(f"  Key:             {account.key_uri}")
    lines += [
        f"  Identity:        {account.identity_type}" + (f" ({account.principal_id})" if account.principal_id else ""),
        f"  Data:            {readable}" + (f": {account.data_access_reason}" if account.data_access_reason else ""),
        f"  Last read:       {_iso(account.last_synced_at) or 'never'}",
    ]
    return lines


def step_dict(step: OperationStep) -> dict[str, Any]:
    return {
        "name": step.name,
        "label": step.label,
        "status": step.status,
        "detail": step.detail,
        "error_code": step.error_code,
        "duration_ms": step.duration_ms,
        "request_ids": step.request_ids,
    }


def step_line(step: OperationStep) -> str:
    line = f"  [{_MARKS.get(step.status, step.status)}] {step.label}"
    return f"{line}: {step.detail}" if step.detail else line


def operation_dict(operation: Operation) -> dict[str, Any]:
    return {
        "id": operation.pk,
        "kind": operation.kind,
        "status": operation.status,
        "account": operation.account.arm_id if operation.account else None,
        "actor": operation.actor,
        "params": operation.params,
        "reason": operation.reason,
        "error_code": operation.error_code,
        "result": operation.result,
        "state_before": operation.state_before,
        "state_after": operation.state_after,
        "request_ids": operation.request_ids,
        "patch_attempts": operation.patch_attempts,
        "deliveries": operation.deliveries,
        "created_at": _iso(operation.created_at),
        "started_at": _iso(operation.started_at),
        "finished_at": _iso(operation.finished_at),
        "steps": [step_dict(s) for s in operation.steps.all()],
    }


def operation_lines(operation: Operation) -> list[str]:
    where = f" on {operation.account.name}" if operation.account else ""
    lines = [f"Operation #{operation.pk} {operation.get_kind_display()}{where}: {operation.status}"]
    result = operation.result or {}
    for check in result.get("checks", []) if operation.kind == Operation.Kind.PREFLIGHT else []:
        action = f" {check.get('action')}" if check.get("action") and check.get("state") == "blocks" else ""
        lines.append(f"  [{check.get('state')}] {check.get('label')}: {check.get('detail', '')}{action}")
    if operation.kind == Operation.Kind.DIAGNOSE:
        readable = result.get("readable")
        lines.append(f"  Data readable: {'unknown' if readable is None else 'yes' if readable else 'no'}")
        for cause in result.get("causes", []):
            lines.append(f"  - {cause.get('summary')}: {cause.get('detail', '')} {cause.get('action', '')}".rstrip())
    if operation.reason:
        lines.append(f"Reason: {operation.reason}")
    return lines
