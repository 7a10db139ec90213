"""Every prerequisite for putting an account on a customer-managed key, as checks read live from Azure.

The rules are Azure's own (the emulator enforces the same ones): SKU capability, identity, a vault in the
same tenant and region with soft delete and purge protection, the identity's key permissions, and a key
version that exists, is enabled, valid now, RSA or RSA-HSM of 2048/3072/4096 bits and allowed to wrap and
unwrap; when the account is already on CMK, its current key must still be reachable. Every check is
returned, each passing, to be done by the operation itself (identity, access), or blocking with what to do.
A check that depends on something not found blocks too, saying what it waits for.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from encryption import azure_gateway as gw
from encryption.key_uri import InvalidKeyUri, KeyUri, parse_key_uri
from encryption.models import Account, Subscription

PASSES = "passes"
WILL_BE_DONE = "will_be_done"
BLOCKS = "blocks"
SUPPORTED_KTY = ("RSA", "RSA-HSM")
SUPPORTED_SIZES = (2048, 3072, 4096)
# A key expiring within this many days passes with a warning in its `action`.
EXPIRY_WARNING_DAYS = 30


@dataclass(frozen=True)
class Check:
    id: str
    label: str
    state: str  # passes, will_be_done or blocks
    detail: str
    action: str = ""  # what to do: for a blocking check, or a warning on a passing one

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


LABELS = {
    "sku": "Pricing tier supports customer-managed keys",
    "identity": "System-assigned managed identity",
    "vault": "Key vault found",
    "tenant": "Same Microsoft Entra tenant",
    "region": "Same region",
    "soft_delete": "Soft delete on the vault",
    "purge_protection": "Purge protection on the vault",
    "access": "Key permissions for the identity",
    "key": "Key exists",
    "version": "Key version",
    "enabled": "Key enabled",
    "validity": "Key valid now",
    "key_type": "Key type and size",
    "key_ops": "Key operations allow wrap and unwrap",
    "current_key": "Current key reachable",
}


def _check(check_id: str, state: str, detail: str, action: str = "") -> Check:
    return Check(check_id, LABELS[check_id], state, detail, action)


def run_preflight(account: Account, key_uri: KeyUri, vault_subscription_id: str) -> list[Check]:
    """Every check for putting `account` on `key_uri` (a vault in `vault_subscription_id`)."""
    return _Preflight(account.arm_id, key_uri, vault_subscription_id).run()


def run_checks(arm_id: str, *, key_uri: str | KeyUri, vault_subscription_id: str) -> list[Check]:
    """`run_preflight` by ARM id and a key URI as text or parsed (what workers hold)."""
    if isinstance(key_uri, str):
        try:
            key_uri = parse_key_uri(key_uri)
        except InvalidKeyUri as exc:
            return [_check("key", BLOCKS, str(exc), "Enter the key identifier as the Azure portal shows it.")]
    return _Preflight(arm_id, key_uri, vault_subscription_id).run()


def _location(value: str) -> str:
    return value.replace(" ", "").lower()


class _Preflight:
    def __init__(self, arm_id: str, key_uri: KeyUri, vault_subscription_id: str) -> None:
        self.arm_id = arm_id
        self.uri = key_uri
        self.vault_subscription_id = vault_subscription_id
        self.key_label = f"{key_uri.name} in {key_uri.vault_name}"

    def run(self) -> list[Check]:
        self.account = gw.get_account(self.arm_id)
        self.now = gw.azure_now()
        checks = [self._sku(), self._identity()]
        vault, vault_check = self._vault()
        checks.append(vault_check)
        checks += self._vault_checks(vault)
        key, key_check = self._key(vault_found=vault is not None)
        checks.append(key_check)
        version, version_check = self._version(key)
        checks.append(version_check)
        checks += self._version_checks(version)
        checks.append(self._current_key())
        return checks

    # The account

    def _sku(self) -> Check:
        account = self.account
        if account.cmk_capable:
            return _check("sku", PASSES, f"The {account.sku} tier of {account.name} supports customer-managed keys.")
        return _check(
            "sku",
            BLOCKS,
            f"The {account.sku} tier of {account.name} does not have the CustomerManagedKey capability.",
            "Move the account to a pricing tier that supports customer-managed keys (such as S0 or E0), "
            "then try again.",
        )

    def _identity(self) -> Check:
        if self.account.has_system_identity:
            return _check("identity", PASSES, f"The system-assigned identity is on ({self.account.principal_id}).")
        return _check("identity", WILL_BE_DONE, "The system-assigned identity will be turned on.")

    def _account_tenant(self) -> str:
        if self.account.identity_tenant_id:
            return self.account.identity_tenant_id
        mirrored = Subscription.objects.filter(subscription_id__iexact=self.account.subscription_id).first()
        if mirrored is not None and mirrored.tenant_id:
            return mirrored.tenant_id
        found = [
            s for s in gw.list_subscriptions() if s.subscription_id.lower() == self.account.subscription_id.lower()
        ]
        return found[0].tenant_id if found else ""

    # The vault

    def _vault(self) -> tuple[gw.VaultInfo | None, Check]:
        if ".managedhsm." in self.uri.host:
            return None, _check(
                "vault",
                BLOCKS,
                f"{self.uri.host} is a Managed HSM; AI services encryption uses keys in a key vault.",
                "Use a key in an Azure Key Vault vault.",
            )
        try:
            vault = gw.find_vault(self.uri.vault_uri, self.vault_subscription_id)
        except gw.PermanentAzureError as exc:
            return None, _check("vault", BLOCKS, str(exc), "Check the vault's subscription and Keyward's access to it.")
        if vault is None:
            return None, _check(
                "vault",
                BLOCKS,
                f"No key vault {self.uri.vault_name} in subscription {self.vault_subscription_id}.",
                "Check the key URI and pick the subscription the vault belongs to.",
            )
        return vault, _check("vault", PASSES, f"{vault.name} is in resource group {vault.resource_group}.")

    def _vault_checks(self, vault: gw.VaultInfo | None) -> list[Check]:
        if vault is None:
            why = "Not checked: the key vault was not found."
            return [_check(i, BLOCKS, why) for i in ("tenant", "region", "soft_delete", "purge_protection", "access")]
        return [
            self._tenant(vault),
            self._region(vault),
            self._soft_delete(vault),
            self._purge(vault),
            self._access(vault),
        ]

    def _tenant(self, vault: gw.VaultInfo) -> Check:
        tenant = self._account_tenant()
        if tenant and tenant.lower() == vault.tenant_id.lower():
            return _check("tenant", PASSES, f"The account and {vault.name} are in tenant {vault.tenant_id}.")
        return _check(
            "tenant",
            BLOCKS,
            f"{vault.name} is in tenant {vault.tenant_id}, the account's identity in tenant {tenant or 'unknown'}.",
            "Use a key vault in the account's own Microsoft Entra tenant.",
        )

    def _region(self, vault: gw.VaultInfo) -> Check:
        if _location(vault.location) == _location(self.account.location):
            return _check("region", PASSES, f"The account and {vault.name} are both in {self.account.location}.")
        return _check(
            "region",
            BLOCKS,
            f"{vault.name} is in {vault.location}, the account in {self.account.location}.",
            f"Use a key vault in {self.account.location}.",
        )

    def _soft_delete(self, vault: gw.VaultInfo) -> Check:
        if vault.soft_delete_enabled:
            return _check(
                "soft_delete", PASSES, f"Deleted keys stay recoverable for {vault.soft_delete_retention_days} days."
            )
        return _check(
            "soft_delete",
            BLOCKS,
            f"Soft delete is off on {vault.name}: a deleted key would be lost, and the data with it.",
            f"Turn on soft delete on {vault.name} (vault owner).",
        )

    def _purge(self, vault: gw.VaultInfo) -> Check:
        if vault.purge_protection_enabled:
            return _check("purge_protection", PASSES, f"Purge protection is on for {vault.name}.")
        return _check(
            "purge_protection",
            BLOCKS,
            f"Purge protection is off on {vault.name}: a deleted key could be purged and the data lost for good.",
            f"Turn on purge protection on {vault.name} (vault owner; it cannot be turned off again), "
            "or use a vault that has it.",
        )

    def _access(self, vault: gw.VaultInfo) -> Check:
        how = (
            f"the role {gw.CRYPTO_SERVICE_ENCRYPTION_USER_NAME}"
            if vault.rbac_authorization
            else "get, wrapKey, unwrapKey"
        )
        principal = self.account.principal_id if self.account.has_system_identity else ""
        if principal:
            try:
                held = gw.key_access_of(vault, principal)
            except gw.PermanentAzureError as exc:
                return _check("access", WILL_BE_DONE, f"Access will be granted: {how} (current access unknown: {exc})")
            if set(gw.CMK_KEY_PERMISSIONS) <= held:
                return _check(
                    "access", PASSES, f"The identity already holds get, wrapKey and unwrapKey on {vault.name}."
                )
        return _check("access", WILL_BE_DONE, f"Access will be granted: {how}.")

    # The key

    def _key(self, *, vault_found: bool) -> tuple[gw.KeyInfo | None, Check]:
        uri = self.uri
        if ".managedhsm." in uri.host:
            return None, _check("key", BLOCKS, "Not checked: Managed HSM keys are not supported here.")
        try:
            key = gw.get_key(uri.vault_uri, uri.name)
        except gw.TransientAzureError as exc:
            # A vault host that does not answer, when ARM knows no such vault either, is a name that does not
            # exist (no DNS record), not an outage worth retrying.
            if vault_found or exc.code != "ConnectionFailed":
                raise
            return None, _check(
                "key", BLOCKS, f"{uri.host} does not answer: there is no such key vault.", "Check the vault name."
            )
        except gw.PermanentAzureError as exc:
            if not exc.not_found:
                return None, _check(
                    "key", BLOCKS, str(exc), "Ask the vault owner to let Keyward read the vault's keys."
                )
            return None, self._missing_key()
        return key, _check("key", PASSES, f"Key {self.key_label} exists ({key.kty}).")

    def _missing_key(self) -> Check:
        uri = self.uri
        try:
            deleted = gw.get_deleted_key(uri.vault_uri, uri.name)
        except gw.PermanentAzureError:
            deleted = None
        if deleted is not None:
            until = f" until {deleted.scheduled_purge_on:%Y-%m-%d}" if deleted.scheduled_purge_on else ""
            return _check(
                "key",
                BLOCKS,
                f"Key {self.key_label} is deleted (recoverable{until}).",
                "Recover the key in the vault first, or pick another key.",
            )
        return _check(
            "key",
            BLOCKS,
            f"No key {uri.name} in {uri.vault_name}.",
            "Check the key name in the URI, or create the key.",
        )

    def _version(self, key: gw.KeyInfo | None) -> tuple[gw.KeyInfo | None, Check]:
        uri = self.uri
        if key is None:
            return None, _check("version", BLOCKS, "Not checked: the key was not found.")
        if uri.versionless:
            return key, _check(
                "version",
                PASSES,
                f"The key URI has no version: the current version {key.version} will be used and pinned.",
            )
        if key.version == uri.version:
            return key, _check("version", PASSES, f"Version {uri.version} is the key's current version.")
        try:
            version = gw.get_key(uri.vault_uri, uri.name, uri.version)
        except gw.PermanentAzureError as exc:
            if not exc.not_found:
                raise
            return None, _check(
                "version",
                BLOCKS,
                f"Key {self.key_label} has no version {uri.version}.",
                f"Pick an existing version (the current one is {key.version}).",
            )
        return version, _check(
            "version", PASSES, f"Version {uri.version} exists; a newer current version {key.version} is available."
        )

    def _version_checks(self, version: gw.KeyInfo | None) -> list[Check]:
        if version is None:
            why = "Not checked: the key version was not found."
            return [_check(i, BLOCKS, why) for i in ("enabled", "validity", "key_type", "key_ops")]
        return [self._enabled(version), self._validity(version), self._key_type(version), self._key_ops(version)]

    def _enabled(self, version: gw.KeyInfo) -> Check:
        if version.enabled:
            return _check("enabled", PASSES, f"Version {version.version} is enabled.")
        return _check(
            "enabled",
            BLOCKS,
            f"Version {version.version} of {self.key_label} is disabled.",
            "Enable the version in the vault, or pick an enabled version.",
        )

    def _validity(self, version: gw.KeyInfo) -> Check:
        now = self.now
        if version.not_before and version.not_before > now:
            return _check(
                "validity",
                BLOCKS,
                f"Version {version.version} is not valid before {_when(version.not_before)}.",
                "Wait until then, or pick a version that is valid now.",
            )
        if version.expires_on and version.expires_on <= now:
            return _check(
                "validity",
                BLOCKS,
                f"Version {version.version} expired on {_when(version.expires_on)}.",
                "Pick a version that is valid now, or extend the key's expiry date in the vault.",
            )
        if version.expires_on and version.expires_on - now < timedelta(days=EXPIRY_WARNING_DAYS):
            days = (version.expires_on - now).days
            return _check(
                "validity",
                PASSES,
                f"Version {version.version} expires on {_when(version.expires_on)}, in {days} days.",
                "Rotate the key or extend its expiry before then: the data becomes unreadable when it expires.",
            )
        expiry = f"until {_when(version.expires_on)}" if version.expires_on else "with no expiry date"
        return _check("validity", PASSES, f"Version {version.version} is valid {expiry}.")

    def _key_type(self, version: gw.KeyInfo) -> Check:
        described = f"{version.kty} {version.key_size or '?'}-bit"
        if version.kty in SUPPORTED_KTY and version.key_size in SUPPORTED_SIZES:
            return _check("key_type", PASSES, f"{described} is supported.")
        return _check(
            "key_type",
            BLOCKS,
            f"{self.key_label} is an {described} key; AI services encryption needs RSA or RSA-HSM of 2048, 3072 "
            "or 4096 bits.",
            "Pick or create an RSA key of 2048, 3072 or 4096 bits.",
        )

    def _key_ops(self, version: gw.KeyInfo) -> Check:
        ops = {op.lower() for op in version.key_ops}
        missing = [op for op in ("wrapKey", "unwrapKey") if op.lower() not in ops]
        if not missing:
            return _check("key_ops", PASSES, "The key allows wrapKey and unwrapKey.")
        return _check(
            "key_ops",
            BLOCKS,
            f"The key does not allow {' and '.join(missing)} (it allows {', '.join(version.key_ops) or 'nothing'}).",
            "Allow wrapKey and unwrapKey in the key's permitted operations, or pick another key.",
        )

    # The key the account uses now

    def _current_key(self) -> Check:
        account = self.account
        if not account.uses_cmk:
            return _check("current_key", PASSES, "The account uses Microsoft-managed keys: nothing to re-wrap.")
        current = f"{account.key_name} in {account.key_vault_uri.split('//')[-1].split('.')[0]}"
        probe = gw.probe_data_access(account.arm_id)
        readable = probe.readable if probe.readable is not None else self._current_key_usable()
        if readable:
            return _check("current_key", PASSES, f"The current key {current} is reachable.")
        return _check(
            "current_key",
            BLOCKS,
            f"The current key {current} cannot be used: {probe.reason or 'it is disabled, expired or deleted'}",
            "Restore access to the current key first (Restore access), then change the key.",
        )

    def _current_key_usable(self) -> bool:
        # Real Azure has no probe: the current version must at least exist, be enabled and valid now.
        account = self.account
        try:
            key = gw.get_key(account.key_vault_uri, account.key_name, account.key_version)
        except gw.PermanentAzureError:
            return False
        in_window = (not key.not_before or key.not_before <= self.now) and (
            not key.expires_on or key.expires_on > self.now
        )
        return key.enabled and in_window


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"
