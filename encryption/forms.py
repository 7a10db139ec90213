"""Plain forms; `clean` turns what was posted into the typed values views hand to services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import forms
from django.db.models import Q

from encryption.key_picker import KeyPicker, build_picker
from encryption.key_uri import InvalidKeyUri, KeyUri, parse_key_uri
from encryption.models import Account, Key, KeyVault, Operation, Subscription

# The Encryption blade


TYPE_MICROSOFT = "mmk"
TYPE_CUSTOMER = "cmk"
SOURCE_URI = "uri"
SOURCE_VAULT = "vault"


@dataclass(frozen=True)
class KeyTarget:
    """The customer-managed key the form asks for, and the subscription that holds its vault."""

    key: KeyUri
    subscription_id: str

    @property
    def params(self) -> dict[str, str]:
        """The parameters of the enable_cmk / change_key / preflight requests for this key."""
        return {"key_uri": self.key.id, "vault_subscription_id": self.subscription_id}


@dataclass(frozen=True)
class Change:
    kind: str
    params: dict[str, Any]

    @property
    def needs_preflight(self) -> bool:
        return self.kind != Operation.Kind.DISABLE_CMK


def _same_vault(a: str, b: str) -> bool:
    return a.lower().rstrip("/") == b.lower().rstrip("/")


def find_vault(vault_uri: str) -> KeyVault | None:
    """The mirrored vault at `vault_uri` (ARM may or may not end it with a slash)."""
    base = vault_uri.rstrip("/")
    same = Q(vault_uri__iexact=base) | Q(vault_uri__iexact=f"{base}/")
    return KeyVault.objects.filter(same).select_related("subscription").first() if base else None


def current_key(account: Account) -> Key | None:
    if not account.uses_cmk:
        return None
    vault = find_vault(account.key_vault_uri)
    if vault is None:
        return None
    return Key.objects.filter(vault=vault, name__iexact=account.key_name).select_related("vault").first()


def initial_for(account: Account) -> dict[str, Any]:
    """The form as the account stands: its current key, in the vault's own subscription when it is known."""
    initial: dict[str, Any] = {
        "encryption_type": TYPE_CUSTOMER if account.uses_cmk else TYPE_MICROSOFT,
        "use_own_key": True,
        "key_source": SOURCE_VAULT,
        "key_uri": account.key_uri,
        "uri_subscription": account.subscription.subscription_id,
        "subscription": account.subscription.subscription_id,
    }
    key = current_key(account)
    if key is not None:
        sub = key.vault.subscription.subscription_id
        initial.update(
            uri_subscription=sub,
            subscription=sub,
            vault=str(key.vault.pk),
            key=str(key.pk),
            version=account.key_version,
        )
    elif account.uses_cmk:
        # The vault is not in the mirror (another subscription not synced yet): show the URI as entered.
        initial["key_source"] = SOURCE_URI
    return initial


