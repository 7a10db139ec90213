"""The only module that talks to Azure: SDK clients built from settings, results as frozen dataclasses, and
SDK errors translated into two domain errors.

Backends (settings.AZURE_BACKEND): `emulator` builds every client with `emulator.sdk_options()` (its
credential and in-process transport); `azure` uses DefaultAzureCredential and the real hosts of
settings.AZURE_CLOUD. Nothing else differs: the same factory, pipeline options and calls serve both.

Every response's `x-ms-request-id` is handed to the `collect_request_ids()` blocks open in the calling
context. Long-running PATCHes are polled in the calling thread (see `_InlineARMPolling`), so request ids,
database connections (the emulator's) and errors all stay with the caller.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import Enum
from typing import Any, cast

from azure.core import exceptions as sdk_errors
from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy
from azure.core.rest import HttpRequest
from azure.identity import DefaultAzureCredential
from azure.keyvault.keys import KeyClient, KeyVaultKey
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.authorization.v2022_04_01.models import RoleAssignmentCreateParameters
from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
from azure.mgmt.cognitiveservices import models as cs_models
from azure.mgmt.core.exceptions import ARMErrorFormat
from azure.mgmt.core.polling.arm_polling import ARMPolling
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.keyvault import models as kv_models
from azure.mgmt.resource.subscriptions import SubscriptionClient
from django.conf import settings
from django.utils import timezone

log = logging.getLogger(__name__)

KEY_SOURCE_MICROSOFT = "Microsoft.CognitiveServices"
KEY_SOURCE_KEY_VAULT = "Microsoft.KeyVault"
CMK_KEY_PERMISSIONS = ("get", "wrapKey", "unwrapKey")
# "Key Vault Crypto Service Encryption User": read key metadata, wrap and unwrap (RBAC vaults).
CRYPTO_SERVICE_ENCRYPTION_USER = "e147488a-f6f5-4113-8e2d-b22465e65bf6"
CRYPTO_SERVICE_ENCRYPTION_USER_NAME = "Key Vault Crypto Service Encryption User"
# Built-in roles whose data actions include get, wrapKey and unwrapKey: the one Keyward grants, plus
# Key Vault Crypto Officer and Key Vault Administrator, which an owner may have granted instead.
_ROLES_WITH_CMK_ACCESS = frozenset(
    {CRYPTO_SERVICE_ENCRYPTION_USER, "14b46e9e-c2b7-41b4-b07b-48a6ebf60603", "00482a5a-887f-4fb3-b363-3b7fe8e74483"}
)
_KEY_PERMISSION_NAMES = {
    p.lower(): p
    for p in [
        "all",
        "encrypt",
        "decrypt",
        "wrapKey",
        "unwrapKey",
        "sign",
        "verify",
        "get",
        "list",
        "create",
        "update",
        "import",
        "delete",
        "backup",
        "restore",
        "recover",
        "purge",
        "release",
        "rotate",
        "getrotationpolicy",
        "setrotationpolicy",
    ]
}
_ARM_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/(?P<ns>[^/]+)/(?P<type>[^/]+)/(?P<name>[^/]+)$",
    re.IGNORECASE,
)


# Clouds: the hosts and token audiences of each Azure cloud Keyward can run against


@dataclass(frozen=True)
class Cloud:
    name: str
    arm_endpoint: str
    authority_host: str
    vault_suffixes: tuple[str, ...]  # Key Vault, then Managed HSM

    @property
    def arm_scope(self) -> str:
        return f"{self.arm_endpoint}/.default"


CLOUDS: dict[str, Cloud] = {
    "public": Cloud(
        "public",
        "https://management.azure.com",
        "login.microsoftonline.com",
        ("vault.azure.net", "managedhsm.azure.net"),
    ),
    "china": Cloud(
        "china",
        "https://management.chinacloudapi.cn",
        "login.chinacloudapi.cn",
        ("vault.azure.cn", "managedhsm.azure.cn"),
    ),
    "usgov": Cloud(
        "usgov",
        "https://management.usgovcloudapi.net",
        "login.microsoftonline.us",
        ("vault.usgovcloudapi.net", "managedhsm.usgovcloudapi.net"),
    ),
}


def current_cloud() -> Cloud:
    return CLOUDS[settings.AZURE_CLOUD]


def azure_now() -> datetime:
    """Azure's "now", against which keys expire: wall time, or the emulator's shiftable clock."""
    if settings.AZURE_BACKEND == "emulator":
        from emulator import clock  # installed only with the emulator backend

        return clock.now()
    return timezone.now()


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


# Results


@dataclass(frozen=True)
class SubscriptionInfo:
    subscription_id: str
    display_name: str
    tenant_id: str
    state: str


@dataclass(frozen=True)
class AccountInfo:
    arm_id: str
    name: str
    subscription_id: str
    resource_group: str
    location: str
    kind: str
    sku: str
    cmk_capable: bool
    endpoint: str
    etag: str
    provisioning_state: str
    identity_type: str
    principal_id: str
    identity_tenant_id: str
    user_assigned_identities: dict[str, dict[str, str]] = field(hash=False)
    key_source: str
    key_vault_uri: str
    key_name: str
    key_version: str
    identity_client_id: str = ""

    @property
    def uses_cmk(self) -> bool:
        return self.key_source == KEY_SOURCE_KEY_VAULT

    @property
    def has_system_identity(self) -> bool:
        return "SystemAssigned" in self.identity_type


@dataclass(frozen=True)
class AccessPolicy:
    tenant_id: str
    object_id: str
    keys: tuple[str, ...]  # canonical spelling: get, wrapKey, unwrapKey, ...

    def to_json(self) -> dict[str, Any]:
        return {"tenantId": self.tenant_id, "objectId": self.object_id, "keys": list(self.keys)}


@dataclass(frozen=True)
class VaultInfo:
    arm_id: str
    name: str
    subscription_id: str
    resource_group: str
    location: str
    tenant_id: str
    vault_uri: str  # lower case, trailing slash
    sku: str
    soft_delete_enabled: bool
    soft_delete_retention_days: int
    purge_protection_enabled: bool
    rbac_authorization: bool
    access_policies: tuple[AccessPolicy, ...]

    def key_permissions_of(self, principal_id: str) -> set[str]:
        """The key permissions the vault's access policies give this principal (ignored on RBAC vaults)."""
        granted: set[str] = set()
        for policy in self.access_policies:
            if policy.object_id.lower() == principal_id.lower():
                granted.update(policy.keys)
        if "all" in granted:
            granted.update(_KEY_PERMISSION_NAMES.values())
        return granted


