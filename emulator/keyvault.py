"""The Key Vault keys data plane (azure-api.md section 4): handlers registered on `{vault}.vault.azure.net`.

Every handler first checks the caller's permission (403 before 404, as Key Vault does), then works on
the store (`emulator.keystore`). Private key material never appears in a response.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any

from django.conf import settings

from emulator import clock, keystore, kvcrypto
from emulator.http import EmuError, EmuRequest, EmuResponse, empty_response, json_response, kv_error
from emulator.keystore import StoreError
from emulator.models import Key, KeyVersion, Vault
from emulator.routes import kv_route

KV_MAX_PAGE = 25  # Key Vault caps maxresults at 25


def kv_errors(handler: Callable[..., EmuResponse]) -> Callable[..., EmuResponse]:
    """Turn store and crypto refusals into Key Vault error bodies."""

    @wraps(handler)
    def wrapper(request: EmuRequest, **groups: str) -> EmuResponse:
        try:
            return handler(request, **groups)
        except StoreError as exc:
            raise EmuError(kv_error(exc.status, exc.code, exc.message, exc.inner_code)) from None
        except kvcrypto.CryptoError as exc:
            raise EmuError(kv_error(400, "BadParameter", str(exc))) from None

    return wrapper


def _context(request: EmuRequest, permission: str, key_name: str = "") -> Vault:
    vault = Vault.objects.get(name=request.vault_name)
    assert request.principal is not None  # app.handle authenticated the request
    keystore.authorize(vault, request.principal, permission, key_name)
    return vault


# Rendering


def _epoch(value: datetime | None) -> int | None:
    return int(value.timestamp()) if value is not None else None


def recovery_level(vault: Vault) -> str:
    if not vault.soft_delete_enabled:
        return "Purgeable"
    custom = "CustomizedRecoverable" if vault.soft_delete_retention_days < 90 else "Recoverable"
    return custom if vault.purge_protection_enabled else f"{custom}+Purgeable"


def _attributes(vault: Vault, version: KeyVersion) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "enabled": version.enabled,
        "created": _epoch(version.created_at),
        "updated": _epoch(version.updated_at),
        "recoveryLevel": recovery_level(vault),
        "exportable": False,
    }
    if vault.soft_delete_enabled:
        attributes["recoverableDays"] = vault.soft_delete_retention_days
    if version.not_before is not None:
        attributes["nbf"] = _epoch(version.not_before)
    if version.expires_at is not None:
        attributes["exp"] = _epoch(version.expires_at)
    return attributes


def kid(vault: Vault, key: Key, version: KeyVersion | None = None) -> str:
    base = f"{vault.vault_uri}keys/{key.name}"
    return f"{base}/{version.version}" if version is not None else base


def key_bundle(vault: Vault, key: Key, version: KeyVersion) -> dict[str, Any]:
    jwk: dict[str, Any] = {"kid": kid(vault, key, version), "kty": version.kty, "key_ops": list(version.key_ops)}
    jwk.update(version.public_jwk)  # n/e or crv/x/y only: the private parts are never stored in public_jwk
    return {"key": jwk, "attributes": _attributes(vault, version), "tags": dict(version.tags)}


def _deleted_fields(vault: Vault, key: Key) -> dict[str, Any]:
    if not vault.soft_delete_enabled:
        return {}
    return {
        "recoveryId": f"{vault.vault_uri}deletedkeys/{key.name}",
        "deletedDate": _epoch(key.deleted_at),
        "scheduledPurgeDate": _epoch(key.scheduled_purge_at),
    }


def _key_item(vault: Vault, key: Key, version: KeyVersion, *, versioned: bool) -> dict[str, Any]:
    return {
        "kid": kid(vault, key, version if versioned else None),
        "attributes": _attributes(vault, version),
        "tags": dict(version.tags),
    }


def _page(request: EmuRequest, vault: Vault, path: str, items: list[dict[str, Any]]) -> EmuResponse:
    """One page of `items` with a nextLink when more remain (offset in a URL-safe $skiptoken)."""
    try:
        wanted = int(request.param("maxresults") or settings.EMULATOR_KV_PAGE_SIZE)
        offset = int(request.param("$skiptoken") or 0)
    except ValueError:
        raise EmuError(kv_error(400, "BadParameter", "maxresults and $skiptoken must be whole numbers.")) from None
    if not 1 <= wanted <= KV_MAX_PAGE:
        raise EmuError(kv_error(400, "BadParameter", f"maxresults must be between 1 and {KV_MAX_PAGE}."))
    page = items[offset : offset + wanted]
    next_link = None
    if offset + wanted < len(items):
        next_link = (
            f"{vault.vault_uri}{path}?api-version={request.api_version}&maxresults={wanted}"
            f"&$skiptoken={offset + wanted}"
        )
    return json_response(200, {"value": page, "nextLink": next_link})


def _from_epoch(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(int(value), tz=UTC)
    except (TypeError, ValueError, OverflowError):
        raise EmuError(kv_error(400, "BadParameter", f"attributes.{name} must be Unix seconds.")) from None


def _key_size(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise EmuError(kv_error(400, "BadParameter", "key_size must be a whole number of bits."))
    return value


def _tags(body: dict[str, Any]) -> dict[str, str] | None:
    tags = body.get("tags")
    if tags is None:
        return None
    if not isinstance(tags, dict) or len(tags) > 15:
        raise EmuError(kv_error(400, "BadParameter", "tags must be an object of at most 15 string pairs."))
    return {str(k): str(v) for k, v in tags.items()}


# Keys: create, read, list, update


@kv_route("POST", r"/keys/restore")
@kv_errors
def restore(request: EmuRequest) -> EmuResponse:
    vault = _context(request, "restore")
    value = request.json_object().get("value")
    if not isinstance(value, str):
        raise StoreError(400, "BadParameter", "The request body must carry the backup blob in 'value'.")
    key = keystore.restore_key(vault, kvcrypto.unb64url(value))
    return json_response(200, key_bundle(vault, key, keystore.key_version(key)))


@kv_route("POST", r"/keys/(?P<name>[^/]+)/create")
@kv_errors
def create(request: EmuRequest, name: str) -> EmuResponse:
    vault = _context(request, "create", name)
    body = request.json_object()
    attributes = body.get("attributes") or {}
    if body.get("public_exponent") not in (None, 65537):
        raise StoreError(400, "BadParameter", "Only the public exponent 65537 is supported.")
    key = keystore.create_key(
        vault,
        name,
        str(body.get("kty") or ""),
        _key_size(body.get("key_size")),
        curve=body.get("crv"),
        exp=_from_epoch(attributes.get("exp"), "exp"),
        nbf=_from_epoch(attributes.get("nbf"), "nbf"),
        key_ops=body.get("key_ops"),
        tags=_tags(body),
        enabled=bool(attributes.get("enabled", True)),
    )
    return json_response(200, key_bundle(vault, key, keystore.key_version(key)))


@kv_route("GET", r"/keys")
@kv_errors
def list_keys(request: EmuRequest) -> EmuResponse:
    vault = _context(request, "list")
    items = []
    for key in Key.objects.filter(vault=vault, deleted_at__isnull=True).order_by("name"):
        current = key.latest_version()
        if current is not None:
            items.append(_key_item(vault, key, current, versioned=False))
    return _page(request, vault, "keys", items)


@kv_route("GET", r"/keys/(?P<name>[^/]+)/versions")
@kv_errors
def list_versions(request: EmuRequest, name: str) -> EmuResponse:
    vault = _context(request, "list", name)
    key = keystore.live_key(vault, name)
    items = [_key_item(vault, key, v, versioned=True) for v in key.versions.order_by("created_at", "id")]
    return _page(request, vault, f"keys/{key.name}/versions", items)


@kv_route("POST", r"/keys/(?P<name>[^/]+)/rotate")
@kv_errors
def rotate(request: EmuRequest, name: str) -> EmuResponse:
    vault = _context(request, "rotate", name)
    key = keystore.live_key(vault, name)
    version = keystore.rotate_key(key)
    return json_response(200, key_bundle(vault, key, version))


@kv_route("POST", r"/keys/(?P<name>[^/]+)/backup")
@kv_errors
def backup(request: EmuRequest, name: str) -> EmuResponse:
    vault = _context(request, "backup", name)
    key = keystore.live_key(vault, name)
    return json_response(200, {"value": kvcrypto.b64url(keystore.backup_key(key))})


# Rotation policy


def _policy_body(vault: Vault, key: Key) -> dict[str, Any]:
    policy = key.rotation_policy or {"lifetimeActions": [dict(keystore.DEFAULT_NOTIFY)], "attributes": {}}
    attributes = {k: v for k, v in (policy.get("attributes") or {}).items() if v is not None}
    return {
        "id": f"{vault.vault_uri}keys/{key.name}/rotationpolicy",
        "lifetimeActions": policy.get("lifetimeActions") or [],
        "attributes": attributes,
    }


@kv_route("GET", r"/keys/(?P<name>[^/]+)/rotationpolicy")
@kv_errors
def get_rotation_policy(request: EmuRequest, name: str) -> EmuResponse:
    vault = _context(request, "getrotationpolicy", name)
    return json_response(200, _policy_body(vault, keystore.live_key(vault, name)))


@kv_route("PUT", r"/keys/(?P<name>[^/]+)/rotationpolicy")
@kv_errors
def set_rotation_policy(request: EmuRequest, name: str) -> EmuResponse:
    vault = _context(request, "setrotationpolicy", name)
    key = keystore.live_key(vault, name)
    body = request.json_object()
    actions = body.get("lifetimeActions") or []
    if not isinstance(actions, list):
        raise StoreError(400, "BadParameter", "lifetimeActions must be a list.")
    keystore.set_rotation_policy(key, actions, (body.get("attributes") or {}).get("expiryTime"))
    return json_response(200, _policy_body(vault, key))


# Crypto operations: /keys/{name}/{version}/{op}; an empty version (double slash) means the current one.

_CRYPTO_OPS = {
    "wrapkey": ("wrapKey", "wrapKey"),
    "unwrapkey": ("unwrapKey", "unwrapKey"),
    "encrypt": ("encrypt", "encrypt"),
    "decrypt": ("decrypt", "decrypt"),
    "sign": ("sign", "sign"),
    "verify": ("verify", "verify"),
}


def _usable(version: KeyVersion, operation: str) -> None:
    """Key Vault's checks before any crypto: the operation is allowed, the key enabled and within nbf/exp."""
    if operation not in version.key_ops:
        raise StoreError(
            403, "Forbidden", f"Operation {operation} is not permitted on this key.", "KeyOperationForbidden"
        )
    if not version.enabled:
        raise StoreError(403, "Forbidden", f"Operation {operation} is not allowed on a disabled key.", "KeyDisabled")
    now = clock.now()
    if version.expires_at is not None and now >= version.expires_at:
        message = (
            f"Operation {operation} is not allowed on an expired key (expired {version.expires_at:%Y-%m-%dT%H:%M:%SZ})."
        )
        raise StoreError(403, "Forbidden", message, "KeyExpired")
    if version.not_before is not None and now < version.not_before:
        message = f"Operation {operation} is not allowed: the key is not yet valid (valid from {version.not_before:%Y-%m-%dT%H:%M:%SZ})."
        raise StoreError(403, "Forbidden", message, "KeyNotYetValid")


