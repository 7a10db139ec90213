"""The tamper-evident audit trail: append to the hash chain, sign checkpoints, verify.

The chain
    Events are numbered 1, 2, 3, ... with no gaps (`seq`). Each stores `prev_hash` (the hash of the event
    before it; 64 zeros for event 1) and `hash`, the SHA-256 of its canonical form, documented in
    encryption/audit_chain.py (sorted-key compact ASCII JSON; timestamps in UTC with microseconds). It
    reads the same from SQLite and PostgreSQL because record() stores only values both return unchanged:
    strings without NUL and cut to their column's length, JSON with string keys and no NaN, and whole-number
    floats stored as ints (jsonb prints 1e17 as 100000000000000000, which reads back as an int).

Appends
    record() runs in `transaction.atomic()`, joining the caller's transaction, so a change and its audit
    row commit together or not at all. Writers are serialised so the chain never forks: on PostgreSQL by
    a row lock on the single AuditChainHead row (held until the caller's transaction ends, so keep
    transactions that record short); on SQLite by the IMMEDIATE transaction every atomic block starts
    (settings.SQLITE_OPTIONS). The unique `seq` and `hash` columns are the last line of defence.

Checkpoints
    A chain cannot show its newest rows cut off, so every AUDIT_CHECKPOINT_EVERY events (and on demand)
    the head is signed with the server's Ed25519 key: "keyward-audit-checkpoint|{seq}|{hash}". Verification
    compares every checkpoint with the event at its seq and checks the latest checkpoint's signature.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections, router, transaction
from django.db.models import Max, Min
from django.http import HttpRequest
from django.utils import timezone

from encryption.actors import Actor
from encryption.audit_chain import GENESIS_HASH, HASHED_FIELDS, checkpoint_payload, event_hash, hashed_batches
from encryption.audit_walk import ChainBroken, ChainWalk, seq_ranges, walk_ranges
from encryption.models import AuditChainHead, AuditCheckpoint, AuditEvent, Operation
from encryption.scrub import scrub, scrub_text
from encryption.signing import public_key_fingerprint, public_key_pem, sign, verify_signature

__all__ = [
    "ChainReport",
    "GENESIS_HASH",
    "HASHED_FIELDS",
    "checkpoint_payload",
    "event_hash",
    "public_key_fingerprint",
    "public_key_pem",
    "record",
    "record_refusal",
    "sign",
    "verify_chain",
    "verify_signature",
    "write_checkpoint",
]

log = logging.getLogger(__name__)

_TEXT_FIELDS = ("actor", "actor_role", "source", "source_ip", "source_detail", "action", "target", "key_id")
_MAX_LENGTHS: dict[str, int | None] = {
    f: getattr(AuditEvent._meta.get_field(f), "max_length", None) for f in (*_TEXT_FIELDS, "outcome")
}


# Normalising what is stored, so it reads back exactly as it was hashed


def _clean_str(value: str) -> str:
    # PostgreSQL refuses NUL in text, and lone surrogates in UTF-8.
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _normalise_json(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return int(value) if value.is_integer() else value
    if isinstance(value, str):
        return _clean_str(value)
    if isinstance(value, dict):
        return {_clean_str(str(k)): _normalise_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise_json(v) for v in value]
    return value


def _json_value(value: Any, *, action: str, field: str) -> Any:
    if value is None:
        return None
    # Dates, UUIDs, Decimals and tuples become JSON first (as the JSONField would store them).
    plain = _normalise_json(json.loads(json.dumps(value, cls=DjangoJSONEncoder)))
    return _scrubbed(plain, scrub(plain), action=action, field=field)


def _scrubbed(original: Any, cleaned: Any, *, action: str, field: str) -> Any:
    if cleaned != original:
        # Names the code path that tried to record a secret, never the secret itself.
        log.warning("audit: removed what looked like a secret from the %s of a %r event", field, action)
    return cleaned


def _fit(field: str, value: str) -> str:
    max_length = _MAX_LENGTHS[field]
    value = _clean_str(value)
    return value[:max_length] if max_length else value


# Appending


def record(
    *,
    actor: Actor,
    action: str,
    outcome: str,
    target: str = "",
    key_id: str = "",
    operation: Operation | None = None,
    before: Any = None,
    after: Any = None,
    request_ids: Iterable[str] = (),
    message: str = "",
) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction when there is one."""
    if outcome not in AuditEvent.Outcome.values:
        raise ValueError(f"unknown audit outcome {outcome!r}")
    using = router.db_for_write(AuditEvent)
    event = AuditEvent(
        created_at=timezone.now(),
        actor=_fit("actor", actor.username),
        actor_role=_fit("actor_role", actor.role),
        source=_fit("source", actor.source),
        source_ip=_fit("source_ip", actor.ip),
        source_detail=_fit("source_detail", scrub_text(actor.detail)),
        action=_fit("action", action),
        target=_fit("target", target),
        key_id=_fit("key_id", key_id),
        operation=operation,
        outcome=outcome,
        before=_json_value(before, action=action, field="before"),
        after=_json_value(after, action=action, field="after"),
        request_ids=[_clean_str(str(r)) for r in ([request_ids] if isinstance(request_ids, str) else request_ids)],
        message=_scrubbed(_clean_str(message), scrub_text(_clean_str(message)), action=action, field="message"),
    )
    with transaction.atomic(using=using):
        _lock_chain(using)
        last = AuditEvent.objects.using(using).order_by("-seq").values_list("seq", "hash").first()
        event.seq, event.prev_hash = (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)
        event.hash = event_hash(tuple(getattr(event, f) for f in HASHED_FIELDS))
        event.save(using=using, force_insert=True)
        # An existing checkpoint at this seq means the trail was cut back below it: keep that evidence.
        checkpoints = AuditCheckpoint.objects.using(using)
        if event.seq % settings.AUDIT_CHECKPOINT_EVERY == 0 and not checkpoints.filter(seq=event.seq).exists():
            _sign_checkpoint(event.seq, event.hash, using)
    return event


