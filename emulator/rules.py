"""Azure's rules for customer-managed keys on a Cognitive Services account, one function per rule.

Each rule raises `CmkRefused(code, message)` with a stable emulator code (listed in emulator/README.md)
and a message that says what to do. Rules that concern Key Vault state ask Key Vault, through its data
plane, as the account's identity (get key, wrapKey, unwrapKey), exactly where the service would; only
the vault's ARM properties (tenant, region, soft delete, purge protection) are read from its resource.

`check_request` runs every rule when the PATCH arrives (a 400); `check_key_state` re-runs, inside the
long-running operation, only the rules whose answer can change meanwhile.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from azure.keyvault.keys import KeyVaultKey
from django.conf import settings

from emulator import clock, data_at_rest, kv_client
from emulator.data_at_rest import CustomerKey, customer_key
from emulator.kv_client import KeyVaultFailure
from emulator.models import CognitiveAccount, Vault

CMK_CAPABILITY = "CustomerManagedKey"
SUPPORTED_KEY_TYPES = ("RSA", "RSA-HSM")
SUPPORTED_KEY_SIZES = (2048, 3072, 4096)
REQUIRED_KEY_OPS = ("wrapKey", "unwrapKey")
ENCRYPTION_ROLE = "Key Vault Crypto Service Encryption User"


@dataclass
class CmkRefused(Exception):
    code: str
    message: str
    # 503 when Key Vault itself failed transiently: ARM answers it as retryable, never as a refusal.
    status: int = 400

    def __str__(self) -> str:
        return f"({self.code}) {self.message}"


@dataclass
class CmkRequest:
    """One request to set an account's encryption to a Key Vault key, and what the rules learnt so far."""

    account: CognitiveAccount
    key_vault_uri: str
    key_name: str
    key_version: str
    identity_client_id: str = ""
    sku: str = ""  # the SKU the account has (or will have) when the key is set
    vault: Vault | None = None
    principal: str = ""
    key: KeyVaultKey | None = None  # the key version that will be used, as the identity read it
    key_missing: bool = False

    @property
    def target(self) -> CustomerKey:
        return customer_key(self.account, self.key_vault_properties)

    @property
    def key_vault_properties(self) -> dict[str, str]:
        props = {"keyName": self.key_name, "keyVersion": self.key_version, "keyVaultUri": self.key_vault_uri}
        if self.identity_client_id:
            props["identityClientId"] = self.identity_client_id
        return props


# Settings


def cmk_skus() -> tuple[str, ...]:
    return tuple(getattr(settings, "EMULATOR_CMK_SKUS", ("S0", "E0")))


def allowed_key_sizes() -> tuple[int, ...]:
    return (2048,) if getattr(settings, "EMULATOR_CMK_STRICT_KEY_SIZE", False) else SUPPORTED_KEY_SIZES


def key_version_required() -> bool:
    return bool(getattr(settings, "EMULATOR_CMK_REQUIRE_KEY_VERSION", True))


# Rules about the account and the request


def sku_supports_cmk(req: CmkRequest) -> None:
    check_sku(req.account, req.sku or req.account.sku)


def check_sku(account: CognitiveAccount, sku: str) -> None:
    """Also run on its own when a PATCH moves an account that uses a customer-managed key to another SKU."""
    if sku.upper() not in cmk_skus():
        raise CmkRefused(
            "SkuNotSupported",
            f"The pricing tier {sku.upper()} of account '{account.name}' has no {CMK_CAPABILITY} capability. "
            f"Change the account to one of {', '.join(cmk_skus())} before using a customer-managed key.",
        )


def identity_enabled(req: CmkRequest) -> None:
    account = req.account
    if req.identity_client_id:
        if not req.target.principal:
            raise CmkRefused(
                "IdentityNotEnabled",
                f"Account '{account.name}' has no user-assigned identity with client id {req.identity_client_id}. "
                "Assign that identity to the account first, or leave identityClientId empty to use the "
                "system-assigned identity.",
            )
    elif not account.has_system_identity or not account.principal_id:
        raise CmkRefused(
            "IdentityNotEnabled",
            f"Account '{account.name}' has no system-assigned managed identity. Enable it (identity type "
            "SystemAssigned), grant it get, wrapKey and unwrapKey on the key vault, then set the key.",
        )
    req.principal = req.target.principal


def key_version_given(req: CmkRequest) -> None:
    if not req.key_version and key_version_required():
        raise CmkRefused(
            "KeyVersionRequired",
            "keyVersion is empty. Pin a key version: the service does not move accounts to new key versions by "
            "itself, so a versionless key would silently stay on whatever version was current.",
        )


# Rules about the vault (its ARM resource)


