"""Faults on demand: ARM's token-bucket throttling and injected errors or latency.

Both live in the emulator database so the web process and every worker share one set of buckets and
rules. Buckets are updated under a row lock (SQLite: the IMMEDIATE write lock) so concurrent requests
never spend the same token twice; a counted fault rule is consumed with a conditional UPDATE.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import F, Q

from emulator.http import EmuRequest, EmuResponse, arm_error, kv_error
from emulator.models import FaultRule, ThrottleBucket, ThrottleLimit
from emulator.router import EMULATOR_ALIAS

# ARM's token-bucket defaults (writes documented; the read refill rate is an assumption, see azure-api.md 1.3).
DEFAULT_LIMITS: dict[str, tuple[float, float]] = {"reads": (250.0, 25.0), "writes": (200.0, 10.0)}
FAULT_STATUSES = (429, 500, 503)


# Throttling


@dataclass(frozen=True)
class ThrottleResult:
    allowed: bool
    kind: str
    remaining: int
    retry_after: int  # seconds until the bucket holds a token (0 when allowed)


def throttle_kind(method: str) -> str:
    return "reads" if method in {"GET", "HEAD"} else "writes"


def limits(kind: str) -> tuple[float, float]:
    row = ThrottleLimit.objects.filter(kind=kind).values_list("capacity", "refill_per_second").first()
    return (float(row[0]), float(row[1])) if row else DEFAULT_LIMITS[kind]


def set_limit(kind: str, *, capacity: float, refill_per_second: float) -> None:
    """Change a bucket kind's size and refill rate; existing buckets are refilled to the new capacity."""
    if kind not in DEFAULT_LIMITS:
        raise ValueError(f"kind must be one of {', '.join(DEFAULT_LIMITS)}")
    if capacity < 1 or refill_per_second <= 0:
        raise ValueError("capacity must be at least 1 and the refill rate positive")
    with transaction.atomic(using=EMULATOR_ALIAS):
        ThrottleLimit.objects.update_or_create(
            kind=kind, defaults={"capacity": capacity, "refill_per_second": refill_per_second}
        )
        ThrottleBucket.objects.filter(kind=kind).delete()


def reset_limits() -> None:
    with transaction.atomic(using=EMULATOR_ALIAS):
        ThrottleLimit.objects.all().delete()
        ThrottleBucket.objects.all().delete()


def take_token(subscription_id: str, kind: str) -> ThrottleResult:
    """Spend one token from the (subscription, kind) bucket, refilled by the wall time since its last use."""
    capacity, rate = limits(kind)
    for _attempt in range(3):
        try:
            with transaction.atomic(using=EMULATOR_ALIAS):
                return _take_locked(subscription_id, kind, capacity, rate)
        except IntegrityError:
            continue  # two processes created the bucket at once: the loser re-reads it
    raise RuntimeError("throttle bucket could not be created")


def _take_locked(subscription_id: str, kind: str, capacity: float, rate: float) -> ThrottleResult:
    now = time.time()
    bucket = ThrottleBucket.objects.select_for_update().filter(subscription_id=subscription_id, kind=kind).first()
    if bucket is None:
        bucket = ThrottleBucket.objects.create(
            subscription_id=subscription_id, kind=kind, tokens=capacity, updated_at=now
        )
    tokens = min(capacity, bucket.tokens + max(0.0, now - bucket.updated_at) * rate)
    allowed = tokens >= 1.0
    if allowed:
        tokens -= 1.0
    ThrottleBucket.objects.filter(pk=bucket.pk).update(tokens=tokens, updated_at=now)
    retry_after = 0 if allowed else max(1, math.ceil((1.0 - tokens) / rate))
    return ThrottleResult(allowed, kind, int(tokens), retry_after)


def throttle_headers(result: ThrottleResult, subscription_id: str) -> dict[str, str]:
    scope = "subscription" if subscription_id else "tenant"
    return {f"x-ms-ratelimit-remaining-{scope}-{result.kind}": str(result.remaining)}


