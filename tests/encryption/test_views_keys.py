from __future__ import annotations

from datetime import timedelta

from django.test import TestCase
from django.urls import reverse
from django.utils import timezone

from encryption import key_inventory
from encryption.models import AuditEvent
from tests.builders import make_account, make_cast, make_key, make_vault, version_names


class KeyTestCase(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.cast = make_cast()
        cls.vault = make_vault("kv-prod-eastus")
        cls.key = make_key(cls.vault, "cmk-prod", versions=3)
        cls.v1, cls.v2, cls.v3 = version_names(cls.key)
        cls.soon = make_key(cls.vault, "cmk-soon", expires_on=timezone.now() + timedelta(days=10))
        cls.unused = make_key(make_vault("kv-spare-westus", location="westus"), "spare")
        cls.current = make_account("face-current", key=cls.key)
        cls.old = make_account("face-old", key=cls.key, version=cls.v1)
        # ARM may spell the vault URI in another case and without the slash; it is the same key.
        cls.floating = make_account(
            "face-floating",
            key=cls.key,
            version="",
            key_vault_uri="HTTPS://KV-PROD-EASTUS.vault.azure.net",
            key_name="CMK-PROD",
        )
        cls.microsoft = make_account("face-mmk")
        cls.gone = make_account("face-gone", key=cls.key, version="f" * 32)
        cls.elsewhere = make_account(
            "face-elsewhere", key=cls.unused, key_vault_uri="https://kv-other-tenant.vault.azure.net/", key_name="x"
        )


class KeyListTests(KeyTestCase):
    def setUp(self):
        self.client.force_login(self.cast["reviewer"])

    def test_it_lists_every_vault_key_and_version_with_the_accounts_using_them(self):
        response = self.client.get(reverse("encryption:key-list"))
        assert response.status_code == 200
        body = response.content.decode()
        for name in ("kv-prod-eastus", "kv-spare-westus", "cmk-prod", "cmk-soon", "spare"):
            assert name in body
        usage = next(k for v in response.context["vaults"] for k in v.keys if k.key == self.key)
        by_version = {v.version.version: [u.account.name for u in v.accounts] for v in usage.versions}
        assert by_version == {self.v1: ["face-old"], self.v2: [], self.v3: ["face-current", "face-floating"]}

    def test_accounts_on_an_old_version_are_highlighted(self):
        usage = key_inventory.key_usage(self.key)
        old = {u.account.name for u in usage.accounts if u.on_old_version}
        # face-gone is pinned to a version that no longer exists: old too, and reported apart.
        assert old == {"face-old", "face-gone"}
        assert [u.account.name for u in usage.unknown_version_accounts] == ["face-gone"]
        body = self.client.get(reverse("encryption:key-list")).content.decode()
        assert 'account-chip account-old">face-old' in body
        assert "version not found" in body

    def test_keys_near_expiry_are_highlighted(self):
        usage = key_inventory.key_usage(self.soon)
        assert usage.near_expiry and not usage.expired
        assert not key_inventory.key_usage(self.key).near_expiry
        body = self.client.get(reverse("encryption:key-list")).content.decode()
        assert "Expires soon" in body

    def test_it_names_accounts_on_keys_it_does_not_see(self):
        body = self.client.get(reverse("encryption:key-list")).content.decode()
        assert "Accounts using keys Keyward does not see" in body and "face-elsewhere" in body

    def test_it_summarises_the_rotation_policy(self):
        policy = {
            "lifetimeActions": [
                {"action": {"type": "Rotate"}, "trigger": {"timeAfterCreate": "P90D"}},
                {"action": {"type": "Notify"}, "trigger": {"timeBeforeExpiry": "P30D"}},
            ],
            "attributes": {"expiryTime": "P2Y"},
        }
        assert key_inventory.rotation_summary(policy) == (
            "Rotate P90D after creation; Notify P30D before expiry; new versions expire after P2Y"
        )
        assert key_inventory.rotation_summary(None) == "No rotation policy"


class KeyDetailTests(KeyTestCase):
    def setUp(self):
        self.client.force_login(self.cast["admin"])

    def test_it_shows_the_blast_radius_of_the_key_and_of_each_version(self):
        response = self.client.get(reverse("encryption:key-detail", args=[self.key.pk]))
        assert response.status_code == 200
        blast = response.context["blast"]
        assert {u.account.name for u in blast.key_accounts} == {
            "face-current",
            "face-old",
            "face-floating",
            "face-gone",
        }
        by_version = {v.version.version: {u.account.name for u in v.accounts} for v in blast.by_version}
        assert by_version[self.v1] == {"face-old"}
        assert by_version[self.v2] == set()
        assert by_version[self.v3] == {"face-current", "face-floating"}
        assert [u.account.name for u in blast.follows_current] == ["face-floating"]
        body = response.content.decode()
        assert "4 accounts would stop reading their data" in body
        assert "none: safe to disable" in body

    def test_an_unused_key_has_no_blast_radius(self):
        body = self.client.get(reverse("encryption:key-detail", args=[self.unused.pk])).content.decode()
        assert "No account uses this key" in body

    def test_it_answers_404_for_an_unknown_key(self):
        assert self.client.get(reverse("encryption:key-detail", args=[99999])).status_code == 404


class KeyPermissionTests(KeyTestCase):
    def test_admins_and_reviewers_can_open_the_inventory(self):
        for who in ("admin", "reviewer"):
            self.client.force_login(self.cast[who])
            assert self.client.get(reverse("encryption:key-list")).status_code == 200
            assert self.client.get(reverse("encryption:key-detail", args=[self.key.pk])).status_code == 200

    def test_help_desk_and_outsiders_cannot(self):
        for who in ("helpdesk", "outsider"):
            self.client.force_login(self.cast[who])
            for url in (reverse("encryption:key-list"), reverse("encryption:key-detail", args=[self.key.pk])):
                assert self.client.get(url).status_code == 403
                assert AuditEvent.objects.filter(
                    action="access.refused", actor=self.cast[who].username, target=url
                ).exists()

    def test_the_pages_are_read_only(self):
        self.client.force_login(self.cast["admin"])
        assert self.client.post(reverse("encryption:key-list")).status_code == 405
        assert self.client.post(reverse("encryption:key-detail", args=[self.key.pk])).status_code == 405
