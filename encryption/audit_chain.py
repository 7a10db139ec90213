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
json.dumps). `hashed_batches` reads with a plain cursor in keyset batches, skipping the ORM's per-row
conversions (the database formats the timestamp, JSON columns arrive as text), hashes a whole batch in one
comprehension, and remembers the encoded form of values that repeat (actors, accounts, keys, states).
"""

from __future__ import annotations

import hashlib
import json
import queue
import re
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import closing
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.db.backends.base.base import BaseDatabaseWrapper

GENESIS_HASH = "0" * 64

Rows = list[tuple[Any, ...]]

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


def timestamp(value: datetime) -> str:
    """The canonical UTC timestamp; naive datetimes are UTC (the database walk formats it in SQL instead)."""
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


class _Memo(dict[Any, str]):
    """value -> canonical text, made by `make` on a miss; a plain dict lookup (in C) on a hit.

    A walk over the trail meets the same actors, roles, accounts, key ids and before/after states again and
    again, so remembering their canonical text saves most of the per-event encoding. At most `limit` values
    are remembered, to cap memory; past that a miss is simply made again.
    """

    def __init__(self, make: Callable[[Any], str], limit: int, seed: dict[Any, str] | None = None) -> None:
        super().__init__(seed or {})
        self.make = make
        self.limit = limit

    def __missing__(self, value: Any) -> str:
        text = self.make(value)
        if len(self) < self.limit:
            self[value] = text
        return text


# A JSON array of plain strings (request ids): its compact form only drops the space after each comma.
_PLAIN_STRING_LIST = re.compile(r'\[(?:"[\w.:/+=-]*"(?:, ?"[\w.:/+=-]*")*)?\]', re.ASCII).fullmatch


class _IdLists(dict[Any, str]):
    """Request id lists differ from event to event: only the empty list is remembered."""

    def __init__(self) -> None:
        super().__init__({"[]": "[]", None: "null"})

    def __missing__(self, value: Any) -> str:
        if isinstance(value, str) and _PLAIN_STRING_LIST(value):
            return value.replace(", ", ",")
        return _json_text(value)


class _BatchHasher:
    """Recomputes the hash of every row of a batch (rows as _SELECT reads them, timestamps canonical)."""

    LIMIT = 50_000

    def __init__(self) -> None:
        self.quoted = _Memo(_quote, self.LIMIT)
        self.json_text = _Memo(_json_text, self.LIMIT, {None: "null"})
        self.id_list = _IdLists()

    def __call__(self, rows: Rows) -> list[str]:
        """The hash of each row, with `created_at` already a JSON string (see _CREATED_AT).

        `prev_hash` goes in between plain quotes: where it is not 64 hex digits the row cannot chain to the
        event before (whose hash is a hexdigest, or the genesis zeros), so the walk rejects it anyway and
        recomputes the row with recomputed_hash() to say why (hence "replace": a forged non-ASCII prev_hash
        must not stop the walk).
        """
        sha256, q = hashlib.sha256, _quote
        quoted, json_text, id_list = self.quoted, self.json_text, self.id_list
        # _TEMPLATE written out as an f-string (twice as fast as %), values as _canonical() encodes them;
        # the tests check both against json.dumps. This is the hot loop.
        return [
            sha256((
                f'{{"action":{quoted[action]},"actor":{quoted[actor]},"actor_role":{quoted[actor_role]},'
                f'"after":{json_text[after]},"before":{json_text[before]},"created_at":{created_at},'
                f'"key_id":{quoted[key_id]},"message":{q(message)},'
                f'"operation":{"null" if operation_id is None else operation_id},"outcome":{quoted[outcome]},'
                f'"prev_hash":"{prev_hash}","request_ids":{id_list[request_ids]},"seq":{seq},'
                f'"source":{quoted[source]},"source_detail":{quoted[source_detail]},'
                f'"source_ip":{quoted[source_ip]},"target":{quoted[target]}}}'
            ).encode("ascii", "replace")).hexdigest()
            for (seq, created_at, actor, actor_role, source, source_ip, source_detail, action, target, key_id,
                 operation_id, outcome, before, after, request_ids, message, prev_hash, _stored) in rows
        ]  # fmt: skip


_SELECT = (
    "SELECT seq, {created_at}, actor, actor_role, source, source_ip, source_detail, action, target, key_id, "
    "operation_id, outcome, before, after, request_ids, message, prev_hash, hash FROM encryption_auditevent "
)
# The canonical timestamp as a JSON string, made by the database: cheaper than building a datetime per row.
_CREATED_AT = {
    # Digits and fixed characters only, so plain quotes are its JSON form.
    "postgresql": "'\"' || to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') || '\"'",
    # Django stores "YYYY-MM-DD HH:MM:SS[.ffffff]" in UTC, without the fraction when it is zero. SQLite
    # stores text, which could hold anything: _quoted_timestamps() encodes it in Python.
    "sqlite": "replace(created_at, ' ', 'T') || CASE WHEN length(created_at) > 19 THEN 'Z' ELSE '.000000Z' END",
}


def select_for(vendor: str) -> str:
    """The walk's SELECT (no WHERE or ORDER BY yet) on this database vendor."""
    return _SELECT.format(created_at=_CREATED_AT[vendor])


