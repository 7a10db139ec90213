"""Read Azure through the gateway into the local mirror, and notice changes made outside Keyward.

Everything is read first, with no database transaction open; then the mirror is written in one short
transaction of upserts. When an account's encryption as Azure reports it differs from what the mirror last
recorded (key source, key or version, identity, the key disabled or deleted in its vault, the identity's
access to the vault, a tenant), and no change by Keyward explains it, a `sync.external_change` audit event
records before and after in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from encryption import audit
from encryption import azure_gateway as gw
from encryption.actors import Actor
from encryption.models import (
    KEY_SOURCE_KEY_VAULT,
    Account,
    AuditEvent,
    Key,
    KeyVault,
    KeyVersion,
    Operation,
    Subscription,
)

log = logging.getLogger(__name__)

EXTERNAL_CHANGE = "sync.external_change"


@dataclass
class SyncSummary:
    subscriptions: int = 0
    accounts: int = 0
    vaults: int = 0
    keys: int = 0
    versions: int = 0
    external_changes: int = 0
    unreadable_vaults: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (
            f"Read {self.subscriptions} subscriptions, {self.accounts} accounts, {self.vaults} vaults, "
            f"{self.keys} keys ({self.versions} versions); {self.external_changes} external change(s)."
        )
        if self.unreadable_vaults:
            text += f" Keys not readable in: {', '.join(sorted(self.unreadable_vaults))}."
        return text


# What was read from Azure


@dataclass
class KeyRead:
    info: gw.KeyInfo  # the current version (type, size, ops), or the soft-deleted key
    versions: list[gw.KeyVersionInfo]
    rotation_policy: dict[str, Any] | None


@dataclass
class VaultRead:
    info: gw.VaultInfo
    keys: dict[str, KeyRead] | None  # None: the keys could not be listed, the mirror keeps what it had


@dataclass
class AccountRead:
    info: gw.AccountInfo
    probe: gw.ProbeResult
    key_state: KeyState | None  # CMK accounts: the state of the key version they use


@dataclass(frozen=True)
class KeyState:
    exists: bool
    deleted: bool
    enabled: bool | None
    access: bool | None  # the account's identity holds get/wrapKey/unwrapKey on the vault (None: unknown)
    vault_tenant_id: str


@dataclass
class EstateRead:
    subscriptions: list[gw.SubscriptionInfo] = field(default_factory=list)
    vaults: dict[str, VaultRead] = field(default_factory=dict)  # by vault URI
    accounts: list[AccountRead] = field(default_factory=list)


def _read_key(vault_uri: str, name: str) -> KeyRead:
    current = gw.get_key(vault_uri, name)
    return KeyRead(current, gw.list_key_versions(vault_uri, name), gw.get_rotation_policy(vault_uri, name))


def _read_vault(vault: gw.VaultInfo, known_keys: set[str]) -> VaultRead:
    """The vault's keys with versions and rotation policies; keys the mirror knew that are gone from the list
    are looked up among the soft-deleted ones. A vault Keyward may not read keeps its mirrored keys."""
    try:
        listed = gw.list_keys(vault.vault_uri)
        keys = {k.name: _read_key(vault.vault_uri, k.name) for k in listed}
        for name in sorted(known_keys - set(keys)):
            deleted = gw.get_deleted_key(vault.vault_uri, name)
            if deleted is not None:
                keys[name] = KeyRead(deleted, [], None)
    except gw.PermanentAzureError as exc:
        log.warning("sync: keys of %s not readable: %s", vault.name, exc)
        return VaultRead(vault, None)
    return VaultRead(vault, keys)


def _access(vault: gw.VaultInfo, principal_id: str) -> bool | None:
    if not principal_id:
        return False
    try:
        held = gw.key_access_of(vault, principal_id)
    except gw.PermanentAzureError:
        return None
    return set(gw.CMK_KEY_PERMISSIONS) <= held


def _key_state(info: gw.AccountInfo, vaults: dict[str, VaultRead]) -> KeyState | None:
    """The state of the key version a CMK account uses, from what was read or, for a vault outside the read
    subscriptions, by reading the key directly."""
    if not info.uses_cmk:
        return None
    vault_read = vaults.get(_norm_uri(info.key_vault_uri))
    access = _access(vault_read.info, info.cmk_principal_id) if vault_read else None
    tenant = vault_read.info.tenant_id if vault_read else ""
    key_read = vault_read.keys.get(info.key_name) if vault_read and vault_read.keys is not None else None
    if key_read is not None:
        if key_read.info.deleted:
            return KeyState(True, True, key_read.info.enabled, access, tenant)
        version = next((v for v in key_read.versions if v.version == info.key_version), None)
        enabled = version.enabled if version else (key_read.info.enabled if not info.key_version else None)
        return KeyState(version is not None or not info.key_version, False, enabled, access, tenant)
    if vault_read is not None and vault_read.keys is not None:
        return KeyState(False, False, None, access, tenant)  # listed the vault: the key is not there
    try:
        key = gw.get_key(info.key_vault_uri, info.key_name, info.key_version)
    except gw.PermanentAzureError as exc:
        if not exc.not_found:
            return None  # not readable by Keyward: unknown
        try:
            deleted = gw.get_deleted_key(info.key_vault_uri, info.key_name)
        except gw.PermanentAzureError:
            return None
        return KeyState(deleted is not None, deleted is not None, None, access, tenant)
    return KeyState(True, False, key.enabled, access, tenant)


def _read_account(info: gw.AccountInfo, vaults: dict[str, VaultRead]) -> AccountRead:
    if info.uses_cmk:
        probe = gw.probe_data_access(info.arm_id)
    else:
        probe = gw.ProbeResult(True, "Microsoft-managed keys: the data is always readable.")
    state = _key_state(info, vaults)
    if probe.readable is None and state is not None:
        probe = _inferred_probe(info, state)
    return AccountRead(info, probe, state)


def _inferred_probe(info: gw.AccountInfo, state: KeyState) -> gw.ProbeResult:
    # Real Azure has no probe: infer from what the service itself needs (identity, key, access).
    if not info.cmk_principal_id:
        return gw.ProbeResult(False, "Inferred: the account's managed identity is off.")
    if state.deleted or not state.exists:
        return gw.ProbeResult(False, f"Inferred: key {info.key_name} is deleted or missing.")
    if state.enabled is False:
        return gw.ProbeResult(False, f"Inferred: key {info.key_name} is disabled.")
    if state.access is False:
        return gw.ProbeResult(False, "Inferred: the identity has no access to the key.")
    if state.enabled is None or state.access is None:
        return gw.ProbeResult(None, "Azure offers no data-access probe, and the key's state could not be read.")
    return gw.ProbeResult(True, "Inferred: identity on, key enabled, access granted.")


def read_estate() -> EstateRead:
    """Everything Keyward's identity can see, read from Azure (no database writes)."""
    estate = EstateRead(subscriptions=gw.list_subscriptions())
    known = _mirrored_key_names()
    account_infos: list[gw.AccountInfo] = []
    for sub in estate.subscriptions:
        for vault in gw.list_vaults(sub.subscription_id):
            estate.vaults[vault.vault_uri] = _read_vault(vault, known.get(vault.vault_uri, set()))
        account_infos.extend(gw.list_accounts(sub.subscription_id))
    estate.accounts = [_read_account(info, estate.vaults) for info in account_infos]
    return estate


