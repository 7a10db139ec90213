"""Who did something: the actor every audit event and operation names.

Kept apart from services so the audit trail (which services use) can name actors without importing
services; `encryption.services` re-exports `Actor`.
"""

from __future__ import annotations

import contextvars
import getpass
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse

from encryption.http import client_ip
from encryption.roles import role_of

SOURCE_WEB = "web"
SOURCE_CLI = "cli"
SOURCE_SYSTEM = "system"


@dataclass(frozen=True)
class Actor:
    user: Any  # a django.contrib.auth User, or None for the system and anonymous visitors
    username: str
    role: str
    source: str
    ip: str = ""
    detail: str = ""

    @classmethod
    def from_request(cls, request: HttpRequest) -> Actor:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return cls(user=None, username="anonymous", role="", source=SOURCE_WEB, ip=client_ip(request))
        return cls(
            user=user, username=user.get_username(), role=role_of(user), source=SOURCE_WEB, ip=client_ip(request)
        )

    @classmethod
    def from_cli(cls, user: Any = None) -> Actor:
        """The command line: `user` is the acting portal user (`--as`), the detail the OS user and host."""
        detail = f"{_os_user()}@{socket.gethostname()}"
        if user is None:
            return cls(user=None, username=_os_user(), role="", source=SOURCE_CLI, detail=detail)
        return cls(user=user, username=user.get_username(), role=role_of(user), source=SOURCE_CLI, detail=detail)

    @classmethod
    def system(cls, detail: str = "") -> Actor:
        return cls(user=None, username="system", role="", source=SOURCE_SYSTEM, detail=detail)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        return "unknown"


# The actor of the code running now, for events raised by signals that carry no request (a role
# changed in Django's admin, say). ActorMiddleware remembers the request (its user is read only when an
# event is recorded, after any sign-in); commands may set an actor themselves with `acting_as`.

_current: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("keyward_actor", default=None)
_request: contextvars.ContextVar[HttpRequest | None] = contextvars.ContextVar("keyward_request", default=None)


def current_actor() -> Actor | None:
    actor = _current.get()
    if actor is not None:
        return actor
    request = _request.get()
    return Actor.from_request(request) if request is not None else None


@contextmanager
def acting_as(actor: Actor) -> Iterator[Actor]:
    token = _current.set(actor)
    try:
        yield actor
    finally:
        _current.reset(token)


class ActorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _request.set(request)
        try:
            return self.get_response(request)
        finally:
            _request.reset(token)