def hashed_batches(using: str, batch_size: int = 10_000, after: int | None = None) -> Iterator[tuple[Rows, list[str]]]:
    """Every event in seq order (past `after`, if given), a batch at a time: (rows, each row's recomputed hash).

    A row is (seq, ..., prev_hash, hash) as stored: seq first, the stored prev_hash and hash last. Keyset
    batches on the unique seq index (no OFFSET), with a plain cursor: no model instances and no per-row ORM
    conversion, which is most of the cost of a walk over millions of rows.
    """
    from django.db import connections  # here: worker processes import this module without Django set up

    connection = connections[using]
    select = select_for(connection.vendor)
    if connection.vendor == "postgresql":
        connection.ensure_connection()
        batches = batches_ahead(connection.connection, select, batch_size, after)
    else:
        batches = _quoted_timestamps(_batches(connection, select, batch_size, after))
    yield from hash_batches(batches)


def hash_batches(batches: Generator[Rows, None, None]) -> Iterator[tuple[Rows, list[str]]]:
    hasher = _BatchHasher()
    with closing(batches):
        for rows in batches:
            if rows:
                yield rows, hasher(rows)


def recomputed_hash(row: tuple[Any, ...]) -> str:
    """The hash of one row as hashed_batches() yields it, every value encoded in full (no shortcut)."""
    (seq, created_at, actor, actor_role, source, source_ip, source_detail, action, target, key_id, operation_id,
     outcome, before, after, request_ids, message, prev_hash, _stored) = row  # fmt: skip
    text = _canonical(
        seq, json.loads(created_at), actor, actor_role, source, source_ip, source_detail, action, target, key_id,
        operation_id, outcome, _json_text(before), _json_text(after), _json_text(request_ids), message, prev_hash,
    )  # fmt: skip
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _quoted_timestamps(batches: Generator[Rows, None, None]) -> Generator[Rows, None, None]:
    with closing(batches):
        for rows in batches:
            yield [(row[0], _quote(row[1]), *row[2:]) for row in rows]


def fetch_batches(
    cursor: Any, select: str, batch_size: int, after: int | None = None, until: int | None = None
) -> Generator[Rows, None, None]:
    """Keyset batches of the rows with after < seq <= until (either bound optional), in seq order."""
    last = after
    while True:
        where, params = [], []
        if last is not None:
            where.append("seq > %s")
            params.append(last)
        if until is not None:
            where.append("seq <= %s")
            params.append(until)
        sql = select + (f"WHERE {' AND '.join(where)} " if where else "") + "ORDER BY seq LIMIT %s"
        cursor.execute(sql, [*params, batch_size])
        rows: Rows = cursor.fetchall()
        yield rows
        if len(rows) < batch_size:
            return
        last = rows[-1][0]


def _batches(
    connection: BaseDatabaseWrapper, select: str, batch_size: int, after: int | None
) -> Generator[Rows, None, None]:
    with connection.cursor() as cursor:
        yield from fetch_batches(cursor, select, batch_size, after)


_DONE = object()


def batches_ahead(
    raw: Any, select: str, batch_size: int, after: int | None = None, until: int | None = None
) -> Generator[Rows, None, None]:
    """fetch_batches() on a psycopg connection, the next batch fetched by a thread while the caller hashes.

    PostgreSQL reads and encodes a batch while Python hashes the one before, so overlapping the two raises
    the rate. The thread uses the same connection (same transaction, so it sees what the caller sees;
    psycopg serialises its use) while the caller only hashes; it is stopped and joined before this
    generator returns, however it ends.
    """
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
                for rows in fetch_batches(cursor, select, batch_size, after, until):
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
