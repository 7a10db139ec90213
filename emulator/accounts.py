"""Cognitive Services accounts: their ARM JSON, creation, and managed identities.

Turning the system-assigned identity off deletes its service principal in Azure, so every access it
had is gone: its access policies and role assignments are removed from every vault here too, and CMK
data stays unreadable even if the identity is turned on again (it comes back as a new principal).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from django.db import transaction

from emulator import clock, data_at_rest, regions, rules
from emulator.identities import derived_id, register_principal
from emulator.models import CognitiveAccount, RoleAssignment, Subscription, Vault
from emulator.models.arm import ACCOUNT_TYPE
from emulator.router import EMULATOR_ALIAS

ACCOUNT_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$")
UAMI_ID_RE = re.compile(
    r"^/subscriptions/[^/]+/resourcegroups/[^/]+/providers/microsoft\.managedidentity/userassignedidentities/[^/]+$",
    re.IGNORECASE,
)
SKUS = ("F0", "S0", "E0")
SYSTEM, USER = "SystemAssigned", "UserAssigned"


class AccountError(ValueError):
    """A request ARM refuses with 400 (or `status`), with its error code."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def new_etag() -> str:
    return f'"{uuid.uuid4()}"'


# JSON


def capabilities(sku: str) -> list[dict[str, str]]:
    caps = [{"name": "VirtualNetworks"}, {"name": "TrustedServices"}, {"name": "DisableLocalAuth"}]
    if sku.upper() in rules.cmk_skus():
        caps.append({"name": rules.CMK_CAPABILITY})
    return caps


def endpoint(account: CognitiveAccount) -> str:
    if account.custom_subdomain:
        return f"https://{account.custom_subdomain}.cognitiveservices.azure.com/"
    return f"https://{account.location}.api.cognitive.microsoft.com/"


def identity_json(account: CognitiveAccount) -> dict[str, Any]:
    out: dict[str, Any] = {"type": account.identity_type}
    if account.has_system_identity:
        out["principalId"] = account.principal_id
        out["tenantId"] = account.identity_tenant_id
    if account.user_assigned_identities:
        out["userAssignedIdentities"] = {k: dict(v) for k, v in account.user_assigned_identities.items()}
    return out


def _stamp(moment: Any) -> str:
    return str(moment.isoformat().replace("+00:00", "Z"))


def account_json(account: CognitiveAccount) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "provisioningState": account.provisioning_state,
        "endpoint": endpoint(account),
        "endpoints": {"Face": endpoint(account)},
        "internalId": account.internal_id,
        "dateCreated": _stamp(account.created_at),
        "capabilities": capabilities(account.sku),
        "publicNetworkAccess": account.public_network_access,
    }
    if account.custom_subdomain:
        properties["customSubDomainName"] = account.custom_subdomain
    if account.encryption is not None:
        properties["encryption"] = account.encryption
    return {
        "id": account.arm_id,
        "name": account.name,
        "type": ACCOUNT_TYPE,
        "etag": account.etag,
        "location": account.location,
        "kind": account.kind,
        "sku": {"name": account.sku},
        "tags": account.tags,
        "identity": identity_json(account),
        "systemData": {
            "createdBy": account.created_by,
            "createdByType": "Application",
            "createdAt": _stamp(account.created_at),
            "lastModifiedBy": account.modified_by,
            "lastModifiedByType": "Application",
            "lastModifiedAt": _stamp(account.modified_at),
        },
        "properties": properties,
    }


# Validation of names and bodies


def validate_names(resource_group: str, name: str) -> None:
    if not 1 <= len(resource_group) <= 90:
        raise AccountError("InvalidResourceGroupName", "Resource group names are 1 to 90 characters long.")
    if not (2 <= len(name) <= 64 and ACCOUNT_NAME_RE.match(name)):
        raise AccountError(
            "InvalidAccountName",
            f"Account name '{name}' is not valid: use 2 to 64 characters, letters, digits, '_', '.' and '-', "
            "starting with a letter or digit.",
        )


def validate_sku(sku: Any) -> str:
    name = str((sku or {}).get("name") or "") if isinstance(sku, dict) else ""
    if name.upper() not in SKUS:
        raise AccountError("InvalidSkuName", f"The SKU '{name}' is not available for kind Face; use F0, S0 or E0.")
    return name.upper()


def parse_identity_type(raw: Any) -> set[str]:
    """ARM's identity.type (`None`, `SystemAssigned`, `UserAssigned`, `SystemAssigned, UserAssigned`) as a set."""
    parts = {p.strip().lower() for p in str(raw or "").split(",") if p.strip()}
    known = {"none": set(), "systemassigned": {SYSTEM}, "userassigned": {USER}}
    if not parts or not parts <= set(known) or ("none" in parts and len(parts) > 1):
        raise AccountError(
            "InvalidIdentityType",
            f"identity.type '{raw}' is not valid; use None, SystemAssigned, UserAssigned or "
            "'SystemAssigned, UserAssigned'.",
        )
    return set().union(*(known[p] for p in parts))


