"""A tiny route table per plane. Handlers are registered with `@arm_route` / `@kv_route` when their module
is imported, and called as `handler(request, **groups)` with URL-decoded groups.

Paths match case-insensitively and with or without one trailing slash, because the SDKs send both
(`GET /keys/{name}/`) and ARM path segments are case-insensitive.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from emulator.http import EmuRequest, EmuResponse, arm_error, kv_error

Handler = Callable[..., EmuResponse]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler


ARM_ROUTES: list[Route] = []
KV_ROUTES: list[Route] = []


def _register(table: list[Route], method: str, regex: str) -> Callable[[Handler], Handler]:
    def decorator(handler: Handler) -> Handler:
        table.append(Route(method.upper(), re.compile(regex, re.IGNORECASE), handler))
        return handler

    return decorator


def arm_route(method: str, regex: str) -> Callable[[Handler], Handler]:
    """Register an ARM handler; `regex` must match the whole path (without a trailing slash)."""
    return _register(ARM_ROUTES, method, regex)


def kv_route(method: str, regex: str) -> Callable[[Handler], Handler]:
    """Register a Key Vault data-plane handler; `regex` must match the whole path."""
    return _register(KV_ROUTES, method, regex)


def _normalized(path: str) -> str:
    return path[:-1] if path.endswith("/") and len(path) > 1 else path


def dispatch(table: list[Route], request: EmuRequest) -> EmuResponse:
    path = _normalized(request.path)
    allowed: list[str] = []
    for route in table:
        match = route.pattern.fullmatch(path)
        if match is None:
            continue
        if route.method != request.method:
            allowed.append(route.method)
            continue
        groups = {name: unquote(value or "") for name, value in match.groupdict().items()}
        return route.handler(request, **groups)
    if allowed:
        return _method_not_allowed(table, request, allowed)
    return _not_found(table, request)


def _method_not_allowed(table: list[Route], request: EmuRequest, allowed: list[str]) -> EmuResponse:
    headers = {"Allow": ", ".join(sorted(set(allowed)))}
    message = f"The requested resource does not support http method '{request.method}'."
    if table is KV_ROUTES:
        return kv_error(405, "MethodNotAllowed", message, headers=headers)
    return arm_error(405, "MethodNotAllowed", message, headers=headers)


def _not_found(table: list[Route], request: EmuRequest) -> EmuResponse:
    if table is KV_ROUTES:
        # Key Vault answers an unknown collection with BadParameter, not a 404.
        return kv_error(400, "BadParameter", f"The request URI '{request.path}' is not a valid Key Vault path.")
    provider = re.search(r"/providers/([^/]+)/([^/]+)", request.path, re.IGNORECASE)
    if provider:
        namespace, resource_type = provider.group(1), provider.group(2)
        message = (
            f"The resource type '{resource_type}' could not be found in the namespace '{namespace}' "
            f"for api version '{request.api_version}'."
        )
        return arm_error(404, "InvalidResourceType", message)
    return arm_error(404, "ResourceNotFound", f"The resource '{request.path}' was not found.")
