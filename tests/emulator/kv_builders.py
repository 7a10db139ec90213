"""Builders for Key Vault emulator tests: a tenant, subscription and resource group, vaults, and SDK
clients pointed at the emulator."""

from __future__ import annotations

from typing import Any

from azure.keyvault.keys import KeyClient
from azure.keyvault.keys._shared import http_challenge_cache
from azure.keyvault.keys.crypto import CryptographyClient
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.keyvault import KeyVaultManagementClient
from django.test import TestCase

from emulator import estate, keystore, sdk_options
from emulator.identities import PORTAL_PRINCIPAL_ID, derived_id
from emulator.models import Vault
from emulator.testing import clear_faults, reset_clock

TENANT_ID = derived_id("tenant", "kv-tests")
OTHER_TENANT_ID = derived_id("tenant", "kv-tests-other")
SUBSCRIPTION_ID = derived_id("subscription", "kv-tests")
RESOURCE_GROUP = "rg-keys"
FULL_KEY_ACCESS = ["all"]


def make_estate() -> None:
    tenant = estate.create_tenant("kvtests", tenant_id=TENANT_ID)
    estate.create_tenant("kvtestsother", tenant_id=OTHER_TENANT_ID)
    estate.create_subscription("kv-tests", tenant, subscription_id=SUBSCRIPTION_ID)
    estate.create_resource_group(SUBSCRIPTION_ID, RESOURCE_GROUP, "eastus")


def make_vault(name: str = "kv-test-eastus", *, portal_access: bool = True, **fields: Any) -> Vault:
    options: dict[str, Any] = {
        "subscription_id": SUBSCRIPTION_ID,
        "resource_group": RESOURCE_GROUP,
        "location": "eastus",
        "tenant_id": TENANT_ID,
        "purge_protection": True,
    }
    options.update(fields)
    vault = keystore.create_vault(name=name, **options)
    if portal_access and not vault.rbac_authorization:
        keystore.set_access_policy(vault, PORTAL_PRINCIPAL_ID, FULL_KEY_ACCESS)
    return vault


def key_client(vault: Vault, identity: str | None = None, **kwargs: Any) -> KeyClient:
    options = {**sdk_options(identity), **kwargs}
    return KeyClient(vault.vault_uri, options.pop("credential"), **options)


def crypto_client(key_id: str, identity: str | None = None, **kwargs: Any) -> CryptographyClient:
    options = {**sdk_options(identity), **kwargs}
    return CryptographyClient(key_id, options.pop("credential"), **options)


def vault_mgmt(identity: str | None = None, **kwargs: Any) -> KeyVaultManagementClient:
    options = {**sdk_options(identity), **kwargs}
    return KeyVaultManagementClient(options.pop("credential"), SUBSCRIPTION_ID, **options)


def authorization_mgmt(**kwargs: Any) -> AuthorizationManagementClient:
    options = {**sdk_options(), **kwargs}
    return AuthorizationManagementClient(options.pop("credential"), SUBSCRIPTION_ID, **options)


class EmulatorTestCase(TestCase):
    databases = {"default", "emulator"}

    def setUp(self) -> None:
        super().setUp()
        # The SDK caches Key Vault challenges process-wide (per host); a test must see its own first 401.
        http_challenge_cache.clear()
        self.addCleanup(http_challenge_cache.clear)
        self.addCleanup(reset_clock)
        self.addCleanup(clear_faults)