@dataclass(frozen=True)
class KeyInfo:
    """A key (its current version unless a version was asked for). From `list_keys` only the name and the
    attributes are known: kty, key_size, key_ops and version are empty there; `get_key` fills them."""

    vault_uri: str
    name: str
    version: str
    kid: str
    kty: str
    key_size: int | None
    key_ops: tuple[str, ...]
    enabled: bool
    not_before: datetime | None
    expires_on: datetime | None
    created_on: datetime | None
    updated_on: datetime | None
    recovery_level: str = ""
    deleted: bool = False
    deleted_on: datetime | None = None
    scheduled_purge_on: datetime | None = None


@dataclass(frozen=True)
class KeyVersionInfo:
    name: str
    version: str
    enabled: bool
    not_before: datetime | None
    expires_on: datetime | None
    created_on: datetime | None
    updated_on: datetime | None


@dataclass(frozen=True)
class ProbeResult:
    """Whether the account can read its data now; `readable` is None where Azure offers no probe."""

    readable: bool | None
    reason: str
    code: str = ""


# Request ids: every response's x-ms-request-id goes to each collector open in this context

_collectors: ContextVar[tuple[list[str], ...]] = ContextVar("keyward_request_id_collectors", default=())
# Below this many remaining ARM requests in the window, the quota header is logged as a warning.
_QUOTA_WARNING_THRESHOLD = 20


@contextmanager
def collect_request_ids() -> Iterator[list[str]]:
    """`with collect_request_ids() as ids:` gathers the Azure request ids of every call made inside."""
    ids: list[str] = []
    token = _collectors.set((*_collectors.get(), ids))
    try:
        yield ids
    finally:
        _collectors.reset(token)


def _on_response(pipeline_response: PipelineResponse[Any, Any]) -> None:
    headers = pipeline_response.http_response.headers
    request_id = headers.get("x-ms-request-id")
    if request_id:
        for ids in _collectors.get():
            if request_id not in ids:
                ids.append(request_id)
    for name, value in headers.items():
        if name.lower().startswith("x-ms-ratelimit-remaining"):
            level = logging.WARNING if value.isdigit() and int(value) < _QUOTA_WARNING_THRESHOLD else logging.DEBUG
            log.log(level, "Azure quota %s=%s", name.lower(), value)


# Retries: bounded by a time budget, so no worker waits minutes inside one call


