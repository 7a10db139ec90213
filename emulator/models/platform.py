"""Platform tables shared by every emulated service: the shiftable clock, fault rules, throttling
buckets, the request log and the directory of principals (which tenant a principal's tokens are for)."""

from __future__ import annotations

from django.db import models

__all__ = ["ClockOffset", "DirectoryPrincipal", "FaultRule", "RequestLog", "ThrottleBucket", "ThrottleLimit"]


class ClockOffset(models.Model):
    # One row (pk=1): the seconds added to wall time, so every process on the machine agrees on "now".
    offset_seconds = models.FloatField(default=0.0)

    def __str__(self) -> str:
        return f"{self.offset_seconds:+.0f}s"


class DirectoryPrincipal(models.Model):
    """A principal known to the emulated Entra ID: its home tenant decides which tenant its tokens are for.

    Multi-tenant principals (the portal's app registration) get tokens for whatever tenant a challenge
    asks for; single-tenant ones (managed identities) only ever for their home tenant.
    """

    object_id = models.CharField(max_length=36, unique=True)
    tenant_id = models.CharField(max_length=36)
    display_name = models.CharField(max_length=200, blank=True)
    multi_tenant = models.BooleanField(default=False)

    def __str__(self) -> str:
        return self.display_name or self.object_id


class FaultRule(models.Model):
    """An injected fault: an error status and/or latency for matching requests, either for a share of them
    (probability) or for the next `remaining` ones."""

    status = models.PositiveSmallIntegerField(default=0)  # 0: latency only
    latency_ms = models.PositiveIntegerField(default=0)
    retry_after = models.PositiveIntegerField(default=1)
    probability = models.FloatField(null=True, blank=True)
    remaining = models.IntegerField(null=True, blank=True)
    host_contains = models.CharField(max_length=200, blank=True)
    method = models.CharField(max_length=10, blank=True)
    path_contains = models.CharField(max_length=400, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        scope = f"next {self.remaining}" if self.remaining is not None else f"p={self.probability}"
        return f"{self.status or 'latency'} {self.method or '*'} {self.host_contains}{self.path_contains} ({scope})"


class ThrottleLimit(models.Model):
    # ARM's token bucket per kind ("reads", "writes"); absent rows mean Azure's defaults.
    kind = models.CharField(max_length=10, unique=True)
    capacity = models.FloatField()
    refill_per_second = models.FloatField()

    def __str__(self) -> str:
        return f"{self.kind}: {self.capacity:g} tokens, {self.refill_per_second:g}/s"


class ThrottleBucket(models.Model):
    subscription_id = models.CharField(max_length=36, blank=True)  # "" for tenant-level calls
    kind = models.CharField(max_length=10)
    tokens = models.FloatField()
    updated_at = models.FloatField()  # wall-clock seconds: real time refills buckets, not the shifted clock

    class Meta:
        constraints = [models.UniqueConstraint(fields=["subscription_id", "kind"], name="emu_bucket_unique")]

    def __str__(self) -> str:
        return f"{self.subscription_id or 'tenant'}/{self.kind}: {self.tokens:.1f}"


class RequestLog(models.Model):
    at = models.DateTimeField(db_index=True)
    method = models.CharField(max_length=10)
    host = models.CharField(max_length=200)
    path = models.CharField(max_length=2000)
    status = models.PositiveSmallIntegerField()
    principal = models.CharField(max_length=36, blank=True)
    client_request_id = models.CharField(max_length=100, blank=True)
    request_id = models.CharField(max_length=36)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.method} {self.host}{self.path} -> {self.status}"