def vault_exists(req: CmkRequest) -> None:
    name = kv_client.vault_name_of(req.key_vault_uri)
    req.vault = Vault.objects.filter(name=name).first() if name else None
    if req.vault is None:
        raise CmkRefused(
            "KeyVaultNotFound",
            f"No key vault answers at {req.key_vault_uri}. Check the key vault URI "
            "(https://{vault-name}.vault.azure.net/) and that the vault has not been deleted.",
        )


def _vault(req: CmkRequest) -> Vault:
    if req.vault is None:
        vault_exists(req)
    assert req.vault is not None
    return req.vault


def same_tenant(req: CmkRequest) -> None:
    vault, identity_tenant = _vault(req), req.account.identity_tenant_id
    if identity_tenant and vault.tenant_id.lower() != identity_tenant.lower():
        raise CmkRefused(
            "TenantMismatch",
            f"Key vault '{vault.name}' belongs to tenant {vault.tenant_id}, but the identity of account "
            f"'{req.account.name}' belongs to tenant {identity_tenant}. Managed identities cannot cross tenants: "
            "use a vault of the account's tenant.",
        )


def same_region(req: CmkRequest) -> None:
    vault = _vault(req)
    if vault.location.lower() != req.account.location.lower():
        raise CmkRefused(
            "KeyVaultRegionMismatch",
            f"Key vault '{vault.name}' is in {vault.location} but account '{req.account.name}' is in "
            f"{req.account.location}. Use a key vault in {req.account.location}.",
        )


def soft_delete_on(req: CmkRequest) -> None:
    vault = _vault(req)
    if not vault.soft_delete_enabled:
        raise CmkRefused(
            "KeyVaultSoftDeleteRequired",
            f"Key vault '{vault.name}' does not have soft delete on. Turn on soft delete and purge protection on "
            "the vault, then retry: without them a deleted key would make the data unrecoverable.",
        )


def purge_protection_on(req: CmkRequest) -> None:
    vault = _vault(req)
    if not vault.purge_protection_enabled:
        raise CmkRefused(
            "KeyVaultPurgeProtectionRequired",
            f"Key vault '{vault.name}' does not have purge protection on. Turn it on (it cannot be turned off "
            "again), then retry: without it a purged key would make the data unrecoverable.",
        )


# Rules about the key, asked of Key Vault as the account's identity


def _access_advice(req: CmkRequest) -> str:
    vault = _vault(req)
    if vault.rbac_authorization:
        return (
            f"Assign the role '{ENCRYPTION_ROLE}' to principal {req.principal} at the scope of key vault "
            f"'{vault.name}' (the vault uses Azure RBAC)."
        )
    return f"Add an access policy on key vault '{vault.name}' granting principal {req.principal} get, wrapKey and unwrapKey."


def identity_can_read_key(req: CmkRequest) -> None:
    try:
        req.key = kv_client.get_key(req.key_vault_uri, req.key_name, "", req.principal)
    except KeyVaultFailure as failure:
        if failure.code == "KeyNotFound":
            req.key_missing = True
            return
        raise _refusal_from(req, failure) from None


def key_exists(req: CmkRequest) -> None:
    if req.key_missing:
        raise CmkRefused(
            "KeyNotFound",
            f"Key vault '{_vault(req).name}' has no key '{req.key_name}'. If it was deleted, recover it (the vault "
            "keeps deleted keys for its retention period); otherwise check the key name.",
        )


def key_version_exists(req: CmkRequest) -> None:
    if not req.key_version:
        return
    try:
        req.key = kv_client.get_key(req.key_vault_uri, req.key_name, req.key_version, req.principal)
    except KeyVaultFailure as failure:
        if failure.code == "KeyNotFound":
            raise CmkRefused(
                "KeyVersionNotFound",
                f"Key '{req.key_name}' in vault '{_vault(req).name}' has no version '{req.key_version}'. Pick one of "
                "the key's versions.",
            ) from None
        raise _refusal_from(req, failure) from None


def _key(req: CmkRequest) -> KeyVaultKey:
    assert req.key is not None, "identity_can_read_key and key_exists run first"
    return req.key


def key_enabled(req: CmkRequest) -> None:
    if not _key(req).properties.enabled:
        raise CmkRefused(
            "KeyDisabled",
            f"The {_label(req)} is disabled. Enable it in the key vault, or choose another version.",
        )


def key_active(req: CmkRequest) -> None:
    props, now = _key(req).properties, clock.now()
    if props.expires_on is not None and props.expires_on <= now:
        raise CmkRefused(
            "KeyExpired",
            f"The {_label(req)} expired on {_day(props.expires_on)}. Rotate the key (or extend its expiry date) "
            "and use the new version.",
        )
    if props.not_before is not None and props.not_before > now:
        raise CmkRefused(
            "KeyNotYetValid",
            f"The {_label(req)} is not valid before {_day(props.not_before)}. Use a version that is active now.",
        )