class _BudgetedRetryPolicy(RetryPolicy[Any, Any]):
    """azure-core's retry policy, but a retry whose wait (Retry-After or backoff) would end past the budget is
    not attempted: the error surfaces at once as transient, carrying Retry-After, and the task's own retry
    (which frees the worker) takes over. Backoff gets jitter so throttled workers do not retry in step."""

    def configure_retries(self, options: dict[str, Any]) -> dict[str, Any]:
        retry_settings = super().configure_retries(options)
        retry_settings["deadline"] = time.monotonic() + retry_settings["timeout"]
        return retry_settings

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        return super().get_backoff_time(settings) * random.uniform(0.8, 1.2)

    def increment(self, settings: dict[str, Any], response: Any = None, error: Exception | None = None) -> bool:
        if not super().increment(settings, response=response, error=error):
            return False
        wait = None
        if error is None and isinstance(response, PipelineResponse):
            wait = self.get_retry_after(response)
        if wait is None:
            wait = self.get_backoff_time(settings)
        return time.monotonic() + wait <= float(settings["deadline"])


# Client factory: built lazily, cached per process by credential/subscription/vault and settings

_cache: dict[tuple[Any, ...], Any] = {}
_cache_lock = threading.RLock()  # re-entrant: building a client builds the credential
_pipeline_override: dict[str, Any] = {}


@contextmanager
def pipeline_override(*, credential: Any, transport: Any) -> Iterator[None]:
    """Tests only: build clients with this credential and transport instead of the backend's own.

    The seam for showing what the azure backend would send (hosts, token scopes) without a network;
    every other part of client building is the production path.
    """
    _pipeline_override.update(credential=credential, transport=transport)
    reset_clients()
    try:
        yield
    finally:
        _pipeline_override.clear()
        reset_clients()


def reset_clients() -> None:
    """Forget every cached client (settings changed, or a test wants fresh pipelines)."""
    with _cache_lock:
        _cache.clear()


def _settings_key() -> tuple[Any, ...]:
    return (
        settings.AZURE_BACKEND,
        settings.AZURE_CLOUD,
        settings.AZURE_RETRY_TOTAL,
        settings.AZURE_RETRY_BUDGET_SECONDS,
        settings.AZURE_POLLING_INTERVAL,
        id(_pipeline_override.get("transport")),
    )


def _cached(kind: str, *args: str, build: Callable[[], Any]) -> Any:
    key = (kind, *args, _settings_key())
    with _cache_lock:
        client = _cache.get(key)
        if client is None:
            client = _cache[key] = build()
        return client


def _credential_and_transport() -> dict[str, Any]:
    if _pipeline_override:
        return dict(_pipeline_override)

    def build() -> dict[str, Any]:
        if settings.AZURE_BACKEND == "emulator":
            import emulator  # installed only with the emulator backend

            return dict(emulator.sdk_options())
        cloud = current_cloud()
        return {"credential": DefaultAzureCredential(authority=cloud.authority_host)}

    return dict(_cached("credential", build=build))  # a copy: callers pop from it


def _pipeline_options() -> dict[str, Any]:
    budget = settings.AZURE_RETRY_BUDGET_SECONDS
    total = settings.AZURE_RETRY_TOTAL
    options = _credential_and_transport()
    if options.get("transport") is None:
        options.pop("transport", None)
    options.update(
        retry_policy=_BudgetedRetryPolicy(
            retry_total=total,
            retry_connect=total,
            retry_read=total,
            retry_status=total,
            retry_backoff_max=budget,
            timeout=budget,
        ),
        raw_response_hook=_on_response,
        logging_enable=False,  # never log bodies or headers: they can carry tokens and key material
        connection_timeout=10,
        read_timeout=max(30, budget),
    )
    return options


def _arm_options() -> dict[str, Any]:
    cloud = current_cloud()
    return {
        **_pipeline_options(),
        "base_url": cloud.arm_endpoint,
        "credential_scopes": [cloud.arm_scope],
        "polling_interval": settings.AZURE_POLLING_INTERVAL,
    }


def _subscription_client() -> SubscriptionClient:
    return cast(SubscriptionClient, _cached("subscriptions", build=lambda: SubscriptionClient(**_arm_options())))


def _cognitive_client(subscription_id: str) -> CognitiveServicesManagementClient:
    def build() -> CognitiveServicesManagementClient:
        options = _arm_options()
        return CognitiveServicesManagementClient(options.pop("credential"), subscription_id, **options)

    return cast(CognitiveServicesManagementClient, _cached("cognitive", subscription_id.lower(), build=build))


def _vault_mgmt_client(subscription_id: str) -> KeyVaultManagementClient:
    def build() -> KeyVaultManagementClient:
        options = _arm_options()
        return KeyVaultManagementClient(options.pop("credential"), subscription_id, **options)

    return cast(KeyVaultManagementClient, _cached("keyvault-mgmt", subscription_id.lower(), build=build))


def _authorization_client(subscription_id: str) -> AuthorizationManagementClient:
    def build() -> AuthorizationManagementClient:
        options = _arm_options()
        return AuthorizationManagementClient(options.pop("credential"), subscription_id, **options)

    return cast(AuthorizationManagementClient, _cached("authorization", subscription_id.lower(), build=build))


