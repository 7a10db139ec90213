"""Sync reads the seeded emulator into the mirror and notices changes made outside Keyward."""

from __future__ import annotations

from django.utils import timezone

from emulator import keystore
from emulator.models import Key as EmuKey
from encryption import sync
from encryption.actors import Actor
from encryption.models import (
    KEY_SOURCE_KEY_VAULT,
    Account,
    AuditEvent,
    Key,
    KeyVault,
    KeyVersion,
    Operation,
    Subscription,
)
from tests.encryption.azure_helpers import (
    DEV,
    KV_PROD,
    PROD,
    SeededTestCase,
    account_id,
    delete_key,
    disable_key_versions,
    move_to_tenant,
    turn_identity_off,
)


def external_changes(name: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=sync.EXTERNAL_CHANGE, target=account_id(name)).order_by("seq"))


class SyncEstateTests(SeededTestCase):
    def test_it_fills_the_mirror(self):
        summary = sync.sync_estate(Actor.system("test"))
        assert summary.subscriptions == 3 and summary.accounts == 12 and summary.vaults == 6
        assert "12 accounts" in str(summary)
        assert set(Subscription.objects.values_list("display_name", flat=True)) == {
            "contoso-prod",
            "contoso-dev",
            "fabrikam-prod",
        }
        vault = KeyVault.objects.get(name="kv-prod-eastus")
        assert vault.vault_uri == KV_PROD and vault.purge_protection_enabled and vault.last_synced_at
        assert not KeyVault.objects.get(name="kv-nopurge-eastus").purge_protection_enabled
        assert KeyVault.objects.get(name="kv-rbac-eastus").rbac_authorization
        key = Key.objects.get(vault=vault, name="face-cmk")
        assert key.kty == "RSA" and key.key_size == 2048 and len(key.current_version) == 32
        assert key.versions.count() == 3 and "wrapKey" in key.key_ops
        assert Key.objects.get(vault=vault, name="signing-ec").kty == "EC"

    def test_it_records_encryption_and_data_access_of_accounts(self):
        sync.sync_estate()
        cmk = Account.objects.get(name="face-cmk-eastus")
        assert cmk.uses_cmk and cmk.key_name == "face-cmk" and cmk.key_vault_uri == KV_PROD
        assert cmk.data_readable is True and cmk.last_synced_at and cmk.probed_at
        # First sight of an account on CMK sets the tenant baseline a later tenant move departs from.
        assert cmk.cmk_tenant_id == cmk.identity_tenant_id == cmk.subscription.tenant_id
        broken = Account.objects.get(name="face-broken-eastus")
        assert broken.data_readable is False and broken.data_access_reason
        mmk = Account.objects.get(name="face-prod-eastus")
        assert not mmk.uses_cmk and mmk.data_readable is True and mmk.cmk_tenant_id == ""
        assert not Account.objects.get(name="face-free-eastus").cmk_capable

    def test_it_records_no_change_when_nothing_changed(self):
        sync.sync_estate()
        again = sync.sync_estate()
        assert again.external_changes == 0
        assert not AuditEvent.objects.filter(action=sync.EXTERNAL_CHANGE).exists()

    def test_it_records_a_key_disabled_in_the_vault(self):
        sync.sync_estate()
        version = Account.objects.get(name="face-cmk-eastus").key_version
        disable_key_versions("kv-prod-eastus", "face-cmk", version)
        summary = sync.sync_estate()
        assert summary.external_changes == 1  # face-stale-eastus uses another version of the same key
        (event,) = external_changes("face-cmk-eastus")
        assert event.before == {"key_enabled": True} and event.after == {"key_enabled": False}
        assert "key face-cmk in kv-prod-eastus was disabled" in event.message
        assert event.key_id.endswith(f"/keys/face-cmk/{version}")
        assert KeyVersion.objects.get(key__name="face-cmk", version=version).enabled is False
        assert Account.objects.get(name="face-cmk-eastus").data_readable is False

    def test_it_records_an_identity_turned_off(self):
        sync.sync_estate()
        turn_identity_off(account_id("face-cmk-eastus"))
        sync.sync_estate()
        (event,) = external_changes("face-cmk-eastus")
        assert event.before is not None and event.after is not None
        assert event.before["identity_type"] == "SystemAssigned" and event.after["identity_type"] == "None"
        assert "the managed identity changed from SystemAssigned to None" in event.message
        assert event.outcome == AuditEvent.Outcome.INFO

    def test_it_records_a_tenant_move(self):
        sync.sync_estate()
        before = Account.objects.get(name="face-cmk-eastus")
        move_to_tenant("contoso-prod", "fabrikam")
        sync.sync_estate()
        (event,) = external_changes("face-cmk-eastus")
        assert event.before is not None and event.after is not None
        assert event.before["identity_tenant_id"] == before.identity_tenant_id
        assert event.after["identity_tenant_id"] != before.identity_tenant_id
        account = Account.objects.get(name="face-cmk-eastus")
        # The baseline stays: it is how the diagnosis knows the tenant changed since CMK was set.
        assert account.cmk_tenant_id == before.cmk_tenant_id != account.identity_tenant_id

    def test_it_marks_a_soft_deleted_key_and_removes_a_purged_one(self):
        sync.sync_estate()
        delete_key("kv-prod-eastus", "face-cmk-2")
        nopurge = EmuKey.objects.get(vault__name="kv-nopurge-eastus", name="face-cmk-nopurge")
        keystore.delete_key(nopurge)
        keystore.purge_key(EmuKey.objects.get(vault__name="kv-nopurge-eastus", name="face-cmk-nopurge"))
        sync.sync_estate()
        assert Key.objects.get(vault__name="kv-prod-eastus", name="face-cmk-2").deleted
        assert not Key.objects.filter(name="face-cmk-nopurge").exists()
        (event,) = external_changes("face-e0-eastus")
        assert event.after == {"key_deleted": True} and "was deleted" in event.message

    def test_it_ignores_a_change_keyward_is_making(self):
        sync.sync_estate()
        account = Account.objects.get(name="face-cmk-eastus")
        Operation.objects.create(
            kind=Operation.Kind.REVOKE_ACCESS, status=Operation.Status.RUNNING, account=account, actor="alice"
        )
        disable_key_versions("kv-prod-eastus", "face-cmk", account.key_version)
        sync.sync_estate()
        assert external_changes("face-cmk-eastus") == []
        assert Account.objects.get(pk=account.pk).data_readable is False  # the mirror still follows Azure

    def test_it_ignores_a_change_keyward_finished_since_the_last_sync(self):
        sync.sync_estate()
        account = Account.objects.get(name="face-cmk-eastus")
        Operation.objects.create(
            kind=Operation.Kind.DISABLE_CMK,
            status=Operation.Status.SUCCEEDED,
            account=account,
            actor="alice",
            finished_at=timezone.now(),
        )
        disable_key_versions("kv-prod-eastus", "face-cmk", account.key_version)
        sync.sync_estate()
        assert external_changes("face-cmk-eastus") == []


