"""The demo estate: two tenants, three subscriptions, six vaults and a dozen Face accounts across SKUs
and states, so the portal, the docs and the tests can rely on the same names.

Idempotent: what exists is left alone. `reset=True` empties every emulator table first and rebuilds;
tenant, subscription and principal ids are uuid5 of their names, so they come back identical (key
versions are new, as real key material is). CMK is set the way the service does it, through the rules
and a real wrap of each account's data key on the Key Vault data plane as the account's identity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.apps import apps
from django.db import transaction

from emulator import accounts, clock, cmk, data_at_rest, estate, keystore
from emulator.identities import PORTAL_PRINCIPAL_ID, derived_id
from emulator.models import CognitiveAccount, Key, KeyVersion, Vault
from emulator.router import EMULATOR_ALIAS

TENANTS = (("contoso", "Contoso"), ("fabrikam", "Fabrikam"))
SUBSCRIPTIONS = (("contoso-prod", "contoso"), ("contoso-dev", "contoso"), ("fabrikam-prod", "fabrikam"))
RESOURCE_GROUPS = (
    ("contoso-prod", "rg-face-eastus", "eastus"),
    ("contoso-prod", "rg-face-westeurope", "westeurope"),
    ("contoso-prod", "rg-keys", "eastus"),
    ("contoso-dev", "rg-dev", "eastus"),
    ("fabrikam-prod", "rg-fabrikam", "eastus"),
)
CMK_PERMISSIONS = ["get", "wrapKey", "unwrapKey"]


@dataclass(frozen=True)
class VaultSpec:
    name: str
    subscription: str
    resource_group: str
    location: str
    purge_protection: bool = True
    rbac: bool = False
    sku: str = "standard"
    # (key name, kty, size or curve, versions, days until expiry or None)
    keys: tuple[tuple[str, str, Any, int, int | None], ...] = ()


VAULTS = (
    VaultSpec(
        "kv-prod-eastus", "contoso-prod", "rg-keys", "eastus", sku="premium",
        keys=(
            ("face-cmk", "RSA", 2048, 3, None),
            ("face-cmk-2", "RSA", 2048, 1, None),
            ("face-cmk-broken", "RSA", 2048, 1, None),
            ("face-cmk-expiring", "RSA", 2048, 1, 7),
            ("face-cmk-hsm", "RSA-HSM", 2048, 1, None),
            ("signing-ec", "EC", "P-256", 1, None),
        ),
    ),
    VaultSpec("kv-nopurge-eastus", "contoso-prod", "rg-keys", "eastus", purge_protection=False,
              keys=(("face-cmk-nopurge", "RSA", 2048, 1, None),)),
    VaultSpec("kv-rbac-eastus", "contoso-prod", "rg-keys", "eastus", rbac=True,
              keys=(("face-cmk-rbac", "RSA", 2048, 1, None),)),
    VaultSpec("kv-prod-westeurope", "contoso-prod", "rg-face-westeurope", "westeurope",
              keys=(("face-cmk-weu", "RSA", 2048, 1, None),)),
    VaultSpec("kv-shared-eastus", "contoso-dev", "rg-dev", "eastus", keys=(("face-cmk-shared", "RSA", 2048, 1, None),)),
    VaultSpec("kv-fabrikam-eastus", "fabrikam-prod", "rg-fabrikam", "eastus",
              keys=(("face-cmk-fabrikam", "RSA", 2048, 1, None),)),
)  # fmt: skip

UAMI_FACE_EASTUS = "/subscriptions/{sub}/resourceGroups/rg-face-eastus/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id-face-eastus"


@dataclass(frozen=True)
class AccountSpec:
    name: str
    subscription: str
    resource_group: str
    location: str
    sku: str
    identity: str = "SystemAssigned"  # None, SystemAssigned, UserAssigned
    # (vault, key, version index: -1 latest) when the account uses a customer-managed key
    cmk: tuple[str, str, int] | None = None
    note: str = ""


ACCOUNTS = (
    AccountSpec("face-prod-eastus", "contoso-prod", "rg-face-eastus", "eastus", "S0", note="Microsoft-managed"),
    AccountSpec("face-free-eastus", "contoso-prod", "rg-face-eastus", "eastus", "F0", "None", note="F0: no CMK capability"),
    AccountSpec("face-noid-eastus", "contoso-prod", "rg-face-eastus", "eastus", "S0", "None", note="no identity"),
    AccountSpec("face-cmk-eastus", "contoso-prod", "rg-face-eastus", "eastus", "S0",
                cmk=("kv-prod-eastus", "face-cmk", -1), note="CMK, latest version"),
    AccountSpec("face-stale-eastus", "contoso-prod", "rg-face-eastus", "eastus", "S0",
                cmk=("kv-prod-eastus", "face-cmk", 1), note="CMK, an older version"),
    AccountSpec("face-broken-eastus", "contoso-prod", "rg-face-eastus", "eastus", "S0",
                cmk=("kv-prod-eastus", "face-cmk-broken", -1), note="CMK, key since disabled: unreadable"),
    AccountSpec("face-e0-eastus", "contoso-prod", "rg-face-eastus", "eastus", "E0",
                cmk=("kv-prod-eastus", "face-cmk-2", -1), note="E0, CMK"),
    AccountSpec("face-uami-eastus", "contoso-prod", "rg-face-eastus", "eastus", "S0", "UserAssigned",
                cmk=("kv-rbac-eastus", "face-cmk-rbac", -1), note="user-assigned identity, RBAC vault"),
    AccountSpec("face-shared-eastus", "contoso-prod", "rg-face-eastus", "eastus", "S0",
                cmk=("kv-shared-eastus", "face-cmk-shared", -1), note="CMK in another subscription"),
    AccountSpec("face-prod-westeurope", "contoso-prod", "rg-face-westeurope", "westeurope", "S0", note="Microsoft-managed"),
    AccountSpec("face-dev-eastus", "contoso-dev", "rg-dev", "eastus", "S0", note="Microsoft-managed"),
    AccountSpec("face-fabrikam-eastus", "fabrikam-prod", "rg-fabrikam", "eastus", "S0",
                cmk=("kv-fabrikam-eastus", "face-cmk-fabrikam", -1), note="CMK, other tenant"),
)  # fmt: skip
BROKEN_KEYS = ("face-cmk-broken",)


@dataclass
class SeedSummary:
    created: list[str] = field(default_factory=list)
    tenants: list[tuple[str, str]] = field(default_factory=list)
    subscriptions: list[tuple[str, str, str]] = field(default_factory=list)
    vaults: list[tuple[str, str, str]] = field(default_factory=list)
    accounts: list[tuple[str, str, str, str, str]] = field(default_factory=list)


def subscription_id(display_name: str) -> str:
    return derived_id("subscription", display_name)


def system_principal_id(subscription: str, account: str) -> str:
    return derived_id("principal", f"{subscription}/{account}")


# Building


def _vault(spec: VaultSpec, summary: SeedSummary) -> Vault:
    sub = estate.resolve_subscription(spec.subscription)
    vault = Vault.objects.filter(name=spec.name).first()
    if vault is None:
        vault = keystore.create_vault(
            name=spec.name, subscription_id=sub.subscription_id, resource_group=spec.resource_group,
            location=spec.location, tenant_id=sub.tenant_id, sku=spec.sku, purge_protection=spec.purge_protection,
            rbac=spec.rbac,
        )  # fmt: skip
        summary.created.append(f"vault {spec.name}")
    if spec.rbac:
        if not keystore.assignments_covering(vault.arm_id, PORTAL_PRINCIPAL_ID):
            keystore.assign_role(
                vault.arm_id,
                PORTAL_PRINCIPAL_ID,
                keystore.CRYPTO_OFFICER,
                name=derived_id("role", f"portal/{spec.name}"),
            )
    else:
        keystore.set_access_policy(vault, PORTAL_PRINCIPAL_ID, ["all"])
    for name, kty, size, versions, expires_in_days in spec.keys:
        if Key.objects.filter(vault=vault, name=name).exists():
            continue
        options: dict[str, Any] = {"versions": versions}
        options["curve" if kty == "EC" else "size"] = size
        if expires_in_days is not None:
            options["exp"] = clock.now() + timedelta(days=expires_in_days)
        keystore.create_key(vault, name, kty, **options)
        summary.created.append(f"key {spec.name}/{name}")
    return vault


def _account(spec: AccountSpec, summary: SeedSummary) -> CognitiveAccount:
    sub_id = subscription_id(spec.subscription)
    existing = CognitiveAccount.objects.filter(subscription_id=sub_id, name=spec.name).first()
    if existing is not None:
        return existing
    identity: dict[str, Any] | None = None
    if spec.identity == "SystemAssigned":
        identity = {"type": "SystemAssigned"}
    elif spec.identity == "UserAssigned":
        identity = {"type": "UserAssigned", "userAssignedIdentities": {UAMI_FACE_EASTUS.format(sub=sub_id): {}}}
    account = accounts.create_account(
        subscription_id=sub_id, resource_group=spec.resource_group, name=spec.name, location=spec.location,
        sku=spec.sku, custom_subdomain=spec.name, identity=identity, created_by="seed_emulator",
        principal_id=system_principal_id(spec.subscription, spec.name), tags={"demo": spec.note},
    )  # fmt: skip
    summary.created.append(f"account {spec.name}")
    if spec.cmk is not None:
        _enable_cmk(account, *spec.cmk)
    return account


def _enable_cmk(account: CognitiveAccount, vault_name: str, key_name: str, version_index: int) -> None:
    """Grant the identity, then set the key through the same rules and re-wrap as a PATCH would."""
    vault = Vault.objects.get(name=vault_name)
    key = Key.objects.get(vault=vault, name=key_name)
    version = list(key.versions.order_by("created_at", "id"))[version_index].version
    kvp = {"keyName": key_name, "keyVersion": version, "keyVaultUri": vault.vault_uri}
    principal = account.principal_id
    if not principal:  # a user-assigned identity
        entry = next(iter(account.user_assigned_identities.values()))
        principal, kvp["identityClientId"] = entry["principalId"], entry["clientId"]
    if vault.rbac_authorization:
        keystore.assign_role(vault.arm_id, principal, keystore.CRYPTO_SERVICE_ENCRYPTION_USER)
    else:
        keystore.set_access_policy(vault, principal, CMK_PERMISSIONS)
    # apply() re-checks the vault and key rules on the data plane; the account-side rules hold by construction.
    cmk.apply(account, {"keySource": cmk.KEY_VAULT, "keyVaultProperties": kvp})
    accounts.touch(account, "seed_emulator")
    account.save()


def _break_keys() -> None:
    """Disable the keys of the 'broken' demo accounts after they were set, as an admin might by mistake."""
    for version in KeyVersion.objects.filter(key__name__in=BROKEN_KEYS):
        keystore.update_key_version(version, enabled=False)


def reset_all() -> None:
    """Empty every emulator table (faults, clock and request log included)."""
    with transaction.atomic(using=EMULATOR_ALIAS):
        for model in apps.get_app_config("emulator").get_models():
            model._default_manager.all().delete()


def seed(reset: bool = False) -> SeedSummary:
    """Create the demo estate (idempotently), or rebuild it from nothing with `reset=True`."""
    summary = SeedSummary()
    if reset:
        reset_all()
    # One transaction: SQLite commits once instead of after every row.
    with transaction.atomic(using=EMULATOR_ALIAS):
        fresh = not CognitiveAccount.objects.filter(name="face-broken-eastus").exists()
        for name, display in TENANTS:
            estate.create_tenant(name, display)
        for display, tenant in SUBSCRIPTIONS:
            estate.create_subscription(display, estate.resolve_tenant(tenant))
        for sub, group, location in RESOURCE_GROUPS:
            estate.create_resource_group(subscription_id(sub), group, location)
        for vault_spec in VAULTS:
            _vault(vault_spec, summary)
        for account_spec in ACCOUNTS:
            _account(account_spec, summary)
        if fresh:
            _break_keys()
    _summarize(summary)
    return summary


def _summarize(summary: SeedSummary) -> None:
    for name, _display in TENANTS:
        summary.tenants.append((name, derived_id("tenant", name)))
    for display, tenant in SUBSCRIPTIONS:
        summary.subscriptions.append((display, subscription_id(display), tenant))
    for vault in Vault.objects.order_by("name"):
        flags = ("purge protection" if vault.purge_protection_enabled else "no purge protection") + (
            ", RBAC" if vault.rbac_authorization else ""
        )
        summary.vaults.append((vault.name, vault.location, flags))
    specs = {spec.name: spec for spec in ACCOUNTS}
    for account in CognitiveAccount.objects.order_by("name"):
        readable, code, _reason = data_at_rest.probe_data_access(account)
        source = "CMK" if account.key_vault_properties else "Microsoft-managed"
        state = "readable" if readable else f"UNREADABLE ({code})"
        summary.accounts.append(
            (account.name, account.sku, source, state, specs.get(account.name, AccountSpec("", "", "", "", "")).note)
        )