def _key_client(vault_uri: str) -> KeyClient:
    url = checked_vault_uri(vault_uri)

    def build() -> KeyClient:
        options = _pipeline_options()
        return KeyClient(url, options.pop("credential"), **options)

    return cast(KeyClient, _cached("keys", url, build=build))


_VAULT_HOST = re.compile(r"^https://(?P<name>[a-z0-9][a-z0-9-]{1,22}[a-z0-9])\.(?P<suffix>[a-z0-9.]+)/?$")


def checked_vault_uri(vault_uri: str) -> str:
    """The vault URI, lower case with a trailing slash, if it is a Key Vault or Managed HSM host of the
    configured cloud; anything else is refused before a token is sent to it (defence in depth behind the
    key URI parser: account settings read from Azure can name any host)."""
    uri = vault_uri.strip().lower()
    match = _VAULT_HOST.match(uri)
    if not match or match["suffix"] not in current_cloud().vault_suffixes:
        raise PermanentAzureError(
            "InvalidVaultUri",
            f"{vault_uri!r} is not a Key Vault address of the {settings.AZURE_CLOUD} Azure cloud; "
            "Keyward sends requests only to https://{vault}." + current_cloud().vault_suffixes[0] + "/.",
        )
    return uri if uri.endswith("/") else uri + "/"


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
def _azure_call(what: str) -> Iterator[None]:
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


# ARM ids


@dataclass(frozen=True)
class ArmId:
    subscription_id: str
    resource_group: str
    namespace: str
    type: str
    name: str


def parse_arm_id(arm_id: str) -> ArmId:
    match = _ARM_ID.match(arm_id.strip())
    if not match:
        raise PermanentAzureError("InvalidResourceId", f"{arm_id!r} is not an Azure resource id.")
    return ArmId(match["sub"], match["rg"], match["ns"], match["type"], match["name"])


def _s(value: Any) -> str:
    if value is None:
        return ""
    return str(value.value) if isinstance(value, Enum) else str(value)


# Subscriptions


def list_subscriptions() -> list[SubscriptionInfo]:
    """Every subscription Keyward's identity can see."""
    with _azure_call("list subscriptions"):
        return [
            SubscriptionInfo(_s(s.subscription_id), _s(s.display_name), _s(s.tenant_id), _s(s.state) or "Enabled")
            for s in _subscription_client().subscriptions.list()
        ]


# Cognitive Services accounts


def _account_info(account: cs_models.Account) -> AccountInfo:
    arm = parse_arm_id(_s(account.id))
    props = account.properties
    identity = account.identity
    encryption = props.encryption if props else None
    vault_props = encryption.key_vault_properties if encryption else None
    # A missing encryption block means Microsoft-managed keys; the SDK's Encryption model defaults keySource to
    # Microsoft.KeyVault when the field is absent, so CMK also needs a key name to count.
    uses_cmk = bool(encryption and _s(encryption.key_source) == KEY_SOURCE_KEY_VAULT and vault_props)
    uses_cmk = uses_cmk and bool(vault_props and vault_props.key_name)
    capabilities = {(_s(c.name), _s(c.value).lower()) for c in (props.capabilities or [])} if props else set()
    user_assigned = {
        uami_id: {"principalId": _s(u.principal_id), "clientId": _s(u.client_id)}
        for uami_id, u in ((identity.user_assigned_identities or {}) if identity else {}).items()
    }
    return AccountInfo(
        arm_id=_s(account.id),
        name=_s(account.name),
        subscription_id=arm.subscription_id,
        resource_group=arm.resource_group,
        location=_s(account.location),
        kind=_s(account.kind),
        sku=_s(account.sku.name) if account.sku else "",
        cmk_capable=any(name == "CustomerManagedKey" and value != "false" for name, value in capabilities),
        endpoint=_s(props.endpoint) if props else "",
        etag=_s(account.etag),
        provisioning_state=_s(props.provisioning_state) if props else "",
        identity_type=_s(identity.type) if identity and identity.type else "None",
        principal_id=_s(identity.principal_id) if identity else "",
        identity_tenant_id=_s(identity.tenant_id) if identity else "",
        user_assigned_identities=user_assigned,
        key_source=KEY_SOURCE_KEY_VAULT if uses_cmk else KEY_SOURCE_MICROSOFT,
        key_vault_uri=_s(vault_props.key_vault_uri) if uses_cmk and vault_props else "",
        key_name=_s(vault_props.key_name) if uses_cmk and vault_props else "",
        key_version=_s(vault_props.key_version) if uses_cmk and vault_props else "",
        identity_client_id=_s(vault_props.identity_client_id) if uses_cmk and vault_props else "",
    )