def _mirrored_key_names() -> dict[str, set[str]]:
    names: dict[str, set[str]] = {}
    for uri, name in Key.objects.values_list("vault__vault_uri", "name"):
        names.setdefault(_norm_uri(uri), set()).add(name)
    return names


def _norm_uri(uri: str) -> str:
    uri = uri.strip().lower()
    return uri if uri.endswith("/") or not uri else uri + "/"


# Entry points


def sync_estate(actor: Actor | None = None) -> SyncSummary:
    """Read every subscription, vault, key and account into the mirror; record external changes."""
    estate = read_estate()
    summary = _write(estate, actor=actor or Actor.system("sync"), record_changes=True, complete=True)
    log.info("sync: %s", summary)
    return summary


def sync_account(account: Account | int, *, actor: Actor | None = None, record_changes: bool = True) -> Account:
    """Refresh one account from Azure, with the vault and key it uses. Operations call this after their own
    change; such a refresh never reports the change as external (see `_explained_by_keyward`)."""
    row = account if isinstance(account, Account) else Account.objects.get(pk=account)
    info = gw.get_account(row.arm_id)
    estate = EstateRead()
    if info.uses_cmk:
        vault = find_vault_of(info)
        if vault is not None:
            known = _mirrored_key_names().get(vault.vault_uri, set())
            estate.vaults[vault.vault_uri] = _read_vault_key(vault, info.key_name, known)
    estate.accounts = [_read_account(info, estate.vaults)]
    _write(estate, actor=actor or Actor.system("sync"), record_changes=record_changes, complete=False)
    row.refresh_from_db()
    return row


