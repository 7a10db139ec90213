"""What the gateway returns: frozen dataclasses with no Azure types in them, and ARM id parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from encryption.azure.errors import PermanentAzureError

KEY_SOURCE_MICROSOFT = "Microsoft.CognitiveServices"
KEY_SOURCE_KEY_VAULT = "Microsoft.KeyVault"
CMK_KEY_PERMISSIONS = ("get", "wrapKey", "unwrapKey")
# "Key Vault Crypto Service Encryption User": read key metadata, wrap and unwrap (RBAC vaults).
CRYPTO_SERVICE_ENCRYPTION_USER = "e147488a-f6f5-4113-8e2d-b22465e65bf6"
CRYPTO_SERVICE_ENCRYPTION_USER_NAME = "Key Vault Crypto Service Encryption User"
# Built-in roles whose data actions include get, wrapKey and unwrapKey: the one Keyward grants, plus
# Key Vault Crypto Officer and Key Vault Administrator, which an owner may have granted instead.
ROLES_WITH_CMK_ACCESS = frozenset(
    {CRYPTO_SERVICE_ENCRYPTION_USER, "14b46e9e-c2b7-41b4-b07b-48a6ebf60603", "00482a5a-887f-4fb3-b363-3b7fe8e74483"}
)
KEY_PERMISSION_NAMES = {
    p.lower(): p
    for p in [
        "all",
        "encrypt",
        "decrypt",
        "wrapKey",
        "unwrapKey",
        "sign",
        "verify",
        "get",
        "list",
        "create",
        "update",
        "import",
        "delete",
        "backup",
        "restore",
        "recover",
        "purge",
        "release",
        "rotate",
        "getrotationpolicy",
        "setrotationpolicy",
    ]
}
_ARM_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/(?P<ns>[^/]+)/(?P<type>[^/]+)/(?P<name>[^/]+)$",
    re.IGNORECASE,
)


# Results


@dataclass(frozen=True)
class SubscriptionInfo:
    subscription_id: str
    display_name: str
    tenant_id: str
    state: str


@dataclass(frozen=True)
class AccountInfo:
    arm_id: str
    name: str
    subscription_id: str
    resource_group: str
    location: str
    kind: str
    sku: str
    cmk_capable: bool
    endpoint: str
    etag: str
    provisioning_state: str
    identity_type: str
    principal_id: str
    identity_tenant_id: str
    user_assigned_identities: dict[str, dict[str, str]] = field(hash=False)
    key_source: str
    key_vault_uri: str
    key_name: str
    key_version: str
    identity_client_id: str = ""

    @property
    def uses_cmk(self) -> bool:
        return self.key_source == KEY_SOURCE_KEY_VAULT

    @property
    def has_system_identity(self) -> bool:
        return "SystemAssigned" in self.identity_type

    @property
    def cmk_principal_id(self) -> str:
        """The principal that unwraps the key: the user-assigned identity `identityClientId` names, else the
        system-assigned one; "" when that identity is gone."""
        if self.identity_client_id:
            for ids in self.user_assigned_identities.values():
                if ids.get("clientId", "").lower() == self.identity_client_id.lower():
                    return ids.get("principalId", "")
            return ""
        return self.principal_id if self.has_system_identity else ""


@dataclass(frozen=True)
class AccessPolicy:
    tenant_id: str
    object_id: str
    keys: tuple[str, ...]  # canonical spelling: get, wrapKey, unwrapKey, ...

    def to_json(self) -> dict[str, Any]:
        return {"tenantId": self.tenant_id, "objectId": self.object_id, "keys": list(self.keys)}


@dataclass(frozen=True)
class VaultInfo:
    arm_id: str
    name: str
    subscription_id: str
    resource_group: str
    location: str
    tenant_id: str
    vault_uri: str  # lower case, trailing slash
    sku: str
    soft_delete_enabled: bool
    soft_delete_retention_days: int
    purge_protection_enabled: bool
    rbac_authorization: bool
    access_policies: tuple[AccessPolicy, ...]

    def key_permissions_of(self, principal_id: str) -> set[str]:
        """The key permissions the vault's access policies give this principal (ignored on RBAC vaults)."""
        granted: set[str] = set()
        for policy in self.access_policies:
            if policy.object_id.lower() == principal_id.lower():
                granted.update(policy.keys)
        if "all" in granted:
            granted.update(KEY_PERMISSION_NAMES.values())
        return granted


@dataclass(frozen=True)
class KeyInfo:
    """A key (its current version unless a version was asked for). From `list_keys` only the name and the
    attributes are known: kty, key_size, key_ops and version are empty there; `get_key` fills them."""

    vault_uri: str
    name: str
    version: str
    kid: str
    kty: str
    key_size: int | None
    key_ops: tuple[str, ...]
    enabled: bool
    not_before: datetime | None
    expires_on: datetime | None
    created_on: datetime | None
    updated_on: datetime | None
    recovery_level: str = ""
    deleted: bool = False
    deleted_on: datetime | None = None
    scheduled_purge_on: datetime | None = None


@dataclass(frozen=True)
class KeyVersionInfo:
    name: str
    version: str
    enabled: bool
    not_before: datetime | None
    expires_on: datetime | None
    created_on: datetime | None
    updated_on: datetime | None


@dataclass(frozen=True)
class ProbeResult:
    """Whether the account can read its data now; `readable` is None where Azure offers no probe."""

    readable: bool | None
    reason: str
    code: str = ""


# ARM ids


@dataclass(frozen=True)
class ArmId:
    subscription_id: str
    resource_group: str
    namespace: str
    type: str
    name: str


def parse_arm_id(arm_id: str) -> ArmId:
    match = _ARM_ID.match(arm_id.strip())
    if not match:
        raise PermanentAzureError("InvalidResourceId", f"{arm_id!r} is not an Azure resource id.")
    return ArmId(match["sub"], match["rg"], match["ns"], match["type"], match["name"])


def text(value: Any) -> str:
    if value is None:
        return ""
    return str(value.value) if isinstance(value, Enum) else str(value)


def normalize_vault_uri(uri: str) -> str:
    uri = uri.strip().lower()
    return uri if uri.endswith("/") else uri + "/"