def list_accounts(subscription_id: str) -> list[AccountInfo]:
    """Every Cognitive Services account in the subscription."""
    with _azure_call(f"list the AI services accounts of subscription {subscription_id}"):
        return [_account_info(a) for a in _cognitive_client(subscription_id).accounts.list()]


def get_account(arm_id: str) -> AccountInfo:
    arm = parse_arm_id(arm_id)
    with _azure_call(f"read account {arm.name}"):
        return _account_info(_cognitive_client(arm.subscription_id).accounts.get(arm.resource_group, arm.name))


class _InlineARMPolling(ARMPolling):
    """ARM polling run to the end inside `initialize`, in the calling thread.

    LROPoller polls in a thread of its own unless the polling method is already finished when it starts;
    finishing here keeps request-id collection (a context variable), the emulator's database connections and
    error propagation in the caller's thread, and gives a hook (`on_started`) right after the initial PATCH.
    """

    def __init__(self, interval: float, on_started: Callable[[str], None] | None = None) -> None:
        super().__init__(interval)
        self._on_started = on_started

    def initialize(self, client: Any, initial_response: Any, deserialization_callback: Any) -> None:
        super().initialize(client, initial_response, deserialization_callback)
        if self._on_started is not None and not self.finished():
            self._on_started(self.get_continuation_token())
        self.run()


def _update_account(
    arm_id: str,
    body: cs_models.Account,
    *,
    what: str,
    continuation_token: str = "",
    on_continuation: Callable[[str], None] | None = None,
) -> AccountInfo:
    """PATCH the account and follow the long-running operation; with a token, resume polling instead."""
    arm = parse_arm_id(arm_id)
    client = _cognitive_client(arm.subscription_id)
    interval = float(settings.AZURE_POLLING_INTERVAL)
    if continuation_token:
        try:
            with _azure_call(what):
                poller = client.accounts.begin_update(
                    arm.resource_group,
                    arm.name,
                    cast(Any, None),
                    continuation_token=continuation_token,
                    polling=_InlineARMPolling(interval),
                )
                return _account_info(poller.result())
        except PermanentAzureError as ex:
            # The operation is no longer known to Azure (expired status URL): the body carries the whole
            # desired state, so sending it again is safe.
            if not ex.not_found:
                raise
            log.info("LRO of %s could not be resumed (%s); sending the PATCH again", arm.name, ex.code)
        except ValueError:
            log.info("LRO continuation token for %s is unreadable; sending the PATCH again", arm.name)
    with _azure_call(what):
        poller = client.accounts.begin_update(
            arm.resource_group, arm.name, body, polling=_InlineARMPolling(interval, on_continuation)
        )
        return _account_info(poller.result())


def enable_system_identity(arm_id: str) -> AccountInfo:
    """Turn on the system-assigned identity, keeping user-assigned ones; no PATCH when it is already on."""
    account = get_account(arm_id)
    if account.has_system_identity:
        return account
    if account.user_assigned_identities:
        identity = cs_models.Identity(
            type="SystemAssigned, UserAssigned",
            user_assigned_identities={i: cs_models.UserAssignedIdentity() for i in account.user_assigned_identities},
        )
    else:
        identity = cs_models.Identity(type="SystemAssigned")
    return _update_account(
        arm_id, cs_models.Account(identity=identity), what=f"turn on the managed identity of {account.name}"
    )


def set_customer_managed_key(
    arm_id: str,
    *,
    vault_uri: str,
    key_name: str,
    key_version: str,
    continuation_token: str = "",
    on_continuation: Callable[[str], None] | None = None,
) -> AccountInfo:
    """Encrypt the account with this key version. The body carries the whole encryption state (the SDK may
    resend it); `on_continuation(token)` runs right after the initial PATCH, so a retried task can pass the
    token back and resume polling instead of sending again."""
    encryption = cs_models.Encryption(
        key_source=KEY_SOURCE_KEY_VAULT,
        key_vault_properties=cs_models.KeyVaultProperties(
            key_name=key_name, key_version=key_version, key_vault_uri=checked_vault_uri(vault_uri)
        ),
    )
    body = cs_models.Account(properties=cs_models.AccountProperties(encryption=encryption))
    return _update_account(
        arm_id,
        body,
        what=f"set key {key_name} as the encryption key of {parse_arm_id(arm_id).name}",
        continuation_token=continuation_token,
        on_continuation=on_continuation,
    )


def set_microsoft_managed_key(
    arm_id: str, *, continuation_token: str = "", on_continuation: Callable[[str], None] | None = None
) -> AccountInfo:
    """Go back to Microsoft-managed keys; the identity stays on."""
    # keySource is explicit: the SDK's Encryption() defaults it to Microsoft.KeyVault.
    encryption = cs_models.Encryption(key_source=KEY_SOURCE_MICROSOFT)
    body = cs_models.Account(properties=cs_models.AccountProperties(encryption=encryption))
    return _update_account(
        arm_id,
        body,
        what=f"switch {parse_arm_id(arm_id).name} to Microsoft-managed keys",
        continuation_token=continuation_token,
        on_continuation=on_continuation,
    )