def throttled_response(result: ThrottleResult, subscription_id: str) -> EmuResponse:
    headers = {"Retry-After": str(result.retry_after), **throttle_headers(result, subscription_id)}
    what = f"subscription '{subscription_id}'" if subscription_id else "the tenant"
    message = (
        f"Number of {result.kind[:-1]} requests for {what} exceeded the limit. "
        f"Please try again after '{result.retry_after}' seconds."
    )
    return arm_error(429, "TooManyRequests", message, headers=headers)


# Injected faults


def add_fault(
    *,
    status: int = 0,
    latency_ms: int = 0,
    probability: float | None = None,
    count: int | None = None,
    host_contains: str = "",
    method: str = "",
    path_contains: str = "",
    retry_after: int = 1,
) -> FaultRule:
    """Inject `status` (429/500/503, or 0 for latency only) and/or latency into matching requests, either
    for the next `count` of them or for a `probability` share (every one when neither is given)."""
    if status and status not in FAULT_STATUSES:
        raise ValueError(f"status must be one of {FAULT_STATUSES} (or 0 for latency only)")
    if not status and not latency_ms:
        raise ValueError("a fault needs a status, a latency or both")
    if probability is not None and not 0.0 < probability <= 1.0:
        raise ValueError("probability must be in (0, 1]")
    if count is not None and count < 1:
        raise ValueError("count must be at least 1")
    with transaction.atomic(using=EMULATOR_ALIAS):
        return FaultRule.objects.create(
            status=status,
            latency_ms=latency_ms,
            probability=probability,
            remaining=count,
            host_contains=host_contains.lower(),
            method=method.upper(),
            path_contains=path_contains.lower(),
            retry_after=retry_after,
        )


def clear_faults() -> int:
    with transaction.atomic(using=EMULATOR_ALIAS):
        deleted, _ = FaultRule.objects.all().delete()
    return deleted


def _matches(rule: FaultRule, request: EmuRequest) -> bool:
    return (
        (not rule.method or rule.method == request.method)
        and rule.host_contains in request.host
        and rule.path_contains in request.path.lower()
    )


def _fires(rule: FaultRule) -> bool:
    if rule.remaining is not None:
        with transaction.atomic(using=EMULATOR_ALIAS):
            # Conditional decrement: of two processes racing for the last count, only one wins it.
            won = FaultRule.objects.filter(pk=rule.pk, remaining__gt=0).update(remaining=F("remaining") - 1)
            FaultRule.objects.filter(Q(pk=rule.pk) & Q(remaining__lte=0)).delete()
        return won == 1
    return rule.probability is None or random.random() < rule.probability


def injected_fault(request: EmuRequest) -> EmuResponse | None:
    """Apply the first matching rule that fires: sleep its latency, then answer its error (if any)."""
    for rule in FaultRule.objects.all():
        if not _matches(rule, request) or not _fires(rule):
            continue
        if rule.latency_ms:
            time.sleep(rule.latency_ms / 1000)  # outside any transaction: never hold the write lock asleep
        if rule.status:
            return _fault_response(rule, request)
        return None
    return None


def _fault_response(rule: FaultRule, request: EmuRequest) -> EmuResponse:
    headers = {"Retry-After": str(rule.retry_after)} if rule.status in {429, 503} else {}
    kv = request.plane == "kv"
    if rule.status == 429:
        if kv:
            return kv_error(
                429, "Throttled", "Request was not processed because too many requests were received.", headers=headers
            )
        return arm_error(429, "TooManyRequests", "The request is being throttled (injected fault).", headers=headers)
    if rule.status == 503:
        message = "The service is temporarily unavailable (injected fault). Please retry."
        return (
            kv_error(503, "ServiceUnavailable", message, headers=headers)
            if kv
            else arm_error(503, "ServiceUnavailable", message, headers=headers)
        )
    message = "An internal server error occurred (injected fault). Please retry."
    return kv_error(500, "InternalServerError", message) if kv else arm_error(500, "InternalServerError", message)