def find_vault_of(info: gw.AccountInfo) -> gw.VaultInfo | None:
    """The vault named by a CMK account: the mirrored one when known, else searched in the account's own
    subscription, then the other mirrored ones, then any other subscription Keyward can see."""
    uri = _norm_uri(info.key_vault_uri)
    mirrored = KeyVault.objects.filter(vault_uri__iexact=uri).first()
    if mirrored is not None:
        try:
            return gw.get_vault(mirrored.arm_id)
        except gw.PermanentAzureError as exc:
            if not exc.not_found:
                raise
    tried: set[str] = set()
    for subscription_id in _candidate_subscriptions(info.subscription_id):
        if subscription_id.lower() in tried:
            continue
        tried.add(subscription_id.lower())
        vault = gw.find_vault(uri, subscription_id)
        if vault is not None:
            return vault
    return None


def _candidate_subscriptions(own: str) -> Iterator[str]:
    yield own
    yield from Subscription.objects.values_list("subscription_id", flat=True)
    # Only when the mirror's subscriptions had no such vault: ask Azure which others exist.
    yield from (s.subscription_id for s in gw.list_subscriptions())


def _read_vault_key(vault: gw.VaultInfo, name: str, known: set[str]) -> VaultRead:
    """Only the one key an account uses (the rest of the vault is left as mirrored)."""
    try:
        keys = {name: _read_key(vault.vault_uri, name)}
    except gw.PermanentAzureError as exc:
        if not exc.not_found:
            log.warning("sync: key %s of %s not readable: %s", name, vault.name, exc)
            return VaultRead(vault, None)
        deleted = gw.get_deleted_key(vault.vault_uri, name)
        keys = {name: KeyRead(deleted, [], None)} if deleted is not None else {}
    return VaultRead(vault, keys)


# Writing the mirror


def _write(estate: EstateRead, *, actor: Actor, record_changes: bool, complete: bool) -> SyncSummary:
    """Upsert what was read; `complete` (a whole-estate read) also removes what Azure no longer has."""
    now = timezone.now()
    summary = SyncSummary(
        subscriptions=len(estate.subscriptions),
        accounts=len(estate.accounts),
        vaults=len(estate.vaults),
        unreadable_vaults=[v.info.name for v in estate.vaults.values() if v.keys is None],
    )
    with transaction.atomic():
        befores = _recorded_states([a.info.arm_id for a in estate.accounts])
        subs = _upsert_subscriptions(estate, now)
        vaults = _upsert_vaults(estate, subs, now)
        summary.keys, summary.versions = _upsert_keys(estate, vaults, now, complete=complete)
        rows = _upsert_accounts(estate, subs, now)
        if complete:
            _remove_gone(estate, subs)
        for read in estate.accounts:
            row = rows.get(read.info.arm_id)
            before = befores[read.info.arm_id]
            if row is None or before is None or not record_changes:
                continue
            if _record_external_change(read, before, row, actor=actor):
                summary.external_changes += 1
    return summary


def _upsert_subscriptions(estate: EstateRead, now: datetime) -> dict[str, Subscription]:
    """Subscription rows by lower-case id: those read now, plus mirrored ones that accounts or vaults name."""
    objs = [
        Subscription(
            subscription_id=s.subscription_id,
            display_name=s.display_name or s.subscription_id,
            tenant_id=s.tenant_id,
            state=s.state,
            last_synced_at=now,
        )
        for s in estate.subscriptions
    ]
    Subscription.objects.bulk_create(
        objs,
        update_conflicts=True,
        unique_fields=["subscription_id"],
        update_fields=["display_name", "tenant_id", "state", "last_synced_at"],
    )
    needed = {a.info.subscription_id.lower() for a in estate.accounts}
    needed |= {v.info.subscription_id.lower() for v in estate.vaults.values()}
    missing = needed - {s.subscription_id.lower() for s in estate.subscriptions}
    for subscription_id in sorted(missing):
        # A single-account refresh of a subscription the mirror has never listed: a placeholder row, filled
        # in by the next full sync.
        if not Subscription.objects.filter(subscription_id__iexact=subscription_id).exists():
            Subscription.objects.create(subscription_id=subscription_id, display_name=subscription_id, tenant_id="")
    return {s.subscription_id.lower(): s for s in Subscription.objects.all()}


