"""The emulator's own request and response types, independent of azure-core and of Django's HTTP layer,
so the same handlers serve the in-process transport and `serve_emulator`.

Handlers return an `EmuResponse` or raise `EmuError(response)` from anywhere below them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from azure.core.utils import case_insensitive_dict

if TYPE_CHECKING:
    from emulator.identities import Caller

Plane = Literal["arm", "kv", "unknown"]

JSON_CONTENT_TYPE = "application/json; charset=utf-8"


@dataclass
class EmuResponse:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class EmuError(Exception):
    """Raised by handlers (and helpers below them) to answer at once with `response`."""

    def __init__(self, response: EmuResponse) -> None:
        super().__init__(f"{response.status} {response.body[:200]!r}")
        self.response = response


@dataclass
class EmuRequest:
    method: str
    url: str
    host: str  # lower case, without port
    path: str  # raw, as sent (still percent-encoded)
    segments: list[str]  # URL-decoded path segments
    query: dict[str, str]
    headers: MutableMapping[str, str]
    body: bytes = b""
    plane: Plane = "unknown"
    principal: Caller | None = None
    vault_name: str = ""  # set for Key Vault data-plane requests

    @classmethod
    def build(cls, method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> EmuRequest:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        path = parts.path or "/"
        return cls(
            method=method.upper(),
            url=url,
            host=host,
            path=path,
            segments=[unquote(s) for s in path.split("/") if s],
            query=dict(parse_qsl(parts.query, keep_blank_values=True)),
            headers=case_insensitive_dict(dict(headers)),
            body=body or b"",
        )

    def param(self, name: str, default: str = "") -> str:
        """A query parameter matched case-insensitively (`api-version`, `$top`, `$filter`, `maxresults`)."""
        wanted = name.lower()
        for key, value in self.query.items():
            if key.lower() == wanted:
                return value
        return default

    @property
    def api_version(self) -> str:
        return self.param("api-version")

    @property
    def client_request_id(self) -> str:
        return self.headers.get("x-ms-client-request-id", "")

    def json(self) -> Any:
        """The body as JSON (None when empty); a body that is not JSON answers 400 in this plane's shape."""
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            raise EmuError(
                self.error(
                    400, "InvalidRequestContent", "The request content was invalid and could not be deserialized."
                )
            ) from None

    def json_object(self) -> dict[str, Any]:
        data = self.json()
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise EmuError(self.error(400, "InvalidRequestContent", "The request content must be a JSON object."))
        return data

    def error(self, status: int, code: str, message: str) -> EmuResponse:
        if self.plane == "kv":
            return kv_error(status, "BadParameter" if code == "InvalidRequestContent" else code, message)
        return arm_error(status, code, message)


# Responses


def json_response(status: int, payload: Any, headers: Mapping[str, str] | None = None) -> EmuResponse:
    out = {"Content-Type": JSON_CONTENT_TYPE}
    out.update(headers or {})
    return EmuResponse(status, out, json.dumps(payload, separators=(",", ":")).encode())


def empty_response(status: int = 204, headers: Mapping[str, str] | None = None) -> EmuResponse:
    return EmuResponse(status, dict(headers or {}), b"")


def arm_error(status: int, code: str, message: str, headers: Mapping[str, str] | None = None) -> EmuResponse:
    """ARM's ErrorResponse shape (common-types v2)."""
    body: dict[str, Any] = {
        "error": {"code": code, "message": message, "target": None, "details": [], "additionalInfo": []}
    }
    return json_response(status, body, headers)


def kv_error(
    status: int, code: str, message: str, inner_code: str | None = None, headers: Mapping[str, str] | None = None
) -> EmuResponse:
    """Key Vault's error shape: innererror is present only when there is an inner code."""
    error: dict[str, Any] = {"code": code, "message": message}
    if inner_code:
        error["innererror"] = {"code": inner_code}
    return json_response(status, {"error": error}, headers)