def probe_data_access(arm_id: str) -> ProbeResult:
    """Whether the account can read its data right now. Only the emulator has such an API; against Azure the
    answer is unknown (readable=None) and the diagnosis infers it from the key's state and access."""
    arm = parse_arm_id(arm_id)
    if settings.AZURE_BACKEND != "emulator":
        return ProbeResult(None, "Azure offers no data-access probe; inferred from the key's state and access.")
    client = _cognitive_client(arm.subscription_id)
    request = HttpRequest(
        "POST",
        f"{current_cloud().arm_endpoint}{arm_id}/probeDataAccess",
        params={"api-version": client._config.api_version},
    )
    with _azure_call(f"probe data access of {arm.name}"):
        response = client._client.send_request(request)
        if response.status_code != 200:
            response.read()
            raise sdk_errors.HttpResponseError(response=response, error_format=ARMErrorFormat)
        body = response.json()
    return ProbeResult(bool(body.get("readable")), str(body.get("reason", "")), str(body.get("code", "")))


# Key Vault vaults (management plane)


def _vault_info(vault: kv_models.Vault) -> VaultInfo:
    arm = parse_arm_id(_s(vault.id))
    props = vault.properties
    policies = tuple(
        AccessPolicy(
            tenant_id=_s(p.tenant_id),
            object_id=_s(p.object_id),
            keys=tuple(
                _KEY_PERMISSION_NAMES.get(_s(k).lower(), _s(k))
                for k in ((p.permissions.keys_property or []) if p.permissions else [])
            ),
        )
        for p in (props.access_policies or [])
    )
    return VaultInfo(
        arm_id=_s(vault.id),
        name=_s(vault.name),
        subscription_id=arm.subscription_id,
        resource_group=arm.resource_group,
        location=_s(vault.location),
        tenant_id=_s(props.tenant_id),
        vault_uri=_normalize_vault_uri(_s(props.vault_uri)),
        sku=_s(props.sku.name) if props.sku else "standard",
        # Absent flags take Azure's defaults: soft delete on (since 2020), purge protection and RBAC off.
        soft_delete_enabled=props.enable_soft_delete is not False,
        soft_delete_retention_days=int(props.soft_delete_retention_in_days or 90),
        purge_protection_enabled=bool(props.enable_purge_protection),
        rbac_authorization=bool(props.enable_rbac_authorization),
        access_policies=policies,
    )


def _normalize_vault_uri(uri: str) -> str:
    uri = uri.strip().lower()
    return uri if uri.endswith("/") else uri + "/"


def list_vaults(subscription_id: str) -> list[VaultInfo]:
    with _azure_call(f"list the key vaults of subscription {subscription_id}"):
        return [_vault_info(v) for v in _vault_mgmt_client(subscription_id).vaults.list_by_subscription()]


def get_vault(arm_id: str) -> VaultInfo:
    arm = parse_arm_id(arm_id)
    with _azure_call(f"read key vault {arm.name}"):
        return _vault_info(_vault_mgmt_client(arm.subscription_id).vaults.get(arm.resource_group, arm.name))


def find_vault(vault_uri: str, subscription_id: str) -> VaultInfo | None:
    """The vault with this URI in the subscription, or None when the subscription has no such vault."""
    wanted = _normalize_vault_uri(vault_uri)
    return next((v for v in list_vaults(subscription_id) if v.vault_uri == wanted), None)


def _role_assignment_name(scope: str, principal_id: str) -> str:
    # Deterministic, so a retried grant PUTs the same assignment instead of creating a second one.
    return str(
        uuid.uuid5(uuid.NAMESPACE_URL, f"{scope.lower()}|{principal_id.lower()}|{CRYPTO_SERVICE_ENCRYPTION_USER}")
    )


def _role_definition_id(vault: VaultInfo) -> str:
    return (
        f"/subscriptions/{vault.subscription_id}/providers/Microsoft.Authorization/roleDefinitions/"
        f"{CRYPTO_SERVICE_ENCRYPTION_USER}"
    )


