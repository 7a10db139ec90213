"""The key-usage inventory: which accounts use which key version, what is near expiry, and blast radius.

Read from the mirror only (sync keeps it current); no Azure call. Accounts refer to keys by vault URI,
key name and version, so the match is made on the normalised URI (Key Vault names are case-insensitive).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from encryption.models import KEY_SOURCE_KEY_VAULT, Account, Key, KeyVault, KeyVersion

NEAR_EXPIRY = timedelta(days=30)


def _vault_key(vault_uri: str, key_name: str) -> tuple[str, str]:
    return vault_uri.strip().lower().rstrip("/") + "/", key_name.strip().lower()


@dataclass
class AccountUse:
    account: Account
    version: str  # the version the account reads through: its pinned one, or the current one if versionless
    pinned: bool
    on_old_version: bool


@dataclass
class VersionUsage:
    version: KeyVersion
    is_current: bool
    accounts: list[AccountUse] = field(default_factory=list)
    expired: bool = False
    near_expiry: bool = False


@dataclass
class KeyUsage:
    key: Key
    versions: list[VersionUsage]
    accounts: list[AccountUse]
    # Accounts pinned to a version the mirror does not hold (deleted, or not synced yet).
    unknown_version_accounts: list[AccountUse]
    expires_on: datetime | None
    expired: bool
    near_expiry: bool
    rotation: str

    @property
    def old_version_count(self) -> int:
        return sum(1 for use in self.accounts if use.on_old_version)


@dataclass
class VaultUsage:
    vault: KeyVault
    keys: list[KeyUsage]


def _expiry_state(expires_on: datetime | None, now: datetime) -> tuple[bool, bool]:
    if expires_on is None:
        return False, False
    return expires_on <= now, now < expires_on <= now + NEAR_EXPIRY


def rotation_summary(policy: Any) -> str:
    """A rotation policy in one line, from the REST shape ({"action": {"type"}, "trigger": {...}})."""
    if not isinstance(policy, dict):
        return "No rotation policy"
    parts = []
    for item in policy.get("lifetimeActions") or policy.get("lifetime_actions") or []:
        action = item.get("action")
        kind = action.get("type") if isinstance(action, dict) else action
        trigger: dict[str, Any] = item["trigger"] if isinstance(item.get("trigger"), dict) else item
        after = trigger.get("timeAfterCreate") or trigger.get("time_after_create")
        before = trigger.get("timeBeforeExpiry") or trigger.get("time_before_expiry")
        when = f"{after} after creation" if after else f"{before} before expiry" if before else "on demand"
        parts.append(f"{kind or 'Action'} {when}")
    attributes: dict[str, Any] = policy["attributes"] if isinstance(policy.get("attributes"), dict) else policy
    expiry = attributes.get("expiryTime") or attributes.get("expires_in")
    if expiry:
        parts.append(f"new versions expire after {expiry}")
    return "; ".join(parts) or "Policy without actions"


def _uses_by_key() -> dict[tuple[str, str], list[Account]]:
    uses: dict[tuple[str, str], list[Account]] = defaultdict(list)
    accounts = Account.objects.filter(key_source=KEY_SOURCE_KEY_VAULT).select_related("subscription")
    for account in accounts.order_by("name"):
        uses[_vault_key(account.key_vault_uri, account.key_name)].append(account)
    return uses


def _key_usage(key: Key, accounts: list[Account], now: datetime) -> KeyUsage:
    versions = list(key.versions.all())
    current = key.current_version
    by_version = {v.version.lower(): VersionUsage(version=v, is_current=v.version == current) for v in versions}
    for usage in by_version.values():
        usage.expired, usage.near_expiry = _expiry_state(usage.version.expires_on, now)
    uses, unknown = [], []
    for account in accounts:
        version = account.key_version or current
        use = AccountUse(
            account=account,
            version=version,
            pinned=bool(account.key_version),
            on_old_version=bool(current) and version.lower() != current.lower(),
        )
        uses.append(use)
        target = by_version.get(version.lower())
        if target is None:
            unknown.append(use)
        else:
            target.accounts.append(use)
    current_row = by_version.get(current.lower()) if current else None
    expires_on = key.expires_on or (current_row.version.expires_on if current_row else None)
    expired, near = _expiry_state(expires_on, now)
    return KeyUsage(
        key=key,
        versions=list(by_version.values()),
        accounts=uses,
        unknown_version_accounts=unknown,
        expires_on=expires_on,
        expired=expired,
        near_expiry=near,
        rotation=rotation_summary(key.rotation_policy),
    )


def inventory(now: datetime | None = None) -> list[VaultUsage]:
    """Every vault and key in the mirror with its versions and the accounts using each one."""
    now = now or timezone.now()
    uses = _uses_by_key()
    keys_by_vault: dict[int, list[Key]] = defaultdict(list)
    for key in Key.objects.filter(deleted=False).prefetch_related("versions").order_by("name"):
        keys_by_vault[key.vault_id].append(key)
    return [
        VaultUsage(
            vault=vault,
            keys=[
                _key_usage(k, uses.get(_vault_key(vault.vault_uri, k.name), []), now) for k in keys_by_vault[vault.pk]
            ],
        )
        for vault in KeyVault.objects.select_related("subscription").order_by("name")
    ]


def orphan_accounts() -> list[Account]:
    """Accounts whose customer-managed key is not in the mirror (another tenant's vault, or deleted)."""
    known = {_vault_key(k.vault.vault_uri, k.name) for k in Key.objects.select_related("vault").filter(deleted=False)}
    return [a for key, accounts in _uses_by_key().items() if key not in known for a in accounts]


def key_usage(key: Key, now: datetime | None = None) -> KeyUsage:
    accounts = _uses_by_key().get(_vault_key(key.vault.vault_uri, key.name), [])
    return _key_usage(key, accounts, now or timezone.now())


@dataclass(frozen=True)
class BlastRadius:
    """What stops reading its data if the key, or one of its versions, is disabled, deleted or revoked."""

    key_accounts: list[AccountUse]  # every account using any version (disabling the key or revoking the vault)
    by_version: list[VersionUsage]  # per version: the accounts that read through that version

    @property
    def follows_current(self) -> list[AccountUse]:
        return [use for use in self.key_accounts if not use.pinned]


def blast_radius(usage: KeyUsage) -> BlastRadius:
    return BlastRadius(key_accounts=usage.accounts, by_version=list(usage.versions))
