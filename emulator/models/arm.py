"""ARM tables: tenants, subscriptions, resource groups, Cognitive Services accounts, their long-running
operations, and each account's data at rest (records under a data key, and that data key's wraps).

Links to Key Vault rows are plain strings (ids, URIs), as ARM links resources: by id, not by foreign key.
"""

from __future__ import annotations

from django.db import models

__all__ = [
    "AccountData",
    "ArmOperation",
    "CognitiveAccount",
    "DataRecord",
    "PlatformKey",
    "ResourceGroup",
    "Subscription",
    "Tenant",
]

COGNITIVE_PROVIDER = "Microsoft.CognitiveServices"
ACCOUNT_TYPE = f"{COGNITIVE_PROVIDER}/accounts"


class Tenant(models.Model):
    tenant_id = models.CharField(max_length=36, unique=True)
    name = models.CharField(max_length=60, unique=True)  # short name used by commands: "contoso"
    display_name = models.CharField(max_length=200)
    default_domain = models.CharField(max_length=200)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Subscription(models.Model):
    subscription_id = models.CharField(max_length=36, unique=True)
    display_name = models.CharField(max_length=200)
    tenant_id = models.CharField(max_length=36, db_index=True)
    state = models.CharField(max_length=20, default="Enabled")

    class Meta:
        ordering = ["display_name"]

    def __str__(self) -> str:
        return self.display_name


class ResourceGroup(models.Model):
    subscription_id = models.CharField(max_length=36)
    name = models.CharField(max_length=90)
    location = models.CharField(max_length=60)
    tags = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["subscription_id", "name"], name="emu_rg_unique")]

    def __str__(self) -> str:
        return self.name

    @property
    def arm_id(self) -> str:
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{self.name}"


class CognitiveAccount(models.Model):
    subscription_id = models.CharField(max_length=36, db_index=True)
    resource_group = models.CharField(max_length=90)
    name = models.CharField(max_length=64)
    location = models.CharField(max_length=60)
    kind = models.CharField(max_length=40, default="Face")
    sku = models.CharField(max_length=10)
    tags = models.JSONField(default=dict, blank=True)
    custom_subdomain = models.CharField(max_length=64, blank=True)
    public_network_access = models.CharField(max_length=10, default="Enabled")
    # identity.type as ARM spells it: "None", "SystemAssigned", "UserAssigned", "SystemAssigned, UserAssigned"
    identity_type = models.CharField(max_length=40, default="None")
    principal_id = models.CharField(max_length=36, blank=True)
    identity_tenant_id = models.CharField(max_length=36, blank=True)
    # {uami resource id: {"principalId", "clientId"}}
    user_assigned_identities = models.JSONField(default=dict, blank=True)
    # properties.encryption exactly as ARM returns it; None when Microsoft-managed (no block at all)
    encryption = models.JSONField(null=True, blank=True)
    provisioning_state = models.CharField(max_length=20, default="Succeeded")
    etag = models.CharField(max_length=64)
    internal_id = models.CharField(max_length=32)
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=200, blank=True)
    modified_at = models.DateTimeField()
    modified_by = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["subscription_id", "resource_group", "name"]
        constraints = [
            models.UniqueConstraint(fields=["subscription_id", "resource_group", "name"], name="emu_account_unique")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/{ACCOUNT_TYPE}/{self.name}"
        )

    @property
    def has_system_identity(self) -> bool:
        return "SystemAssigned" in self.identity_type

    @property
    def key_vault_properties(self) -> dict[str, str] | None:
        """The CMK settings, or None when the account uses Microsoft-managed keys."""
        if not self.encryption or self.encryption.get("keySource") != "Microsoft.KeyVault":
            return None
        props = self.encryption.get("keyVaultProperties") or {}
        return {k: str(v) for k, v in props.items() if v is not None}


class ArmOperation(models.Model):
    """An account's long-running operation, kept here so any client instance (or process) can poll it."""

    STATUS_IN_PROGRESS = "InProgress"
    STATUS_SUCCEEDED = "Succeeded"
    STATUS_FAILED = "Failed"

    operation_id = models.CharField(max_length=36, unique=True)
    action = models.CharField(max_length=10)  # create, update, delete
    subscription_id = models.CharField(max_length=36)
    resource_group = models.CharField(max_length=90)
    account_name = models.CharField(max_length=64)
    location = models.CharField(max_length=60)
    status = models.CharField(max_length=20, default=STATUS_IN_PROGRESS)
    polls_remaining = models.PositiveIntegerField(default=1)
    changes = models.JSONField(default=dict, blank=True)  # what the operation applies when it finishes
    error = models.JSONField(null=True, blank=True)  # {"code", "message"} when Failed
    caller = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.action} {self.account_name}: {self.status}"

    @property
    def finished(self) -> bool:
        return self.status != self.STATUS_IN_PROGRESS


class PlatformKey(models.Model):
    """The Microsoft-managed key of a region: an AES-256 key-encryption key internal to the emulator."""

    name = models.CharField(max_length=60, unique=True)
    secret = models.BinaryField()
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.name


class AccountData(models.Model):
    """An account's data key (DEK), stored only wrapped: by the Microsoft-managed key, and under CMK
    additionally by the customer's key (the Microsoft-wrapped DEK wrapped again through Key Vault)."""

    account_id = models.CharField(max_length=400, unique=True)  # lower-cased ARM id
    platform_key = models.CharField(max_length=60)
    wrapped_dek = models.BinaryField()  # AES-KW(Microsoft key, DEK), or RSA-OAEP-256(CMK, that) under CMK
    cmk_kid = models.CharField(max_length=300, blank=True)  # versioned key id of the outer wrap, "" if none
    cmk_alg = models.CharField(max_length=20, blank=True)
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.account_id


class DataRecord(models.Model):
    """One record of an account's data (Face person-group metadata), AES-256-GCM under the account's DEK."""

    account_id = models.CharField(max_length=400, db_index=True)
    name = models.CharField(max_length=100)
    nonce = models.BinaryField()
    ciphertext = models.BinaryField()

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["account_id", "name"], name="emu_record_unique")]

    def __str__(self) -> str:
        return f"{self.account_id}/{self.name}"
