"""An account PATCH (or a PUT on an existing account): validated in full when it arrives, applied when its
long-running operation finishes."""

from __future__ import annotations

from typing import Any

from emulator import accounts, cmk, rules
from emulator.accounts import AccountError
from emulator.models import CognitiveAccount
from emulator.rules import CmkRefused


def plan(account: CognitiveAccount, body: dict[str, Any]) -> dict[str, Any]:
    """What the operation will change; raises AccountError (400) or CmkRefused (400) for what Azure refuses."""
    properties = body.get("properties") or {}
    if not isinstance(properties, dict):
        raise AccountError("InvalidRequestContent", "properties must be an object.")
    _check_immutable(account, body, properties)
    changes: dict[str, Any] = {}
    if "sku" in body:
        changes["sku"] = accounts.validate_sku(body["sku"])
    if isinstance(body.get("tags"), dict):
        changes["tags"] = {str(k): str(v) for k, v in body["tags"].items()}
    if body.get("identity") is not None:
        changes["identity"] = accounts.validate_identity(body["identity"])
    if properties.get("publicNetworkAccess") in {"Enabled", "Disabled"}:
        changes["publicNetworkAccess"] = properties["publicNetworkAccess"]
    if "encryption" in properties:
        changes["encryption"] = cmk.parse_encryption(properties["encryption"])
    _check_cmk(account, changes)
    return changes


def _check_immutable(account: CognitiveAccount, body: dict[str, Any], properties: dict[str, Any]) -> None:
    if body.get("kind") and str(body["kind"]).lower() != account.kind.lower():
        raise AccountError("CannotChangeKind", f"The kind of account '{account.name}' cannot be changed.")
    subdomain = str(properties.get("customSubDomainName") or "").lower()
    if subdomain and account.custom_subdomain and subdomain != account.custom_subdomain:
        raise AccountError(
            "CustomSubDomainNameCannotBeChanged",
            f"The customSubDomainName of account '{account.name}' is '{account.custom_subdomain}' and cannot change.",
        )


def _check_cmk(account: CognitiveAccount, changes: dict[str, Any]) -> None:
    encryption = changes.get("encryption")
    sku = changes.get("sku", account.sku)
    on_cmk = account.key_vault_properties is not None
    will_use_cmk = encryption["keySource"] == cmk.KEY_VAULT if encryption else on_cmk
    if will_use_cmk:
        rules.check_sku(account, sku)
    if encryption is None:
        return
    if "identity" in changes and not _same_identity(account, changes["identity"]):
        raise CmkRefused(
            "IdentityNotEnabled",
            "This request changes the identity and the encryption together. Change the identity first, grant the "
            "identity get, wrapKey and unwrapKey on the key vault, then set the encryption in a second request.",
        )
    cmk.validate(account, encryption, sku)


def _same_identity(account: CognitiveAccount, identity: dict[str, Any]) -> bool:
    kinds = accounts.parse_identity_type(identity.get("type"))
    current = accounts.parse_identity_type(account.identity_type)
    listed = identity.get("userAssignedIdentities") or {}
    same_uamis = all(v is not None and k in account.user_assigned_identities for k, v in listed.items())
    # Asking for SystemAssigned keeps user-assigned identities already there (accounts.apply_identity).
    same_kinds = kinds == current or (kinds == {accounts.SYSTEM} and accounts.SYSTEM in current)
    return same_kinds and same_uamis


def apply(account: CognitiveAccount, changes: dict[str, Any]) -> list[str]:
    """Apply planned changes (the caller saves); the encryption goes first, as the only part that can
    still fail. Returns the principals whose access must be revoked."""
    if "encryption" in changes:
        cmk.apply(account, changes["encryption"])
    revoked: list[str] = []
    if "identity" in changes:
        revoked = accounts.apply_identity(account, changes["identity"])
    if "sku" in changes:
        account.sku = changes["sku"]
    if "tags" in changes:
        account.tags = changes["tags"]
    if "publicNetworkAccess" in changes:
        account.public_network_access = changes["publicNetworkAccess"]
    return revoked
