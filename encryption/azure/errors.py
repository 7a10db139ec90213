"""The gateway's two domain errors, and the one place SDK exceptions are translated into them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from azure.core import exceptions as sdk_errors

# Domain errors: nothing above the gateway imports an Azure exception type


class AzureError(Exception):
    """An Azure call failed; `message` is a sentence a person can act on."""

    def __init__(self, code: str, message: str, request_id: str = "", *, status: int = 0) -> None:
        super().__init__(code, message, request_id)
        self.code = code
        self.message = message
        self.request_id = request_id
        self.status = status

    def __str__(self) -> str:
        return self.message

    @property
    def not_found(self) -> bool:
        return self.status == 404


class TransientAzureError(AzureError):
    """Worth retrying later: throttling, timeouts, 5xx, connection failures. `retry_after` in seconds."""

    def __init__(
        self, code: str, message: str, request_id: str = "", *, status: int = 0, retry_after: float | None = None
    ) -> None:
        super().__init__(code, message, request_id, status=status)
        self.retry_after = retry_after


class PermanentAzureError(AzureError):
    """Retrying will not help until a person changes something; `code` is Azure's (or the emulator's)."""


# Error translation: the one place SDK exceptions become domain errors


def _status_hint(status: int) -> str:
    return {
        401: " Check Keyward's Azure credential (managed identity or AZURE_* settings).",
        403: " Keyward's identity lacks permission for this; ask the resource owner to grant it.",
    }.get(status, "")


def _retry_after(response: Any) -> float | None:
    raw = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def _from_http_error(ex: sdk_errors.HttpResponseError, what: str) -> AzureError:
    status = int(ex.status_code or 0)
    response: Any = ex.response
    request_id = (response.headers.get("x-ms-request-id") or "") if response is not None else ""
    code = (getattr(ex.error, "code", None) if ex.error else None) or ""
    detail = (getattr(ex.error, "message", None) if ex.error else None) or ex.reason or str(ex.message)
    message = f"Could not {what}: {detail}".rstrip(".") + "." + _status_hint(status)
    if status in (408, 429) or status >= 500:
        return TransientAzureError(
            code or f"Http{status}", message, request_id, status=status, retry_after=_retry_after(response)
        )
    if not code:
        code = {401: "AuthenticationFailed", 403: "Forbidden", 404: "NotFound", 409: "Conflict"}.get(
            status, f"Http{status}"
        )
    return PermanentAzureError(code, message, request_id, status=status)


@contextmanager
def azure_call(what: str) -> Iterator[None]:
    """Run SDK calls, turning their errors into TransientAzureError / PermanentAzureError."""
    try:
        yield
    except AzureError:
        raise
    except sdk_errors.ClientAuthenticationError as ex:
        if ex.response is not None:
            raise _from_http_error(ex, what) from ex
        # No response: the credential itself could not get a token (no identity configured, say).
        raise PermanentAzureError(
            "CredentialUnavailable",
            f"Could not {what}: Keyward could not get an Azure token ({ex.message})." + _status_hint(401),
            status=401,
        ) from ex
    except sdk_errors.HttpResponseError as ex:
        raise _from_http_error(ex, what) from ex
    except (sdk_errors.ServiceRequestError, sdk_errors.ServiceResponseError) as ex:
        raise TransientAzureError("ConnectionFailed", f"Could not {what}: Azure did not answer ({ex.message}).") from ex
    except sdk_errors.AzureError as ex:
        raise TransientAzureError("AzureError", f"Could not {what}: {ex.message}.") from ex
    except ValueError as ex:
        # The Key Vault challenge names a resource that does not match the vault host: refuse, send nothing.
        if "challenge" not in str(ex).lower():
            raise
        raise PermanentAzureError("ChallengeMismatch", f"Could not {what}: {ex}") from ex
