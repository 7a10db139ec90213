"""Request typing and the permission decorators every view uses (checks run on the server)."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django_htmx.middleware import HtmxDetails

ViewFunc = TypeVar("ViewFunc", bound=Callable[..., HttpResponse])


class PortalRequest(HttpRequest):
    htmx: HtmxDetails
    user: User


def client_ip(request: HttpRequest) -> str:
    return str(request.META.get("REMOTE_ADDR", ""))


def require_perm(perm: str) -> Callable[[ViewFunc], ViewFunc]:
    """403 unless the signed-in user holds `perm`; the refusal is recorded in the audit trail."""

    def decorator(view: ViewFunc) -> ViewFunc:
        @wraps(view)
        def wrapper(request: PortalRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.has_perm(perm):
                from encryption import audit

                audit.record_refusal(request, perm=perm)
                raise PermissionDenied(f"Your role does not allow this ({perm}).")
            return view(request, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator
