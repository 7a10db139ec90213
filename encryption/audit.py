"""The tamper-evident audit trail: append to the hash chain, sign checkpoints, verify.

The chain
    Events are numbered 1, 2, 3, ... with no gaps (`seq`). Each stores `prev_hash` (the hash of the event
    before it; 64 zeros for event 1) and `hash`, the SHA-256 (hex) of this canonical form of its content:

        json.dumps({"seq": int, "created_at": "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC, always 6 digits),
                    "actor": str, "actor_role": str, "source": str, "source_ip": str, "source_detail": str,
                    "action": str, "target": str, "key_id": str, "operation": int | null (the operation id),
                    "outcome": str, "before": JSON, "after": JSON, "request_ids": [str, ...],
                    "message": str, "prev_hash": str},
                   sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)

    encoded as UTF-8 (plain ASCII, given ensure_ascii). It reads the same from SQLite and PostgreSQL
    because record() stores only values both return unchanged: strings without NUL and cut to their
    column's length, JSON with string keys and no NaN, and whole-number floats stored as ints (jsonb
    prints 1e17 as 100000000000000000, which reads back as an int; other floats read back unchanged).

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

import hashlib
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import router, transaction
from django.http import HttpRequest
from django.utils import timezone

from encryption.actors import Actor
from encryption.models import AuditChainHead, AuditCheckpoint, AuditEvent, Operation
from encryption.scrub import scrub, scrub_text
from encryption.signing import public_key_fingerprint, public_key_pem, sign, verify_signature

__all__ = [
    "ChainReport",
    "GENESIS_HASH",
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

GENESIS_HASH = "0" * 64

# The content fields in the order verify_chain() reads them with values_list.
HASHED_FIELDS = (
    "seq",
    "created_at",
    "actor",
    "actor_role",
    "source",
    "source_ip",
    "source_detail",
    "action",
    "target",
    "key_id",
    "operation_id",
    "outcome",
    "before",
    "after",
    "request_ids",
    "message",
    "prev_hash",
)
_TEXT_FIELDS = ("actor", "actor_role", "source", "source_ip", "source_detail", "action", "target", "key_id")
_MAX_LENGTHS: dict[str, int | None] = {
    f: getattr(AuditEvent._meta.get_field(f), "max_length", None) for f in (*_TEXT_FIELDS, "outcome")
}


# Hashing


def _timestamp(value: datetime) -> str:
    if value.utcoffset():
        value = value.astimezone(UTC)
    # isoformat is several times faster than strftime; verification formats every event's timestamp.
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


# One encoder for nested JSON (json.dumps with options builds a new JSONEncoder on every call).
_canonical_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode
_quote = encode_basestring_ascii

# The top-level object always has the same keys, so its canonical text is a fixed template with the keys
# already in sorted order; only the values are encoded per event. This is byte for byte what
# json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True) gives (a test checks it),
# at a fraction of the cost, which is what lets verification walk >100,000 events a second.
_KEYS = sorted(("operation" if f == "operation_id" else f) for f in HASHED_FIELDS)
_TEMPLATE = "{" + ",".join(f'"{k}":%s' for k in _KEYS) + "}"


def _json_or_null(value: Any) -> str:
    return "null" if value is None else _canonical_json(value)


def canonical_text(row: tuple[Any, ...]) -> str:
    """The canonical JSON of an event given as a tuple in HASHED_FIELDS order (see the module docstring)."""
    (seq, created_at, actor, actor_role, source, source_ip, source_detail, action, target, key_id, operation_id,
     outcome, before, after, request_ids, message, prev_hash) = row  # fmt: skip
    values = {
        "seq": str(int(seq)),
        "created_at": _quote(_timestamp(created_at)),
        "actor": _quote(actor),
        "actor_role": _quote(actor_role),
        "source": _quote(source),
        "source_ip": _quote(source_ip),
        "source_detail": _quote(source_detail),
        "action": _quote(action),
        "target": _quote(target),
        "key_id": _quote(key_id),
        "operation": "null" if operation_id is None else str(int(operation_id)),
        "outcome": _quote(outcome),
        "before": _json_or_null(before),
        "after": _json_or_null(after),
        "request_ids": _canonical_json(request_ids),
        "message": _quote(message),
        "prev_hash": _quote(prev_hash),
    }
    return _TEMPLATE % tuple(values[k] for k in _KEYS)


def event_hash(row: tuple[Any, ...]) -> str:
    """SHA-256 (hex) of an event given as a tuple in HASHED_FIELDS order."""
    return hashlib.sha256(canonical_text(row).encode("ascii")).hexdigest()


def checkpoint_payload(seq: int, hash_: str) -> bytes:
    return f"keyward-audit-checkpoint|{seq}|{hash_}".encode("ascii")


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


def _json_value(value: Any) -> Any:
    if value is None:
        return None
    # Dates, UUIDs, Decimals and tuples become JSON first (as the JSONField would store them).
    plain = json.loads(json.dumps(value, cls=DjangoJSONEncoder))
    return scrub(_normalise_json(plain))


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
        before=_json_value(before),
        after=_json_value(after),
        request_ids=[_clean_str(str(r)) for r in ([request_ids] if isinstance(request_ids, str) else request_ids)],
        message=scrub_text(_clean_str(message)),
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

    @property
    def events_per_second(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


class _Broken(Exception):
    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


def verify_chain(*, batch_size: int = 10_000) -> ChainReport:
    """Walk the whole chain in seq order and check it against the signed checkpoints."""
    started = time.perf_counter()
    checked_at = timezone.now()
    using = router.db_for_read(AuditEvent)
    checkpoints = dict(AuditCheckpoint.objects.using(using).values_list("seq", "event_hash"))
    latest = AuditCheckpoint.objects.using(using).order_by("-seq").first()
    count, head_seq, head_hash = 0, 0, GENESIS_HASH
    try:
        for row in _rows(using, batch_size):
            seq = row[0]
            _check_event(row, head_seq, head_hash, checkpoints)
            count, head_seq, head_hash = count + 1, seq, row[-1]
        if latest is not None:
            _check_latest_checkpoint(latest, head_seq)
    except _Broken as broken:
        return ChainReport(
            ok=False,
            count=count,
            first_bad_seq=broken.seq,
            reason=broken.reason,
            checkpoint_seq=latest.seq if latest else None,
            head_seq=head_seq,
            head_hash=head_hash,
            seconds=time.perf_counter() - started,
            checked_at=checked_at,
        )
    return ChainReport(
        ok=True,
        count=count,
        checkpoint_seq=latest.seq if latest else None,
        head_seq=head_seq,
        head_hash=head_hash,
        seconds=time.perf_counter() - started,
        checked_at=checked_at,
    )


def _rows(using: str, batch_size: int) -> Iterator[tuple[Any, ...]]:
    """Every event as (HASHED_FIELDS..., hash), by keyset batches on seq (no OFFSET, no model instances)."""
    events = AuditEvent.objects.using(using).order_by("seq")
    after = None
    while True:
        batch_qs = events if after is None else events.filter(seq__gt=after)
        batch = list(batch_qs.values_list(*HASHED_FIELDS, "hash")[:batch_size])
        yield from batch
        if len(batch) < batch_size:
            return
        after = batch[-1][0]


def _check_event(row: tuple[Any, ...], prev_seq: int, prev_hash: str, checkpoints: dict[int, str]) -> None:
    seq, stored_prev, stored_hash = row[0], row[-2], row[-1]
    expected = prev_seq + 1
    if seq > expected:
        missing = f"#{expected}" if seq == expected + 1 else f"#{expected} to #{seq - 1}"
        raise _Broken(expected, f"event {missing} is missing (deleted): the chain jumps from #{prev_seq} to #{seq}")
    if seq < expected:
        raise _Broken(seq, f"event #{seq} is out of order: it comes after #{prev_seq}")
    if event_hash(row[:-1]) != stored_hash:
        raise _Broken(seq, f"event #{seq} was edited: its content no longer matches its hash")
    if stored_prev != prev_hash:
        raise _Broken(
            seq,
            f"event #{seq} does not chain to event #{prev_seq} (prev_hash differs): "
            f"#{seq} was inserted out of order, or #{prev_seq} was rewritten",
        )
    signed = checkpoints.get(seq)
    if signed is not None and signed != stored_hash:
        raise _Broken(seq, f"event #{seq} no longer has the hash signed in checkpoint #{seq}: the chain was rewritten")


def _check_latest_checkpoint(checkpoint: AuditCheckpoint, head_seq: int) -> None:
    if checkpoint.seq > head_seq:
        raise _Broken(
            head_seq + 1,
            f"the trail was cut: checkpoint #{checkpoint.seq} was signed but the trail ends at #{head_seq}",
        )
    payload = checkpoint_payload(checkpoint.seq, checkpoint.event_hash)
    if checkpoint.public_key_fingerprint != public_key_fingerprint():
        raise _Broken(checkpoint.seq, f"checkpoint #{checkpoint.seq} was signed by another key than the server's")
    if not verify_signature(public_key_pem(), payload, checkpoint.signature):
        raise _Broken(checkpoint.seq, f"checkpoint #{checkpoint.seq} has an invalid signature")
