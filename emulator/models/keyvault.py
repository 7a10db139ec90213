"""Key Vault tables: vaults (an ARM resource), role assignments, and keys with their versions.

Private key material lives only here (PEM in `KeyVersion.private_pem`) and is never put in a response.
"""

from __future__ import annotations

from typing import Any

from django.db import models

__all__ = ["Key", "KeyVersion", "RoleAssignment", "Vault"]

VAULT_HOST_SUFFIX = ".vault.azure.net"


class Vault(models.Model):
    # Vault names are global DNS labels, hence unique across subscriptions.
    name = models.CharField(max_length=24, unique=True)
    subscription_id = models.CharField(max_length=36, db_index=True)
    resource_group = models.CharField(max_length=90)
    location = models.CharField(max_length=60)
    tenant_id = models.CharField(max_length=36)
    sku = models.CharField(max_length=10, default="standard")
    tags = models.JSONField(default=dict, blank=True)
    soft_delete_enabled = models.BooleanField(default=True)
    soft_delete_retention_days = models.PositiveSmallIntegerField(default=90)
    purge_protection_enabled = models.BooleanField(default=False)
    rbac_authorization = models.BooleanField(default=False)
    # ARM's shape: [{"tenantId", "objectId", "applicationId", "permissions": {"keys": [...], ...}}]
    access_policies = models.JSONField(default=list, blank=True)
    public_network_access = models.CharField(max_length=10, default="Enabled")
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def host(self) -> str:
        return f"{self.name}{VAULT_HOST_SUFFIX}"

    @property
    def vault_uri(self) -> str:
        return f"https://{self.host}/"

    @property
    def arm_id(self) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.KeyVault/vaults/{self.name}"
        )

    def policy_for(self, object_id: str) -> dict[str, Any] | None:
        for entry in self.access_policies:
            if str(entry.get("objectId", "")).lower() == object_id.lower():
                return dict(entry)
        return None


class RoleAssignment(models.Model):
    name = models.CharField(max_length=36, unique=True)  # the assignment's GUID
    scope = models.CharField(max_length=500, db_index=True)
    role_definition_id = models.CharField(max_length=300)
    principal_id = models.CharField(max_length=36, db_index=True)
    principal_type = models.CharField(max_length=40, default="ServicePrincipal")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.principal_id} -> {self.role_definition_id.rsplit('/', 1)[-1]} @ {self.scope}"


class Key(models.Model):
    vault = models.ForeignKey(Vault, on_delete=models.CASCADE, related_name="keys")
    name = models.CharField(max_length=127)
    created_at = models.DateTimeField()
    # Soft delete: a deleted key keeps its name (and versions) until recovered or purged.
    deleted_at = models.DateTimeField(null=True, blank=True)
    scheduled_purge_at = models.DateTimeField(null=True, blank=True)
    rotation_policy = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["vault", "name"], name="emu_key_unique_name")]

    def __str__(self) -> str:
        return f"{self.vault.name}/{self.name}"

    def latest_version(self) -> KeyVersion | None:
        # The current version is the one created last; ids are the tiebreaker within one second.
        return self.versions.order_by("-created_at", "-id").first()


class KeyVersion(models.Model):
    key = models.ForeignKey(Key, on_delete=models.CASCADE, related_name="versions")
    version = models.CharField(max_length=32)
    kty = models.CharField(max_length=10)
    size = models.PositiveSmallIntegerField(null=True, blank=True)
    curve = models.CharField(max_length=10, blank=True)
    key_ops = models.JSONField(default=list)
    public_jwk = models.JSONField(default=dict)  # n/e or x/y, base64url
    private_pem = models.BinaryField()
    fingerprint = models.CharField(max_length=64, db_index=True)  # SHA-256 of the public key
    enabled = models.BooleanField(default=True)
    not_before = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    tags = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [models.UniqueConstraint(fields=["key", "version"], name="emu_key_version_unique")]

    def __str__(self) -> str:
        return f"{self.key}/{self.version}"
