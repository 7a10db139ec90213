"""Chain verification as the Verify page runs it: verify, remember the result, tell when it last ran.

The result is remembered as an `audit.verified` event, so "when was the trail last verified, by whom, with
what result" is itself part of the tamper-evident trail rather than a row anyone could quietly edit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from encryption import audit
from encryption.actors import Actor
from encryption.models import AuditEvent

ACTION = "audit.verified"


@dataclass(frozen=True)
class Verification:
    ok: bool
    count: int
    first_bad_seq: int | None
    reason: str
    checkpoint_seq: int | None
    at: datetime | None = None
    by: str = ""
    event_seq: int | None = None


def run(*, actor: Actor) -> Verification:
    """Verify the whole chain now and record the outcome."""
    report = audit.verify_chain()
    result = {
        "ok": report.ok,
        "count": report.count,
        "first_bad_seq": report.first_bad_seq,
        "reason": report.reason,
        "checkpoint_seq": report.checkpoint_seq,
    }
    message = (
        f"Audit chain verified: intact, {report.count} events"
        if report.ok
        else f"Audit chain verification failed at #{report.first_bad_seq}: {report.reason}"
    )
    event = audit.record(
        actor=actor,
        action=ACTION,
        outcome=AuditEvent.Outcome.SUCCEEDED if report.ok else AuditEvent.Outcome.FAILED,
        after=result,
        message=message,
    )
    return _from_event(event)


def last() -> Verification | None:
    """The most recent recorded verification, from the page or the `verify_audit` command."""
    event = AuditEvent.objects.filter(action=ACTION).order_by("-seq").first()
    return _from_event(event) if event is not None else None


def _from_event(event: AuditEvent) -> Verification:
    after: dict[str, Any] = event.after if isinstance(event.after, dict) else {}
    return Verification(
        ok=bool(after.get("ok", event.outcome == AuditEvent.Outcome.SUCCEEDED)),
        count=int(after.get("count") or 0),
        first_bad_seq=after.get("first_bad_seq"),
        reason=str(after.get("reason") or ""),
        checkpoint_seq=after.get("checkpoint_seq"),
        at=event.created_at,
        by=event.actor,
        event_seq=event.seq,
    )
