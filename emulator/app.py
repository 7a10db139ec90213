"""The emulated Azure's front door: `handle(request)` runs faults and throttling, authentication, dispatch
by host, and the request log, for the in-process transport and `serve_emulator` alike.

Hosts: `management.azure.com` is ARM; `{vault}.vault.azure.net` is that vault's keys data plane. Any
other host, or a vault that does not exist, raises `UnknownHost`, which the transport turns into the
`ServiceRequestError` a failed DNS lookup gives.
"""

from __future__ import annotations

import importlib
import logging
import uuid

from django.db import transaction

from emulator import clock, faults
from emulator.http import EmuError, EmuRequest, EmuResponse, arm_error, kv_error
from emulator.identities import ARM_AUDIENCE, VAULT_AUDIENCE, Caller, home_tenant, principal_from_token
from emulator.models import RequestLog, Vault
from emulator.models.keyvault import VAULT_HOST_SUFFIX
from emulator.router import EMULATOR_ALIAS
from emulator.routes import ARM_ROUTES, KV_ROUTES, dispatch

logger = logging.getLogger("emulator")

ARM_HOST = "management.azure.com"
ROUTE_MODULES = ("emulator.arm_keyvault", "emulator.keyvault", "emulator.arm")
KEYVAULT_SERVICE_VERSION = "1.9.2100.1"


class UnknownHost(Exception):
    """No emulated service answers at this host name (as if DNS did not resolve it)."""


_routes_loaded = False


def load_routes() -> None:
    global _routes_loaded
    if _routes_loaded:
        return
    for name in ROUTE_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a missing dependency inside the module is a real error
                raise
    _routes_loaded = True


def handle(request: EmuRequest) -> EmuResponse:
    load_routes()
    vault = _resolve_host(request)
    subscription_id = _subscription_of(request) if request.plane == "arm" else ""
    extra: dict[str, str] = {}
    try:
        response = _faults_and_throttling(request, subscription_id, extra)
        if response is None:
            response = _authenticated_dispatch(request, vault)
    except EmuError as exc:
        response = exc.response
    _finish(request, response, vault, extra)
    return response


# Host and plane


def _resolve_host(request: EmuRequest) -> Vault | None:
    if request.host == ARM_HOST:
        request.plane = "arm"
        return None
    if request.host.endswith(VAULT_HOST_SUFFIX):
        name = request.host[: -len(VAULT_HOST_SUFFIX)]
        vault = Vault.objects.filter(name=name).first() if "." not in name else None
        if vault is not None:
            request.plane = "kv"
            request.vault_name = vault.name
            return vault
    raise UnknownHost(f"Failed to resolve '{request.host}' (the emulator knows no such host).")


def _subscription_of(request: EmuRequest) -> str:
    segments = request.segments
    if len(segments) >= 2 and segments[0].lower() == "subscriptions":
        return segments[1].lower()
    return ""


# Faults, then throttling (ARM only)


def _faults_and_throttling(request: EmuRequest, subscription_id: str, extra: dict[str, str]) -> EmuResponse | None:
    injected = faults.injected_fault(request)
    if injected is not None:
        return injected
    if request.plane != "arm":
        return None
    result = faults.take_token(subscription_id, faults.throttle_kind(request.method))
    extra.update(faults.throttle_headers(result, subscription_id))
    return None if result.allowed else faults.throttled_response(result, subscription_id)


# Authentication