def _upsert_vaults(estate: EstateRead, subs: dict[str, Subscription], now: datetime) -> dict[str, KeyVault]:
    objs = [
        KeyVault(
            arm_id=v.arm_id,
            name=v.name,
            subscription=subs[v.subscription_id.lower()],
            resource_group=v.resource_group,
            location=v.location,
            tenant_id=v.tenant_id,
            vault_uri=v.vault_uri,
            sku=v.sku,
            soft_delete_enabled=v.soft_delete_enabled,
            soft_delete_retention_days=v.soft_delete_retention_days,
            purge_protection_enabled=v.purge_protection_enabled,
            rbac_authorization=v.rbac_authorization,
            access_policies=[p.to_json() for p in v.access_policies],
            last_synced_at=now,
        )
        for v in (read.info for read in estate.vaults.values())
    ]
    fields = [f.name for f in KeyVault._meta.concrete_fields if f.name not in ("id", "arm_id")]
    KeyVault.objects.bulk_create(objs, update_conflicts=True, unique_fields=["arm_id"], update_fields=fields)
    uris = [read.info.vault_uri for read in estate.vaults.values()]
    return {_norm_uri(v.vault_uri): v for v in KeyVault.objects.filter(vault_uri__in=uris)}


def _upsert_keys(estate: EstateRead, vaults: dict[str, KeyVault], now: datetime, *, complete: bool) -> tuple[int, int]:
    key_objs: list[Key] = []
    for uri, read in estate.vaults.items():
        for key_read in (read.keys or {}).values():
            key_objs.append(_key_row(vaults[uri], key_read, now))
    # A soft-deleted key keeps its type and versions as last mirrored: only the flag and dates change.
    live = [k for k in key_objs if not k.deleted]
    Key.objects.bulk_create(
        live,
        update_conflicts=True,
        unique_fields=["vault", "name"],
        update_fields=[
            "kty",
            "key_size",
            "key_ops",
            "enabled",
            "not_before",
            "expires_on",
            "current_version",
            "rotation_policy",
            "deleted",
            "last_synced_at",
        ],
    )
    Key.objects.bulk_create(
        [k for k in key_objs if k.deleted],
        update_conflicts=True,
        unique_fields=["vault", "name"],
        update_fields=["deleted", "last_synced_at"],
    )
    read_vault_ids = [vaults[uri].pk for uri, read in estate.vaults.items() if read.keys is not None]
    keys = {(k.vault_id, k.name): k for k in Key.objects.filter(vault_id__in=read_vault_ids)}
    version_objs = [
        KeyVersion(
            key=keys[(vaults[uri].pk, name)],
            version=v.version,
            enabled=v.enabled,
            not_before=v.not_before,
            expires_on=v.expires_on,
            created_on=v.created_on,
            last_synced_at=now,
        )
        for uri, read in estate.vaults.items()
        for name, key_read in (read.keys or {}).items()
        for v in key_read.versions
    ]
    KeyVersion.objects.bulk_create(
        version_objs,
        update_conflicts=True,
        unique_fields=["key", "version"],
        update_fields=["enabled", "not_before", "expires_on", "created_on", "last_synced_at"],
    )
    if complete:
        _remove_gone_keys(estate, vaults, keys)
    return len(key_objs), len(version_objs)


def _key_row(vault: KeyVault, read: KeyRead, now: datetime) -> Key:
    info = read.info
    return Key(
        vault=vault,
        name=info.name,
        kty=info.kty or "RSA",
        key_size=info.key_size,
        key_ops=list(info.key_ops),
        enabled=info.enabled,
        not_before=info.not_before,
        expires_on=info.expires_on,
        current_version=info.version,
        rotation_policy=read.rotation_policy,
        deleted=info.deleted,
        last_synced_at=now,
    )


def _remove_gone_keys(estate: EstateRead, vaults: dict[str, KeyVault], keys: dict[tuple[int, str], Key]) -> None:
    """Purged keys and versions leave the mirror; only vaults whose keys were listed are judged."""
    for uri, read in estate.vaults.items():
        if read.keys is None:
            continue
        vault = vaults[uri]
        Key.objects.filter(vault=vault).exclude(name__in=list(read.keys)).delete()
        for name, key_read in read.keys.items():
            if key_read.info.deleted:
                continue
            seen = [v.version for v in key_read.versions]
            KeyVersion.objects.filter(key=keys[(vault.pk, name)]).exclude(version__in=seen).delete()


