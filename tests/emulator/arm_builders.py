"""Builders for the ARM (Cognitive Services) emulator tests: a small estate, a vault with a CMK key, an
account with an identity that may use it, and the real SDK clients pointed at the emulator."""

from __future__ import annotations

from typing import Any

from azure.keyvault.keys._shared import http_challenge_cache
from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
from azure.mgmt.cognitiveservices.models import Account, AccountProperties, Encryption, KeyVaultProperties
from azure.mgmt.core.polling.arm_polling import ARMPolling
from azure.mgmt.resource.subscriptions import SubscriptionClient
from django.test import TestCase

from emulator import accounts, estate, keystore, sdk_options
from emulator.identities import PORTAL_PRINCIPAL_ID, derived_id
from emulator.models import CognitiveAccount, Key, Vault
from emulator.testing import clear_faults, reset_clock, share_connections

TENANT_ID = derived_id("tenant", "arm-tests")
OTHER_TENANT_ID = derived_id("tenant", "arm-tests-other")
SUBSCRIPTION_ID = derived_id("subscription", "arm-tests")
OTHER_SUBSCRIPTION_ID = derived_id("subscription", "arm-tests-other")
RESOURCE_GROUP = "rg-face"
CMK_PERMISSIONS = ["get", "wrapKey", "unwrapKey"]


def make_estate() -> None:
    tenant = estate.create_tenant("armtests", "ARM tests", tenant_id=TENANT_ID)
    other = estate.create_tenant("armtestsother", "ARM tests (other)", tenant_id=OTHER_TENANT_ID)
    estate.create_subscription("arm-tests", tenant, subscription_id=SUBSCRIPTION_ID)
    estate.create_subscription("arm-tests-other", other, subscription_id=OTHER_SUBSCRIPTION_ID)
    estate.create_resource_group(SUBSCRIPTION_ID, RESOURCE_GROUP, "eastus")
    estate.create_resource_group(OTHER_SUBSCRIPTION_ID, RESOURCE_GROUP, "eastus")


def make_vault(name: str = "kv-arm-eastus", **fields: Any) -> Vault:
    options: dict[str, Any] = {
        "subscription_id": SUBSCRIPTION_ID,
        "resource_group": RESOURCE_GROUP,
        "location": "eastus",
        "tenant_id": TENANT_ID,
        "purge_protection": True,
    }
    options.update(fields)
    vault = keystore.create_vault(name=name, **options)
    if not vault.rbac_authorization:
        keystore.set_access_policy(vault, PORTAL_PRINCIPAL_ID, ["all"])
    return vault


def make_key(vault: Vault, name: str = "cmk", **fields: Any) -> Key:
    return keystore.create_key(vault, name, fields.pop("kty", "RSA"), fields.pop("size", 2048), **fields)


def make_account(
    name: str = "face-test", *, sku: str = "S0", identity: str | None = "SystemAssigned", **fields: Any
) -> CognitiveAccount:
    options: dict[str, Any] = {
        "subscription_id": SUBSCRIPTION_ID,
        "resource_group": RESOURCE_GROUP,
        "location": "eastus",
        "custom_subdomain": name,
    }
    options.update(fields)
    return accounts.create_account(
        name=name, sku=sku, identity={"type": identity} if identity else None, created_by="tests", **options
    )


def grant(vault: Vault, principal_id: str, permissions: list[str] | None = None) -> None:
    keystore.set_access_policy(vault, principal_id, permissions or CMK_PERMISSIONS)


def versions_of(key: Key) -> list[str]:
    return [v.version for v in key.versions.order_by("created_at", "id")]


def cs_client(subscription_id: str = SUBSCRIPTION_ID, **kwargs: Any) -> CognitiveServicesManagementClient:
    options = {**sdk_options(), "retry_total": 0, **kwargs}
    return CognitiveServicesManagementClient(options.pop("credential"), subscription_id, **options)


def subscription_client(**kwargs: Any) -> SubscriptionClient:
    options = {**sdk_options(), "retry_total": 0, **kwargs}
    return SubscriptionClient(options.pop("credential"), **options)


def cmk_update(vault: Vault, key_name: str, version: str, **extra: Any) -> Account:
    props = KeyVaultProperties(key_name=key_name, key_version=version, key_vault_uri=vault.vault_uri, **extra)
    encryption = Encryption(key_source="Microsoft.KeyVault", key_vault_properties=props)
    return Account(properties=AccountProperties(encryption=encryption))


def microsoft_update() -> Account:
    # key_source must be explicit: Encryption() alone means Microsoft.KeyVault (azure-api.md 2.2).
    return Account(properties=AccountProperties(encryption=Encryption(key_source="Microsoft.CognitiveServices")))


class StartOnly(ARMPolling):
    """Sends the request and stops polling: the operation stays in progress for another client to resume
    (pass `polling=StartOnly()`, then `poller.continuation_token()`)."""

    def run(self) -> None:
        return None


class ArmTestCase(TestCase):
    databases = {"default", "emulator"}

    def setUp(self) -> None:
        super().setUp()
        # The SDK caches Key Vault challenges per host for the whole process; each test sees its own 401.
        http_challenge_cache.clear()
        self.addCleanup(http_challenge_cache.clear)
        self.addCleanup(reset_clock)
        self.addCleanup(clear_faults)
        # ARM LRO pollers run in a thread of their own; it must see this TestCase's uncommitted rows.
        self.enterContext(share_connections())
