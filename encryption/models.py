"""Keyward's state: the local mirror of Azure, the operations admins ask for, and the audit trail.

The mirror (subscriptions, vaults, keys, versions, accounts) is what pages read; it is written only by
sync and by operations, from what Azure answered. Every row knows when it was last read from Azure.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Coalesce
from django.utils import timezone

KEY_SOURCE_MICROSOFT = "Microsoft.CognitiveServices"
KEY_SOURCE_KEY_VAULT = "Microsoft.KeyVault"


# The mirror of Azure


class Subscription(models.Model):
    subscription_id = models.CharField(max_length=36, unique=True)
    display_name = models.CharField(max_length=200)
    tenant_id = models.CharField(max_length=36)
    state = models.CharField(max_length=40, default="Enabled")
    last_synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["display_name"]

    def __str__(self) -> str:
        return self.display_name


class KeyVault(models.Model):
    arm_id = models.CharField(max_length=400, unique=True)
    name = models.CharField(max_length=24)
    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="vaults")
    resource_group = models.CharField(max_length=90)
    location = models.CharField(max_length=60)
    tenant_id = models.CharField(max_length=36)
    vault_uri = models.CharField(max_length=200, db_index=True)
    sku = models.CharField(max_length=20, default="standard")
    soft_delete_enabled = models.BooleanField(default=True)
    soft_delete_retention_days = models.PositiveSmallIntegerField(default=90)
    purge_protection_enabled = models.BooleanField(default=False)
    rbac_authorization = models.BooleanField(default=False)
    access_policies = models.JSONField(default=list, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Key(models.Model):
    vault = models.ForeignKey(KeyVault, on_delete=models.CASCADE, related_name="keys")
    name = models.CharField(max_length=127)
    kty = models.CharField(max_length=10, default="RSA")
    key_size = models.PositiveIntegerField(null=True, blank=True)
    key_ops = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    not_before = models.DateTimeField(null=True, blank=True)
    expires_on = models.DateTimeField(null=True, blank=True)
    current_version = models.CharField(max_length=32, blank=True)
    rotation_policy = models.JSONField(null=True, blank=True)
    deleted = models.BooleanField(default=False)
    last_synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["vault__name", "name"]
        constraints = [models.UniqueConstraint(fields=["vault", "name"], name="key_unique_per_vault")]

    def __str__(self) -> str:
        return f"{self.vault.name}/{self.name}"

    @property
    def uri(self) -> str:
        return f"{self.vault.vault_uri.rstrip('/')}/keys/{self.name}"


class KeyVersion(models.Model):
    key = models.ForeignKey(Key, on_delete=models.CASCADE, related_name="versions")
    version = models.CharField(max_length=32)
    enabled = models.BooleanField(default=True)
    not_before = models.DateTimeField(null=True, blank=True)
    expires_on = models.DateTimeField(null=True, blank=True)
    created_on = models.DateTimeField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_on"]
        constraints = [models.UniqueConstraint(fields=["key", "version"], name="version_unique_per_key")]

    def __str__(self) -> str:
        return self.version


class Account(models.Model):
    """A Cognitive Services (Face) account as last read from ARM, plus the last data access probe."""

    arm_id = models.CharField(max_length=400, unique=True)
    name = models.CharField(max_length=64, db_index=True)
    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="accounts")
    resource_group = models.CharField(max_length=90)
    location = models.CharField(max_length=60)
    kind = models.CharField(max_length=40, default="Face")
    sku = models.CharField(max_length=10)
    cmk_capable = models.BooleanField(default=False)
    endpoint = models.CharField(max_length=300, blank=True)
    etag = models.CharField(max_length=100, blank=True)
    provisioning_state = models.CharField(max_length=40, blank=True)
    identity_type = models.CharField(max_length=60, default="None")
    principal_id = models.CharField(max_length=36, blank=True)
    identity_tenant_id = models.CharField(max_length=36, blank=True)
    user_assigned_identities = models.JSONField(default=dict, blank=True)
    key_source = models.CharField(max_length=40, default=KEY_SOURCE_MICROSOFT)
    key_vault_uri = models.CharField(max_length=200, blank=True)
    key_name = models.CharField(max_length=127, blank=True)
    key_version = models.CharField(max_length=32, blank=True)
    # The tenant of the vault when CMK was last set through Keyward: a later mismatch means a tenant move.
    cmk_tenant_id = models.CharField(max_length=36, blank=True)
    data_readable = models.BooleanField(null=True)
    data_access_reason = models.CharField(max_length=300, blank=True)
    probed_at = models.DateTimeField(null=True, blank=True)
    last_synced_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            ("change_encryption", "Can change the encryption settings of accounts"),
            ("view_diagnosis", "Can read the data-access diagnosis of accounts"),
            ("view_key_inventory", "Can read the key-usage inventory"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def uses_cmk(self) -> bool:
        return self.key_source == KEY_SOURCE_KEY_VAULT

    @property
    def has_system_identity(self) -> bool:
        return "SystemAssigned" in self.identity_type

    @property
    def key_uri(self) -> str:
        if not self.uses_cmk:
            return ""
        base = f"{self.key_vault_uri.rstrip('/')}/keys/{self.key_name}"
        return f"{base}/{self.key_version}" if self.key_version else base

    @property
    def encryption_type_label(self) -> str:
        return "Customer Managed Keys" if self.uses_cmk else "Microsoft Managed Keys"


# Operations


class Operation(models.Model):
    class Kind(models.TextChoices):
        ENABLE_CMK = "enable_cmk", "Enable customer-managed keys"
        UPDATE_VERSION = "update_version", "Update key version"
        CHANGE_KEY = "change_key", "Use a different key"
        ROTATE_KEY = "rotate_key", "Rotate key"
        REVOKE_ACCESS = "revoke_access", "Revoke access"
        RESTORE_ACCESS = "restore_access", "Restore access"
        DISABLE_CMK = "disable_cmk", "Disable customer-managed keys"
        SYNC = "sync", "Sync from Azure"
        PREFLIGHT = "preflight", "Preflight checks"
        REFRESH = "refresh", "Refresh from Azure"
        DIAGNOSE = "diagnose", "Diagnose data access"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    # Kinds that change Azure: one at a time per account. The others are short read-only jobs.
    CHANGE_KINDS = (
        Kind.ENABLE_CMK,
        Kind.UPDATE_VERSION,
        Kind.CHANGE_KEY,
        Kind.ROTATE_KEY,
        Kind.REVOKE_ACCESS,
        Kind.RESTORE_ACCESS,
        Kind.DISABLE_CMK,
    )
    ACTIVE_STATUSES = (Status.QUEUED, Status.RUNNING)

    kind = models.CharField(max_length=20, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    account = models.ForeignKey(Account, null=True, blank=True, on_delete=models.PROTECT, related_name="operations")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor = models.CharField(max_length=150)
    actor_role = models.CharField(max_length=40, blank=True)
    source = models.CharField(max_length=10, default="web")
    source_detail = models.CharField(max_length=200, blank=True)
    params = models.JSONField(default=dict, blank=True)
    state_before = models.JSONField(null=True, blank=True)
    state_after = models.JSONField(null=True, blank=True)
    result = models.JSONField(null=True, blank=True)
    reason = models.TextField(blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    request_ids = models.JSONField(default=list, blank=True)
    lro_token = models.TextField(blank=True)
    patch_attempts = models.PositiveIntegerField(default=0)
    deliveries = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # The database, not only the service, refuses a second concurrent change to one account.
            models.UniqueConstraint(
                fields=["account"],
                condition=Q(status__in=["queued", "running"])
                & Q(
                    kind__in=[
                        "enable_cmk",
                        "update_version",
                        "change_key",
                        "rotate_key",
                        "revoke_access",
                        "restore_access",
                        "disable_cmk",
                    ]
                ),
                name="one_active_change_per_account",
            )
        ]
        indexes = [models.Index(fields=["status", "lease_expires_at"], name="operation_sweep_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} #{self.pk}"

    @property
    def is_finished(self) -> bool:
        return self.status in (self.Status.SUCCEEDED, self.Status.FAILED)

    @property
    def is_change(self) -> bool:
        return self.kind in self.CHANGE_KINDS

    def claim(self) -> bool:
        """Move QUEUED -> RUNNING (or take over an expired lease); False if another worker has it."""
        now = timezone.now()
        lease = now + timedelta(seconds=settings.OPERATION_LEASE_SECONDS)
        claimable = Q(status=self.Status.QUEUED) | Q(status=self.Status.RUNNING, lease_expires_at__lt=now)
        won = (
            Operation.objects.filter(claimable, pk=self.pk).update(
                status=self.Status.RUNNING,
                started_at=Coalesce(models.F("started_at"), models.Value(now)),
                lease_expires_at=lease,
                deliveries=models.F("deliveries") + 1,
            )
            == 1
        )
        if won:
            self.refresh_from_db()
        return won

    def release(self) -> bool:
        """RUNNING -> QUEUED for a retry after a transient error; that delivery ended cleanly, so it is not
        counted against OPERATION_MAX_DELIVERIES (which is for workers that died)."""
        n = Operation.objects.filter(pk=self.pk, status=self.Status.RUNNING).update(
            status=self.Status.QUEUED,
            lease_expires_at=None,
            enqueued_at=timezone.now(),
            deliveries=models.F("deliveries") - 1,
        )
        self.refresh_from_db()
        return n == 1

    def extend_lease(self) -> None:
        """Push the lease forward while a worker is still making progress."""
        lease = timezone.now() + timedelta(seconds=settings.OPERATION_LEASE_SECONDS)
        Operation.objects.filter(pk=self.pk, status=self.Status.RUNNING).update(lease_expires_at=lease)

    def finish(self, *, succeeded: bool, reason: str = "", error_code: str = "", **fields: Any) -> bool:
        """Move RUNNING -> SUCCEEDED/FAILED once; False if it had already ended."""
        status = self.Status.SUCCEEDED if succeeded else self.Status.FAILED
        values = {"status": status, "reason": reason, "error_code": error_code, "finished_at": timezone.now()}
        values.update(fields)
        n = Operation.objects.filter(pk=self.pk, status__in=self.ACTIVE_STATUSES).update(**values)
        self.refresh_from_db()
        return n == 1


class OperationStep(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        SKIPPED = "skipped", "Already done"
        FAILED = "failed", "Failed"

    operation = models.ForeignKey(Operation, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=60)
    label = models.CharField(max_length=200)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RUNNING)
    detail = models.TextField(blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    request_ids = models.JSONField(default=list, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["operation_id", "started_at", "pk"]

    def __str__(self) -> str:
        return f"{self.name}: {self.status}"


# The audit trail


class AuditEvent(models.Model):
    """One append-only record; `hash` chains it to the event before it (see encryption/audit.py)."""

    class Outcome(models.TextChoices):
        REQUESTED = "requested", "Requested"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        REFUSED = "refused", "Refused"
        INFO = "info", "Info"

    seq = models.BigIntegerField(unique=True)
    created_at = models.DateTimeField()
    actor = models.CharField(max_length=150)
    actor_role = models.CharField(max_length=40, blank=True)
    source = models.CharField(max_length=10)
    source_ip = models.CharField(max_length=45, blank=True)
    source_detail = models.CharField(max_length=200, blank=True)
    action = models.CharField(max_length=60)
    target = models.CharField(max_length=400, blank=True)
    key_id = models.CharField(max_length=300, blank=True)
    operation = models.ForeignKey(Operation, null=True, blank=True, on_delete=models.PROTECT, related_name="events")
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    request_ids = models.JSONField(default=list, blank=True)
    message = models.TextField(blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["-seq"]
        permissions = [
            ("view_audit", "Can read the audit trail"),
            ("export_audit", "Can export the audit trail"),
        ]
        # The audit page filters on one of these columns and pages by seq (keyset, newest first): an index
        # (field, seq) answers "WHERE field = x AND seq < cursor ORDER BY seq DESC LIMIT n" by reading n
        # index entries, however many millions of rows the trail holds. These replace single-column indexes.
        # The free-text search on `message` has its own trigram index (PostgreSQL only, migration 0004).
        indexes = [
            models.Index(fields=["created_at", "seq"], name="audit_time_seq_idx"),
            models.Index(fields=["actor", "seq"], name="audit_actor_seq_idx"),
            models.Index(fields=["actor_role", "seq"], name="audit_role_seq_idx"),
            models.Index(fields=["target", "seq"], name="audit_target_seq_idx"),
            models.Index(fields=["key_id", "seq"], name="audit_key_seq_idx"),
            models.Index(fields=["action", "seq"], name="audit_action_seq_idx"),
            models.Index(fields=["outcome", "seq"], name="audit_outcome_seq_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action} {self.outcome}"


class AuditCheckpoint(models.Model):
    """A signed statement of the chain head, so a trail cut short at its end is still detected."""

    seq = models.BigIntegerField(unique=True)
    event_hash = models.CharField(max_length=64)
    signed_at = models.DateTimeField(default=timezone.now)
    public_key_fingerprint = models.CharField(max_length=64)
    signature = models.CharField(max_length=200)

    class Meta:
        ordering = ["-seq"]

    def __str__(self) -> str:
        return f"checkpoint at #{self.seq}"


class AuditChainHead(models.Model):
    """One row whose lock serialises appends to the audit chain on PostgreSQL (see encryption/audit.py).

    Locking a dedicated row, rather than the last event, works on an empty trail too and never blocks
    readers of the trail.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)

    def __str__(self) -> str:
        return "audit chain head"


class AuditExport(models.Model):
    """One export of the trail and, once its stream has finished, the signed manifest of its exact bytes."""

    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        JSONL = "jsonl", "JSON lines"

    export_id = models.UUIDField(unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    actor = models.CharField(max_length=150)
    format = models.CharField(max_length=5, choices=Format.choices)
    filters = models.JSONField(default=dict, blank=True)
    # The chain head when the export was asked for: the file never includes events recorded after it (its
    # own audit events among them), so the same export always streams the same rows.
    upto_seq = models.BigIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    # The manifest as signed (canonical JSON text) and its Ed25519 signature; empty until the stream ends.
    manifest = models.TextField(blank=True)
    signature = models.CharField(max_length=200, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"export {self.export_id}"

    @property
    def is_finished(self) -> bool:
        return self.finished_at is not None
