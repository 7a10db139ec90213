"""Subscriptions and Cognitive Services accounts: reads, identity, encryption (long-running PATCH), probe."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, cast

from azure.core import exceptions as sdk_errors
from azure.core.rest import HttpRequest
from azure.mgmt.cognitiveservices import models as cs_models
from azure.mgmt.core.exceptions import ARMErrorFormat
from azure.mgmt.core.polling.arm_polling import ARMPolling
from django.conf import settings

from encryption.azure.clients import checked_vault_uri, cognitive_client, current_cloud, subscription_client
from encryption.azure.errors import PermanentAzureError, TransientAzureError, azure_call
from encryption.azure.results import (
    KEY_SOURCE_KEY_VAULT,
    KEY_SOURCE_MICROSOFT,
    AccountInfo,
    ProbeResult,
    SubscriptionInfo,
    parse_arm_id,
    text,
)

log = logging.getLogger("encryption.azure_gateway")

# Subscriptions


def list_subscriptions() -> list[SubscriptionInfo]:
    """Every subscription Keyward's identity can see."""
    with azure_call("list subscriptions"):
        return [
            SubscriptionInfo(
                text(s.subscription_id), text(s.display_name), text(s.tenant_id), text(s.state) or "Enabled"
            )
            for s in subscription_client().subscriptions.list()
        ]


# Cognitive Services accounts


def _account_info(account: cs_models.Account) -> AccountInfo:
    arm = parse_arm_id(text(account.id))
    props = account.properties
    identity = account.identity
    encryption = props.encryption if props else None
    vault_props = encryption.key_vault_properties if encryption else None
    # A missing encryption block means Microsoft-managed keys; the SDK's Encryption model defaults keySource to
    # Microsoft.KeyVault when the field is absent, so CMK also needs a key name to count.
    uses_cmk = bool(encryption and text(encryption.key_source) == KEY_SOURCE_KEY_VAULT and vault_props)
    uses_cmk = uses_cmk and bool(vault_props and vault_props.key_name)
    capabilities = {(text(c.name), text(c.value).lower()) for c in (props.capabilities or [])} if props else set()
    user_assigned = {
        uami_id: {"principalId": text(u.principal_id), "clientId": text(u.client_id)}
        for uami_id, u in ((identity.user_assigned_identities or {}) if identity else {}).items()
    }
    return AccountInfo(
        arm_id=text(account.id),
        name=text(account.name),
        subscription_id=arm.subscription_id,
        resource_group=arm.resource_group,
        location=text(account.location),
        kind=text(account.kind),
        sku=text(account.sku.name) if account.sku else "",
        cmk_capable=any(name == "CustomerManagedKey" and value != "false" for name, value in capabilities),
        endpoint=text(props.endpoint) if props else "",
        etag=text(account.etag),
        provisioning_state=text(props.provisioning_state) if props else "",
        identity_type=text(identity.type) if identity and identity.type else "None",
        principal_id=text(identity.principal_id) if identity else "",
        identity_tenant_id=text(identity.tenant_id) if identity else "",
        user_assigned_identities=user_assigned,
        key_source=KEY_SOURCE_KEY_VAULT if uses_cmk else KEY_SOURCE_MICROSOFT,
        key_vault_uri=text(vault_props.key_vault_uri) if uses_cmk and vault_props else "",
        key_name=text(vault_props.key_name) if uses_cmk and vault_props else "",
        key_version=text(vault_props.key_version) if uses_cmk and vault_props else "",
        identity_client_id=text(vault_props.identity_client_id) if uses_cmk and vault_props else "",
    )


def list_accounts(subscription_id: str) -> list[AccountInfo]:
    """Every Cognitive Services account in the subscription."""
    with azure_call(f"list the AI services accounts of subscription {subscription_id}"):
        return [_account_info(a) for a in cognitive_client(subscription_id).accounts.list()]


def get_account(arm_id: str) -> AccountInfo:
    arm = parse_arm_id(arm_id)
    with azure_call(f"read account {arm.name}"):
        return _account_info(cognitive_client(arm.subscription_id).accounts.get(arm.resource_group, arm.name))