def grant_key_access(vault: VaultInfo, principal_id: str) -> None:
    """Let the principal use the vault's keys for encryption: an access policy with get, wrapKey and unwrapKey
    (merged into any existing entry), or on an RBAC vault the role Key Vault Crypto Service Encryption User at
    the vault's scope. Idempotent."""
    if vault.rbac_authorization:
        parameters = RoleAssignmentCreateParameters(
            role_definition_id=_role_definition_id(vault), principal_id=principal_id, principal_type="ServicePrincipal"
        )
        try:
            with _azure_call(f"grant {CRYPTO_SERVICE_ENCRYPTION_USER_NAME} on {vault.name}"):
                _authorization_client(vault.subscription_id).role_assignments.create(
                    vault.arm_id, _role_assignment_name(vault.arm_id, principal_id), parameters
                )
        except PermanentAzureError as ex:
            if ex.code != "RoleAssignmentExists":  # granted before under another name: nothing to do
                raise
        return
    entry = kv_models.AccessPolicyEntry(
        tenant_id=vault.tenant_id,
        object_id=principal_id,
        permissions=kv_models.Permissions(keys_property=list(CMK_KEY_PERMISSIONS)),
    )
    _update_access_policy(vault, "add", entry, what=f"grant get, wrapKey, unwrapKey on {vault.name}")


def _update_access_policy(vault: VaultInfo, kind: str, entry: kv_models.AccessPolicyEntry, *, what: str) -> None:
    parameters = kv_models.VaultAccessPolicyParameters(
        properties=kv_models.VaultAccessPolicyProperties(access_policies=[entry])
    )
    with _azure_call(what):
        _vault_mgmt_client(vault.subscription_id).vaults.update_access_policy(
            vault.resource_group, vault.name, kind, parameters
        )


def revoke_key_access(vault: VaultInfo, principal_id: str) -> None:
    """Take the principal's key access away: its access policy entry, or on an RBAC vault its role assignments
    of Key Vault Crypto Service Encryption User at the vault's scope. Idempotent."""
    if vault.rbac_authorization:
        client = _authorization_client(vault.subscription_id)
        with _azure_call(f"list the role assignments on {vault.name}"):
            names = {
                _s(a.name)
                for a in client.role_assignments.list_for_scope(vault.arm_id, filter=f"principalId eq '{principal_id}'")
                if _s(a.principal_id).lower() == principal_id.lower()
                and _s(a.scope).lower() == vault.arm_id.lower()
                and _s(a.role_definition_id).lower().endswith(CRYPTO_SERVICE_ENCRYPTION_USER)
            }
        names.add(_role_assignment_name(vault.arm_id, principal_id))
        for name in sorted(names):
            try:
                with _azure_call(f"remove the role assignment on {vault.name}"):
                    client.role_assignments.delete(vault.arm_id, name)
            except PermanentAzureError as ex:
                if not ex.not_found:
                    raise
        return
    current = get_vault(vault.arm_id).key_permissions_of(principal_id)
    if not current:
        return
    # Listing every permission the entry holds removes the whole entry whichever way `remove` is read.
    entry = kv_models.AccessPolicyEntry(
        tenant_id=vault.tenant_id,
        object_id=principal_id,
        permissions=kv_models.Permissions(keys_property=sorted(current)),
    )
    _update_access_policy(vault, "remove", entry, what=f"remove the access policy on {vault.name}")


def key_access_of(vault: VaultInfo, principal_id: str) -> set[str]:
    """The key permissions the principal holds on the vault: from the given vault's access policies (no call),
    or on an RBAC vault get/wrapKey/unwrapKey when a role that carries them is assigned at or above it."""
    if not principal_id:
        return set()
    if not vault.rbac_authorization:
        return vault.key_permissions_of(principal_id)
    client = _authorization_client(vault.subscription_id)
    with _azure_call(f"list the role assignments on {vault.name}"):
        for assignment in client.role_assignments.list_for_scope(
            vault.arm_id, filter=f"principalId eq '{principal_id}'"
        ):
            role = _s(assignment.role_definition_id).rsplit("/", 1)[-1].lower()
            if _s(assignment.principal_id).lower() == principal_id.lower() and role in _ROLES_WITH_CMK_ACCESS:
                return set(CMK_KEY_PERMISSIONS)
    return set()


# Key Vault keys (data plane)


def _vault_label(vault_uri: str) -> str:
    return vault_uri.split("//", 1)[-1].split(".", 1)[0]


def _key_info(key: KeyVaultKey) -> KeyInfo:
    props = key.properties
    jwk = key.key
    modulus = getattr(jwk, "n", None) if jwk is not None else None
    return KeyInfo(
        vault_uri=_normalize_vault_uri(_s(props.vault_url)),
        name=_s(props.name),
        version=_s(props.version),
        kid=_s(key.id),
        kty=_s(key.key_type),
        key_size=int.from_bytes(modulus, "big").bit_length() if modulus else None,
        key_ops=tuple(_s(op) for op in (key.key_operations or [])),
        enabled=bool(props.enabled),
        not_before=props.not_before,
        expires_on=props.expires_on,
        created_on=props.created_on,
        updated_on=props.updated_on,
        recovery_level=_s(props.recovery_level),
    )


