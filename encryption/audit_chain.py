"""The audit chain's canonical form and hash, and a fast reader that recomputes the hash of every event.

Canonical form of an event (what its `hash` is the SHA-256, in hex, of, encoded as ASCII):

    json.dumps({"seq": int, "created_at": "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC, always 6 digits),
                "actor": str, "actor_role": str, "source": str, "source_ip": str, "source_detail": str,
                "action": str, "target": str, "key_id": str, "operation": int | null (the operation id),
                "outcome": str, "before": JSON, "after": JSON, "request_ids": [str, ...],
                "message": str, "prev_hash": str},
               sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)

`prev_hash` is the hash of the event before (64 zeros for event 1). Anyone can recompute it offline from
an export with nothing but a JSON library and SHA-256.

Speed: verification recomputes this for every event, so the top level is a fixed template whose keys are
already in sorted order (only the values are encoded per event; a test checks it is byte for byte
json.dumps), and `hashed_rows` reads with a plain cursor in keyset batches, skipping the ORM's per-row
conversions: the JSON columns arrive as text and are re-encoded once, canonically.
"""

from __future__ import annotations

import hashlib
import json
import queue
import re
import threading
from collections.abc import Generator, Iterator
from contextlib import closing
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import Any

from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper

GENESIS_HASH = "0" * 64

_Rows = list[tuple[Any, ...]]

# The content fields, in the order event_hash() takes them (and values_list reads them).
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

# The top-level keys in sorted order, and the template filled in that order by _canonical().
_KEYS = (
    "action",
    "actor",
    "actor_role",
    "after",
    "before",
    "created_at",
    "key_id",
    "message",
    "operation",
    "outcome",
    "prev_hash",
    "request_ids",
    "seq",
    "source",
    "source_detail",
    "source_ip",
    "target",
)
assert list(_KEYS) == sorted(("operation" if f == "operation_id" else f) for f in HASHED_FIELDS)
_TEMPLATE = "{" + ",".join(f'"{k}":%s' for k in _KEYS) + "}"

# One encoder for nested JSON (json.dumps with options builds a new JSONEncoder on every call).
canonical_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode
_quote = encode_basestring_ascii


def timestamp(value: datetime | str) -> str:
    """The canonical UTC timestamp; naive datetimes are UTC, and so is the text SQLite stores."""
    if isinstance(value, str):
        if value.endswith("Z"):  # already canonical (formatted by PostgreSQL)
            return value
        # "YYYY-MM-DD HH:MM:SS[.ffffff]", UTC, as Django stores it in SQLite
        return value.replace(" ", "T", 1) + ("Z" if len(value) > 19 else ".000000Z")
    if value.utcoffset():
        value = value.astimezone(UTC)
    # isoformat is several times faster than strftime.
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _json_text(value: Any) -> str:
    """Canonical JSON of a column value: a Python value, or JSON text as a plain cursor returns it."""
    if value is None:
        return "null"
    if isinstance(value, str):
        if value == "[]" or value == "null":
            return value
        value = json.loads(value)
    return canonical_json(value)


def _canonical(
    seq: int,
    created_at: str,
    actor: str,
    actor_role: str,
    source: str,
    source_ip: str,
    source_detail: str,
    action: str,
    target: str,
    key_id: str,
    operation_id: int | None,
    outcome: str,
    before: str,
    after: str,
    request_ids: str,
    message: str,
    prev_hash: str,
) -> str:
    """The canonical text from the canonical timestamp and JSON texts plus the raw scalar values."""
    q = _quote
    return _TEMPLATE % (
        q(action),
        q(actor),
        q(actor_role),
        after,
        before,
        q(created_at),
        q(key_id),
        q(message),
        "null" if operation_id is None else int(operation_id),
        q(outcome),
        q(prev_hash),
        request_ids,
        int(seq),
        q(source),
        q(source_detail),
        q(source_ip),
        q(target),
    )


def canonical_text(row: tuple[Any, ...]) -> str:
    """The canonical JSON of an event given as Python values in HASHED_FIELDS order."""
    (seq, created_at, actor, actor_role, source, source_ip, source_detail, action, target, key_id, operation_id,
     outcome, before, after, request_ids, message, prev_hash) = row  # fmt: skip
    return _canonical(
        seq, timestamp(created_at), actor, actor_role, source, source_ip, source_detail, action, target, key_id,
        operation_id, outcome, _json_text_of_value(before), _json_text_of_value(after),
        _json_text_of_value(request_ids), message, prev_hash,
    )  # fmt: skip


def _json_text_of_value(value: Any) -> str:
    # Python values (a JSON string value stays a string: it is not re-parsed as JSON text).
    return "null" if value is None else canonical_json(value)


def event_hash(row: tuple[Any, ...]) -> str:
    """SHA-256 (hex) of an event given as Python values in HASHED_FIELDS order."""
    return hashlib.sha256(canonical_text(row).encode("ascii")).hexdigest()


