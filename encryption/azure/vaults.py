"""Key Vault vaults (management plane): reads, and the identity's key access by access policy or RBAC role."""

from __future__ import annotations

import uuid

from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters
from azure.mgmt.keyvault import models as kv_models

from encryption.azure.clients import authorization_client, vault_mgmt_client
from encryption.azure.errors import PermanentAzureError, azure_call
from encryption.azure.results import (
    CMK_KEY_PERMISSIONS,
    CRYPTO_SERVICE_ENCRYPTION_USER,
    CRYPTO_SERVICE_ENCRYPTION_USER_NAME,
    KEY_PERMISSION_NAMES,
    ROLES_WITH_CMK_ACCESS,
    AccessPolicy,
    VaultInfo,
    normalize_vault_uri,
    parse_arm_id,
    text,
)

# Key Vault vaults (management plane)


def _vault_info(vault: kv_models.Vault) -> VaultInfo:
    arm = parse_arm_id(text(vault.id))
    props = vault.properties
    policies = tuple(
        AccessPolicy(
            tenant_id=text(p.tenant_id),
            object_id=text(p.object_id),
            keys=tuple(
                KEY_PERMISSION_NAMES.get(text(k).lower(), text(k))
                for k in ((p.permissions.keys_property or []) if p.permissions else [])
            ),
        )
        for p in (props.access_policies or [])
    )
    return VaultInfo(
        arm_id=text(vault.id),
        name=text(vault.name),
        subscription_id=arm.subscription_id,
        resource_group=arm.resource_group,
        location=text(vault.location),
        tenant_id=text(props.tenant_id),
        vault_uri=normalize_vault_uri(text(props.vault_uri)),
        sku=text(props.sku.name) if props.sku else "standard",
        # Absent flags take Azure's defaults: soft delete on (since 2020), purge protection and RBAC off.
        soft_delete_enabled=props.enable_soft_delete is not False,
        soft_delete_retention_days=int(props.soft_delete_retention_in_days or 90),
        purge_protection_enabled=bool(props.enable_purge_protection),
        rbac_authorization=bool(props.enable_rbac_authorization),
        access_policies=policies,
    )


def list_vaults(subscription_id: str) -> list[VaultInfo]:
    with azure_call(f"list the key vaults of subscription {subscription_id}"):
        return [_vault_info(v) for v in vault_mgmt_client(subscription_id).vaults.list_by_subscription()]


def get_vault(arm_id: str) -> VaultInfo:
    arm = parse_arm_id(arm_id)
    with azure_call(f"read key vault {arm.name}"):
        return _vault_info(vault_mgmt_client(arm.subscription_id).vaults.get(arm.resource_group, arm.name))


def find_vault(vault_uri: str, subscription_id: str) -> VaultInfo | None:
    """The vault with this URI in the subscription, or None when the subscription has no such vault."""
    wanted = normalize_vault_uri(vault_uri)
    return next((v for v in list_vaults(subscription_id) if v.vault_uri == wanted), None)


def _role_assignment_name(scope: str, principal_id: str) -> str:
    # Deterministic, so a retried grant PUTs the same assignment instead of creating a second one.
    return str(
        uuid.uuid5(uuid.NAMESPACE_URL, f"{scope.lower()}|{principal_id.lower()}|{CRYPTO_SERVICE_ENCRYPTION_USER}")
    )


def _role_definition_id(vault: VaultInfo) -> str:
    return (
        f"/subscriptions/{vault.subscription_id}/providers/Microsoft.Authorization/roleDefinitions/"
        f"{CRYPTO_SERVICE_ENCRYPTION_USER}"
    )


