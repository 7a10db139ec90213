"""Key Vault keys (data plane): list, read, rotate, enable/disable, recover, rotation policy."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from azure.keyvault.keys import KeyVaultKey
from django.conf import settings

from encryption.azure.clients import key_client
from encryption.azure.errors import PermanentAzureError, TransientAzureError, azure_call
from encryption.azure.results import KeyInfo, KeyVersionInfo, normalize_vault_uri, text

# Key Vault keys (data plane)


def _vault_label(vault_uri: str) -> str:
    return vault_uri.split("//", 1)[-1].split(".", 1)[0]


def _key_info(key: KeyVaultKey) -> KeyInfo:
    props = key.properties
    jwk = key.key
    modulus = getattr(jwk, "n", None) if jwk is not None else None
    return KeyInfo(
        vault_uri=normalize_vault_uri(text(props.vault_url)),
        name=text(props.name),
        version=text(props.version),
        kid=text(key.id),
        kty=text(key.key_type),
        key_size=int.from_bytes(modulus, "big").bit_length() if modulus else None,
        key_ops=tuple(text(op) for op in (key.key_operations or [])),
        enabled=bool(props.enabled),
        not_before=props.not_before,
        expires_on=props.expires_on,
        created_on=props.created_on,
        updated_on=props.updated_on,
        recovery_level=text(props.recovery_level),
    )


def list_keys(vault_uri: str) -> list[KeyInfo]:
    """The vault's keys with their current attributes (no type, size or version: see KeyInfo)."""
    with azure_call(f"list the keys of {_vault_label(vault_uri)}"):
        return [
            KeyInfo(
                vault_uri=normalize_vault_uri(vault_uri),
                name=text(p.name),
                version="",
                kid=text(p.id),
                kty="",
                key_size=None,
                key_ops=(),
                enabled=bool(p.enabled),
                not_before=p.not_before,
                expires_on=p.expires_on,
                created_on=p.created_on,
                updated_on=p.updated_on,
                recovery_level=text(p.recovery_level),
            )
            for p in key_client(vault_uri).list_properties_of_keys()
        ]


def list_key_versions(vault_uri: str, name: str) -> list[KeyVersionInfo]:
    """Every version of the key, in no particular order (Key Vault does not sort them)."""
    with azure_call(f"list the versions of key {name} in {_vault_label(vault_uri)}"):
        return [
            KeyVersionInfo(
                text(p.name),
                text(p.version),
                bool(p.enabled),
                p.not_before,
                p.expires_on,
                p.created_on,
                p.updated_on,
            )
            for p in key_client(vault_uri).list_properties_of_key_versions(name)
        ]


def get_key(vault_uri: str, name: str, version: str = "") -> KeyInfo:
    """The key's given version, or its current version; PermanentAzureError (not_found) when missing."""
    what = f"read key {name}{'/' + version if version else ''} in {_vault_label(vault_uri)}"
    with azure_call(what):
        return _key_info(key_client(vault_uri).get_key(name, version or None))


def get_deleted_key(vault_uri: str, name: str) -> KeyInfo | None:
    """The soft-deleted key (recoverable until `scheduled_purge_on`), or None when no deleted key has the name."""
    try:
        with azure_call(f"read deleted key {name} in {_vault_label(vault_uri)}"):
            deleted = key_client(vault_uri).get_deleted_key(name)
    except PermanentAzureError as ex:
        if ex.not_found:
            return None
        raise
    return replace(
        _key_info(deleted),
        deleted=True,
        deleted_on=deleted.deleted_date,
        scheduled_purge_on=deleted.scheduled_purge_date,
    )


def rotate_key(vault_uri: str, name: str) -> KeyInfo:
    """Create a new version of the key in Key Vault; accounts keep their pinned version until updated."""
    with azure_call(f"rotate key {name} in {_vault_label(vault_uri)}"):
        return _key_info(key_client(vault_uri).rotate_key(name))


def set_key_enabled(vault_uri: str, name: str, version: str, *, enabled: bool) -> KeyInfo:
    verb = "enable" if enabled else "disable"
    with azure_call(f"{verb} key {name} in {_vault_label(vault_uri)}"):
        return _key_info(key_client(vault_uri).update_key_properties(name, version or None, enabled=enabled))


def recover_deleted_key(vault_uri: str, name: str) -> KeyInfo:
    """Recover a soft-deleted key and wait (within the retry budget) until Key Vault serves it again."""
    client = key_client(vault_uri)
    with azure_call(f"recover deleted key {name} in {_vault_label(vault_uri)}"):
        client.begin_recover_deleted_key(name)
    deadline = time.monotonic() + settings.AZURE_RETRY_BUDGET_SECONDS
    while True:
        try:
            return get_key(vault_uri, name)
        except PermanentAzureError as ex:
            # Recovery is asynchronous in Key Vault: the key answers 404 until it is back.
            if not ex.not_found or time.monotonic() > deadline:
                if ex.not_found:
                    raise TransientAzureError(
                        "RecoveryInProgress", f"Key {name} is still being recovered; try again shortly.", retry_after=5
                    ) from ex
                raise
            time.sleep(1)


def get_rotation_policy(vault_uri: str, name: str) -> dict[str, Any] | None:
    """The key's rotation policy as JSON (`lifetimeActions`, `expiryTime`), or None when it has none."""
    try:
        with azure_call(f"read the rotation policy of key {name} in {_vault_label(vault_uri)}"):
            policy = key_client(vault_uri).get_key_rotation_policy(name)
    except PermanentAzureError as ex:
        if ex.not_found:
            return None
        raise
    actions = [
        {
            "action": text(a.action),
            "timeAfterCreate": a.time_after_create or "",
            "timeBeforeExpiry": a.time_before_expiry or "",
        }
        for a in (policy.lifetime_actions or [])
    ]
    if not actions and not policy.expires_in:
        return None
    return {"lifetimeActions": actions, "expiryTime": policy.expires_in or ""}
