"""Key Vault's state and rules, callable without HTTP: the ARM and data-plane handlers use these, and so can
the seed. Functions raise `StoreError` (status, code, message, inner code) for anything Azure refuses.

Vaults: `create_vault`, `update_vault`, `set_access_policy`, `delete_vault`; role assignments:
`assign_role`, `remove_role_assignment`; keys: `create_key`, `rotate_key`, `update_key_version`,
`set_rotation_policy`, `apply_due_rotations`, `delete_key`, `recover_key`, `purge_key`, `backup_key`,
`restore_key`; authorization: `permissions_of`, `authorize`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import QuerySet

from emulator import clock, kvcrypto
from emulator.identities import Caller
from emulator.models import Key, KeyVersion, RoleAssignment, Vault
from emulator.router import EMULATOR_ALIAS


class StoreError(Exception):
    def __init__(self, status: int, code: str, message: str, inner_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.inner_code = inner_code


# Names and vocabularies

VAULT_NAME_RE = re.compile(r"^[a-zA-Z](?!.*--)[a-zA-Z0-9-]{1,22}[a-zA-Z0-9]$")
KEY_NAME_RE = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
SKUS = ("standard", "premium")

# Key permissions exactly as ARM spells them; comparisons are case-insensitive.
KEY_PERMISSIONS = [
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
_PERMISSION_BY_LOWER = {p.lower(): p for p in (*KEY_PERMISSIONS, "all")}

RSA_OPS = ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
EC_OPS = ["sign", "verify"]
_OP_BY_LOWER = {op.lower(): op for op in RSA_OPS}

CRYPTO_SERVICE_ENCRYPTION_USER = "e147488a-f6f5-4113-8e2d-b22465e65bf6"
CRYPTO_OFFICER = "14b46e9e-c2b7-41b4-b07b-48a6ebf60603"
ADMINISTRATOR = "00482a5a-887f-4fb3-b363-3b7fe8e74483"
CRYPTO_USER = "12338af0-0e69-4776-bea7-57ae8d297424"
READER = "21090545-7ca7-4776-b22c-e363652d74d2"


@dataclass(frozen=True)
class RoleDefinition:
    id: str
    name: str
    description: str
    permissions: frozenset[str]


_ALL = frozenset(KEY_PERMISSIONS)
ROLE_DEFINITIONS = {
    role.id: role
    for role in (
        RoleDefinition(
            CRYPTO_SERVICE_ENCRYPTION_USER,
            "Key Vault Crypto Service Encryption User",
            "Read metadata of keys and perform wrap/unwrap operations.",
            frozenset({"get", "list", "wrapKey", "unwrapKey"}),
        ),
        RoleDefinition(
            CRYPTO_OFFICER, "Key Vault Crypto Officer", "Perform any action on the keys of a key vault.", _ALL
        ),
        RoleDefinition(
            ADMINISTRATOR, "Key Vault Administrator", "Perform all data plane operations on a key vault.", _ALL
        ),
        RoleDefinition(
            CRYPTO_USER,
            "Key Vault Crypto User",
            "Perform cryptographic operations using keys.",
            frozenset(
                {"get", "list", "update", "backup", "encrypt", "decrypt", "wrapKey", "unwrapKey", "sign", "verify"}
            ),
        ),
        RoleDefinition(
            READER,
            "Key Vault Reader",
            "Read metadata of key vaults and its keys.",
            frozenset({"get", "list", "getrotationpolicy"}),
        ),
    )
}

# The RBAC data action Azure names in a ForbiddenByRbac message, per key permission.
DATA_ACTIONS = {
    "get": "keys/read", "list": "keys/read", "create": "keys/create/action", "update": "keys/update/action",
    "import": "keys/import/action", "delete": "keys/delete", "backup": "keys/backup/action",
    "restore": "keys/restore/action", "recover": "deletedKeys/recover/action", "purge": "deletedKeys/delete",
    "encrypt": "keys/encrypt/action", "decrypt": "keys/decrypt/action", "wrapKey": "keys/wrap/action",
    "unwrapKey": "keys/unwrap/action", "sign": "keys/sign/action", "verify": "keys/verify/action",
    "release": "keys/release/action", "rotate": "keys/rotate/action",
    "getrotationpolicy": "keys/rotationpolicy/read", "setrotationpolicy": "keys/rotationpolicy/write",
}  # fmt: skip


def _bad_request(message: str) -> StoreError:
    return StoreError(400, "BadRequest", message)


def _bad_parameter(message: str) -> StoreError:
    return StoreError(400, "BadParameter", message)


def normalize_permissions(values: Iterable[Any], where: str = "permissions.keys") -> list[str]:
    out: list[str] = []
    for index, value in enumerate(values):
        canonical = _PERMISSION_BY_LOWER.get(str(value).lower())
        if canonical is None:
            raise _bad_request(f"Invalid value found at {where}[{index}]: '{value}' is not a valid key permission.")
        if canonical not in out:
            out.append(canonical)
    return out


# Vaults


def validate_vault_name(name: str) -> None:
    if not VAULT_NAME_RE.match(name):
        raise StoreError(
            400,
            "VaultNameNotValid",
            f"The vault name '{name}' is invalid. A vault's name must be between 3-24 alphanumeric characters. "
            "The name must begin with a letter, end with a letter or digit, and not contain consecutive hyphens.",
        )


def _check_retention(days: int) -> None:
    if not 7 <= days <= 90:
        raise _bad_request(f'The property "softDeleteRetentionInDays" must be between 7 and 90 days, not {days}.')


def create_vault(
    *,
    name: str,
    subscription_id: str,
    resource_group: str,
    location: str,
    tenant_id: str,
    sku: str = "standard",
    soft_delete: bool = True,
    retention_days: int = 90,
    purge_protection: bool = False,
    rbac: bool = False,
    access_policies: Sequence[dict[str, Any]] = (),
    tags: dict[str, str] | None = None,
) -> Vault:
    """Create a vault, checking Azure's rules (name, unique DNS name, retention, purge protection needs soft delete)."""
    validate_vault_name(name)
    _check_retention(retention_days)
    if sku.lower() not in SKUS:
        raise _bad_request(f"The SKU '{sku}' is not valid; use standard or premium.")
    if purge_protection and not soft_delete:
        raise _bad_request(
            'The property "enablePurgeProtection" can be set to true only if "enableSoftDelete" is true.'
        )
    if Vault.objects.filter(name__iexact=name).exists():
        raise StoreError(
            409, "VaultAlreadyExists", f"The vault name '{name}' is already in use. Vault names are globally unique."
        )
    now = clock.now()
    with transaction.atomic(using=EMULATOR_ALIAS):
        vault = Vault(
            name=name.lower(),
            subscription_id=subscription_id.lower(),
            resource_group=resource_group,
            location=normalize_location(location),
            tenant_id=tenant_id.lower(),
            sku=sku.lower(),
            tags=dict(tags or {}),
            soft_delete_enabled=soft_delete,
            soft_delete_retention_days=retention_days,
            purge_protection_enabled=purge_protection,
            rbac_authorization=rbac,
            created_at=now,
            updated_at=now,
        )
        vault.access_policies = _validated_policies(vault, access_policies)
        vault.save()
    return vault