def _bearer(request: EmuRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _authenticate_arm(request: EmuRequest) -> Caller:
    token = _bearer(request)
    challenge = 'Bearer authorization_uri="https://login.microsoftonline.com/", error="invalid_token"'
    headers = {"WWW-Authenticate": challenge}
    if token is None:
        message = "Authentication failed. The 'Authorization' header is missing."
        raise EmuError(arm_error(401, "AuthenticationFailed", message, headers=headers))
    caller = principal_from_token(token)
    if caller is None:
        raise EmuError(arm_error(401, "InvalidAuthenticationToken", "The access token is invalid.", headers=headers))
    if caller.audience != ARM_AUDIENCE:
        message = (
            f"The access token has been obtained for wrong audience or resource '{caller.audience}'. It should "
            "exactly match with one of the allowed audiences 'https://management.core.windows.net/',"
            "'https://management.azure.com/'."
        )
        raise EmuError(arm_error(401, "InvalidAuthenticationTokenAudience", message, headers=headers))
    return caller


def kv_challenge(vault: Vault, message: str) -> EmuResponse:
    """Key Vault's 401: the challenge names the vault's tenant, which the SDK then asks a token for."""
    challenge = (
        f'Bearer authorization="https://login.microsoftonline.com/{vault.tenant_id}", '
        'resource="https://vault.azure.net"'
    )
    return kv_error(401, "Unauthorized", message, headers={"WWW-Authenticate": challenge})


def _authenticate_kv(request: EmuRequest, vault: Vault) -> Caller:
    token = _bearer(request)
    if token is None:
        # Always the challenge when Authorization is absent: the SDK's first request carries no body.
        raise EmuError(kv_challenge(vault, "AKV10000: Request is missing a Bearer or PoP token."))
    caller = principal_from_token(token)
    if caller is None:
        raise EmuError(kv_challenge(vault, "AKV10022: Invalid token: the signature or expiry could not be validated."))
    if caller.audience != VAULT_AUDIENCE:
        message = f"AKV10022: Invalid audience. Expected {VAULT_AUDIENCE}, found: {caller.audience}."
        raise EmuError(kv_challenge(vault, message))
    directory = home_tenant(caller.object_id)
    token_ok = caller.tenant_id == vault.tenant_id.lower()
    # A single-tenant principal (a managed identity) stays bound to its home tenant even with a cached token.
    home_ok = directory is None or directory[1] or directory[0] == vault.tenant_id.lower()
    if not (token_ok and home_ok):
        message = (
            f"AKV10032: Invalid issuer. Expected one of https://sts.windows.net/{vault.tenant_id}/, "
            f"found {caller.issuer}."
        )
        raise EmuError(kv_challenge(vault, message))
    return caller


def _authenticated_dispatch(request: EmuRequest, vault: Vault | None) -> EmuResponse:
    if vault is None:
        request.principal = _authenticate_arm(request)
        with transaction.atomic(using=EMULATOR_ALIAS):
            return dispatch(ARM_ROUTES, request)
    request.principal = _authenticate_kv(request, vault)
    from emulator.keystore import housekeeping

    with transaction.atomic(using=EMULATOR_ALIAS):
        # Rotation policies and scheduled purges happen lazily: whenever the vault is used after the clock
        # passed their time.
        housekeeping(vault)
    with transaction.atomic(using=EMULATOR_ALIAS):
        return dispatch(KV_ROUTES, request)


# Response headers and the request log


def _finish(request: EmuRequest, response: EmuResponse, vault: Vault | None, extra: dict[str, str]) -> None:
    request_id = str(uuid.uuid4())
    response.headers.setdefault("x-ms-request-id", request_id)
    if request.client_request_id:
        response.headers["x-ms-client-request-id"] = request.client_request_id
    if vault is None:
        response.headers.setdefault("x-ms-correlation-request-id", request_id)
        for name, value in extra.items():
            response.headers.setdefault(name, value)
    else:
        response.headers.setdefault("x-ms-keyvault-region", vault.location)
        response.headers.setdefault("x-ms-keyvault-service-version", KEYVAULT_SERVICE_VERSION)
        response.headers.setdefault(
            "x-ms-keyvault-network-info", "conn_type=Ipv4;addr=127.0.0.1;act_addr_fam=InterNetwork;"
        )
    _log(request, response, request_id)


def _log(request: EmuRequest, response: EmuResponse, request_id: str) -> None:
    principal = request.principal.object_id if request.principal else ""
    with transaction.atomic(using=EMULATOR_ALIAS):
        RequestLog.objects.create(
            at=clock.now(),
            method=request.method,
            host=request.host,
            path=request.path[:2000],
            status=response.status,
            principal=principal,
            client_request_id=request.client_request_id[:100],
            request_id=response.headers.get("x-ms-request-id", request_id)[:36],
        )
    logger.debug("%s %s%s -> %s", request.method, request.host, request.path, response.status)
