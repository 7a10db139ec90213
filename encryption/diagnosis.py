"""Why an account can or cannot read its data, in plain language, for help-desk.

A live probe (under the emulator) says whether the data is readable; reads through the gateway say why:
the identity, its access to the vault, the key version's state, the vault's protections and region, the
tenant. Keyward's own records add the latest change found by sync and the last failed operation. Each cause
says who to ask and what they must do. Against real Azure, which has no probe, readability is inferred from
the causes found.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

from encryption import azure_gateway as gw
from encryption.models import Account, AuditEvent, Operation
from encryption.sync import EXTERNAL_CHANGE, find_vault_of

ENCRYPTION_ADMIN = "An encryption admin (Keyward)"
# Causes that stop the data being read; the others are risks or history worth knowing.
BLOCKING = frozenset(
    {
        "account_missing",
        "identity_off",
        "access_missing",
        "vault_not_found",
        "key_missing",
        "key_deleted",
        "key_disabled",
        "key_expired",
        "key_not_yet_valid",
        "tenant_changed",
        "unreadable",
    }
)


@dataclass(frozen=True)
class Cause:
    code: str
    summary: str
    detail: str
    who: str
    action: str


@dataclass(frozen=True)
class Diagnosis:
    readable: bool | None
    causes: list[Cause] = field(default_factory=list)
    probe_reason: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "readable": self.readable,
            "causes": [asdict(c) for c in self.causes],
            "probe_reason": self.probe_reason,
        }


def diagnose(account: Account) -> Diagnosis:
    """Read the account, its key and vault from Azure now, and explain whether and why its data is readable."""
    try:
        info = gw.get_account(account.arm_id)
    except gw.PermanentAzureError as exc:
        if not exc.not_found:
            raise
        cause = Cause(
            "account_missing",
            f"Account {account.name} no longer exists in Azure",
            str(exc),
            "The subscription owner",
            "Check whether the account was deleted or moved; run a sync to refresh Keyward.",
        )
        return Diagnosis(False, [cause])
    probe = gw.probe_data_access(info.arm_id)
    causes = _key_causes(account, info) if info.uses_cmk else []
    causes += _history_causes(account)
    readable = probe.readable
    if readable is None:
        readable = not any(c.code in BLOCKING for c in causes)
    elif not readable and not any(c.code in BLOCKING for c in causes):
        causes.insert(
            0,
            Cause(
                "unreadable",
                f"Azure reports that {info.name} cannot read its data",
                f"{probe.reason} [{probe.code}]" if probe.code else probe.reason,
                ENCRYPTION_ADMIN,
                "Run Restore access; if it persists, open a support case with the account's id.",
            ),
        )
    causes.sort(key=lambda c: c.code not in BLOCKING)
    return Diagnosis(readable, causes, probe.reason)


# The key, its vault and the identity


def _key_causes(account: Account, info: gw.AccountInfo) -> list[Cause]:
    key_label = f"{info.key_name} in {_vault_name(info.key_vault_uri)}"
    causes: list[Cause] = []
    if info.identity_client_id and not info.cmk_principal_id:
        causes.append(
            Cause(
                "identity_off",
                f"The user-assigned identity of {info.name} is no longer attached",
                f"Encryption uses the identity with client id {info.identity_client_id}, which the account no "
                f"longer has, so it cannot reach key {key_label}.",
                "The account's owner in Azure",
                "Attach the user-assigned identity to the account again.",
            )
        )
    elif not info.cmk_principal_id:
        causes.append(
            Cause(
                "identity_off",
                f"The managed identity of {info.name} is turned off",
                "Without its system-assigned identity the account cannot reach key "
                f"{key_label}. Turning it back on creates a new identity, which has no access yet.",
                ENCRYPTION_ADMIN,
                "Turn the system-assigned identity back on and grant it access to the key: Restore access does both.",
            )
        )
    vault = find_vault_of(info)
    if vault is None:
        causes.append(
            Cause(
                "vault_not_found",
                f"Key vault {_vault_name(info.key_vault_uri)} cannot be found",
                f"No subscription Keyward can see has a vault at {info.key_vault_uri}.",
                "The key vault's owner",
                "Check whether the vault was deleted (recover it) or Keyward lost access to its subscription.",
            )
        )
    else:
        causes += _vault_causes(account, info, vault, key_label)
    causes += _version_causes(info, key_label)
    return causes


def _vault_causes(account: Account, info: gw.AccountInfo, vault: gw.VaultInfo, key_label: str) -> list[Cause]:
    owner = f"The owner of key vault {vault.name}"
    causes: list[Cause] = []
    principal = info.cmk_principal_id
    if principal:
        held = gw.key_access_of(vault, principal)
        missing = [p for p in gw.CMK_KEY_PERMISSIONS if p not in held]
        if missing:
            what = (
                f"the role {gw.CRYPTO_SERVICE_ENCRYPTION_USER_NAME}"
                if vault.rbac_authorization
                else f"an access policy with {', '.join(missing)}"
            )
            causes.append(
                Cause(
                    "access_missing",
                    f"The identity of {info.name} has no access to key {key_label}",
                    f"Key vault {vault.name} gives identity {principal} no {what}.",
                    f"{owner}, or {ENCRYPTION_ADMIN.lower()}",
                    f"Grant the identity {what} on {vault.name}: Restore access does it.",
                )
            )
    # Tenants as far as they are known (a user-assigned identity reports none): the one CMK was set in, the
    # vault's now and the identity's now must all agree.
    tenants = {t.lower() for t in (account.cmk_tenant_id, vault.tenant_id, info.identity_tenant_id) if t}
    if len(tenants) > 1:
        causes.append(_tenant_cause(info, vault, was=account.cmk_tenant_id or vault.tenant_id))
    if vault.location.replace(" ", "").lower() != info.location.replace(" ", "").lower():
        causes.append(
            Cause(
                "region_mismatch",
                f"Key vault {vault.name} is in {vault.location}, the account in {info.location}",
                "Azure AI services need the key vault in the account's own region.",
                ENCRYPTION_ADMIN,
                f"Move the account to a key in a vault in {info.location} (Use a different key).",
            )
        )
    if not vault.purge_protection_enabled or not vault.soft_delete_enabled:
        causes.append(
            Cause(
                "purge_protection_off",
                f"Key vault {vault.name} does not have purge protection on",
                "The data is readable, but a deleted key could be purged at once and the data lost for good.",
                owner,
                f"Turn on soft delete and purge protection on {vault.name} (purge protection cannot be undone).",
            )
        )
    return causes


def _tenant_cause(info: gw.AccountInfo, vault: gw.VaultInfo, *, was: str) -> Cause:
    return Cause(
        "tenant_changed",
        f"The tenant changed since customer-managed keys were set on {info.name}",
        f"The key vault {vault.name} is in tenant {vault.tenant_id} (customer-managed keys were set in tenant "
        f"{was}); the account's identity is now in tenant {info.identity_tenant_id or 'unknown'}. Managed "
        "identities do not move across tenants.",
        "The subscription owner and an encryption admin",
        "Use a key vault in the account's current tenant (Use a different key), or move the subscription back.",
    )


def _version_causes(info: gw.AccountInfo, key_label: str) -> list[Cause]:
    owner = f"The owner of key vault {_vault_name(info.key_vault_uri)}"
    version_label = f"version {info.key_version} of " if info.key_version else ""
    try:
        key = gw.get_key(info.key_vault_uri, info.key_name, info.key_version)
    except gw.PermanentAzureError as exc:
        if not exc.not_found:
            raise
        return [_missing_key_cause(info, key_label, owner)]
    now = gw.azure_now()
    if not key.enabled:
        return [
            Cause(
                "key_disabled",
                f"Key {key_label} is disabled",
                f"{_version_of(info)} {key_label} is disabled in the vault, so the account cannot unwrap its data key.",
                f"{owner}, or {ENCRYPTION_ADMIN.lower()}",
                f"Enable {version_label}key {info.key_name} in the vault: Restore access does it.",
            )
        ]
    if key.expires_on and key.expires_on <= now:
        return [
            Cause(
                "key_expired",
                f"Key {key_label} expired on {_when(key.expires_on)}",
                "An expired key version cannot unwrap the account's data key.",
                owner,
                "Extend the key's expiry date in the vault, or move the account to a valid version.",
            )
        ]
    if key.not_before and key.not_before > now:
        return [
            Cause(
                "key_not_yet_valid",
                f"Key {key_label} is not valid before {_when(key.not_before)}",
                "A key version outside its validity window cannot unwrap the account's data key.",
                owner,
                "Change the key's activation date in the vault, or move the account to a valid version.",
            )
        ]
    return []


def _missing_key_cause(info: gw.AccountInfo, key_label: str, owner: str) -> Cause:
    try:
        deleted = gw.get_deleted_key(info.key_vault_uri, info.key_name)
    except gw.PermanentAzureError:
        deleted = None
    if deleted is not None:
        until = f" until {_when(deleted.scheduled_purge_on)}" if deleted.scheduled_purge_on else ""
        return Cause(
            "key_deleted",
            f"Key {key_label} was deleted",
            f"The key is soft-deleted and can be recovered{until}; until then the data cannot be read.",
            f"{owner}, or {ENCRYPTION_ADMIN.lower()}",
            f"Recover the key{until}: Restore access does it.",
        )
    what = f"Version {info.key_version} of key {key_label}" if info.key_version else f"Key {key_label}"
    return Cause(
        "key_missing",
        f"{what} does not exist",
        "It is neither in the vault nor among its deleted keys (purged): the data it protected cannot be "
        "unwrapped again.",
        owner,
        "Restore the key from a backup into the same vault if one exists; otherwise the data is lost.",
    )


# Keyward's own records


def _history_causes(account: Account) -> list[Cause]:
    causes: list[Cause] = []
    last_change = (
        Operation.objects.filter(account=account, kind__in=Operation.CHANGE_KINDS, finished_at__isnull=False)
        .order_by("-finished_at")
        .first()
    )
    event = AuditEvent.objects.filter(action=EXTERNAL_CHANGE, target=account.arm_id).order_by("-seq").first()
    newer_than_keyward = last_change is None or (
        last_change.finished_at is not None and event is not None and event.created_at > last_change.finished_at
    )
    if event is not None and newer_than_keyward:
        causes.append(
            Cause(
                "external_change",
                f"A change made outside Keyward was found on {_when(event.created_at)}",
                event.message,
                "A security reviewer, with the account's owners",
                f"Check audit event #{event.seq} and confirm the change was intended; undo it if not.",
            )
        )
    if last_change is not None and last_change.status == Operation.Status.FAILED:
        causes.append(
            Cause(
                "last_operation_failed",
                f"The last change, {last_change.get_kind_display().lower()} (#{last_change.pk}), failed",
                last_change.reason or "No reason was recorded.",
                ENCRYPTION_ADMIN,
                "Read the operation's steps, fix what its reason names, then try again.",
            )
        )
    return causes


def _version_of(info: gw.AccountInfo) -> str:
    return f"Version {info.key_version} of key" if info.key_version else "Key"


def _vault_name(uri: str) -> str:
    return uri.split("//", 1)[-1].split(".", 1)[0] if uri else ""


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"
