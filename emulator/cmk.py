"""An account's `properties.encryption`: parse what a PATCH sends, validate it against Azure's CMK rules,
and apply it (re-wrapping the data key) when its long-running operation finishes."""

from __future__ import annotations

from typing import Any

from emulator import data_at_rest, rules
from emulator.accounts import AccountError
from emulator.kv_client import KeyVaultFailure, vault_name_of
from emulator.models import CognitiveAccount
from emulator.rules import CmkRequest

MICROSOFT = "Microsoft.CognitiveServices"
KEY_VAULT = "Microsoft.KeyVault"

_ENCRYPTION_TRAP = (
    "encryption.keySource is Microsoft.KeyVault but keyVaultProperties is missing. To set a customer-managed "
    "key send keyVaultProperties (keyVaultUri, keyName, keyVersion). To return to Microsoft-managed keys send "
    "keySource Microsoft.CognitiveServices explicitly: the SDK's Encryption() model defaults keySource to "
    "Microsoft.KeyVault when it is left out."
)


def parse_encryption(block: Any) -> dict[str, Any]:
    """The encryption block as the account will store it, or AccountError (400) naming what is wrong."""
    if not isinstance(block, dict):
        raise AccountError("InvalidEncryption", "properties.encryption must be an object with a keySource.")
    source = str(block.get("keySource") or "")
    if source.lower() == MICROSOFT.lower():
        return {"keySource": MICROSOFT}
    if source.lower() != KEY_VAULT.lower():
        raise AccountError(
            "InvalidKeySource",
            f"encryption.keySource '{source}' is not valid; use {MICROSOFT} (Microsoft-managed keys) or {KEY_VAULT} "
            "(customer-managed keys).",
        )
    props = block.get("keyVaultProperties")
    if not isinstance(props, dict) or not any(props.get(k) for k in ("keyVaultUri", "keyName", "keyVersion")):
        raise AccountError("KeyVaultPropertiesRequired", _ENCRYPTION_TRAP)
    return {"keySource": KEY_VAULT, "keyVaultProperties": _parse_key_vault_properties(props)}


def _parse_key_vault_properties(props: dict[str, Any]) -> dict[str, str]:
    uri = str(props.get("keyVaultUri") or "").strip()
    name = vault_name_of(uri)
    if name is None:
        raise AccountError(
            "InvalidKeyVaultUri",
            f"keyVaultUri '{uri}' is not a key vault URI; use https://{{vault-name}}.vault.azure.net/ (the vault, "
            "not the key).",
        )
    key_name = str(props.get("keyName") or "").strip()
    if not key_name:
        raise AccountError("InvalidKeyVaultProperties", "keyVaultProperties.keyName is required.")
    out = {
        "keyName": key_name,
        "keyVersion": str(props.get("keyVersion") or "").strip(),
        "keyVaultUri": f"https://{name}.vault.azure.net/",
    }
    client_id = str(props.get("identityClientId") or "").strip()
    if client_id:
        out["identityClientId"] = client_id
    return out


def request_for(account: CognitiveAccount, kvp: dict[str, str], sku: str = "") -> CmkRequest:
    return CmkRequest(
        account=account,
        key_vault_uri=kvp["keyVaultUri"],
        key_name=kvp["keyName"],
        key_version=kvp.get("keyVersion", ""),
        identity_client_id=kvp.get("identityClientId", ""),
        sku=sku or account.sku,
    )


def validate(account: CognitiveAccount, encryption: dict[str, Any], sku: str = "") -> None:
    """Every rule, when the PATCH arrives: raises CmkRefused (answered with 400)."""
    if encryption["keySource"] == KEY_VAULT:
        rules.check_request(request_for(account, encryption["keyVaultProperties"], sku))
    else:
        rules.check_disable(account)


def apply(account: CognitiveAccount, encryption: dict[str, Any]) -> None:
    """At the end of the operation: re-check what can have changed, re-wrap the data key, set the block.

    Raises CmkRefused, and then nothing has changed (the data key keeps its old wraps).
    """
    current = data_at_rest.current_customer_key(account)
    target = None
    if encryption["keySource"] == KEY_VAULT:
        req = request_for(account, encryption["keyVaultProperties"])
        rules.check_key_state(req)
        target = req.target
    try:
        data_at_rest.rewrap(account, current, target)
    except KeyVaultFailure as failure:
        raise rules.refused_by(failure) from None
    account.encryption = encryption
