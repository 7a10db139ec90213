"""ARM handlers for Microsoft.KeyVault/vaults (azure-api.md section 3) and, at any scope, the
Microsoft.Authorization role assignments and the built-in Key Vault role definitions.

Vault PUT answers 200/201 with `provisioningState: Succeeded` and no polling headers, which the SDK's
ARM poller treats as finished at once (no poller thread, no wait).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any

from emulator import keystore, regions
from emulator.arm_common import paged, resource_group_or_404, subscription_or_404
from emulator.http import EmuError, EmuRequest, EmuResponse, arm_error, empty_response, json_response
from emulator.keystore import StoreError
from emulator.models import RoleAssignment, Vault
from emulator.routes import arm_route

VAULTS = r"/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.KeyVault/vaults"
VAULT = VAULTS + r"/(?P<name>[^/]+)"
VAULT_TYPE = "Microsoft.KeyVault/vaults"


def arm_errors(handler: Callable[..., EmuResponse]) -> Callable[..., EmuResponse]:
    """Turn store refusals into ARM error bodies."""

    @wraps(handler)
    def wrapper(request: EmuRequest, **groups: str) -> EmuResponse:
        try:
            return handler(request, **groups)
        except StoreError as exc:
            raise EmuError(arm_error(exc.status, exc.code, exc.message)) from None

    return wrapper


# Rendering


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def vault_json(vault: Vault) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "tenantId": vault.tenant_id,
        "sku": {"family": "A", "name": vault.sku},
        "accessPolicies": vault.access_policies,
        "vaultUri": vault.vault_uri,
        "enabledForDeployment": False,
        "enabledForDiskEncryption": False,
        "enabledForTemplateDeployment": False,
        "enableSoftDelete": vault.soft_delete_enabled,
        "softDeleteRetentionInDays": vault.soft_delete_retention_days,
        "enableRbacAuthorization": vault.rbac_authorization,
        "publicNetworkAccess": vault.public_network_access,
        "provisioningState": "Succeeded",
    }
    # Azure leaves enablePurgeProtection out (null) until it is turned on; false is never stored.
    if vault.purge_protection_enabled:
        properties["enablePurgeProtection"] = True
    return {
        "id": vault.arm_id,
        "name": vault.name,
        "type": VAULT_TYPE,
        "location": vault.location,
        "tags": vault.tags,
        "systemData": {"createdAt": _iso(vault.created_at), "lastModifiedAt": _iso(vault.updated_at)},
        "properties": properties,
    }


def _vault_or_404(sub: str, rg: str, name: str) -> Vault:
    vault = Vault.objects.filter(subscription_id=sub.lower(), resource_group__iexact=rg, name__iexact=name).first()
    if vault is None:
        message = f"The Resource '{VAULT_TYPE}/{name}' under resource group '{rg}' was not found."
        raise EmuError(arm_error(404, "ResourceNotFound", message))
    return vault


def _optional_bool(properties: dict[str, Any], name: str) -> bool | None:
    value = properties.get(name)
    if value is None or isinstance(value, bool):
        return value
    raise StoreError(400, "BadRequest", f'The property "{name}" must be true or false.')


def _optional_int(properties: dict[str, Any], name: str) -> int | None:
    value = properties.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise StoreError(400, "BadRequest", f'The property "{name}" must be a whole number.')
    return value


def _policies(properties: dict[str, Any]) -> list[dict[str, Any]] | None:
    policies = properties.get("accessPolicies")
    if policies is None:
        return None
    if not isinstance(policies, list) or not all(isinstance(p, dict) for p in policies):
        raise StoreError(400, "BadRequest", 'The property "accessPolicies" must be a list of access policy entries.')
    return policies


def _sku_name(properties: dict[str, Any]) -> str | None:
    sku = properties.get("sku")
    return str(sku.get("name") or "") if isinstance(sku, dict) else None


# Vaults


@arm_route("GET", r"/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.KeyVault/vaults")
@arm_errors
def list_vaults_by_subscription(request: EmuRequest, sub: str) -> EmuResponse:
    subscription_or_404(sub)
    return paged(request, list(Vault.objects.filter(subscription_id=sub.lower()).order_by("name")), vault_json)


@arm_route("GET", VAULTS)
@arm_errors
def list_vaults_by_resource_group(request: EmuRequest, sub: str, rg: str) -> EmuResponse:
    resource_group_or_404(sub, rg)
    vaults = Vault.objects.filter(subscription_id=sub.lower(), resource_group__iexact=rg).order_by("name")
    return paged(request, list(vaults), vault_json)


@arm_route("GET", r"/subscriptions/(?P<sub>[^/]+)/resources")
@arm_errors
def list_generic_resources(request: EmuRequest, sub: str) -> EmuResponse:
    # `vaults.list()` goes to the generic resources API (azure-api.md section 3): only vaults are listed here.
    subscription_or_404(sub)
    wanted = re.search(r"resourceType eq '([^']+)'", request.param("$filter"), re.IGNORECASE)
    vaults = Vault.objects.filter(subscription_id=sub.lower()).order_by("name")
    items = list(vaults) if wanted is None or wanted.group(1).lower() == VAULT_TYPE.lower() else []
    return paged(
        request,
        items,
        lambda v: {"id": v.arm_id, "name": v.name, "type": VAULT_TYPE, "location": v.location, "tags": v.tags},
    )


@arm_route("GET", VAULT)
@arm_errors
def get_vault(request: EmuRequest, sub: str, rg: str, name: str) -> EmuResponse:
    return json_response(200, vault_json(_vault_or_404(sub, rg, name)))


@arm_route("PUT", VAULT)
@arm_errors
def create_or_update_vault(request: EmuRequest, sub: str, rg: str, name: str) -> EmuResponse:
    keystore.validate_vault_name(name)
    resource_group_or_404(sub, rg)
    body = request.json_object()
    properties = body.get("properties") or {}
    existing = Vault.objects.filter(name__iexact=name).first()
    if existing is not None and (
        existing.subscription_id != sub.lower() or existing.resource_group.lower() != rg.lower()
    ):
        raise StoreError(
            409, "VaultAlreadyExists", f"The vault name '{name}' is already in use. Vault names are globally unique."
        )
    if existing is not None:
        return json_response(200, vault_json(_update(existing, body)))
    location, tenant_id, sku = body.get("location"), properties.get("tenantId"), _sku_name(properties)
    if not location or not tenant_id or not sku:
        raise StoreError(400, "BadRequest", "A vault needs location, properties.tenantId and properties.sku.")
    if regions.find(str(location)) is None:
        message = f"The location '{location}' is not available for resource type '{VAULT_TYPE}'."
        raise StoreError(400, "LocationNotAvailableForResourceType", message)
    vault = keystore.create_vault(
        name=name,
        subscription_id=sub,
        resource_group=rg,
        location=str(location),
        tenant_id=str(tenant_id),
        sku=sku,
        soft_delete=_optional_bool(properties, "enableSoftDelete") is not False,
        retention_days=_optional_int(properties, "softDeleteRetentionInDays") or 90,
        purge_protection=bool(_optional_bool(properties, "enablePurgeProtection")),
        rbac=bool(_optional_bool(properties, "enableRbacAuthorization")),
        access_policies=_policies(properties) or [],
        tags=body.get("tags") or {},
    )
    return json_response(201, vault_json(vault))


@arm_route("PATCH", VAULT)
@arm_errors
def update_vault(request: EmuRequest, sub: str, rg: str, name: str) -> EmuResponse:
    vault = _vault_or_404(sub, rg, name)
    return json_response(200, vault_json(_update(vault, request.json_object())))


def _update(vault: Vault, body: dict[str, Any]) -> Vault:
    properties = body.get("properties") or {}
    return keystore.update_vault(
        vault,
        tenant_id=properties.get("tenantId"),
        sku=_sku_name(properties),
        soft_delete=_optional_bool(properties, "enableSoftDelete"),
        retention_days=_optional_int(properties, "softDeleteRetentionInDays"),
        purge_protection=_optional_bool(properties, "enablePurgeProtection"),
        rbac=_optional_bool(properties, "enableRbacAuthorization"),
        access_policies=_policies(properties),
        public_network_access=properties.get("publicNetworkAccess"),
        tags=body.get("tags"),
    )


@arm_route("DELETE", VAULT)
@arm_errors
def delete_vault(request: EmuRequest, sub: str, rg: str, name: str) -> EmuResponse:
    vault = Vault.objects.filter(subscription_id=sub.lower(), resource_group__iexact=rg, name__iexact=name).first()
    if vault is None:
        return empty_response(204)
    keystore.delete_vault(vault)
    return empty_response(200)


@arm_route("PUT", VAULT + r"/accessPolicies/(?P<kind>[^/]+)")
@arm_errors
def update_access_policy(request: EmuRequest, sub: str, rg: str, name: str, kind: str) -> EmuResponse:
    vault = _vault_or_404(sub, rg, name)
    policies = _policies(request.json_object().get("properties") or {}) or []
    if kind.lower() not in {"add", "replace", "remove"}:
        raise StoreError(
            400, "BadRequest", f"The access policy operation kind '{kind}' is not valid; use add, replace or remove."
        )
    keystore.apply_access_policy_changes(vault, policies, kind.lower())
    # Azure echoes the entries of the request, not the vault's resulting list.
    echoed = [keystore.validated_policy(vault, p, "properties.accessPolicies") for p in policies]
    return json_response(
        200,
        {
            "id": f"{vault.arm_id}/accessPolicies/{kind.lower()}",
            "type": f"{VAULT_TYPE}/accessPolicies",
            "properties": {"accessPolicies": echoed},
        },
    )


@arm_route("POST", r"/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.KeyVault/checkNameAvailability")
@arm_errors
def check_name_availability(request: EmuRequest, sub: str) -> EmuResponse:
    name = str(request.json_object().get("name") or "")
    try:
        keystore.validate_vault_name(name)
    except StoreError as exc:
        return json_response(200, {"nameAvailable": False, "reason": "AccountNameInvalid", "message": exc.message})
    if Vault.objects.filter(name__iexact=name).exists():
        message = f"The vault name '{name}' is already in use."
        return json_response(200, {"nameAvailable": False, "reason": "AlreadyExists", "message": message})
    return json_response(200, {"nameAvailable": True})


# Role assignments and role definitions, at any scope

SCOPE = r"(?P<scope>.*?)/providers/Microsoft\.Authorization"
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.IGNORECASE)


def _scope(raw: str) -> str:
    return "/" + raw.strip("/") if raw.strip("/") else "/"


def _check_scope_exists(scope: str) -> None:
    match = re.search(r"/providers/Microsoft\.KeyVault/vaults/([^/]+)", scope, re.IGNORECASE)
    if match and not Vault.objects.filter(name__iexact=match.group(1)).exists():
        raise EmuError(
            arm_error(404, "ResourceNotFound", f"The Resource '{VAULT_TYPE}/{match.group(1)}' was not found.")
        )


def assignment_json(assignment: RoleAssignment) -> dict[str, Any]:
    return {
        "id": f"{assignment.scope.rstrip('/')}/providers/Microsoft.Authorization/roleAssignments/{assignment.name}",
        "name": assignment.name,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "roleDefinitionId": assignment.role_definition_id,
            "principalId": assignment.principal_id,
            "principalType": assignment.principal_type,
            "scope": assignment.scope,
            "condition": None,
            "conditionVersion": None,
            "createdOn": _iso(assignment.created_at),
            "updatedOn": _iso(assignment.created_at),
        },
    }


def _assignment_or_404(scope: str, name: str) -> RoleAssignment:
    found = RoleAssignment.objects.filter(name=name.lower(), scope__iexact=scope).first()
    if found is None:
        raise EmuError(arm_error(404, "RoleAssignmentNotFound", f"The role assignment '{name}' is not found."))
    return found


@arm_route("PUT", SCOPE + r"/roleAssignments/(?P<name>[^/]+)")
@arm_errors
def create_role_assignment(request: EmuRequest, scope: str, name: str) -> EmuResponse:
    if not _GUID.match(name):
        raise StoreError(
            400,
            "InvalidRoleAssignmentId",
            f"The role assignment ID '{name}' is not valid. The role assignment ID must be a GUID.",
        )
    scope = _scope(scope)
    _check_scope_exists(scope)
    properties = request.json_object().get("properties") or {}
    role, principal = properties.get("roleDefinitionId"), properties.get("principalId")
    if not role or not principal:
        raise StoreError(
            400, "InvalidRoleAssignmentRequest", "properties.roleDefinitionId and properties.principalId are required."
        )
    principal_type = str(properties.get("principalType") or "ServicePrincipal")
    assignment = keystore.assign_role(scope, str(principal), str(role), name=name, principal_type=principal_type)
    return json_response(201, assignment_json(assignment))


@arm_route("GET", SCOPE + r"/roleAssignments/(?P<name>[^/]+)")
@arm_errors
def get_role_assignment(request: EmuRequest, scope: str, name: str) -> EmuResponse:
    return json_response(200, assignment_json(_assignment_or_404(_scope(scope), name)))


@arm_route("DELETE", SCOPE + r"/roleAssignments/(?P<name>[^/]+)")
@arm_errors
def delete_role_assignment(request: EmuRequest, scope: str, name: str) -> EmuResponse:
    found = RoleAssignment.objects.filter(name=name.lower(), scope__iexact=_scope(scope)).first()
    if found is None:
        return empty_response(204)
    body = assignment_json(found)
    keystore.remove_role_assignment(found)
    return json_response(200, body)


@arm_route("GET", SCOPE + r"/roleAssignments")
@arm_errors
def list_role_assignments(request: EmuRequest, scope: str) -> EmuResponse:
    scope = _scope(scope)
    query = request.param("$filter")
    principal = re.search(r"(?:principalId eq|assignedTo\()\s*'([^']+)'", query, re.IGNORECASE)
    rows = RoleAssignment.objects.all()
    if principal:
        rows = rows.filter(principal_id=principal.group(1).lower())
    at_scope_only = "atscope()" in query.lower()
    matched = [a for a in rows if _related(a.scope, scope, at_scope_only)]
    return paged(request, matched, assignment_json)


def _related(assignment_scope: str, scope: str, at_scope_only: bool) -> bool:
    """ARM lists assignments at the scope and above it (inherited), and below it unless atScope()."""
    above = keystore.scope_covers(assignment_scope, scope)
    below = keystore.scope_covers(scope, assignment_scope)
    return above or (below and not at_scope_only)


def role_definition_json(subscription_scope: str, definition: keystore.RoleDefinition) -> dict[str, Any]:
    actions = sorted({f"Microsoft.KeyVault/vaults/{keystore.DATA_ACTIONS[p]}" for p in definition.permissions})
    return {
        "id": f"{subscription_scope}/providers/Microsoft.Authorization/roleDefinitions/{definition.id}",
        "name": definition.id,
        "type": "Microsoft.Authorization/roleDefinitions",
        "properties": {
            "roleName": definition.name,
            "type": "BuiltInRole",
            "description": definition.description,
            "assignableScopes": ["/"],
            "permissions": [{"actions": [], "notActions": [], "dataActions": actions, "notDataActions": []}],
        },
    }


def _subscription_scope(scope: str) -> str:
    match = re.match(r"^/subscriptions/[^/]+", scope, re.IGNORECASE)
    return match.group(0) if match else ""


@arm_route("GET", SCOPE + r"/roleDefinitions/(?P<role>[^/]+)")
@arm_errors
def get_role_definition(request: EmuRequest, scope: str, role: str) -> EmuResponse:
    definition = keystore.ROLE_DEFINITIONS.get(role.lower())
    if definition is None:
        raise EmuError(
            arm_error(404, "RoleDefinitionDoesNotExist", f"The role definition '{role}' could not be found.")
        )
    return json_response(200, role_definition_json(_subscription_scope(_scope(scope)), definition))


@arm_route("GET", SCOPE + r"/roleDefinitions")
@arm_errors
def list_role_definitions(request: EmuRequest, scope: str) -> EmuResponse:
    wanted = re.search(r"roleName eq '([^']+)'", request.param("$filter"), re.IGNORECASE)
    definitions = [
        d for d in keystore.ROLE_DEFINITIONS.values() if wanted is None or d.name.lower() == wanted.group(1).lower()
    ]
    prefix = _subscription_scope(_scope(scope))
    return paged(request, definitions, lambda d: role_definition_json(prefix, d))