def checkpoint_payload(seq: int, hash_: str) -> bytes:
    """What a checkpoint's Ed25519 signature covers."""
    return f"keyward-audit-checkpoint|{seq}|{hash_}".encode("ascii")


# A JSON array of plain strings (request ids): its compact form only drops the space after each comma.
_PLAIN_STRING_LIST = re.compile(r'\[(?:"[\w.:/+=-]*"(?:, ?"[\w.:/+=-]*")*)?\]', re.ASCII)


class _CachedJsonText:
    """_json_text for a walk over the trail: before/after states repeat a lot, so their canonical text is
    remembered (up to a bound, to cap memory), and lists of plain strings skip the JSON round trip."""

    LIMIT = 50_000

    def __init__(self) -> None:
        self.cache: dict[str, str] = {}

    def __call__(self, value: Any) -> str:
        if not isinstance(value, str):
            return _json_text(value)
        canonical = self.cache.get(value)
        if canonical is None:
            if _PLAIN_STRING_LIST.fullmatch(value):
                canonical = value.replace(", ", ",")
            else:
                canonical = canonical_json(json.loads(value))
            if len(self.cache) < self.LIMIT:
                self.cache[value] = canonical
        return canonical


_SELECT = (
    "SELECT seq, {created_at}, actor, actor_role, source, source_ip, source_detail, action, target, key_id, "
    "operation_id, outcome, before, after, request_ids, message, prev_hash, hash FROM encryption_auditevent "
)
# PostgreSQL formats the timestamp itself: cheaper than building a datetime per row and formatting it.
_CREATED_AT = {"postgresql": "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"}


def hashed_rows(using: str, batch_size: int = 10_000) -> Iterator[tuple[int, str, str, str]]:
    """(seq, recomputed hash, stored prev_hash, stored hash) of every event, in seq order.

    Keyset batches on the unique seq index (no OFFSET), with a plain cursor: no model instances and no
    per-row ORM conversion, which is most of the cost of a walk over millions of rows.
    """
    connection = connections[using]
    select = _SELECT.format(created_at=_CREATED_AT.get(connection.vendor, "created_at"))
    sha256, ts, q, template = hashlib.sha256, timestamp, _quote, _TEMPLATE
    json_text = _CachedJsonText()
    if connection.vendor == "postgresql":
        batches = _batches_ahead(connection, select, batch_size)
    else:
        batches = _batches(connection, select, batch_size)
    with closing(batches):
        for rows in batches:
            for (seq, created_at, actor, actor_role, source, source_ip, source_detail, action, target, key_id,
                 operation_id, outcome, before, after, request_ids, message, prev_hash, stored) in rows:  # fmt: skip
                # The same values in the same (sorted-key) order as _canonical(); inlined for speed.
                text = template % (
                    q(action), q(actor), q(actor_role), json_text(after), json_text(before), q(ts(created_at)),
                    q(key_id), q(message), "null" if operation_id is None else int(operation_id), q(outcome),
                    q(prev_hash), json_text(request_ids), int(seq), q(source), q(source_detail), q(source_ip),
                    q(target),
                )  # fmt: skip
                yield seq, sha256(text.encode("ascii")).hexdigest(), prev_hash, stored


def _fetch_batches(cursor: Any, select: str, batch_size: int) -> Iterator[_Rows]:
    last: int | None = None
    while True:
        if last is None:
            cursor.execute(select + "ORDER BY seq LIMIT %s", [batch_size])
        else:
            cursor.execute(select + "WHERE seq > %s ORDER BY seq LIMIT %s", [last, batch_size])
        rows: list[tuple[Any, ...]] = cursor.fetchall()
        yield rows
        if len(rows) < batch_size:
            return
        last = rows[-1][0]


def _batches(connection: BaseDatabaseWrapper, select: str, batch_size: int) -> Generator[_Rows, None, None]:
    with connection.cursor() as cursor:
        yield from _fetch_batches(cursor, select, batch_size)


_DONE = object()


def _batches_ahead(connection: BaseDatabaseWrapper, select: str, batch_size: int) -> Generator[_Rows, None, None]:
    """The same batches, the next one fetched by a thread while the caller hashes this one.

    PostgreSQL reads and encodes a batch in about the time Python takes to hash one, so overlapping the two
    nearly doubles the rate. The thread uses the same psycopg connection (same transaction, so it sees what
    the caller sees; psycopg serialises its use) while the caller only hashes; it is stopped and joined
    before this generator returns, however it ends.
    """
    connection.ensure_connection()
    raw = connection.connection
    handoff: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item: Any) -> None:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def produce() -> None:
        try:
            with raw.cursor() as cursor:
                for rows in _fetch_batches(cursor, select, batch_size):
                    if stop.is_set():
                        return
                    put(rows)
        except BaseException as exc:  # handed to the caller, raised in its thread
            put(exc)
        finally:
            put(_DONE)

    thread = threading.Thread(target=produce, name="audit-verify-fetch", daemon=True)
    thread.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