def validate_identity(identity: Any) -> dict[str, Any]:
    if not isinstance(identity, dict):
        raise AccountError("InvalidIdentity", "identity must be an object with a type.")
    kinds = parse_identity_type(identity.get("type"))
    uamis = identity.get("userAssignedIdentities") or {}
    if not isinstance(uamis, dict) or any(not UAMI_ID_RE.match(str(k)) for k in uamis):
        raise AccountError(
            "InvalidUserAssignedIdentity",
            "userAssignedIdentities must map user-assigned identity resource ids "
            "(/subscriptions/../resourceGroups/../providers/Microsoft.ManagedIdentity/userAssignedIdentities/..) "
            "to {}.",
        )
    if USER in kinds and not uamis:
        raise AccountError("InvalidUserAssignedIdentity", "identity type UserAssigned needs userAssignedIdentities.")
    return {"type": identity.get("type"), "userAssignedIdentities": uamis}


def identity_type_name(system: bool, user: bool) -> str:
    if system and user:
        return f"{SYSTEM}, {USER}"
    return SYSTEM if system else USER if user else "None"


# Identities


def _subscription_tenant(account: CognitiveAccount) -> str:
    subscription = Subscription.objects.filter(subscription_id=account.subscription_id).first()
    return subscription.tenant_id if subscription else ""


def uami_ids(resource_id: str) -> dict[str, str]:
    """A user-assigned identity is its own resource: its ids follow from its resource id."""
    key = resource_id.lower()
    return {"principalId": derived_id("principal", key), "clientId": derived_id("client", key)}


def apply_identity(account: CognitiveAccount, identity: dict[str, Any], *, principal_id: str = "") -> list[str]:
    """Apply an identity block to `account` (not saved); returns the principals whose access must go.

    As the project settles it, turning the system identity on keeps user-assigned identities already there.
    """
    kinds = parse_identity_type(identity.get("type"))
    tenant_id = _subscription_tenant(account)
    revoked: list[str] = []
    if SYSTEM in kinds and not account.principal_id:
        account.principal_id = (principal_id or str(uuid.uuid4())).lower()
        register_principal(account.principal_id, tenant_id, display_name=account.name)
    elif SYSTEM not in kinds and account.principal_id:
        revoked.append(account.principal_id)
        account.principal_id = ""
    uamis = dict(account.user_assigned_identities)
    if not kinds:
        uamis = {}
    elif USER in kinds:
        for resource_id, value in (identity.get("userAssignedIdentities") or {}).items():
            if value is None:
                uamis.pop(resource_id, None)
                continue
            uamis[resource_id] = uami_ids(resource_id)
            register_principal(
                uamis[resource_id]["principalId"], tenant_id, display_name=resource_id.rsplit("/", 1)[-1]
            )
    account.user_assigned_identities = uamis
    account.identity_type = identity_type_name(bool(account.principal_id), bool(uamis))
    account.identity_tenant_id = tenant_id if (account.principal_id or uamis) else ""
    return revoked


def revoke_principal_access(principal_id: str) -> int:
    """Remove every access policy and role assignment of a principal that no longer exists."""
    principal_id = principal_id.lower()
    removed = 0
    with transaction.atomic(using=EMULATOR_ALIAS):
        for vault in Vault.objects.all():
            kept = [p for p in vault.access_policies if str(p.get("objectId", "")).lower() != principal_id]
            if len(kept) == len(vault.access_policies):
                continue
            removed += len(vault.access_policies) - len(kept)
            vault.access_policies = kept
            vault.updated_at = clock.now()
            vault.save(update_fields=["access_policies", "updated_at"])
        deleted, _ = RoleAssignment.objects.filter(principal_id=principal_id).delete()
    return removed + deleted


# Creation


def create_account(
    *,
    subscription_id: str,
    resource_group: str,
    name: str,
    location: str,
    sku: str,
    kind: str = "Face",
    custom_subdomain: str = "",
    identity: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
    created_by: str = "",
    provisioning_state: str = "Succeeded",
    principal_id: str = "",
) -> CognitiveAccount:
    """Create an account with Microsoft-managed keys and its data at rest (CMK is set afterwards, as Azure
    requires for Cognitive Services)."""
    validate_names(resource_group, name)
    subdomain = custom_subdomain.lower()
    if subdomain and not SUBDOMAIN_RE.match(subdomain):
        raise AccountError(
            "InvalidCustomSubDomainName", f"customSubDomainName '{custom_subdomain}' is not a valid DNS label."
        )
    if subdomain and CognitiveAccount.objects.filter(custom_subdomain=subdomain).exists():
        raise AccountError("CustomDomainInUse", f"The custom subdomain '{subdomain}' is already in use.", 409)
    now = clock.now()
    account = CognitiveAccount(
        subscription_id=subscription_id.lower(),
        resource_group=resource_group,
        name=name,
        location=regions.normalize(location),
        kind=kind,
        sku=validate_sku({"name": sku}),
        tags=dict(tags or {}),
        custom_subdomain=subdomain,
        provisioning_state=provisioning_state,
        etag=new_etag(),
        internal_id=uuid.uuid4().hex,
        created_at=now,
        created_by=created_by,
        modified_at=now,
        modified_by=created_by,
    )
    with transaction.atomic(using=EMULATOR_ALIAS):
        if identity:
            apply_identity(account, validate_identity(identity), principal_id=principal_id)
        account.save()
        data_at_rest.create_data(account)
    return account


def touch(account: CognitiveAccount, caller: str) -> None:
    """Every write changes the etag and systemData's last modification."""
    account.etag = new_etag()
    account.modified_at = clock.now()
    account.modified_by = caller or account.modified_by
