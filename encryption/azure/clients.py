"""Building the SDK clients: clouds, credential and transport by backend, retry budget, request ids.

Backends (settings.AZURE_BACKEND): `emulator` builds every client with `emulator.sdk_options()` (its
credential and in-process transport); `azure` uses DefaultAzureCredential and the real hosts of
settings.AZURE_CLOUD. Nothing else differs: the same factory and pipeline options serve both. Clients are
built lazily and cached per process, per subscription or vault and per settings.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy
from azure.identity import DefaultAzureCredential
from azure.keyvault.keys import KeyClient
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from azure.mgmt.resource.subscriptions import SubscriptionClient
from django.conf import settings
from django.utils import timezone

from encryption.azure.errors import PermanentAzureError

log = logging.getLogger("encryption.azure_gateway")

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


def credential_and_transport() -> dict[str, Any]:
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
    options = credential_and_transport()
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


def subscription_client() -> SubscriptionClient:
    return cast(SubscriptionClient, _cached("subscriptions", build=lambda: SubscriptionClient(**_arm_options())))


def cognitive_client(subscription_id: str) -> CognitiveServicesManagementClient:
    def build() -> CognitiveServicesManagementClient:
        options = _arm_options()
        return CognitiveServicesManagementClient(options.pop("credential"), subscription_id, **options)

    return cast(CognitiveServicesManagementClient, _cached("cognitive", subscription_id.lower(), build=build))


def vault_mgmt_client(subscription_id: str) -> KeyVaultManagementClient:
    def build() -> KeyVaultManagementClient:
        options = _arm_options()
        return KeyVaultManagementClient(options.pop("credential"), subscription_id, **options)

    return cast(KeyVaultManagementClient, _cached("keyvault-mgmt", subscription_id.lower(), build=build))


def authorization_client(subscription_id: str) -> AuthorizationManagementClient:
    def build() -> AuthorizationManagementClient:
        options = _arm_options()
        return AuthorizationManagementClient(options.pop("credential"), subscription_id, **options)

    return cast(AuthorizationManagementClient, _cached("authorization", subscription_id.lower(), build=build))


def key_client(vault_uri: str) -> KeyClient:
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