class SyncAccountTests(SeededTestCase):
    def test_it_refreshes_one_account_with_its_key(self):
        sync.sync_estate()
        disable_key_versions("kv-prod-eastus", "face-cmk-2")
        account = sync.sync_account(Account.objects.get(name="face-e0-eastus"))
        assert account.data_readable is False
        assert not Key.objects.get(name="face-cmk-2").versions.get().enabled
        (event,) = external_changes("face-e0-eastus")
        assert "key face-cmk-2 in kv-prod-eastus was disabled" in event.message

    def test_it_accepts_an_id_and_can_stay_quiet(self):
        sync.sync_estate()
        account = Account.objects.get(name="face-cmk-eastus")
        turn_identity_off(account.arm_id)
        refreshed = sync.sync_account(account.pk, record_changes=False)
        assert refreshed.identity_type == "None" and refreshed.principal_id == ""
        assert external_changes("face-cmk-eastus") == []

    def test_it_finds_the_vault_in_a_subscription_the_mirror_has_not_listed(self):
        # Only the account's row exists: the vault lives in contoso-dev, which no sync has read yet.
        subscription = Subscription.objects.create(subscription_id=PROD, display_name="contoso-prod", tenant_id="")
        account = Account.objects.create(
            arm_id=account_id("face-shared-eastus"),
            name="face-shared-eastus",
            subscription=subscription,
            resource_group="rg-face-eastus",
            location="eastus",
            sku="S0",
        )
        refreshed = sync.sync_account(account)
        assert refreshed.key_source == KEY_SOURCE_KEY_VAULT and refreshed.key_name == "face-cmk-shared"
        assert refreshed.data_readable is True and refreshed.cmk_tenant_id
        vault = KeyVault.objects.get(name="kv-shared-eastus")
        assert vault.subscription.subscription_id == DEV
        assert Key.objects.get(vault=vault, name="face-cmk-shared").versions.count() == 1
        assert external_changes("face-shared-eastus") == []  # never synced before: nothing to compare
