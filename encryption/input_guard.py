"""Keep input the database cannot hold away from it, with a clear answer instead of a server error.

PostgreSQL text cannot contain NUL (0x00): a NUL in any query parameter, form field or path segment made
the query that used it fail with a 500 (the accounts search, the help-desk search, an account name in the
URL). No legitimate value contains one, so such a request is refused with 400 before any view runs.

Django's sign-in form does not enforce the username's length, and django-axes stores every failed
username in a 255-character column: an overlong username made sign-in fail with a 500 on PostgreSQL.
The sign-in forms below refuse it as the wrong credentials it is, before anything is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

NUL = "\x00"
NUL_MESSAGE = "The request contains a NUL character (0x00), which no Keyward field accepts. Remove it and retry."
MAX_USERNAME = User._meta.get_field("username").max_length or 150


def has_nul(request: HttpRequest) -> bool:
    if NUL in request.path:
        return True
    for data in (request.GET, request.POST):
        for key, values in data.lists():
            if NUL in key or any(NUL in value for value in values):
                return True
    return False


class RefuseNulMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if has_nul(request):
            return HttpResponseBadRequest(NUL_MESSAGE, content_type="text/plain; charset=utf-8")
        return self.get_response(request)


class _UsernameLength:
    def clean(self: Any) -> dict[str, Any]:
        username = self.cleaned_data.get("username") or ""
        if len(username) > MAX_USERNAME:
            # Told apart from no other wrong sign-in: a username this long can never be an account's.
            raise self.get_invalid_login_error()
        cleaned: dict[str, Any] = super().clean()  # type: ignore[misc]
        return cleaned


class SignInForm(_UsernameLength, AuthenticationForm):
    pass


class AdminSignInForm(_UsernameLength, AdminAuthenticationForm):
    pass