def _upsert_accounts(estate: EstateRead, subs: dict[str, Subscription], now: datetime) -> dict[str, Account]:
    existing = {
        a.arm_id.lower(): a for a in Account.objects.filter(arm_id__in=[r.info.arm_id for r in estate.accounts])
    }
    objs = []
    for read in estate.accounts:
        info = read.info
        row = existing.get(info.arm_id.lower())
        cmk_tenant = row.cmk_tenant_id if row is not None else ""
        if info.uses_cmk and not cmk_tenant and read.key_state is not None:
            # First sight of this account on CMK: its vault's tenant now is the baseline a tenant move departs from.
            cmk_tenant = read.key_state.vault_tenant_id
        objs.append(
            Account(
                arm_id=row.arm_id if row is not None else info.arm_id,
                name=info.name,
                subscription=subs[info.subscription_id.lower()],
                resource_group=info.resource_group,
                location=info.location,
                kind=info.kind or "Face",
                sku=info.sku,
                cmk_capable=info.cmk_capable,
                endpoint=info.endpoint,
                etag=info.etag,
                provisioning_state=info.provisioning_state,
                identity_type=info.identity_type,
                principal_id=info.principal_id,
                identity_tenant_id=info.identity_tenant_id,
                user_assigned_identities=info.user_assigned_identities,
                key_source=info.key_source,
                key_vault_uri=info.key_vault_uri,
                key_name=info.key_name,
                key_version=info.key_version,
                cmk_tenant_id=cmk_tenant,
                data_readable=read.probe.readable,
                data_access_reason=read.probe.reason[:300],
                probed_at=now,
                last_synced_at=now,
            )
        )
    fields = [f.name for f in Account._meta.concrete_fields if f.name not in ("id", "arm_id")]
    Account.objects.bulk_create(objs, update_conflicts=True, unique_fields=["arm_id"], update_fields=fields)
    return {a.arm_id: a for a in Account.objects.filter(arm_id__in=[o.arm_id for o in objs])}


def _remove_gone(estate: EstateRead, subs: dict[str, Subscription]) -> None:
    """After a whole-estate read: vaults and accounts Azure no longer lists leave the mirror. Accounts with
    operations stay (their history is evidence); pages show how long ago they were last synced."""
    listed = [s.subscription_id for s in estate.subscriptions]
    KeyVault.objects.filter(subscription__subscription_id__in=listed).exclude(
        arm_id__in=[v.info.arm_id for v in estate.vaults.values()]
    ).delete()
    Account.objects.filter(subscription__subscription_id__in=listed, operations__isnull=True).exclude(
        arm_id__in=[a.info.arm_id for a in estate.accounts]
    ).delete()


# External changes


def _recorded_states(arm_ids: list[str]) -> dict[str, dict[str, Any] | None]:
    """What the mirror recorded for each account (None when never synced), in a handful of queries."""
    rows = {a.arm_id: a for a in Account.objects.filter(arm_id__in=arm_ids)}
    wanted = {_norm_uri(a.key_vault_uri) for a in rows.values() if a.uses_cmk}
    vaults = {_norm_uri(v.vault_uri): v for v in KeyVault.objects.all() if _norm_uri(v.vault_uri) in wanted}
    keys = {(k.vault_id, k.name): k for k in Key.objects.filter(vault__in=list(vaults.values()))}
    versions = {(v.key_id, v.version): v for v in KeyVersion.objects.filter(key__in=list(keys.values()))}
    states: dict[str, dict[str, Any] | None] = {}
    for arm_id in arm_ids:
        row = rows.get(arm_id)
        if row is None or row.last_synced_at is None:
            states[arm_id] = None
            continue
        state = _state(
            key_source=row.key_source,
            key_vault_uri=row.key_vault_uri,
            key_name=row.key_name,
            key_version=row.key_version,
            identity_type=row.identity_type,
            principal_id=row.principal_id,
            identity_tenant_id=row.identity_tenant_id,
        )
        vault = vaults.get(_norm_uri(row.key_vault_uri)) if row.uses_cmk else None
        if vault is not None:
            key = keys.get((vault.pk, row.key_name))
            version = versions.get((key.pk, row.key_version)) if key is not None else None
            state.update(_recorded_key_state(row, vault, key, version))
        state["_last_synced_at"] = row.last_synced_at
        state["_pk"] = row.pk
        states[arm_id] = state
    return states


