"""An account's data at rest: a few records (Face person-group metadata) encrypted with AES-256-GCM under
a data key (DEK). The DEK is stored only wrapped:

- Microsoft-managed: AES key wrap (RFC 3394) with the region's platform key, internal to the emulator;
- customer-managed: that Microsoft-wrapped DEK wrapped again with the customer's RSA key (RSA-OAEP-256)
  through Key Vault's data plane as the account's identity (double encryption).

Reading unwraps the customer layer through the real CryptographyClient as the account's identity, so
whatever Key Vault refuses makes the data unreadable. Changing key or version re-wraps the DEK and never
re-encrypts a record; returning to Microsoft-managed keys removes the customer layer.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from django.db import transaction

from emulator import clock, kv_client
from emulator.kv_client import KeyVaultFailure
from emulator.models import AccountData, CognitiveAccount, DataRecord, PlatformKey
from emulator.router import EMULATOR_ALIAS

DEMO_RECORDS = (
    ("person-group/employees", {"personGroupId": "employees", "name": "Employees", "userData": "badge photos"}),
    ("person-group/visitors", {"personGroupId": "visitors", "name": "Visitors", "userData": "front desk"}),
    ("large-face-list/watchlist", {"largeFaceListId": "watchlist", "name": "Watch list", "faces": 42}),
)


class DataUnreadable(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class CustomerKey:
    """Where the customer layer lives: a key id (versioned, or versionless for the current version) and the
    principal that calls Key Vault for the account."""

    kid: str
    principal: str  # "" when the account has no identity that could call Key Vault


def principal_for(account: CognitiveAccount, client_id: str = "") -> str:
    """The principal that calls Key Vault for the account: the user-assigned identity whose clientId the
    encryption names, else the system-assigned identity; "" when that identity is not there."""
    if client_id:
        for entry in account.user_assigned_identities.values():
            if str(entry.get("clientId", "")).lower() == client_id.lower():
                return str(entry.get("principalId", ""))
        return ""
    return account.principal_id if account.has_system_identity else ""


def customer_key(account: CognitiveAccount, kvp: dict[str, str]) -> CustomerKey:
    version = kvp.get("keyVersion", "")
    kid = f"{kvp['keyVaultUri'].rstrip('/')}/keys/{kvp['keyName']}" + (f"/{version}" if version else "")
    return CustomerKey(kid, principal_for(account, kvp.get("identityClientId", "")))


def current_customer_key(account: CognitiveAccount) -> CustomerKey | None:
    kvp = account.key_vault_properties
    return customer_key(account, kvp) if kvp else None


def account_key(account: CognitiveAccount) -> str:
    return account.arm_id.lower()


# The Microsoft-managed key


def platform_key(location: str) -> PlatformKey:
    name = f"microsoft-managed-{location}"
    with transaction.atomic(using=EMULATOR_ALIAS):
        found = PlatformKey.objects.filter(name=name).first()
        if found is None:
            found = PlatformKey.objects.create(name=name, secret=os.urandom(32), created_at=clock.now())
    return found


def _platform_secret(name: str) -> bytes:
    return bytes(PlatformKey.objects.get(name=name).secret)


# Creating the data


def create_data(account: CognitiveAccount) -> AccountData:
    """Give a new account its DEK (wrapped by the platform key) and its records; idempotent."""
    existing = AccountData.objects.filter(account_id=account_key(account)).first()
    if existing is not None:
        return existing
    dek = AESGCM.generate_key(bit_length=256)
    mmk = platform_key(account.location)
    with transaction.atomic(using=EMULATOR_ALIAS):
        data = AccountData.objects.create(
            account_id=account_key(account),
            platform_key=mmk.name,
            wrapped_dek=aes_key_wrap(bytes(mmk.secret), dek),
            updated_at=clock.now(),
        )
        for name, content in DEMO_RECORDS:
            nonce = os.urandom(12)
            plaintext = json.dumps(content, sort_keys=True).encode()
            ciphertext = AESGCM(dek).encrypt(nonce, plaintext, _aad(data.account_id, name))
            DataRecord.objects.create(account_id=data.account_id, name=name, nonce=nonce, ciphertext=ciphertext)
    return data


def delete_data(account: CognitiveAccount) -> None:
    with transaction.atomic(using=EMULATOR_ALIAS):
        AccountData.objects.filter(account_id=account_key(account)).delete()
        DataRecord.objects.filter(account_id=account_key(account)).delete()


def _aad(account_id: str, record_name: str) -> bytes:
    # Binds each record to its account and name: a record copied elsewhere does not decrypt.
    return f"{account_id}|{record_name}".encode()


def data_of(account: CognitiveAccount) -> AccountData:
    data = AccountData.objects.filter(account_id=account_key(account)).first()
    return data if data is not None else create_data(account)


# Wrapping layers


def microsoft_wrapped_dek(data: AccountData, customer: CustomerKey | None) -> bytes:
    """The DEK under the Microsoft wrap only: unwraps the customer layer (as the identity) when there is one."""
    if not data.cmk_kid:
        return bytes(data.wrapped_dek)
    if customer is None or not customer.principal:
        raise KeyVaultFailure(
            "IdentityNotEnabled",
            "The data key is wrapped by a customer-managed key, but the identity the encryption names is not "
            "enabled on the account, so nothing can ask Key Vault to unwrap it.",
        )
    # The stored kid is versioned: the DEK is unwrapped with the version that wrapped it.
    return kv_client.unwrap(data.cmk_kid, customer.principal, bytes(data.wrapped_dek))


def rewrap(account: CognitiveAccount, current: CustomerKey | None, target: CustomerKey | None) -> AccountData:
    """Move the DEK's outer layer from `current` to `target` (None: Microsoft-managed only).

    Unwraps with the old key first and writes nothing until the new wrap succeeded, so a refusal leaves
    the data exactly as it was. Records are never touched.
    """
    data = data_of(account)
    if target is not None and data.cmk_kid and target.kid.lower() == data.cmk_kid.lower():
        return data  # already wrapped by exactly this key version: nothing to do
    try:
        inner = microsoft_wrapped_dek(data, current)
    except KeyVaultFailure as failure:
        if failure.transient:
            raise  # Key Vault hiccuped: retryable, not a verdict on the current key
        raise KeyVaultFailure("CurrentKeyUnreachable", current_key_unreachable(data, failure)) from None
    if target is None:
        wrapped, kid = inner, ""
    elif not target.principal:
        raise KeyVaultFailure("IdentityNotEnabled", "The account has no identity to call Key Vault with.")
    else:
        wrapped, kid = kv_client.wrap(target.kid, target.principal, inner)
    with transaction.atomic(using=EMULATOR_ALIAS):
        data.wrapped_dek = wrapped
        data.cmk_kid = kid
        data.cmk_alg = str(kv_client.WRAP_ALGORITHM.value) if kid else ""
        data.updated_at = clock.now()
        data.save(update_fields=["wrapped_dek", "cmk_kid", "cmk_alg", "updated_at"])
    return data


def current_key_unreachable(data: AccountData, failure: KeyVaultFailure) -> str:
    return (
        f"The data key is wrapped by the current key {data.cmk_kid}, which cannot be used right now "
        f"({failure.code}: {failure.message}) Restore access to the current key first: the data key must be "
        "unwrapped with it before it can be re-wrapped with another key or returned to Microsoft-managed keys."
    )


def check_current_key(account: CognitiveAccount, target_kid: str | None) -> None:
    """Raise CurrentKeyUnreachable unless the DEK's current customer layer can be unwrapped (as the
    identity) when a change of key, version or key source needs it."""
    data = data_of(account)
    if not data.cmk_kid or (target_kid is not None and target_kid.lower() == data.cmk_kid.lower()):
        return
    try:
        microsoft_wrapped_dek(data, current_customer_key(account))
    except KeyVaultFailure as failure:
        if failure.transient:
            raise  # Key Vault hiccuped: retryable, not a verdict on the current key
        raise KeyVaultFailure("CurrentKeyUnreachable", current_key_unreachable(data, failure)) from None


# Reading the data


def read_records(account: CognitiveAccount, customer: CustomerKey | None) -> dict[str, Any]:
    """Decrypt every record; raises DataUnreadable with a CMK code when any layer refuses."""
    data = data_of(account)
    try:
        inner = microsoft_wrapped_dek(data, customer)
    except KeyVaultFailure as failure:
        if failure.transient:
            raise  # the probe answers 503: a Key Vault hiccup says nothing about readability
        raise DataUnreadable(failure.code, failure.message) from None
    try:
        dek = aes_key_unwrap(_platform_secret(data.platform_key), inner)
    except (InvalidUnwrap, ValueError, PlatformKey.DoesNotExist):
        raise DataUnreadable("DataKeyCorrupted", "The data key does not unwrap with the platform key.") from None
    out: dict[str, Any] = {}
    for record in DataRecord.objects.filter(account_id=data.account_id):
        try:
            plaintext = AESGCM(dek).decrypt(
                bytes(record.nonce), bytes(record.ciphertext), _aad(data.account_id, record.name)
            )
        except InvalidTag:
            raise DataUnreadable("DataCorrupted", f"Record '{record.name}' fails its integrity check.") from None
        out[record.name] = json.loads(plaintext)
    return out


def probe_data_access(account: CognitiveAccount) -> tuple[bool, str, str]:
    """(readable, code, reason): really unwraps the data key and decrypts every record right now."""
    customer = current_customer_key(account)
    try:
        records = read_records(account, customer)
    except DataUnreadable as exc:
        return False, exc.code, exc.reason
    if customer is None:
        how = "the Microsoft-managed key"
    else:
        how = f"the customer-managed key {data_of(account).cmk_kid} (as the account's identity), then the Microsoft-managed key"
    return True, "DataReadable", f"{len(records)} records decrypted; the data key was unwrapped with {how}."