def key_type_supported(req: CmkRequest) -> None:
    raw = _key(req).key_type
    kty = str(getattr(raw, "value", raw) or "")
    if kty not in SUPPORTED_KEY_TYPES:
        raise CmkRefused(
            "UnsupportedKeyType",
            f"The {_label(req)} is of type {kty}; customer-managed keys for Cognitive Services must be RSA or "
            "RSA-HSM keys. Create an RSA key and use it.",
        )


def key_size_supported(req: CmkRequest) -> None:
    modulus: bytes = getattr(_key(req).key, "n", None) or b""  # JsonWebKey sets its fields dynamically
    bits = len(modulus.lstrip(b"\x00")) * 8
    if bits not in allowed_key_sizes():
        sizes = ", ".join(str(s) for s in allowed_key_sizes())
        raise CmkRefused(
            "UnsupportedKeySize",
            f"The {_label(req)} is an RSA key of {bits} bits; use a key of {sizes} bits.",
        )


def key_operations_allowed(req: CmkRequest) -> None:
    ops = {str(op).lower() for op in (_key(req).key_operations or [])}
    missing = [op for op in REQUIRED_KEY_OPS if op.lower() not in ops]
    if missing:
        raise CmkRefused(
            "KeyOperationsMissing",
            f"The {_label(req)} does not permit {' and '.join(missing)}. Add wrapKey and unwrapKey to the key's "
            "permitted operations (key_ops).",
        )


def identity_can_wrap_and_unwrap(req: CmkRequest) -> None:
    version = req.key_version or str(_key(req).properties.version or "")
    probe = os.urandom(32)
    try:
        wrapped = kv_client.remote_operation(req.key_vault_uri, req.key_name, version, req.principal, "wrapkey", probe)
        unwrapped = kv_client.remote_operation(
            req.key_vault_uri, req.key_name, version, req.principal, "unwrapkey", wrapped
        )
    except KeyVaultFailure as failure:
        raise _refusal_from(req, failure) from None
    if unwrapped != probe:
        raise CmkRefused("KeyVaultRequestFailed", f"Key vault '{_vault(req).name}' did not round-trip a wrapped key.")


def current_key_reachable(req: CmkRequest) -> None:
    """Changing key or version re-wraps the data key, which needs the current key to unwrap it first."""
    version = req.key_version or (str(req.key.properties.version or "") if req.key else "")
    target = f"{req.key_vault_uri.rstrip('/')}/keys/{req.key_name}/{version}"
    try:
        data_at_rest.check_current_key(req.account, target)
    except KeyVaultFailure as failure:
        raise refused_by(failure) from None


def _label(req: CmkRequest) -> str:
    version = req.key_version or (str(_key(req).properties.version or "") if req.key else "")
    return f"key '{req.key_name}'" + (f" (version {version})" if version else "")


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def unavailable(failure: KeyVaultFailure) -> CmkRefused:
    return CmkRefused("KeyVaultUnavailable", f"{failure.message} Try again.", 503)


def refused_by(failure: KeyVaultFailure) -> CmkRefused:
    return unavailable(failure) if failure.transient else CmkRefused(failure.code, failure.message)


def _refusal_from(req: CmkRequest, failure: KeyVaultFailure) -> CmkRefused:
    if failure.code == "KeyVaultAccessDenied" and not failure.transient:
        return CmkRefused("KeyVaultAccessDenied", f"{failure.message} {_access_advice(req)}")
    return refused_by(failure)


# The rule sets

Rule = Callable[[CmkRequest], None]

REQUEST_RULES: tuple[Rule, ...] = (sku_supports_cmk, identity_enabled, key_version_given)
VAULT_RULES: tuple[Rule, ...] = (vault_exists, same_tenant, same_region, soft_delete_on, purge_protection_on)
KEY_RULES: tuple[Rule, ...] = (
    identity_can_read_key,
    key_exists,
    key_version_exists,
    key_enabled,
    key_active,
    key_type_supported,
    key_size_supported,
    key_operations_allowed,
    identity_can_wrap_and_unwrap,
    current_key_reachable,
)


def check_request(req: CmkRequest) -> None:
    """Every rule, in the order Azure would trip over them; raises the first CmkRefused."""
    for rule in (*REQUEST_RULES, *VAULT_RULES, *KEY_RULES):
        rule(req)


def check_disable(account: CognitiveAccount) -> None:
    """Returning to Microsoft-managed keys unwraps the customer layer: the current key must be reachable."""
    try:
        data_at_rest.check_current_key(account, None)
    except KeyVaultFailure as failure:
        raise refused_by(failure) from None


def check_key_state(req: CmkRequest) -> None:
    """The rules whose answer can change between the PATCH and the end of its operation."""
    req.principal = req.target.principal
    req.vault, req.key, req.key_missing = None, None, False
    for rule in (*VAULT_RULES, *KEY_RULES):
        rule(req)
