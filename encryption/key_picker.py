"""The "Select from Key Vault" choices for one account, read from the mirror.

Each level (subscription, key vault, key, version) lists what the mirror holds; a vault or key the
account cannot use is still listed, disabled, with the reason, as the Azure blade does, so an admin
sees why the vault they expected cannot be picked.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.utils import timezone

from encryption.models import Account, Key, KeyVault, KeyVersion, Subscription

SUPPORTED_KEY_TYPES = ("RSA", "RSA-HSM")
SUPPORTED_KEY_SIZES = (2048, 3072, 4096)


@dataclass(frozen=True)
class Option:
    value: str
    label: str
    reason: str = ""  # why it cannot be chosen; empty when it can

    @property
    def disabled(self) -> bool:
        return bool(self.reason)


@dataclass
class KeyPicker:
    """The four cascading selects; a level is empty until the one above it has a valid choice."""

    subscriptions: list[Option] = field(default_factory=list)
    vaults: list[Option] = field(default_factory=list)
    keys: list[Option] = field(default_factory=list)
    versions: list[Option] = field(default_factory=list)
    subscription: Subscription | None = None
    vault: KeyVault | None = None
    key: Key | None = None
    version: str = ""

    @property
    def subscription_value(self) -> str:
        return self.subscription.subscription_id if self.subscription is not None else ""

    @property
    def vault_value(self) -> str:
        return str(self.vault.pk) if self.vault is not None else ""

    @property
    def key_value(self) -> str:
        return str(self.key.pk) if self.key is not None else ""

    @property
    def unavailable_vaults(self) -> list[Option]:
        return [option for option in self.vaults if option.disabled]

    @property
    def key_uri(self) -> str:
        """The versioned key URI of a complete choice, or "" while the choice is incomplete."""
        if self.key is None or not self.version:
            return ""
        return f"{self.key.uri}/{self.version}"


def normalise_region(location: str) -> str:
    """ARM writes "East US" in some places and "eastus" in others."""
    return location.replace(" ", "").lower()


def account_tenant(account: Account) -> str:
    return account.identity_tenant_id or account.subscription.tenant_id


def vault_reason(account: Account, vault: KeyVault) -> str:
    """Why `vault` cannot hold this account's key (region or tenant), or ""."""
    if normalise_region(vault.location) != normalise_region(account.location):
        return f"in {vault.location}, not the account's region ({account.location})"
    if vault.tenant_id.lower() != account_tenant(account).lower():
        return "in another tenant (directory) than the account"
    return ""


def key_reason(key: Key) -> str:
    if key.kty not in SUPPORTED_KEY_TYPES:
        return f"{key.kty} keys are not supported; use RSA or RSA-HSM"
    if key.key_size and key.key_size not in SUPPORTED_KEY_SIZES:
        return f"{key.key_size}-bit keys are not supported; use 2048, 3072 or 4096 bits"
    return ""


def version_note(version: KeyVersion, current: str) -> str:
    notes = []
    if version.version == current:
        notes.append("latest")
    if not version.enabled:
        notes.append("disabled")
    if version.expires_on and version.expires_on <= timezone.now():
        notes.append("expired")
    return f" ({', '.join(notes)})" if notes else ""


def build_picker(account: Account, *, subscription_id: str, vault_id: str, key_id: str, version: str) -> KeyPicker:
    """The picker for the chosen values; an unknown or unusable choice at one level clears the levels below."""
    picker = KeyPicker()
    subscriptions = list(Subscription.objects.order_by("display_name"))
    picker.subscriptions = [Option(s.subscription_id, s.display_name) for s in subscriptions]
    picker.subscription = next((s for s in subscriptions if s.subscription_id == subscription_id), None)
    if picker.subscription is None:
        return picker
    vaults = list(KeyVault.objects.filter(subscription=picker.subscription).order_by("name"))
    picker.vaults = [Option(str(v.pk), v.name, vault_reason(account, v)) for v in vaults]
    picker.vault = next((v for v in vaults if str(v.pk) == vault_id and not vault_reason(account, v)), None)
    if picker.vault is None:
        return picker
    keys = list(Key.objects.filter(vault=picker.vault, deleted=False).select_related("vault").order_by("name"))
    picker.keys = [Option(str(k.pk), _key_label(k), key_reason(k)) for k in keys]
    picker.key = next((k for k in keys if str(k.pk) == key_id and not key_reason(k)), None)
    if picker.key is None:
        return picker
    versions = list(KeyVersion.objects.filter(key=picker.key).order_by("-created_on", "-pk"))
    current = picker.key.current_version
    picker.versions = [Option(v.version, v.version + version_note(v, current)) for v in versions]
    known = {v.version for v in versions}
    # The latest version is the default, as in the Azure blade; an unknown version falls back to it too.
    picker.version = version if version in known else (current if current in known else "")
    return picker


def _key_label(key: Key) -> str:
    size = f" {key.key_size}" if key.key_size else ""
    state = "" if key.enabled else ", disabled"
    return f"{key.name} ({key.kty}{size}{state})"