def grant_key_access(vault: VaultInfo, principal_id: str) -> None:
    """Let the principal use the vault's keys for encryption: an access policy with get, wrapKey and unwrapKey
    (merged into any existing entry), or on an RBAC vault the role Key Vault Crypto Service Encryption User at
    the vault's scope. Idempotent."""
    if vault.rbac_authorization:
        parameters = RoleAssignmentCreateParameters(
            role_definition_id=_role_definition_id(vault), principal_id=principal_id, principal_type="ServicePrincipal"
        )
        try:
            with azure_call(f"grant {CRYPTO_SERVICE_ENCRYPTION_USER_NAME} on {vault.name}"):
                authorization_client(vault.subscription_id).role_assignments.create(
                    vault.arm_id, _role_assignment_name(vault.arm_id, principal_id), parameters
                )
        except PermanentAzureError as ex:
            if ex.code != "RoleAssignmentExists":  # granted before under another name: nothing to do
                raise
        return
    entry = kv_models.AccessPolicyEntry(
        tenant_id=vault.tenant_id,
        object_id=principal_id,
        permissions=kv_models.Permissions(keys_property=list(CMK_KEY_PERMISSIONS)),
    )
    _update_access_policy(vault, "add", entry, what=f"grant get, wrapKey, unwrapKey on {vault.name}")


def _update_access_policy(vault: VaultInfo, kind: str, entry: kv_models.AccessPolicyEntry, *, what: str) -> None:
    parameters = kv_models.VaultAccessPolicyParameters(
        properties=kv_models.VaultAccessPolicyProperties(access_policies=[entry])
    )
    with azure_call(what):
        vault_mgmt_client(vault.subscription_id).vaults.update_access_policy(
            vault.resource_group, vault.name, kind, parameters
        )


def revoke_key_access(vault: VaultInfo, principal_id: str) -> None:
    """Take the principal's key access away: its access policy entry, or on an RBAC vault its role assignments
    of Key Vault Crypto Service Encryption User at the vault's scope. Idempotent."""
    if vault.rbac_authorization:
        client = authorization_client(vault.subscription_id)
        with azure_call(f"list the role assignments on {vault.name}"):
            names = {
                text(a.name)
                for a in client.role_assignments.list_for_scope(vault.arm_id, filter=f"principalId eq '{principal_id}'")
                if text(a.principal_id).lower() == principal_id.lower()
                and text(a.scope).lower() == vault.arm_id.lower()
                and text(a.role_definition_id).lower().endswith(CRYPTO_SERVICE_ENCRYPTION_USER)
            }
        names.add(_role_assignment_name(vault.arm_id, principal_id))
        for name in sorted(names):
            try:
                with azure_call(f"remove the role assignment on {vault.name}"):
                    client.role_assignments.delete(vault.arm_id, name)
            except PermanentAzureError as ex:
                if not ex.not_found:
                    raise
        return
    current = get_vault(vault.arm_id).key_permissions_of(principal_id)
    if not current:
        return
    # Listing every permission the entry holds removes the whole entry whichever way `remove` is read.
    entry = kv_models.AccessPolicyEntry(
        tenant_id=vault.tenant_id,
        object_id=principal_id,
        permissions=kv_models.Permissions(keys_property=sorted(current)),
    )
    _update_access_policy(vault, "remove", entry, what=f"remove the access policy on {vault.name}")


def key_access_of(vault: VaultInfo, principal_id: str) -> set[str]:
    """The key permissions the principal holds on the vault: from the given vault's access policies (no call),
    or on an RBAC vault get/wrapKey/unwrapKey when a role that carries them is assigned at or above it."""
    if not principal_id:
        return set()
    if not vault.rbac_authorization:
        return vault.key_permissions_of(principal_id)
    client = authorization_client(vault.subscription_id)
    with azure_call(f"list the role assignments on {vault.name}"):
        for assignment in client.role_assignments.list_for_scope(
            vault.arm_id, filter=f"principalId eq '{principal_id}'"
        ):
            role = text(assignment.role_definition_id).rsplit("/", 1)[-1].lower()
            if text(assignment.principal_id).lower() == principal_id.lower() and role in ROLES_WITH_CMK_ACCESS:
                return set(CMK_KEY_PERMISSIONS)
    return set()