def normalize_location(location: str) -> str:
    """`East US` -> `eastus`, as ARM treats them alike."""
    return location.replace(" ", "").lower()


def update_vault(
    vault: Vault,
    *,
    tenant_id: str | None = None,
    sku: str | None = None,
    soft_delete: bool | None = None,
    retention_days: int | None = None,
    purge_protection: bool | None = None,
    rbac: bool | None = None,
    access_policies: Sequence[dict[str, Any]] | None = None,
    public_network_access: str | None = None,
    tags: dict[str, str] | None = None,
) -> Vault:
    """Apply a PATCH (or a PUT on an existing vault). Soft delete and purge protection are one-way."""
    if soft_delete is False and vault.soft_delete_enabled:
        raise _bad_request(
            'The property "enableSoftDelete" cannot be set to false. Enabling the soft delete for a vault is an '
            "irreversible action."
        )
    if purge_protection is False and vault.purge_protection_enabled:
        raise _bad_request(
            'The property "enablePurgeProtection" cannot be set to false. Enabling the purge protection for a vault '
            "is an irreversible action."
        )
    if retention_days is not None:
        _check_retention(retention_days)
    if purge_protection and not (soft_delete if soft_delete is not None else vault.soft_delete_enabled):
        raise _bad_request(
            'The property "enablePurgeProtection" can be set to true only if "enableSoftDelete" is true.'
        )
    if sku is not None and sku.lower() not in SKUS:
        raise _bad_request(f"The SKU '{sku}' is not valid; use standard or premium.")
    changes: dict[str, Any] = {
        "tenant_id": tenant_id.lower() if tenant_id else None,
        "sku": sku.lower() if sku else None,
        "soft_delete_enabled": soft_delete,
        "soft_delete_retention_days": retention_days,
        "purge_protection_enabled": purge_protection,
        "rbac_authorization": rbac,
        "public_network_access": public_network_access,
        "tags": tags,
    }
    for field, value in changes.items():
        if value is not None:
            setattr(vault, field, value)
    if access_policies is not None:
        vault.access_policies = _validated_policies(vault, access_policies)
    vault.updated_at = clock.now()
    with transaction.atomic(using=EMULATOR_ALIAS):
        vault.save()
    return vault


