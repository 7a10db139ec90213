"""Shared setup for tests that read the seeded emulator through the gateway (sync, preflight, diagnosis),
and the changes "someone else" makes in Azure behind Keyward's back, made with the real SDK clients."""

from __future__ import annotations

from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
from azure.mgmt.cognitiveservices import models as cs_models
from django.test import TestCase

from emulator import estate, keystore, sdk_options, testing
from emulator.models import Key as EmuKey
from emulator.seed import seed, subscription_id
from encryption import azure_gateway as gw

PROD = subscription_id("contoso-prod")
DEV = subscription_id("contoso-dev")
FABRIKAM = subscription_id("fabrikam-prod")
KV_PROD = "https://kv-prod-eastus.vault.azure.net/"


def account_id(name: str, sub: str = PROD, rg: str = "rg-face-eastus") -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.CognitiveServices/accounts/{name}"


class SeededTestCase(TestCase):
    databases = {"default", "emulator"}

    @classmethod
    def setUpTestData(cls):
        seed()

    def setUp(self):
        testing.clear_faults()
        gw.reset_clients()
        self.addCleanup(gw.reset_clients)


# Changes made outside Keyward


def turn_identity_off(arm_id: str) -> None:
    """PATCH the identity to None as someone in the Azure portal would (the SDK polls in its own thread)."""
    arm = gw.parse_arm_id(arm_id)
    client = CognitiveServicesManagementClient(subscription_id=arm.subscription_id, polling_interval=0, **sdk_options())
    body = cs_models.Account(identity=cs_models.Identity(type="None"))
    with testing.share_connections():
        client.accounts.begin_update(arm.resource_group, arm.name, body).result()


def disable_key_versions(vault: str, name: str, version: str = "") -> None:
    key = EmuKey.objects.get(vault__name=vault, name=name)
    for row in key.versions.all():
        if not version or row.version == version:
            keystore.update_key_version(row, enabled=False)


def delete_key(vault: str, name: str) -> None:
    keystore.delete_key(EmuKey.objects.get(vault__name=vault, name=name))


def move_to_tenant(subscription: str, tenant: str) -> None:
    estate.move_subscription(estate.resolve_subscription(subscription), estate.resolve_tenant(tenant))
