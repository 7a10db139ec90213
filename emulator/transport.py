"""An azure-core `HttpTransport` that answers in-process from the emulator (no socket, no TLS, no DNS), so
the SDKs keep their real https host names and challenge checks (azure-api.md 6.3).

`sleep` really waits, capped by `EMULATOR_SLEEP_CAP_SECONDS`, and records each requested duration so
tests can assert that Retry-After was honoured.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from azure.core.exceptions import ServiceRequestError
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest import HttpRequest
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import case_insensitive_dict
from django.conf import settings
from django.db import connections

from emulator import app
from emulator.http import EmuRequest


class _Closable:
    def close(self) -> None:
        """The in-process response holds no connection."""


def _stream(pipeline: Any = None, response: Any = None, **kwargs: Any) -> Iterator[bytes]:
    yield response._content if response is not None else b""


class EmulatorResponse(HttpResponseImpl):
    def __init__(self, request: HttpRequest, status: int, headers: dict[str, str], body: bytes) -> None:
        merged = case_insensitive_dict(headers)
        super().__init__(
            request=request,
            internal_response=_Closable(),
            status_code=status,
            reason="",
            headers=merged,
            content_type=merged.get("Content-Type"),
            stream_download_generator=_stream,
        )
        self._content = body or b""

    def body(self) -> bytes:
        # The msrest-style deserializer of the mgmt SDKs looks for body().
        return bytes(self._content or b"")


class EmulatorTransport(HttpTransport[HttpRequest, EmulatorResponse]):
    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def __enter__(self) -> EmulatorTransport:
        return self

    def __exit__(self, *args: object) -> None:
        """One transport serves many clients; closing a client must not close it."""

    def open(self) -> None:
        """Nothing to open."""

    def close(self) -> None:
        """Nothing to close."""

    def sleep(self, duration: float) -> None:
        with self._lock:
            self.sleeps.append(float(duration))
        time.sleep(max(0.0, min(float(duration), settings.EMULATOR_SLEEP_CAP_SECONDS)))

    def send(self, request: HttpRequest, **kwargs: Any) -> EmulatorResponse:
        # Most clients send azure.core.rest requests (`.content`); azure-mgmt-authorization 4.0 still sends
        # the legacy pipeline.transport request, whose body is `.data` / `.body`.
        content = request.content if hasattr(request, "content") else getattr(request, "body", None)
        body = content.encode() if isinstance(content, str) else (content or b"")
        emu_request = EmuRequest.build(request.method, request.url, request.headers, bytes(body))
        _adopt_shared_connections()
        try:
            result = app.handle(emu_request)
        except app.UnknownHost as exc:
            raise ServiceRequestError(str(exc)) from None
        return EmulatorResponse(request, result.status, result.headers, result.body)


# Test support: SDK pollers (ARM LROs, Key Vault delete/recover `.wait()`) poll from a thread of their own,
# whose database connection cannot see a TestCase's uncommitted rows. `emulator.testing.share_connections`
# registers the test thread's connections here; a poller thread adopts them while the test thread waits.
_shared_connections: dict[str, Any] = {}


def _adopt_shared_connections() -> None:
    for alias, connection in _shared_connections.items():
        if connections[alias] is not connection:
            connections[alias] = connection