def record_refusal(request: HttpRequest, *, perm: str) -> AuditEvent:
    """Record a 403: who tried what (method and path, never the query string) without the permission."""
    return record(
        actor=Actor.from_request(request),
        action="access.refused",
        outcome=AuditEvent.Outcome.REFUSED,
        target=request.path,
        message=f"{request.method} {request.path} refused: the role lacks the permission {perm}.",
    )


def _lock_chain(using: str) -> None:
    """Serialise appenders (see the module docstring); a no-op lock on SQLite, already serialised."""
    heads = AuditChainHead.objects.using(using)
    if heads.select_for_update().filter(pk=1).exists():
        return
    # First append ever, or the table was emptied (tests flush it): create the row, racing safely.
    heads.bulk_create([AuditChainHead(pk=1)], ignore_conflicts=True)
    heads.select_for_update().filter(pk=1).exists()


# Checkpoints


def write_checkpoint() -> AuditCheckpoint | None:
    """Sign the current head of the chain now (None when the trail is empty)."""
    using = router.db_for_write(AuditEvent)
    with transaction.atomic(using=using):
        _lock_chain(using)
        last = AuditEvent.objects.using(using).order_by("-seq").values_list("seq", "hash").first()
        if last is None:
            return None
        existing = AuditCheckpoint.objects.using(using).filter(seq=last[0]).first()
        return existing or _sign_checkpoint(last[0], last[1], using)


def _sign_checkpoint(seq: int, hash_: str, using: str) -> AuditCheckpoint:
    return AuditCheckpoint.objects.using(using).create(
        seq=seq,
        event_hash=hash_,
        signature=sign(checkpoint_payload(seq, hash_)),
        public_key_fingerprint=public_key_fingerprint(),
    )


# Verification


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    count: int
    first_bad_seq: int | None = None
    reason: str = ""
    checkpoint_seq: int | None = None
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    seconds: float = 0.0
    checked_at: datetime | None = None
    processes: int = 1  # how many processes walked the trail (several on a long PostgreSQL trail)

    @property
    def events_per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


def verify_chain(*, batch_size: int = 10_000) -> ChainReport:
    """Walk the whole chain in seq order and check it against the signed checkpoints."""
    started = time.perf_counter()
    checked_at = timezone.now()
    using = router.db_for_read(AuditEvent)
    walk = ChainWalk(dict(AuditCheckpoint.objects.using(using).values_list("seq", "event_hash")))
    latest = AuditCheckpoint.objects.using(using).order_by("-seq").first()
    processes = 1
    try:
        processes = _walk_side_by_side(using, walk, batch_size)
        # The rest in this process: all of it, or what the processes did not vouch for, or appended since.
        for rows, computed in hashed_batches(using, batch_size, after=walk.head_seq if walk.count else None):
            walk.take(rows, computed)
        if latest is not None:
            _check_latest_checkpoint(latest, walk.head_seq)
    except ChainBroken as broken:
        return ChainReport(
            ok=False,
            count=walk.count,
            first_bad_seq=broken.seq,
            reason=broken.reason,
            checkpoint_seq=latest.seq if latest else None,
            head_seq=walk.head_seq,
            head_hash=walk.head_hash,
            seconds=time.perf_counter() - started,
            checked_at=checked_at,
            processes=processes,
        )
    return ChainReport(
        ok=True,
        count=walk.count,
        checkpoint_seq=latest.seq if latest else None,
        head_seq=walk.head_seq,
        head_hash=walk.head_hash,
        seconds=time.perf_counter() - started,
        checked_at=checked_at,
        processes=processes,
    )


def _walk_side_by_side(using: str, walk: ChainWalk, batch_size: int) -> int:
    """On a long PostgreSQL trail, advance the walk over the seq ranges that worker processes found sound.

    It stops at the first range that is not sound or does not join the one before; the caller walks on
    from there in this process, which names the first bad event exactly as a one-process walk would.
    Returns how many processes walked (1: none were started).
    """
    connection = connections[using]
    processes = settings.AUDIT_VERIFY_PROCESSES
    if connection.vendor != "postgresql" or processes < 2:
        return 1
    bounds = AuditEvent.objects.using(using).aggregate(low=Min("seq"), high=Max("seq"))
    low, high = bounds["low"], bounds["high"]
    if low is None or high - low + 1 < max(settings.AUDIT_VERIFY_PARALLEL_FROM, processes):
        return 1
    ranges = seq_ranges(low, high, processes)
    summaries = walk_ranges(connection.get_connection_params(), ranges, walk.checkpoints, batch_size)
    if summaries is None:
        return 1
    for summary in summaries:
        if not walk.join(summary):
            break
    return len(ranges)


def _check_latest_checkpoint(checkpoint: AuditCheckpoint, head_seq: int) -> None:
    if checkpoint.seq > head_seq:
        raise ChainBroken(
            head_seq + 1,
            f"the trail was cut: checkpoint #{checkpoint.seq} was signed but the trail ends at #{head_seq}",
        )
    payload = checkpoint_payload(checkpoint.seq, checkpoint.event_hash)
    if checkpoint.public_key_fingerprint != public_key_fingerprint():
        raise ChainBroken(checkpoint.seq, f"checkpoint #{checkpoint.seq} was signed by another key than the server's")
    if not verify_signature(public_key_pem(), payload, checkpoint.signature):
        raise ChainBroken(checkpoint.seq, f"checkpoint #{checkpoint.seq} has an invalid signature")
