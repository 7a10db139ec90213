"""The Cognitive Services service calling Key Vault as an account's managed identity, through the real
azure-keyvault-keys clients and the emulator's own transport, exactly as any other caller would.

This is what makes the CMK rules and the data at rest honest: a revoked policy, a disabled or deleted
key or a tenant move is noticed because the data plane refuses the call, not because a flag says so.
Failures become a `KeyVaultFailure` carrying one of the emulator's CMK codes.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import AzureError, ClientAuthenticationError, HttpResponseError, ServiceRequestError
from azure.core.rest import HttpRequest
from azure.keyvault.keys import KeyClient, KeyVaultKey
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm

from emulator.sdk import build_sdk_options

WRAP_ALGORITHM = KeyWrapAlgorithm.rsa_oaep_256
VAULT_HOST_SUFFIX = ".vault.azure.net"
# What the SDK raises for a refusal or an unreachable vault (ValueError: a challenge it will not follow).
SDK_FAILURES = (AzureError, ValueError, KeyError)


@dataclass
class KeyVaultFailure(Exception):
    code: str
    message: str
    status: int = 0
    transient: bool = False

    def __str__(self) -> str:
        return f"({self.code}) {self.message}"


def _options(principal: str) -> dict[str, Any]:
    # No retries: the emulator answers at once, and a refusal must surface as the rule's error.
    return {**build_sdk_options(identity=principal), "retry_total": 0}


def key_client(vault_uri: str, principal: str) -> KeyClient:
    return KeyClient(vault_uri, **_options(principal))


def crypto_client(kid: str, principal: str) -> CryptographyClient:
    return CryptographyClient(kid, **_options(principal))


def get_key(vault_uri: str, name: str, version: str, principal: str) -> KeyVaultKey:
    try:
        return key_client(vault_uri, principal).get_key(name, version or None)
    except SDK_FAILURES as exc:
        raise classify(exc, what=f"key '{name}'") from None


def wrap(kid: str, principal: str, value: bytes) -> tuple[bytes, str]:
    """Wrap `value` with the key `kid` (RSA-OAEP-256); returns the wrapped bytes and the versioned kid used."""
    try:
        client = crypto_client(kid, principal)
        result = client.wrap_key(WRAP_ALGORITHM, value)
    except SDK_FAILURES as exc:
        raise classify(exc, what="the data key (wrapKey)") from None
    return result.encrypted_key, str(result.key_id or client.key_id)


def unwrap(kid: str, principal: str, wrapped: bytes) -> bytes:
    try:
        return crypto_client(kid, principal).unwrap_key(WRAP_ALGORITHM, wrapped).key
    except SDK_FAILURES as exc:
        raise classify(exc, what="the data key (unwrapKey)") from None


def remote_operation(vault_uri: str, name: str, version: str, principal: str, operation: str, value: bytes) -> bytes:
    """`wrapkey` or `unwrapkey` sent to the service itself: CryptographyClient would wrap locally with the
    public key, which proves nothing about the identity's wrapKey permission."""
    body = {"alg": str(WRAP_ALGORITHM.value), "value": base64.urlsafe_b64encode(value).rstrip(b"=").decode()}
    request = HttpRequest("POST", f"/keys/{name}/{version}/{operation}", json=body)
    try:
        response = key_client(vault_uri, principal).send_request(request)
        response.raise_for_status()
        result = str(response.json()["value"])
    except SDK_FAILURES as exc:
        raise classify(exc, what=f"key '{name}' ({operation})") from None
    return base64.urlsafe_b64decode(result + "=" * (-len(result) % 4))


# Turning data-plane failures into the emulator's CMK codes


def _inner_code(exc: HttpResponseError) -> str:
    try:
        body = json.loads(exc.response.text()) if exc.response is not None else {}
    except (ValueError, TypeError):  # a body that is not JSON has no inner code
        return ""
    error = (body or {}).get("error") or {}
    return str((error.get("innererror") or {}).get("code") or "")


def _message(exc: HttpResponseError) -> str:
    error = getattr(exc, "error", None)
    return str(getattr(error, "message", "") or exc.message or exc)


def classify(exc: Exception, *, what: str) -> KeyVaultFailure:
    if isinstance(exc, KeyVaultFailure):
        return exc
    if isinstance(exc, ClientAuthenticationError):
        return KeyVaultFailure(
            "TenantMismatch",
            f"Key Vault refused the account's identity while reading {what}: the identity cannot get a token for "
            "the vault's tenant (was the subscription moved to another tenant?).",
            401,
        )
    if isinstance(exc, ServiceRequestError):
        return KeyVaultFailure("KeyVaultNotFound", f"The key vault could not be reached while reading {what}.")
    if not isinstance(exc, HttpResponseError):
        return KeyVaultFailure("KeyVaultUnavailable", f"Key Vault failed while reading {what}: {exc}", transient=True)
    status, inner = exc.status_code or 0, _inner_code(exc)
    message = _message(exc)
    if status == 404:
        return KeyVaultFailure("KeyNotFound", f"Key Vault answered 404 for {what}: {message}", 404)
    if status == 403:
        return KeyVaultFailure(_FORBIDDEN_CODES.get(inner, "KeyVaultAccessDenied"), message, 403)
    if status == 429 or status >= 500:
        return KeyVaultFailure("KeyVaultUnavailable", f"Key Vault answered {status} for {what}.", status, True)
    return KeyVaultFailure("KeyVaultRequestFailed", f"Key Vault answered {status} for {what}: {message}", status)


# Key Vault's 403 inner codes, and the CMK code each one means.
_FORBIDDEN_CODES = {
    "AccessDenied": "KeyVaultAccessDenied",
    "ForbiddenByRbac": "KeyVaultAccessDenied",
    "KeyDisabled": "KeyDisabled",
    "KeyExpired": "KeyExpired",
    "KeyNotYetValid": "KeyNotYetValid",
}


def vault_name_of(vault_uri: str) -> str | None:
    """`https://kv-1.vault.azure.net/` -> `kv-1`; None for anything that is not a Key Vault URI."""
    uri = vault_uri.strip().lower()
    if not uri.startswith("https://"):
        return None
    host = uri[len("https://") :].split("/", 1)
    rest = host[1] if len(host) > 1 else ""
    if rest or not host[0].endswith(VAULT_HOST_SUFFIX):
        return None
    name = host[0][: -len(VAULT_HOST_SUFFIX)]
    return name if name and "." not in name else None