def list_keys(vault_uri: str) -> list[KeyInfo]:
    """The vault's keys with their current attributes (no type, size or version: see KeyInfo)."""
    with _azure_call(f"list the keys of {_vault_label(vault_uri)}"):
        return [
            KeyInfo(
                vault_uri=_normalize_vault_uri(vault_uri),
                name=_s(p.name),
                version="",
                kid=_s(p.id),
                kty="",
                key_size=None,
                key_ops=(),
                enabled=bool(p.enabled),
                not_before=p.not_before,
                expires_on=p.expires_on,
                created_on=p.created_on,
                updated_on=p.updated_on,
                recovery_level=_s(p.recovery_level),
            )
            for p in _key_client(vault_uri).list_properties_of_keys()
        ]


def list_key_versions(vault_uri: str, name: str) -> list[KeyVersionInfo]:
    """Every version of the key, in no particular order (Key Vault does not sort them)."""
    with _azure_call(f"list the versions of key {name} in {_vault_label(vault_uri)}"):
        return [
            KeyVersionInfo(
                _s(p.name),
                _s(p.version),
                bool(p.enabled),
                p.not_before,
                p.expires_on,
                p.created_on,
                p.updated_on,
            )
            for p in _key_client(vault_uri).list_properties_of_key_versions(name)
        ]


def get_key(vault_uri: str, name: str, version: str = "") -> KeyInfo:
    """The key's given version, or its current version; PermanentAzureError (not_found) when missing."""
    what = f"read key {name}{'/' + version if version else ''} in {_vault_label(vault_uri)}"
    with _azure_call(what):
        return _key_info(_key_client(vault_uri).get_key(name, version or None))


def get_deleted_key(vault_uri: str, name: str) -> KeyInfo | None:
    """The soft-deleted key (recoverable until `scheduled_purge_on`), or None when no deleted key has the name."""
    try:
        with _azure_call(f"read deleted key {name} in {_vault_label(vault_uri)}"):
            deleted = _key_client(vault_uri).get_deleted_key(name)
    except PermanentAzureError as ex:
        if ex.not_found:
            return None
        raise
    return replace(
        _key_info(deleted),
        deleted=True,
        deleted_on=deleted.deleted_date,
        scheduled_purge_on=deleted.scheduled_purge_date,
    )


def rotate_key(vault_uri: str, name: str) -> KeyInfo:
    """Create a new version of the key in Key Vault; accounts keep their pinned version until updated."""
    with _azure_call(f"rotate key {name} in {_vault_label(vault_uri)}"):
        return _key_info(_key_client(vault_uri).rotate_key(name))


def set_key_enabled(vault_uri: str, name: str, version: str, *, enabled: bool) -> KeyInfo:
    verb = "enable" if enabled else "disable"
    with _azure_call(f"{verb} key {name} in {_vault_label(vault_uri)}"):
        return _key_info(_key_client(vault_uri).update_key_properties(name, version or None, enabled=enabled))


def recover_deleted_key(vault_uri: str, name: str) -> KeyInfo:
    """Recover a soft-deleted key and wait (within the retry budget) until Key Vault serves it again."""
    client = _key_client(vault_uri)
    with _azure_call(f"recover deleted key {name} in {_vault_label(vault_uri)}"):
        client.begin_recover_deleted_key(name)
    deadline = time.monotonic() + settings.AZURE_RETRY_BUDGET_SECONDS
    while True:
        try:
            return get_key(vault_uri, name)
        except PermanentAzureError as ex:
            # Recovery is asynchronous in Key Vault: the key answers 404 until it is back.
            if not ex.not_found or time.monotonic() > deadline:
                if ex.not_found:
                    raise TransientAzureError(
                        "RecoveryInProgress", f"Key {name} is still being recovered; try again shortly.", retry_after=5
                    ) from ex
                raise
            time.sleep(1)


def get_rotation_policy(vault_uri: str, name: str) -> dict[str, Any] | None:
    """The key's rotation policy as JSON (`lifetimeActions`, `expiryTime`), or None when it has none."""
    try:
        with _azure_call(f"read the rotation policy of key {name} in {_vault_label(vault_uri)}"):
            policy = _key_client(vault_uri).get_key_rotation_policy(name)
    except PermanentAzureError as ex:
        if ex.not_found:
            return None
        raise
    actions = [
        {
            "action": _s(a.action),
            "timeAfterCreate": a.time_after_create or "",
            "timeBeforeExpiry": a.time_before_expiry or "",
        }
        for a in (policy.lifetime_actions or [])
    ]
    if not actions and not policy.expires_in:
        return None
    return {"lifetimeActions": actions, "expiryTime": policy.expires_in or ""}
