"""Helpers tests (and drills) use to drive the emulator: faults, throttling limits, the clock, the request
log, and sharing a TestCase's connections with SDK poller threads."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

from django.db import connections, transaction

from emulator import clock, faults
from emulator.models import FaultRule, RequestLog
from emulator.router import EMULATOR_ALIAS


def inject_faults(
    status: int = 0,
    *,
    latency_ms: int = 0,
    probability: float | None = None,
    count: int | None = None,
    host: str = "",
    method: str = "",
    path_contains: str = "",
    retry_after: int = 1,
) -> FaultRule:
    """Answer `status` (429/500/503; 0 for latency only) to the next `count` matching requests, or to a
    `probability` share of them, or to all of them when neither is given."""
    return faults.add_fault(
        status=status,
        latency_ms=latency_ms,
        probability=probability,
        count=count,
        host_contains=host,
        method=method,
        path_contains=path_contains,
        retry_after=retry_after,
    )


def clear_faults() -> None:
    faults.clear_faults()
    faults.reset_limits()


def set_throttle_limit(kind: str, *, capacity: float, refill_per_second: float) -> None:
    faults.set_limit(kind, capacity=capacity, refill_per_second=refill_per_second)


def shift_clock(seconds: float) -> datetime:
    return clock.shift(seconds)


def reset_clock() -> None:
    clock.reset()


def request_count(
    method: str | None = None, path_contains: str | None = None, *, host: str | None = None, status: int | None = None
) -> int:
    """How many requests the emulator answered (any status unless `status` is given), filtered
    case-insensitively. Key Vault's first request to a host is the 401 challenge: it counts too."""
    rows = RequestLog.objects.all()
    if status is not None:
        rows = rows.filter(status=status)
    if method:
        rows = rows.filter(method=method.upper())
    if path_contains:
        rows = rows.filter(path__icontains=path_contains)
    if host:
        rows = rows.filter(host__icontains=host)
    return rows.count()


def reset_request_log() -> None:
    with transaction.atomic(using=EMULATOR_ALIAS):
        RequestLog.objects.all().delete()


@contextmanager
def share_connections(*aliases: str) -> Iterator[None]:
    """Let SDK poller threads use this thread's connections (default: every alias), so a TestCase's
    uncommitted rows are visible to the ARM LRO and Key Vault `.wait()` pollers the test waits on."""
    from emulator import transport

    names = aliases or tuple(connections)
    shared = {alias: connections[alias] for alias in names}
    for connection in shared.values():
        connection.inc_thread_sharing()
    transport._shared_connections.update(shared)
    try:
        yield
    finally:
        for alias, connection in shared.items():
            transport._shared_connections.pop(alias, None)
            connection.dec_thread_sharing()