class _InlineARMPolling(ARMPolling):
    """ARM polling run inside `initialize`, in the calling thread, for at most AZURE_LRO_WAIT_SECONDS.

    LROPoller polls in a thread of its own unless the polling method is already finished when it starts;
    finishing here keeps request-id collection (a context variable), the emulator's database connections and
    error propagation in the caller's thread, and gives a hook (`on_started`) right after the initial PATCH.
    An operation still running at the deadline surfaces as transient: the task's retry resumes it from the
    continuation token it was handed, instead of running into the task's time limit.
    """

    def __init__(self, interval: float, on_started: Callable[[str], None] | None = None) -> None:
        super().__init__(interval)
        self._on_started = on_started
        self._deadline = 0.0

    def initialize(self, client: Any, initial_response: Any, deserialization_callback: Any) -> None:
        super().initialize(client, initial_response, deserialization_callback)
        if self._on_started is not None and not self.finished():
            self._on_started(self.get_continuation_token())
        self._deadline = time.monotonic() + settings.AZURE_LRO_WAIT_SECONDS
        self.run()

    def update_status(self) -> None:
        if time.monotonic() > self._deadline:
            raise TransientAzureError(
                "OperationStillRunning",
                f"Azure is still applying the change after {settings.AZURE_LRO_WAIT_SECONDS} s; "
                "Keyward will resume following it.",
                retry_after=float(self._timeout or 10),
            )
        super().update_status()


def _update_account(
    arm_id: str,
    body: cs_models.Account,
    *,
    what: str,
    etag: str = "",
    continuation_token: str = "",
    on_continuation: Callable[[str], None] | None = None,
) -> AccountInfo:
    """PATCH the account and follow the long-running operation; with a token, resume polling instead.

    With `etag`, the PATCH carries If-Match: Azure answers 412 if the account changed since it was read."""
    arm = parse_arm_id(arm_id)
    client = cognitive_client(arm.subscription_id)
    interval = float(settings.AZURE_POLLING_INTERVAL)
    if continuation_token:
        try:
            with azure_call(what):
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
    with azure_call(what):
        poller = client.accounts.begin_update(
            arm.resource_group,
            arm.name,
            body,
            polling=_InlineARMPolling(interval, on_continuation),
            headers={"If-Match": etag} if etag else None,
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
        arm_id,
        cs_models.Account(identity=identity),
        what=f"turn on the managed identity of {account.name}",
        etag=account.etag,
    )


def set_customer_managed_key(
    arm_id: str,
    *,
    vault_uri: str,
    key_name: str,
    key_version: str,
    etag: str = "",
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
        etag=etag,
        continuation_token=continuation_token,
        on_continuation=on_continuation,
    )


def set_microsoft_managed_key(
    arm_id: str,
    *,
    etag: str = "",
    continuation_token: str = "",
    on_continuation: Callable[[str], None] | None = None,
) -> AccountInfo:
    """Go back to Microsoft-managed keys; the identity stays on."""
    # keySource is explicit: the SDK's Encryption() defaults it to Microsoft.KeyVault.
    encryption = cs_models.Encryption(key_source=KEY_SOURCE_MICROSOFT)
    body = cs_models.Account(properties=cs_models.AccountProperties(encryption=encryption))
    return _update_account(
        arm_id,
        body,
        what=f"switch {parse_arm_id(arm_id).name} to Microsoft-managed keys",
        etag=etag,
        continuation_token=continuation_token,
        on_continuation=on_continuation,
    )


def probe_data_access(arm_id: str) -> ProbeResult:
    """Whether the account can read its data right now. Only the emulator has such an API; against Azure the
    answer is unknown (readable=None) and the diagnosis infers it from the key's state and access."""
    arm = parse_arm_id(arm_id)
    if settings.AZURE_BACKEND != "emulator":
        return ProbeResult(None, "Azure offers no data-access probe; inferred from the key's state and access.")
    client = cognitive_client(arm.subscription_id)
    request = HttpRequest(
        "POST",
        f"{current_cloud().arm_endpoint}{arm_id}/probeDataAccess",
        params={"api-version": client._config.api_version},
    )
    with azure_call(f"probe data access of {arm.name}"):
        response = client._client.send_request(request)
        if response.status_code != 200:
            response.read()
            raise sdk_errors.HttpResponseError(response=response, error_format=ARMErrorFormat)
        body = response.json()
    return ProbeResult(bool(body.get("readable")), str(body.get("reason", "")), str(body.get("code", "")))