def _recorded_key_state(row: Account, vault: KeyVault, key: Key | None, version: KeyVersion | None) -> dict[str, Any]:
    enabled = version.enabled if version else (key.enabled if key and not row.key_version else None)
    access = None
    if not vault.rbac_authorization and row.principal_id:
        held = {
            str(p).lower()
            for policy in vault.access_policies
            if str(policy.get("objectId", "")).lower() == row.principal_id.lower()
            for p in policy.get("keys", [])
        }
        access = {"get", "wrapkey", "unwrapkey"} <= held or "all" in held
    return {
        "key_enabled": enabled,
        "key_deleted": key.deleted if key else None,
        "key_access": access,
        "vault_tenant_id": vault.tenant_id,
    }


def _state(**values: Any) -> dict[str, Any]:
    values["key_vault_uri"] = _norm_uri(values.get("key_vault_uri") or "")
    return values


def _current_state(read: AccountRead) -> dict[str, Any]:
    info = read.info
    state = _state(
        key_source=info.key_source,
        key_vault_uri=info.key_vault_uri,
        key_name=info.key_name,
        key_version=info.key_version,
        identity_type=info.identity_type,
        principal_id=info.principal_id,
        identity_tenant_id=info.identity_tenant_id,
    )
    ks = read.key_state
    if ks is not None:
        state.update(
            key_enabled=ks.enabled,
            key_deleted=ks.deleted if ks.exists else None,
            key_access=ks.access,
            vault_tenant_id=ks.vault_tenant_id or None,
        )
    return state


def _describe(field_name: str, before: Any, after: Any, info: gw.AccountInfo) -> str:
    key = f"key {info.key_name} in {_vault_name(info.key_vault_uri)}"
    return {
        "key_source": f"the encryption changed from {before} to {after}",
        "key_vault_uri": f"the key vault changed from {before or 'none'} to {after or 'none'}",
        "key_name": f"the key changed from {before or 'none'} to {after or 'none'}",
        "key_version": f"the key version changed from {before or 'none'} to {after or 'none'}",
        "identity_type": f"the managed identity changed from {before} to {after}",
        "principal_id": "the managed identity was replaced (new principal id)",
        "identity_tenant_id": f"the identity's tenant changed from {before} to {after}",
        "key_enabled": f"{key} was {'enabled' if after else 'disabled'}",
        "key_deleted": f"{key} was {'deleted' if after else 'recovered'}",
        "key_access": f"the identity's access to {_vault_name(info.key_vault_uri)} was "
        f"{'granted' if after else 'removed'}",
        "vault_tenant_id": f"the key vault's tenant changed from {before} to {after}",
    }.get(field_name, f"{field_name} changed")


def _vault_name(uri: str) -> str:
    return uri.split("//", 1)[-1].split(".", 1)[0] if uri else ""


def _changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    changed = []
    for name, new in after.items():
        old = before.get(name)
        if name.startswith("_") or old == new:
            continue
        # Unknown on either side (a vault not readable now or then) is not a change.
        if old is None and name in ("key_enabled", "key_deleted", "key_access", "vault_tenant_id"):
            continue
        if new is None:
            continue
        changed.append(name)
    return changed


def _explained_by_keyward(account_pk: int, since: datetime) -> bool:
    """A change operation running now, or finished since the last sync, made the difference itself."""
    return (
        Operation.objects.filter(account_id=account_pk, kind__in=Operation.CHANGE_KINDS)
        .filter(Q(status__in=Operation.ACTIVE_STATUSES) | Q(finished_at__gte=since))
        .exists()
    )


def _record_external_change(read: AccountRead, before: dict[str, Any], row: Account, *, actor: Actor) -> bool:
    after = _current_state(read)
    changed = _changes(before, after)
    if not changed or _explained_by_keyward(before["_pk"], before["_last_synced_at"]):
        return False
    public_before = {k: v for k, v in before.items() if not k.startswith("_")}
    sentences = [_describe(name, before.get(name), after[name], read.info) for name in changed]
    message = f"Changed outside Keyward on {row.name}: " + "; ".join(sentences) + "."
    audit.record(
        actor=actor,
        action=EXTERNAL_CHANGE,
        outcome=AuditEvent.Outcome.INFO,
        target=row.arm_id,
        key_id=row.key_uri or _key_uri(public_before),
        before={k: public_before.get(k) for k in changed},
        after={k: after[k] for k in changed},
        message=message,
    )
    return True


def _key_uri(state: dict[str, Any]) -> str:
    if state.get("key_source") != KEY_SOURCE_KEY_VAULT or not state.get("key_name"):
        return ""
    base = f"{str(state['key_vault_uri']).rstrip('/')}/keys/{state['key_name']}"
    return f"{base}/{state['key_version']}" if state.get("key_version") else base