def _validated_policies(vault: Vault, entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    if len(entries) > 1024:
        raise _bad_request("A vault can have at most 1024 access policy entries.")
    out: list[dict[str, Any]] = []
    for index, entry in enumerate(entries):
        out.append(validated_policy(vault, entry, f"properties.accessPolicies[{index}]"))
    return out


def validated_policy(vault: Vault, entry: dict[str, Any], where: str) -> dict[str, Any]:
    object_id = str(entry.get("objectId") or "").lower()
    tenant_id = str(entry.get("tenantId") or "").lower()
    if not object_id or not tenant_id:
        raise _bad_request(f"{where} must have a tenantId and an objectId.")
    if tenant_id != vault.tenant_id:
        raise _bad_request(
            f"The tenant ID '{tenant_id}' of {where} does not match the vault's tenant ID '{vault.tenant_id}'."
        )
    permissions = dict(entry.get("permissions") or {})
    return {
        "tenantId": tenant_id,
        "objectId": object_id,
        "applicationId": entry.get("applicationId"),
        "permissions": {
            "keys": normalize_permissions(permissions.get("keys") or [], f"{where}.permissions.keys"),
            "secrets": list(permissions.get("secrets") or []),
            "certificates": list(permissions.get("certificates") or []),
            "storage": list(permissions.get("storage") or []),
        },
    }


def set_access_policy(
    vault: Vault, object_id: str, keys: Iterable[str], *, mode: str = "add", tenant_id: str | None = None
) -> Vault:
    """Change one principal's key permissions: `add` merges, `remove` takes away, `replace` overwrites (an
    entry left with no permissions at all is dropped)."""
    if mode not in {"add", "remove", "replace"}:
        raise _bad_request(f"The access policy operation kind '{mode}' is not valid; use add, replace or remove.")
    incoming = validated_policy(
        vault,
        {"objectId": object_id, "tenantId": tenant_id or vault.tenant_id, "permissions": {"keys": list(keys)}},
        "properties.accessPolicies[0]",
    )
    return apply_access_policy_changes(vault, [incoming], mode)


def apply_access_policy_changes(vault: Vault, entries: Sequence[dict[str, Any]], mode: str) -> Vault:
    policies = [dict(p) for p in vault.access_policies]
    for index, raw in enumerate(entries):
        entry = validated_policy(vault, raw, f"properties.accessPolicies[{index}]")
        current = next((p for p in policies if p["objectId"] == entry["objectId"]), None)
        if current is None:
            if mode != "remove":
                policies.append(entry)
            continue
        policies.remove(current)
        merged = _merge_policy(current, entry, mode)
        if any(merged["permissions"].get(kind) for kind in ("keys", "secrets", "certificates", "storage")):
            policies.append(merged)
    vault.access_policies = policies
    vault.updated_at = clock.now()
    with transaction.atomic(using=EMULATOR_ALIAS):
        vault.save(update_fields=["access_policies", "updated_at"])
    return vault


def _merge_policy(current: dict[str, Any], entry: dict[str, Any], mode: str) -> dict[str, Any]:
    if mode == "replace":
        return entry
    merged = {**current, "permissions": dict(current["permissions"])}
    for kind in ("keys", "secrets", "certificates", "storage"):
        have = list(current["permissions"].get(kind) or [])
        given = entry["permissions"].get(kind) or []
        if mode == "add":
            merged["permissions"][kind] = have + [p for p in given if p not in have]
        else:
            drop = {str(p).lower() for p in given}
            merged["permissions"][kind] = [p for p in have if str(p).lower() not in drop]
    return merged


def delete_vault(vault: Vault) -> None:
    # Vault soft delete (deletedVaults) is not modelled: the vault, its keys and its role assignments go.
    with transaction.atomic(using=EMULATOR_ALIAS):
        RoleAssignment.objects.filter(scope__iexact=vault.arm_id).delete()
        RoleAssignment.objects.filter(scope__istartswith=vault.arm_id + "/").delete()
        vault.delete()


# Role assignments


def role_definition_guid(role_definition_id: str) -> str:
    return role_definition_id.rstrip("/").rsplit("/", 1)[-1].lower()


def find_role(role: str) -> RoleDefinition | None:
    """A built-in Key Vault role by GUID, full id, or name."""
    guid = role_definition_guid(role)
    if guid in ROLE_DEFINITIONS:
        return ROLE_DEFINITIONS[guid]
    return next((r for r in ROLE_DEFINITIONS.values() if r.name.lower() == role.lower()), None)


def role_definition_id(subscription_id: str, guid: str) -> str:
    return f"/subscriptions/{subscription_id}/providers/Microsoft.Authorization/roleDefinitions/{guid}"


def assign_role(
    scope: str, principal_id: str, role: str, *, name: str | None = None, principal_type: str = "ServicePrincipal"
) -> RoleAssignment:
    """Assign a built-in role at `scope` (an ARM id); 409 RoleAssignmentExists when it is already there."""
    definition = find_role(role)
    if definition is None:
        raise StoreError(
            400, "RoleDefinitionDoesNotExist", f"The specified role definition with ID '{role}' does not exist."
        )
    scope = "/" + scope.strip("/")
    subscription = scope.split("/")[2] if scope.lower().startswith("/subscriptions/") else ""
    full_id = (
        role_definition_id(subscription, definition.id)
        if subscription
        else f"/providers/Microsoft.Authorization/roleDefinitions/{definition.id}"
    )
    same = RoleAssignment.objects.filter(scope__iexact=scope, principal_id=principal_id.lower())
    if any(role_definition_guid(a.role_definition_id) == definition.id for a in same):
        raise StoreError(409, "RoleAssignmentExists", "The role assignment already exists.")
    assignment_name = (name or str(uuid.uuid4())).lower()
    if RoleAssignment.objects.filter(name=assignment_name).exists():
        raise StoreError(
            409,
            "RoleAssignmentUpdateNotPermitted",
            "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
        )
    with transaction.atomic(using=EMULATOR_ALIAS):
        return RoleAssignment.objects.create(
            name=assignment_name,
            scope=scope,
            role_definition_id=full_id,
            principal_id=principal_id.lower(),
            principal_type=principal_type,
            created_at=clock.now(),
        )


def remove_role_assignment(assignment: RoleAssignment) -> None:
    with transaction.atomic(using=EMULATOR_ALIAS):
        assignment.delete()


def scope_covers(scope: str, resource_id: str) -> bool:
    scope, resource_id = scope.lower().rstrip("/"), resource_id.lower().rstrip("/")
    return scope in {"", "/"} or resource_id == scope or resource_id.startswith(scope + "/")


def assignments_covering(resource_id: str, principal_id: str | None = None) -> list[RoleAssignment]:
    """Role assignments at `resource_id` or any scope above it (inheritance), optionally for one principal."""
    rows: QuerySet[RoleAssignment] = RoleAssignment.objects.all()
    if principal_id:
        rows = rows.filter(principal_id=principal_id.lower())
    return [a for a in rows if scope_covers(a.scope, resource_id)]


# Authorization on the data plane


def permissions_of(vault: Vault, object_id: str, key_name: str = "") -> set[str]:
    """The key permissions `object_id` holds on `vault` (on one key when `key_name` is given): from role
    assignments on RBAC vaults (access policies are then ignored, as Azure does), else its access policy."""
    if vault.rbac_authorization:
        resource = f"{vault.arm_id}/keys/{key_name}" if key_name else vault.arm_id
        granted: set[str] = set()
        for assignment in assignments_covering(resource, object_id):
            definition = ROLE_DEFINITIONS.get(role_definition_guid(assignment.role_definition_id))
            if definition is not None:
                granted |= definition.permissions
        return granted
    entry = vault.policy_for(object_id)
    if entry is None:
        return set()
    keys = {str(p) for p in (entry.get("permissions") or {}).get("keys") or []}
    if any(p.lower() == "all" for p in keys):
        return set(KEY_PERMISSIONS)
    return {_PERMISSION_BY_LOWER[p.lower()] for p in keys if p.lower() in _PERMISSION_BY_LOWER}


def authorize(vault: Vault, caller: Caller, permission: str, key_name: str = "") -> None:
    """Raise the 403 Key Vault gives when `caller` lacks `permission` (access policy or RBAC)."""
    if permission in permissions_of(vault, caller.object_id, key_name):
        return
    if vault.rbac_authorization:
        resource = f"{vault.arm_id}/keys/{key_name}" if key_name else vault.arm_id
        message = (
            "Caller is not authorized to perform action on resource.\r\n"
            "If role assignments, deny assignments or role definitions were changed recently, please observe "
            "propagation time.\r\n"
            f"Caller: {caller.describe()}\r\n"
            f"Action: 'Microsoft.KeyVault/vaults/{DATA_ACTIONS[permission]}'\r\n"
            f"Resource: '{resource.lower()}'\r\n"
            "Assignment: (not found)\r\n"
            "DecisionReason: 'DeniedWithNoValidRBAC' \r\n"
            f"Vault: {vault.name};location={vault.location}\r\n"
        )
        raise StoreError(403, "Forbidden", message, "ForbiddenByRbac")
    message = (
        f"The user, group or application '{caller.describe()}' does not have keys {permission} permission on key "
        f"vault '{vault.name};location={vault.location}'. For help resolving this issue, please see "
        "https://go.microsoft.com/fwlink/?linkid=2125287"
    )
    raise StoreError(403, "Forbidden", message, "AccessDenied")


# Keys


def validate_key_name(name: str) -> None:
    if not KEY_NAME_RE.match(name):
        raise _bad_parameter(
            f"The request URI contains an invalid name: {name}. Key names are 1-127 characters of letters, digits "
            "and hyphens."
        )


def new_version_id() -> str:
    return uuid.uuid4().hex


def live_key(vault: Vault, name: str) -> Key:
    key = Key.objects.filter(vault=vault, name__iexact=name, deleted_at__isnull=True).first()
    if key is None:
        raise StoreError(404, "KeyNotFound", f"A key with (name/id) {name} was not found in this key vault.")
    return key


def deleted_key(vault: Vault, name: str) -> Key:
    key = Key.objects.filter(vault=vault, name__iexact=name, deleted_at__isnull=False).first()
    if key is None:
        raise StoreError(404, "KeyNotFound", f"Deleted Key not found: {name}")
    return key


def key_version(key: Key, version: str = "") -> KeyVersion:
    """A version by id, or the current one when `version` is empty (a versionless kid)."""
    found = key.versions.filter(version=version.lower()).first() if version else key.latest_version()
    if found is None:
        ident = f"{key.name}/{version}" if version else key.name
        raise StoreError(404, "KeyNotFound", f"A key with (name/id) {ident} was not found in this key vault.")
    return found


def _key_shape(vault: Vault, kty: str, size: int | None, curve: str | None) -> tuple[str, int | None, str]:
    kty_norm = {"rsa": "RSA", "rsa-hsm": "RSA-HSM", "ec": "EC", "ec-hsm": "EC-HSM"}.get(kty.lower())
    if kty_norm is None:
        raise _bad_parameter(f"The key type '{kty}' is not supported. Use RSA, RSA-HSM, EC or EC-HSM.")
    if kty_norm.endswith("-HSM") and vault.sku != "premium":
        raise _bad_parameter(
            f"The key type '{kty_norm}' requires a premium vault; vault '{vault.name}' uses the standard SKU."
        )
    if kty_norm.startswith("RSA"):
        size = size or 2048
        if size not in kvcrypto.RSA_SIZES:
            raise _bad_parameter(f"Invalid key size {size} for '{kty_norm}'. Use 2048, 3072 or 4096.")
        return kty_norm, size, ""
    curve = curve or "P-256"
    if curve not in kvcrypto.EC_CURVES:
        raise _bad_parameter(f"The curve '{curve}' is not supported by the emulator. Use P-256.")
    return kty_norm, None, curve


def _key_ops(kty: str, key_ops: Iterable[str] | None) -> list[str]:
    allowed = RSA_OPS if kty.startswith("RSA") else EC_OPS
    if key_ops is None:
        return list(allowed)
    out: list[str] = []
    for op in key_ops:
        canonical = _OP_BY_LOWER.get(str(op).lower())
        if canonical is None or canonical not in allowed:
            raise _bad_parameter(f"The key operation '{op}' is not valid for key type '{kty}'.")
        if canonical not in out:
            out.append(canonical)
    return out


def _in_use(fingerprints: list[str]) -> set[str]:
    return set(KeyVersion.objects.filter(fingerprint__in=fingerprints).values_list("fingerprint", flat=True))


def _material(kty: str, size: int | None, curve: str) -> kvcrypto.GeneratedKey:
    if kty.startswith("RSA"):
        return kvcrypto.new_rsa_key(size or 2048, _in_use)
    return kvcrypto.new_ec_key(curve)


def _add_version(
    key: Key,
    *,
    kty: str,
    size: int | None,
    curve: str,
    key_ops: list[str],
    enabled: bool,
    exp: datetime | None,
    nbf: datetime | None,
    tags: dict[str, str],
    created: datetime,
) -> KeyVersion:
    material = _material(kty, size, curve)
    return KeyVersion.objects.create(
        key=key,
        version=new_version_id(),
        kty=kty,
        size=size,
        curve=curve,
        key_ops=key_ops,
        public_jwk=material.public_jwk,
        private_pem=material.private_pem,
        fingerprint=material.fingerprint,
        enabled=enabled,
        not_before=nbf,
        expires_at=exp,
        tags=tags,
        created_at=created,
        updated_at=created,
    )


def create_key(
    vault: Vault,
    name: str,
    kty: str = "RSA",
    size: int | None = None,
    *,
    curve: str | None = None,
    exp: datetime | None = None,
    nbf: datetime | None = None,
    key_ops: Iterable[str] | None = None,
    tags: dict[str, str] | None = None,
    enabled: bool = True,
    versions: int = 1,
    version_spacing: timedelta = timedelta(days=1),
) -> Key:
    """Create a key, or a new version of an existing one (as Key Vault does on create with a used name).

    `versions=N` makes N versions at once; older ones are back-dated by `version_spacing` each so the last
    is the current version. `exp`/`nbf` apply to the newest version.
    """
    validate_key_name(name)
    kty_norm, size_norm, curve_norm = _key_shape(vault, kty, size, curve)
    ops = _key_ops(kty_norm, key_ops)
    if Key.objects.filter(vault=vault, name__iexact=name, deleted_at__isnull=False).exists():
        raise StoreError(
            409,
            "Conflict",
            f"Key {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this "
            "state, the key can only be recovered or purged.",
            "ObjectIsDeletedButRecoverable",
        )
    now = clock.now()
    with transaction.atomic(using=EMULATOR_ALIAS):
        key = Key.objects.filter(vault=vault, name__iexact=name).first() or Key.objects.create(
            vault=vault, name=name, created_at=now - version_spacing * (versions - 1)
        )
        for index in range(versions):
            newest = index == versions - 1
            _add_version(
                key,
                kty=kty_norm,
                size=size_norm,
                curve=curve_norm,
                key_ops=ops,
                enabled=enabled,
                exp=exp if newest else None,
                nbf=nbf if newest else None,
                tags=dict(tags or {}),
                created=now - version_spacing * (versions - 1 - index),
            )
    return key


def rotate_key(key: Key) -> KeyVersion:
    """A new version like the current one; its expiry follows the rotation policy's `expiryTime`."""
    current = key_version(key)
    now = clock.now()
    policy_expiry = ((key.rotation_policy or {}).get("attributes") or {}).get("expiryTime")
    exp = now + parse_duration(policy_expiry) if policy_expiry else None
    with transaction.atomic(using=EMULATOR_ALIAS):
        return _add_version(
            key,
            kty=current.kty,
            size=current.size,
            curve=current.curve,
            key_ops=list(current.key_ops),
            enabled=True,
            exp=exp,
            nbf=None,
            tags=dict(current.tags),
            created=now,
        )


def update_key_version(
    version: KeyVersion,
    *,
    enabled: bool | None = None,
    exp: datetime | None | bool = False,
    nbf: datetime | None | bool = False,
    key_ops: Iterable[str] | None = None,
    tags: dict[str, str] | None = None,
) -> KeyVersion:
    """Update attributes; `exp`/`nbf` False means unchanged (None clears them)."""
    if enabled is not None:
        version.enabled = enabled
    if exp is not False:
        version.expires_at = exp if isinstance(exp, datetime) else None
    if nbf is not False:
        version.not_before = nbf if isinstance(nbf, datetime) else None
    if key_ops is not None:
        version.key_ops = _key_ops(version.kty, key_ops)
    if tags is not None:
        version.tags = dict(tags)
    version.updated_at = clock.now()
    with transaction.atomic(using=EMULATOR_ALIAS):
        version.save()
    return version


def delete_key(key: Key) -> Key:
    """Soft delete (kept for the vault's retention days) or, on a vault without soft delete, purge at once."""
    vault = key.vault
    now = clock.now()
    with transaction.atomic(using=EMULATOR_ALIAS):
        if not vault.soft_delete_enabled:
            key.deleted_at = now  # the caller still renders the bundle once
            key.delete()
            return key
        key.deleted_at = now
        key.scheduled_purge_at = now + timedelta(days=vault.soft_delete_retention_days)
        key.save(update_fields=["deleted_at", "scheduled_purge_at"])
    return key


def recover_key(key: Key) -> Key:
    with transaction.atomic(using=EMULATOR_ALIAS):
        key.deleted_at = None
        key.scheduled_purge_at = None
        key.save(update_fields=["deleted_at", "scheduled_purge_at"])
    return key


def purge_key(key: Key) -> None:
    vault = key.vault
    if vault.purge_protection_enabled:
        raise StoreError(
            403,
            "Forbidden",
            f'Operation "purge" is not allowed because purge protection is enabled for this vault. Key Vault '
            f"service will automatically purge it after the retention period has passed. Vault: {vault.name}.",
            "ForbiddenByPolicy",
        )
    with transaction.atomic(using=EMULATOR_ALIAS):
        key.delete()


def purge_expired_deletions(vault: Vault) -> int:
    """Deleted keys whose scheduled purge date has passed on the emulator clock are purged."""
    with transaction.atomic(using=EMULATOR_ALIAS):
        deleted, _ = Key.objects.filter(vault=vault, scheduled_purge_at__lte=clock.now()).delete()
    return deleted


# Backup and restore


def backup_key(key: Key) -> bytes:
    """An opaque blob holding every version (private material sealed under an emulator-internal key)."""
    document = {
        "name": key.name,
        "created": key.created_at.isoformat(),
        "rotation_policy": key.rotation_policy,
        "versions": [
            {
                "version": v.version, "kty": v.kty, "size": v.size, "curve": v.curve, "key_ops": v.key_ops,
                "public_jwk": v.public_jwk, "private_pem": bytes(v.private_pem).decode(),
                "fingerprint": v.fingerprint, "enabled": v.enabled, "tags": v.tags,
                "nbf": v.not_before.isoformat() if v.not_before else None,
                "exp": v.expires_at.isoformat() if v.expires_at else None,
                "created": v.created_at.isoformat(), "updated": v.updated_at.isoformat(),
            }
            for v in key.versions.all()
        ],
    }  # fmt: skip
    return kvcrypto.seal_backup(document)


def restore_key(vault: Vault, blob: bytes) -> Key:
    try:
        document = kvcrypto.open_backup(blob)
    except kvcrypto.CryptoError as exc:
        raise _bad_parameter(str(exc)) from None
    name = str(document["name"])
    if Key.objects.filter(vault=vault, name__iexact=name).exists():
        raise StoreError(409, "Conflict", f"Key {name} already exists.", "KeyAlreadyExists")
    with transaction.atomic(using=EMULATOR_ALIAS):
        key = Key.objects.create(
            vault=vault,
            name=name,
            created_at=datetime.fromisoformat(document["created"]),
            rotation_policy=document.get("rotation_policy"),
        )
        for v in document["versions"]:
            KeyVersion.objects.create(
                key=key, version=v["version"], kty=v["kty"], size=v["size"], curve=v["curve"], key_ops=v["key_ops"],
                public_jwk=v["public_jwk"], private_pem=v["private_pem"].encode(), fingerprint=v["fingerprint"],
                enabled=v["enabled"], tags=v["tags"],
                not_before=datetime.fromisoformat(v["nbf"]) if v["nbf"] else None,
                expires_at=datetime.fromisoformat(v["exp"]) if v["exp"] else None,
                created_at=datetime.fromisoformat(v["created"]), updated_at=datetime.fromisoformat(v["updated"]),
            )  # fmt: skip
    return key


# Rotation policies

_DURATION_RE = re.compile(r"^P(?:(?P<y>\d+)Y)?(?:(?P<mo>\d+)M)?(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?$", re.IGNORECASE)


def parse_duration(text: str) -> timedelta:
    """Key Vault's ISO-8601 durations (years, months, weeks, days); a month counts 30 days, a year 365."""
    match = _DURATION_RE.match(text or "")
    if not match or text.upper() == "P":
        raise _bad_parameter(f"'{text}' is not a valid ISO-8601 duration such as P30D, P3M or P1Y.")
    parts = {k: int(v) for k, v in match.groupdict().items() if v}
    days = parts.get("y", 0) * 365 + parts.get("mo", 0) * 30 + parts.get("w", 0) * 7 + parts.get("d", 0)
    return timedelta(days=days)


DEFAULT_NOTIFY = {"trigger": {"timeBeforeExpiry": "P30D"}, "action": {"type": "Notify"}}


def set_rotation_policy(key: Key, lifetime_actions: list[dict[str, Any]], expiry_time: str | None) -> dict[str, Any]:
    """Validate and store a policy; like Azure, a Notify action 30 days before expiry is added when absent."""
    actions = [_validated_action(a) for a in lifetime_actions]
    if sum(1 for a in actions if a["action"]["type"] == "Rotate") > 1:
        raise _bad_parameter("A rotation policy can have at most one Rotate action.")
    if expiry_time and parse_duration(expiry_time) < timedelta(days=28):
        raise _bad_parameter("The expiryTime of a rotation policy must be at least 28 days (P28D).")
    if not any(a["action"]["type"] == "Notify" for a in actions):
        actions.append(dict(DEFAULT_NOTIFY))
    now = int(clock.now().timestamp())
    created = ((key.rotation_policy or {}).get("attributes") or {}).get("created", now)
    key.rotation_policy = {
        "lifetimeActions": actions,
        "attributes": {"expiryTime": expiry_time, "created": created, "updated": now},
    }
    with transaction.atomic(using=EMULATOR_ALIAS):
        key.save(update_fields=["rotation_policy"])
    return key.rotation_policy


def _validated_action(raw: dict[str, Any]) -> dict[str, Any]:
    kind = str((raw.get("action") or {}).get("type") or "")
    kind = {"rotate": "Rotate", "notify": "Notify"}.get(kind.lower(), "")
    if not kind:
        raise _bad_parameter("Each lifetime action needs an action type of Rotate or Notify.")
    trigger = raw.get("trigger") or {}
    after, before = trigger.get("timeAfterCreate"), trigger.get("timeBeforeExpiry")
    if bool(after) == bool(before):
        raise _bad_parameter("Each lifetime action needs exactly one of timeAfterCreate or timeBeforeExpiry.")
    duration = parse_duration(str(after or before))
    if kind == "Rotate" and duration < timedelta(days=7):
        raise _bad_parameter("A Rotate trigger must be at least 7 days (P7D).")
    clean_trigger = {"timeAfterCreate": after} if after else {"timeBeforeExpiry": before}
    return {"trigger": clean_trigger, "action": {"type": kind}}


def rotation_due(key: Key, now: datetime) -> bool:
    for action in (key.rotation_policy or {}).get("lifetimeActions") or []:
        if action["action"]["type"] != "Rotate":
            continue
        current = key.latest_version()
        if current is None:
            return False
        trigger = action["trigger"]
        if trigger.get("timeAfterCreate"):
            return now >= current.created_at + parse_duration(trigger["timeAfterCreate"])
        if current.expires_at is not None:
            return now >= current.expires_at - parse_duration(trigger["timeBeforeExpiry"])
    return False


def apply_due_rotations(vault: Vault | None = None) -> int:
    """Rotate every key whose policy's Rotate trigger the emulator clock has passed; returns how many.

    Checked lazily (on each data-plane request, and by whoever calls this), so one overdue key gets one new
    version however long ago its trigger passed.
    """
    now = clock.now()
    keys = Key.objects.filter(deleted_at__isnull=True, rotation_policy__isnull=False)
    if vault is not None:
        keys = keys.filter(vault=vault)
    rotated = 0
    for key in keys.select_related("vault"):
        if rotation_due(key, now):
            rotate_key(key)
            rotated += 1
    return rotated


def housekeeping(vault: Vault) -> None:
    """What Key Vault does on its own schedule, run lazily when the vault is used: due rotations, due purges."""
    apply_due_rotations(vault)
    purge_expired_deletions(vault)