class EncryptionForm(forms.Form):
    encryption_type = forms.ChoiceField(
        label="Encryption type",
        choices=((TYPE_MICROSOFT, "Microsoft Managed Keys"), (TYPE_CUSTOMER, "Customer Managed Keys")),
        widget=forms.RadioSelect,
    )
    use_own_key = forms.BooleanField(label="Use your own key", required=False)
    key_source = forms.ChoiceField(
        label="Encryption key",
        choices=((SOURCE_URI, "Enter key URI"), (SOURCE_VAULT, "Select from Key Vault")),
        widget=forms.RadioSelect,
        required=False,
    )
    key_uri = forms.CharField(label="Key URI", max_length=400, required=False)
    uri_subscription = forms.CharField(label="Subscription", max_length=36, required=False)
    subscription = forms.CharField(label="Subscription", max_length=36, required=False)
    vault = forms.CharField(label="Key vault", max_length=20, required=False)
    key = forms.CharField(label="Key", max_length=20, required=False)
    version = forms.CharField(label="Version", max_length=32, required=False)
    preflight = forms.IntegerField(min_value=1, required=False, widget=forms.HiddenInput)

    def __init__(self, *args: Any, account: Account, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.account = account
        self.target: KeyTarget | None = None
        self.picker: KeyPicker = build_picker(
            account,
            subscription_id=self._raw("subscription"),
            vault_id=self._raw("vault"),
            key_id=self._raw("key"),
            version=self._raw("version"),
        )

    def _raw(self, name: str) -> str:
        value = self[name].value()
        return str(value).strip() if value is not None else ""

    @property
    def wants_cmk(self) -> bool:
        return self._raw("encryption_type") == TYPE_CUSTOMER and bool(self["use_own_key"].value())

    @property
    def uses_uri(self) -> bool:
        return self._raw("key_source") == SOURCE_URI

    def _known_vault_subscription(self) -> str:
        try:
            key = parse_key_uri(self._raw("key_uri"))
        except InvalidKeyUri:
            return ""
        vault = find_vault(key.vault_uri)
        return vault.subscription.subscription_id if vault is not None else ""

    def uri_vault_unknown(self) -> bool:
        """True when the entered URI is well formed but its vault is not in the mirror (not synced yet)."""
        try:
            key = parse_key_uri(self._raw("key_uri"))
        except InvalidKeyUri:
            return False
        return find_vault(key.vault_uri) is None

    def uri_subscription_shown(self) -> str:
        """The subscription to show beside an entered URI: the vault's own one whenever the mirror knows it."""
        return self._known_vault_subscription() or self._raw("uri_subscription")

    def uri_subscription_id(self) -> str:
        """The subscription to use for an entered URI: the one chosen, else the vault's own one."""
        return self._raw("uri_subscription") or self._known_vault_subscription()

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not (cleaned.get("encryption_type") == TYPE_CUSTOMER and cleaned.get("use_own_key")):
            self.target = None
        elif cleaned.get("key_source") == SOURCE_URI:
            self.target = self._target_from_uri(cleaned)
        elif cleaned.get("key_source") == SOURCE_VAULT:
            self.target = self._target_from_picker()
        else:
            self.add_error("key_source", "Choose how to give the key: enter its URI or select it from a key vault.")
        return cleaned

    def _target_from_uri(self, cleaned: dict[str, Any]) -> KeyTarget | None:
        try:
            key = parse_key_uri(cleaned.get("key_uri", ""))
        except InvalidKeyUri as exc:
            self.add_error("key_uri", str(exc))
            return None
        subscription_id = self.uri_subscription_id().lower()
        if not Subscription.objects.filter(subscription_id__iexact=subscription_id).exists():
            self.add_error("uri_subscription", "Choose the subscription that holds the key vault.")
            return None
        return KeyTarget(key=key, subscription_id=subscription_id)

    def _target_from_picker(self) -> KeyTarget | None:
        picker = self.picker
        missing = (
            ("subscription", picker.subscription is None, "Choose a subscription."),
            ("vault", picker.vault is None, "Choose a key vault in the account's region and tenant."),
            ("key", picker.key is None, "Choose a key."),
            ("version", not picker.version, "Choose a version."),
        )
        for name, is_missing, message in missing:
            if is_missing:
                self.add_error(name, message)
                return None
        assert picker.subscription is not None  # for mypy: checked just above
        return KeyTarget(key=parse_key_uri(picker.key_uri), subscription_id=picker.subscription.subscription_id)

    def change(self) -> Change | None:
        """Which operation Save means for this account, or None when the form asks for what is already there."""
        account, target = self.account, self.target
        if target is None:
            return Change(Operation.Kind.DISABLE_CMK, {}) if account.uses_cmk else None
        if not account.uses_cmk:
            return Change(Operation.Kind.ENABLE_CMK, target.params)
        same_key = _same_vault(target.key.vault_uri, account.key_vault_uri) and (
            target.key.name.lower() == account.key_name.lower()
        )
        if not same_key:
            return Change(Operation.Kind.CHANGE_KEY, target.params)
        version = target.key.version or _latest_version(account)
        if version == account.key_version:
            return None
        if version:
            return Change(Operation.Kind.UPDATE_VERSION, {"version": version})
        return Change(Operation.Kind.CHANGE_KEY, target.params)

    def query(self) -> dict[str, str]:
        """The choices as query parameters, to show the same page again after a plain (no-JavaScript) post."""
        names = ("encryption_type", "key_source", "key_uri", "uri_subscription", "subscription", "vault", "key")
        query = {name: self._raw(name) for name in names if self._raw(name)}
        if self["use_own_key"].value():
            query["use_own_key"] = "on"
        if self._raw("version"):
            query["version"] = self._raw("version")
        return query


def _latest_version(account: Account) -> str:
    key = current_key(account)
    return key.current_version if key is not None else ""


# Rotate and revoke


class RotateForm(forms.Form):
    update_accounts = forms.BooleanField(
        label="Move the accounts on this key to the new version", required=False, initial=True
    )


class RevokeForm(forms.Form):
    method = forms.ChoiceField(
        label="How",
        choices=(
            ("access_policy", "Remove the account's access to the key (its access policy or role assignment)"),
            ("disable_key", "Disable the key version in Key Vault"),
        ),
        widget=forms.RadioSelect,
        initial="access_policy",
    )
    confirm = forms.BooleanField(label="I understand the data listed above becomes unreadable", required=True)