@kv_route("POST", r"/keys/(?P<name>[^/]+)/(?P<version>[^/]*)/(?P<op>wrapkey|unwrapkey|encrypt|decrypt|sign|verify)")
@kv_errors
def crypto_operation(request: EmuRequest, name: str, version: str, op: str) -> EmuResponse:
    operation, permission = _CRYPTO_OPS[op.lower()]
    vault = _context(request, permission, name)
    key = keystore.live_key(vault, name)
    key_version = keystore.key_version(key, version)
    _usable(key_version, operation)
    body = request.json_object()
    alg = str(body.get("alg") or "")
    value = kvcrypto.unb64url(str(body.get("value") or ""))
    private = kvcrypto.load_private(bytes(key_version.private_pem))
    result: dict[str, Any] = {"kid": kid(vault, key, key_version)}
    if operation in {"wrapKey", "encrypt"}:
        result["value"] = kvcrypto.b64url(kvcrypto.encrypt(private, alg, value))
    elif operation in {"unwrapKey", "decrypt"}:
        result["value"] = kvcrypto.b64url(kvcrypto.decrypt(private, alg, value))
    elif operation == "sign":
        result["value"] = kvcrypto.b64url(kvcrypto.sign(private, alg, value))
    else:
        signature = kvcrypto.unb64url(str(body.get("signature") or ""))
        result = {"value": kvcrypto.verify(private, alg, value, signature)}
    return json_response(200, result)


