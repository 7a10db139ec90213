"""Diagnosis: why a seeded account can or cannot read its data, in plain language."""

from __future__ import annotations

import dataclasses
from unittest import mock

from django.utils import timezone

from encryption import azure_gateway as gw
from encryption import diagnosis, sync
from encryption.models import Account, Operation, Subscription
from tests.encryption.azure_helpers import (
    PROD,
    SeededTestCase,
    account_id,
    delete_key,
    disable_key_versions,
    move_to_tenant,
    turn_identity_off,
)


def codes(found: diagnosis.Diagnosis) -> list[str]:
    return [c.code for c in found.causes]


class DiagnosisTestCase(SeededTestCase):
    @classmethod
    def setUpTestData(cls):
        super().setUpTestData()
        sync.sync_estate()

    def diagnose(self, name: str) -> diagnosis.Diagnosis:
        return diagnosis.diagnose(Account.objects.get(name=name))


class SeededDiagnosisTests(DiagnosisTestCase):
    def test_it_names_the_disabled_key(self):
        found = self.diagnose("face-broken-eastus")
        assert found.readable is False
        first = found.causes[0]
        assert first.code == "key_disabled"
        assert first.summary == "Key face-cmk-broken in kv-prod-eastus is disabled"
        assert "owner of key vault kv-prod-eastus" in first.who and "Restore access" in first.action
        assert found.as_dict()["causes"] == [dataclasses.asdict(c) for c in found.causes]

    def test_it_finds_nothing_wrong_with_a_healthy_account(self):
        found = self.diagnose("face-cmk-eastus")
        assert found.readable is True and found.causes == []

    def test_it_checks_the_user_assigned_identity_that_encryption_uses(self):
        # face-uami-eastus has no system identity: its key is reached through a user-assigned one (RBAC vault).
        found = self.diagnose("face-uami-eastus")
        assert found.readable is True and found.causes == []

    def test_it_calls_microsoft_managed_keys_readable(self):
        found = self.diagnose("face-prod-eastus")
        assert found.readable is True and found.causes == []

    def test_it_reports_an_account_gone_from_azure(self):
        Account.objects.create(
            arm_id=account_id("face-gone-eastus"),
            name="face-gone-eastus",
            subscription=Subscription.objects.get(subscription_id=PROD),
            resource_group="rg-face-eastus",
            location="eastus",
            sku="S0",
        )
        found = self.diagnose("face-gone-eastus")
        assert found.readable is False and codes(found) == ["account_missing"]


class ChangedElsewhereDiagnosisTests(DiagnosisTestCase):
    def test_it_explains_an_identity_turned_off(self):
        turn_identity_off(account_id("face-cmk-eastus"))
        found = self.diagnose("face-cmk-eastus")
        assert found.readable is False
        assert codes(found)[0] == "identity_off"
        assert found.causes[0].summary == "The managed identity of face-cmk-eastus is turned off"

    def test_it_explains_a_tenant_move(self):
        move_to_tenant("contoso-prod", "fabrikam")
        found = self.diagnose("face-cmk-eastus")
        assert found.readable is False
        assert "tenant_changed" in codes(found)
        cause = next(c for c in found.causes if c.code == "tenant_changed")
        assert "Managed identities do not move across tenants" in cause.detail

    def test_it_explains_removed_access(self):
        info = gw.get_account(account_id("face-cmk-eastus"))
        vault = gw.find_vault("https://kv-prod-eastus.vault.azure.net/", PROD)
        assert vault is not None
        gw.revoke_key_access(vault, info.principal_id)
        found = self.diagnose("face-cmk-eastus")
        assert found.readable is False and codes(found) == ["access_missing"]
        assert "get, wrapKey, unwrapKey" in found.causes[0].detail

    def test_it_explains_a_deleted_key_that_can_be_recovered(self):
        delete_key("kv-prod-eastus", "face-cmk-2")
        found = self.diagnose("face-e0-eastus")
        assert found.readable is False and codes(found) == ["key_deleted"]
        assert found.causes[0].summary == "Key face-cmk-2 in kv-prod-eastus was deleted"
        assert "can be recovered until" in found.causes[0].detail

    def test_it_shows_the_change_sync_found(self):
        disable_key_versions("kv-prod-eastus", "face-cmk-2")
        sync.sync_estate()
        found = self.diagnose("face-e0-eastus")
        assert codes(found) == ["key_disabled", "external_change"]
        assert "face-cmk-2 in kv-prod-eastus was disabled" in found.causes[1].detail

    def test_it_shows_the_last_failed_operation(self):
        Operation.objects.create(
            kind=Operation.Kind.ENABLE_CMK,
            status=Operation.Status.FAILED,
            account=Account.objects.get(name="face-prod-eastus"),
            actor="alice",
            reason="A prerequisite is not met. Purge protection on the vault: ...",
            finished_at=timezone.now(),
        )
        found = self.diagnose("face-prod-eastus")
        assert found.readable is True and codes(found) == ["last_operation_failed"]
        assert found.causes[0].detail.startswith("A prerequisite is not met.")


class InferredDiagnosisTests(DiagnosisTestCase):
    # Real Azure has no data-access probe (readable=None): the emulator cannot answer that way, so the
    # probe is patched here to take the inference path.
    def no_probe(self):
        return mock.patch.object(gw, "probe_data_access", return_value=gw.ProbeResult(None, "no probe"))

    def test_it_infers_unreadable_from_a_disabled_key(self):
        with self.no_probe():
            found = self.diagnose("face-broken-eastus")
        assert found.readable is False and codes(found) == ["key_disabled"]

    def test_it_infers_readable_when_nothing_blocks(self):
        with self.no_probe():
            found = self.diagnose("face-cmk-eastus")
        assert found.readable is True
