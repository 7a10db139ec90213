"""Walking the audit chain: the checks every event must pass, and the same walk split over processes.

A walk keeps the chain checked so far (how many events, the last one's seq and hash) and takes batches
from audit_chain.hashed_batches(). A sound batch costs a few list comparisons; a batch that is not is
walked event by event, each recomputed in full, to name the first bad event and why (ChainBroken).

One Python process hashes about one event per 10-20 µs (SHA-256 of ~750 bytes is a third of it), so
a long trail on PostgreSQL is cut into seq ranges that worker processes walk side by side, each with its
own connection. A worker only reports whether its range is sound and how it starts and ends; the ranges
are then joined in order (each must start where the last ended). Anything off, and the walk goes on in
this process from the end of the last good range, so the report is exactly the one-process report.

Nothing here imports models: worker processes are spawned and import this module without Django set up.
"""

from __future__ import annotations

import logging
import multiprocessing
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from encryption.audit_chain import GENESIS_HASH, Rows, batches_ahead, hash_batches, recomputed_hash, select_for

logger = logging.getLogger(__name__)

# Django-only connection parameters; the rest is what psycopg.connect() takes.
_NOT_FOR_PSYCOPG = {"cursor_factory", "context", "prepare_threshold", "server_side_binding", "pool"}


class ChainBroken(Exception):
    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


class ChainWalk:
    """The chain checked so far: how many events, and the last one's seq and hash."""

    def __init__(self, checkpoints: dict[int, str], head_seq: int = 0, head_hash: str = GENESIS_HASH) -> None:
        self.checkpoints = checkpoints
        self.checkpoint_seqs = sorted(checkpoints)
        self.count, self.head_seq, self.head_hash = 0, head_seq, head_hash

    def take(self, rows: Rows, computed: list[str]) -> None:
        """Check a batch (seq first, stored prev_hash and hash last); raise ChainBroken at its first bad event."""
        if self.take_if_sound(rows, computed):
            return
        for row in rows:
            seq, prev, own = row[0], row[-2], row[-1]
            check_event(seq, recomputed_hash(row), prev, own, self.head_seq, self.head_hash, self.checkpoints)
            self.count, self.head_seq, self.head_hash = self.count + 1, seq, own

    def take_if_sound(self, rows: Rows, computed: list[str]) -> bool:
        """Advance over the batch if it is sound (the common case: a few list comparisons done in C)."""
        stored = [row[-1] for row in rows]
        if not self._sound(rows, computed, stored):
            return False
        self.count += len(rows)
        self.head_seq, self.head_hash = rows[-1][0], stored[-1]
        return True

    def join(self, summary: RangeSummary) -> bool:
        """Advance over a range a worker found sound, if it starts right where the walk stands."""
        if not summary.sound or summary.first_seq != self.head_seq + 1 or summary.first_prev != self.head_hash:
            return False
        self.count += summary.count
        self.head_seq, self.head_hash = summary.last_seq, summary.last_hash
        return True

    def _sound(self, rows: Rows, computed: list[str], stored: list[str]) -> bool:
        first, last = rows[0][0], rows[-1][0]
        # seq is unique and the rows come in seq order, so the right ends and length mean no gap.
        if first != self.head_seq + 1 or last - first != len(rows) - 1:
            return False
        if computed != stored or rows[0][-2] != self.head_hash:
            return False
        if [row[-2] for row in rows[1:]] != stored[:-1]:
            return False
        seqs = self.checkpoint_seqs
        signed = seqs[bisect_left(seqs, first) : bisect_right(seqs, last)]
        return all(self.checkpoints[seq] == stored[seq - first] for seq in signed)


def check_event(
    seq: int, computed: str, prev: str, stored: str, prev_seq: int, prev_hash: str, checkpoints: dict[int, str]
) -> None:
    expected = prev_seq + 1
    if seq > expected:
        missing = f"#{expected}" if seq == expected + 1 else f"#{expected} to #{seq - 1}"
        raise ChainBroken(expected, f"event {missing} is missing (deleted): the chain jumps from #{prev_seq} to #{seq}")
    if seq < expected:
        raise ChainBroken(seq, f"event #{seq} is out of order: it comes after #{prev_seq}")
    if computed != stored:
        raise ChainBroken(seq, f"event #{seq} was edited: its content no longer matches its hash")
    if prev != prev_hash:
        raise ChainBroken(
            seq,
            f"event #{seq} does not chain to event #{prev_seq} (prev_hash differs): "
            f"#{seq} was inserted out of order, or #{prev_seq} was rewritten",
        )
    signed = checkpoints.get(seq)
    if signed is not None and signed != stored:
        raise ChainBroken(
            seq, f"event #{seq} no longer has the hash signed in checkpoint #{seq}: the chain was rewritten"
        )


# Side by side


@dataclass(frozen=True)
class RangeSummary:
    """What a worker found in the seq range (after, until]: sound, and where it starts and ends."""

    sound: bool
    count: int = 0
    first_seq: int = 0
    first_prev: str = ""
    last_seq: int = 0
    last_hash: str = ""


def seq_ranges(low: int, high: int, parts: int) -> list[tuple[int, int]]:
    """(after, until] ranges covering low..high in `parts` nearly equal pieces, in order."""
    size, extra = divmod(high - low + 1, parts)
    ranges, after = [], low - 1
    for part in range(parts):
        until = after + size + (1 if part < extra else 0)
        if until > after:
            ranges.append((after, until))
        after = until
    return ranges


def walk_ranges(
    connection_params: dict[str, Any],
    ranges: Sequence[tuple[int, int]],
    checkpoints: dict[int, str],
    batch_size: int,
) -> list[RangeSummary] | None:
    """Each range walked by its own spawned process; None if the processes could not be used at all."""
    params = {k: v for k, v in connection_params.items() if k not in _NOT_FOR_PSYCOPG and v is not None}
    try:
        context = multiprocessing.get_context("spawn")  # no fork: the caller may hold threads and sockets
        with ProcessPoolExecutor(max_workers=len(ranges), mp_context=context) as pool:
            futures = [
                pool.submit(summarise_range, params, after, until, checkpoints, batch_size) for after, until in ranges
            ]
            return [future.result() for future in futures]
    except Exception as error:  # noqa: BLE001 - whatever stops the workers, the walk goes on in this process
        # A process that may not start children (a daemonic worker), no resources, a refused connection.
        logger.warning("audit verification goes on in one process: %s: %s", type(error).__name__, error)
        return None


def summarise_range(
    params: dict[str, Any], after: int, until: int, checkpoints: dict[int, str], batch_size: int
) -> RangeSummary:
    """Run in a worker process: walk (after, until] with a connection of its own."""
    import psycopg
    from psycopg.types.string import TextLoader

    with psycopg.connect(**params) as conn:
        conn.adapters.register_loader("jsonb", TextLoader)  # JSON as text, as Django's connections read it
        conn.read_only = True
        walk: ChainWalk | None = None
        first_seq, first_prev = 0, ""
        batches = batches_ahead(conn, select_for("postgresql"), batch_size, after, until)
        for rows, computed in hash_batches(batches):
            if walk is None:
                first_seq, first_prev = rows[0][0], rows[0][-2]
                walk = ChainWalk(checkpoints, head_seq=first_seq - 1, head_hash=first_prev)
            if not walk.take_if_sound(rows, computed):
                return RangeSummary(sound=False)
        if walk is None:
            return RangeSummary(sound=True)
        return RangeSummary(True, walk.count, first_seq, first_prev, walk.head_seq, walk.head_hash)