# Single key: get (latest or by version), update, delete. Registered after the more specific paths above.


@kv_route("GET", r"/keys/(?P<name>[^/]+)(?:/(?P<version>[^/]*))?")
@kv_errors
def get_key(request: EmuRequest, name: str, version: str) -> EmuResponse:
    vault = _context(request, "get", name)
    key = keystore.live_key(vault, name)
    return json_response(200, key_bundle(vault, key, keystore.key_version(key, version)))


@kv_route("PATCH", r"/keys/(?P<name>[^/]+)(?:/(?P<version>[^/]*))?")
@kv_errors
def update_key(request: EmuRequest, name: str, version: str) -> EmuResponse:
    vault = _context(request, "update", name)
    key = keystore.live_key(vault, name)
    target = keystore.key_version(key, version)
    body = request.json_object()
    attributes = body.get("attributes") or {}
    keystore.update_key_version(
        target,
        enabled=attributes.get("enabled"),
        exp=_from_epoch(attributes["exp"], "exp") if "exp" in attributes else False,
        nbf=_from_epoch(attributes["nbf"], "nbf") if "nbf" in attributes else False,
        key_ops=body.get("key_ops"),
        tags=_tags(body),
    )
    return json_response(200, key_bundle(vault, key, target))


@kv_route("DELETE", r"/keys/(?P<name>[^/]+)")
@kv_errors
def delete_key(request: EmuRequest, name: str) -> EmuResponse:
    vault = _context(request, "delete", name)
    key = keystore.live_key(vault, name)
    current = keystore.key_version(key)
    bundle = key_bundle(vault, key, current)  # rendered first: without soft delete the rows are gone after
    keystore.delete_key(key)
    return json_response(200, {**bundle, **_deleted_fields(vault, key)})


