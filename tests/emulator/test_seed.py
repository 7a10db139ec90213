"""The demo estate: the names docs and tests rely on, idempotency, and --reset keeping the ids."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

from azure.keyvault.keys._shared import http_challenge_cache
from django.core.management import call_command
from django.test import TestCase

from emulator import clock, data_at_rest, keystore
from emulator.identities import PORTAL_PRINCIPAL_ID, derived_id
from emulator.models import CognitiveAccount, Key, Subscription, Tenant, Vault
from emulator.seed import seed


def account(name: str) -> CognitiveAccount:
    return CognitiveAccount.objects.get(name=name)


class SeedTests(TestCase):
    databases = {"default", "emulator"}

    @classmethod
    def setUpTestData(cls):
        http_challenge_cache.clear()
        cls.summary = seed()

    def setUp(self):
        http_challenge_cache.clear()

    def test_it_creates_the_named_tenants_and_subscriptions(self):
        tenants = dict(Tenant.objects.values_list("name", "tenant_id"))
        subscriptions = {s.display_name: s for s in Subscription.objects.all()}

        assert tenants == {"contoso": derived_id("tenant", "contoso"), "fabrikam": derived_id("tenant", "fabrikam")}
        assert set(subscriptions) == {"contoso-prod", "contoso-dev", "fabrikam-prod"}
        assert subscriptions["contoso-prod"].subscription_id == derived_id("subscription", "contoso-prod")
        assert subscriptions["fabrikam-prod"].tenant_id == tenants["fabrikam"]

    def test_it_creates_the_vaults_and_keys(self):
        vaults = {v.name: v for v in Vault.objects.all()}
        prod = vaults["kv-prod-eastus"]
        face_cmk = Key.objects.get(vault=prod, name="face-cmk")
        expiring = Key.objects.get(vault=prod, name="face-cmk-expiring").latest_version()

        assert prod.purge_protection_enabled and prod.soft_delete_enabled and prod.sku == "premium"
        assert face_cmk.versions.count() == 3
        assert Key.objects.filter(vault=prod, name="face-cmk-2").exists()
        assert expiring.expires_at - clock.now() < timedelta(days=10)
        assert Key.objects.get(vault=prod, name="signing-ec").latest_version().kty == "EC"
        assert not vaults["kv-nopurge-eastus"].purge_protection_enabled
        assert vaults["kv-rbac-eastus"].rbac_authorization
        assert vaults["kv-prod-westeurope"].location == "westeurope"
        assert vaults["kv-shared-eastus"].subscription_id == derived_id("subscription", "contoso-dev")
        assert vaults["kv-fabrikam-eastus"].tenant_id == derived_id("tenant", "fabrikam")

    def test_it_gives_the_portal_full_key_permissions_on_every_vault(self):
        for vault in Vault.objects.all():
            with self.subTest(vault=vault.name):
                assert {
                    "get",
                    "create",
                    "update",
                    "delete",
                    "rotate",
                    "wrapKey",
                    "unwrapKey",
                    "recover",
                } <= keystore.permissions_of(vault, PORTAL_PRINCIPAL_ID)

    def test_it_creates_the_accounts_in_their_states(self):
        cmk = account("face-cmk-eastus")
        stale = account("face-stale-eastus")
        face_cmk = Key.objects.get(name="face-cmk")
        versions = [v.version for v in face_cmk.versions.order_by("created_at", "id")]

        assert CognitiveAccount.objects.count() >= 12
        assert account("face-prod-eastus").encryption is None and account("face-prod-eastus").sku == "S0"
        assert account("face-free-eastus").sku == "F0"
        assert account("face-e0-eastus").sku == "E0"
        assert account("face-noid-eastus").identity_type == "None"
        assert account("face-uami-eastus").identity_type == "UserAssigned"
        assert account("face-prod-westeurope").location == "westeurope"
        assert account("face-fabrikam-eastus").identity_tenant_id == derived_id("tenant", "fabrikam")
        assert cmk.key_vault_properties["keyVersion"] == face_cmk.latest_version().version
        assert stale.key_vault_properties["keyVersion"] == versions[1]
        assert cmk.principal_id == derived_id("principal", "contoso-prod/face-cmk-eastus")

    def test_its_data_is_readable_or_not_as_the_names_say(self):
        for name in ("face-cmk-eastus", "face-stale-eastus", "face-e0-eastus", "face-uami-eastus", "face-shared-eastus",
                     "face-fabrikam-eastus", "face-prod-eastus"):  # fmt: skip
            with self.subTest(account=name):
                assert data_at_rest.probe_data_access(account(name))[0] is True
        readable, code, _reason = data_at_rest.probe_data_access(account("face-broken-eastus"))
        assert (readable, code) == (False, "KeyDisabled")

    def test_it_summarizes_what_it_made(self):
        states = {name: state for name, _sku, _source, state, _note in self.summary.accounts}

        assert states["face-broken-eastus"] == "UNREADABLE (KeyDisabled)"
        assert states["face-cmk-eastus"] == "readable"
        assert len(self.summary.created) >= 12 + 6

    def test_it_is_idempotent(self):
        before = {a.name: (a.etag, a.principal_id) for a in CognitiveAccount.objects.all()}
        key_versions = set(Key.objects.values_list("versions__version", flat=True))

        again = seed()

        assert again.created == []
        assert {a.name: (a.etag, a.principal_id) for a in CognitiveAccount.objects.all()} == before
        assert set(Key.objects.values_list("versions__version", flat=True)) == key_versions

    def test_reset_starts_over_with_the_same_ids(self):
        ids = {
            "subscriptions": set(Subscription.objects.values_list("subscription_id", flat=True)),
            "tenants": set(Tenant.objects.values_list("tenant_id", flat=True)),
            "principals": set(CognitiveAccount.objects.values_list("principal_id", flat=True)),
        }
        keystore.update_key_version(Key.objects.get(name="face-cmk-broken").latest_version(), enabled=True)
        old_versions = set(Key.objects.values_list("versions__version", flat=True))

        summary = seed(reset=True)

        assert set(Subscription.objects.values_list("subscription_id", flat=True)) == ids["subscriptions"]
        assert set(Tenant.objects.values_list("tenant_id", flat=True)) == ids["tenants"]
        assert set(CognitiveAccount.objects.values_list("principal_id", flat=True)) == ids["principals"]
        # Key material is new after a reset, and the broken key is broken again.
        assert not old_versions & set(Key.objects.values_list("versions__version", flat=True))
        assert data_at_rest.probe_data_access(account("face-broken-eastus"))[0] is False
        assert len(summary.created) == len(self.summary.created)

    def test_the_command_prints_a_summary(self):
        out = StringIO()

        call_command("seed_emulator", stdout=out)

        text = out.getvalue()
        assert "nothing new to create" in text
        assert "face-broken-eastus" in text and "UNREADABLE (KeyDisabled)" in text
        assert derived_id("subscription", "contoso-prod") in text