# Deleted keys


@kv_route("GET", r"/deletedkeys")
@kv_errors
def list_deleted(request: EmuRequest) -> EmuResponse:
    vault = _context(request, "list")
    items = []
    for key in Key.objects.filter(vault=vault, deleted_at__isnull=False).order_by("name"):
        current = key.latest_version()
        if current is not None:
            items.append({**_key_item(vault, key, current, versioned=False), **_deleted_fields(vault, key)})
    return _page(request, vault, "deletedkeys", items)


@kv_route("GET", r"/deletedkeys/(?P<name>[^/]+)")
@kv_errors
def get_deleted(request: EmuRequest, name: str) -> EmuResponse:
    vault = _context(request, "get", name)
    key = keystore.deleted_key(vault, name)
    bundle = key_bundle(vault, key, keystore.key_version(key))
    return json_response(200, {**bundle, **_deleted_fields(vault, key)})


@kv_route("POST", r"/deletedkeys/(?P<name>[^/]+)/recover")
@kv_errors
def recover(request: EmuRequest, name: str) -> EmuResponse:
    vault = _context(request, "recover", name)
    key = keystore.recover_key(keystore.deleted_key(vault, name))
    return json_response(200, key_bundle(vault, key, keystore.key_version(key)))


@kv_route("DELETE", r"/deletedkeys/(?P<name>[^/]+)")
@kv_errors
def purge(request: EmuRequest, name: str) -> EmuResponse:
    vault = _context(request, "purge", name)
    keystore.purge_key(keystore.deleted_key(vault, name))
    return empty_response(204)
