from __future__ import annotations

from django.test import override_settings

from emulator.testing import clear_faults, inject_faults, request_count, shift_clock
from encryption import azure_gateway as gw
from encryption import operations, services
from encryption.models import Account, AuditEvent, Operation
from tests.encryption.engine_helpers import CONTOSO_DEV, EXPIRED, FABRIKAM, PROD, EngineTestCase, run_to_end


class EnableCmkTests(EngineTestCase):
    def test_it_enables_cmk_and_pins_the_current_version(self):
        key = gw.get_key("https://kv-prod-eastus.vault.azure.net/", "face-cmk")
        op = self.change("enable_cmk", "face-prod-eastus", key_uri=f"{PROD}/face-cmk")
        self.assert_succeeded(op)
        # A versionless URI is resolved when the operation runs, and that version is pinned.
        assert op.params["key_version"] == key.version
        account = self.account("face-prod-eastus")
        assert account.uses_cmk and account.key_version == key.version and account.data_readable is True
        assert account.cmk_tenant_id  # the vault's tenant, to notice a tenant move later
        assert op.state_before["key_source"] == "Microsoft.CognitiveServices"
        assert op.state_after["key_source"] == "Microsoft.KeyVault" and op.state_after["data_readable"] is True
        names = list(op.steps.values_list("name", flat=True))
        assert names == [
            "resolve_version", "preflight", "enable_identity", "grant_access", "set_key", "verify", "probe", "refresh"
        ]  # fmt: skip
        assert all(s.duration_ms is not None and s.finished_at for s in op.steps.all())
        assert op.request_ids and op.patch_attempts == 1 and self.patches("face-prod-eastus") == 1
        actions = list(AuditEvent.objects.filter(operation=op).order_by("seq").values_list("action", flat=True))
        assert actions == ["operation.requested"] + ["operation.step"] * len(names) + ["operation.succeeded"]
        assert {c["state"] for c in op.result["checks"]} <= {"passes", "will_be_done"}

    def test_it_turns_the_identity_on_when_it_is_off(self):
        op = self.change("enable_cmk", "face-noid-eastus", key_uri=f"{PROD}/face-cmk-2")
        self.assert_succeeded(op)
        account = self.account("face-noid-eastus")
        assert account.has_system_identity and account.principal_id and account.data_readable is True
        assert op.steps.get(name="enable_identity").status == "succeeded"
        assert op.patch_attempts == 2 == self.patches("face-noid-eastus")  # identity, then encryption

    def test_it_keeps_user_assigned_identities(self):
        before = self.account("face-uami-eastus").user_assigned_identities
        op = self.change(
            "enable_cmk", "face-uami-eastus", key_uri="https://kv-rbac-eastus.vault.azure.net/keys/face-cmk-rbac"
        )
        self.assert_succeeded(op)
        account = self.account("face-uami-eastus")
        assert account.identity_type == "SystemAssigned, UserAssigned"
        assert set(account.user_assigned_identities) == set(before)

    def test_a_contoso_prod_account_uses_a_key_in_the_contoso_dev_subscription(self):
        op = self.change(
            "enable_cmk",
            "face-prod-eastus",
            key_uri="https://kv-shared-eastus.vault.azure.net/keys/face-cmk-shared",
            vault_subscription_id=CONTOSO_DEV,
        )
        self.assert_succeeded(op)
        account = self.account("face-prod-eastus")
        assert account.key_vault_uri == "https://kv-shared-eastus.vault.azure.net/" and account.data_readable is True

    def test_it_grants_an_rbac_vault_through_a_role_assignment(self):
        op = self.change(
            "enable_cmk", "face-prod-eastus", key_uri="https://kv-rbac-eastus.vault.azure.net/keys/face-cmk-rbac"
        )
        self.assert_succeeded(op)
        assert "Key Vault Crypto Service Encryption User" in op.steps.get(name="grant_access").detail
        account = self.account("face-prod-eastus")
        vault = gw.find_vault("https://kv-rbac-eastus.vault.azure.net/", account.subscription.subscription_id)
        assert gw.key_access_of(vault, account.principal_id) >= {"get", "wrapKey", "unwrapKey"}
        assert account.data_readable is True

    def test_it_stops_on_every_blocking_prerequisite_without_changing_anything(self):
        shift_clock(8 * 86400)  # face-cmk-expiring expires in 7 days
        cases = [
            ("face-free-eastus", f"{PROD}/face-cmk", {}, "sku", "pricing tier"),
            ("face-prod-eastus", "https://kv-nopurge-eastus.vault.azure.net/keys/face-cmk-nopurge", {}, "purge_protection", "urge protection"),
            ("face-prod-westeurope", f"{PROD}/face-cmk", {}, "region", "region"),
            ("face-prod-eastus", "https://kv-fabrikam-eastus.vault.azure.net/keys/face-cmk-fabrikam", {"vault_subscription_id": FABRIKAM}, "tenant", "tenant"),
            ("face-prod-eastus", f"{PROD}/face-cmk-broken", {}, "enabled", "disabled"),
            ("face-prod-eastus", f"{PROD}/face-cmk-expiring", {}, "validity", "xpire"),
            ("face-prod-eastus", f"{PROD}/signing-ec", {}, "key_type", "RSA"),
            ("face-prod-eastus", f"{PROD}/no-such-key/" + "a" * 32, {}, "key", "not"),
            # Versionless: the version is resolved first, and that is where a missing key or vault shows.
            ("face-prod-eastus", f"{PROD}/no-such-key", {}, "KeyNotFound", "not"),
            ("face-prod-eastus", "https://kv-nowhere-eastus.vault.azure.net/keys/face-cmk", {}, "KeyVaultNotFound", "vault"),
        ]  # fmt: skip
        for name, key_uri, extra, check, words in cases:
            with self.subTest(check=check):
                patches = self.patches(name)
                op = self.change("enable_cmk", name, key_uri=key_uri, **extra)
                assert op.status == "failed"
                assert op.error_code == check, (op.error_code, op.reason)
                assert words.lower() in op.reason.lower(), op.reason
                # Checks run before any change: no PATCH, identity left as it was.
                assert self.patches(name) == patches and op.patch_attempts == 0
                event = AuditEvent.objects.get(operation=op, action="operation.failed")
                assert event.outcome == "failed" and event.message == op.reason
        assert not self.account("face-free-eastus").has_system_identity

    def test_changing_away_from_an_unreachable_key_is_blocked(self):
        op = self.change("change_key", "face-broken-eastus", key_uri=f"{PROD}/face-cmk-2")
        assert op.status == "failed" and op.error_code == "current_key"
        assert "Restore access" in op.reason


class IdempotencyTests(EngineTestCase):
    def test_running_an_operation_again_sends_no_second_patch(self):
        op = self.change("enable_cmk", "face-prod-eastus", key_uri=f"{PROD}/face-cmk")
        self.assert_succeeded(op)
        assert self.patches("face-prod-eastus") == 1
        # The worker died after Azure applied everything but before the row was finished: redelivered, every
        # step finds its effect already there.
        Operation.objects.filter(pk=op.pk).update(status="running", finished_at=None, lease_expires_at=EXPIRED)
        op = run_to_end(op)
        self.assert_succeeded(op)
        assert self.patches("face-prod-eastus") == 1 and op.patch_attempts == 1
        latest = op.steps.order_by("-pk")[:5]
        assert {s.status for s in latest if s.name in ("set_key", "grant_access", "enable_identity")} == {"skipped"}
        assert op.steps.filter(name="set_key", status="skipped").get().get_status_display() == "Already done"

    def test_a_finished_operation_delivered_again_is_left_alone(self):
        op = self.change("disable_cmk", "face-cmk-eastus")
        self.assert_succeeded(op)
        requests, events = request_count(), AuditEvent.objects.count()
        operations.run_operation(op.pk)
        assert request_count() == requests and AuditEvent.objects.count() == events

    def test_the_same_change_asked_twice_sends_one_patch(self):
        older = self._older_version()
        self.assert_succeeded(self.change("update_version", "face-cmk-eastus", version=older))
        patches = self.patches("face-cmk-eastus")
        op = self.change("update_version", "face-cmk-eastus", version=older)
        self.assert_succeeded(op)
        assert self.patches("face-cmk-eastus") == patches and op.patch_attempts == 0
        assert op.steps.get(name="set_key").status == "skipped"

    def _older_version(self) -> str:
        versions = gw.list_key_versions("https://kv-prod-eastus.vault.azure.net/", "face-cmk")
        current = self.account("face-cmk-eastus").key_version
        return sorted(v.version for v in versions if v.version != current)[0]

    def test_it_resumes_the_long_running_operation_instead_of_patching_again(self):
        # Every status poll fails for a while: the PATCH went out, its continuation token is on the row.
        inject_faults(503, path_contains="operationstatuses", count=50, retry_after=0)
        op = self.ask("enable_cmk", "face-prod-eastus", key_uri=f"{PROD}/face-cmk")
        with self.assertRaises(gw.TransientAzureError):
            operations.run_operation(op.pk)
        op.refresh_from_db()
        assert op.status == "queued" and op.lro_token and op.patch_attempts == 1
        assert op.deliveries == 0  # a clean release is not a lost delivery
        clear_faults()
        op = run_to_end(op)
        self.assert_succeeded(op)
        assert self.patches("face-prod-eastus") == 1 and op.patch_attempts == 1 and not op.lro_token
        assert "resumed" in op.steps.filter(name="set_key", status="succeeded").get().detail


class KeyChangeTests(EngineTestCase):
    def test_it_updates_an_old_version_to_the_current_one(self):
        current = gw.get_key("https://kv-prod-eastus.vault.azure.net/", "face-cmk").version
        op = self.change("update_version", "face-stale-eastus", version=current)
        self.assert_succeeded(op)
        account = self.account("face-stale-eastus")
        assert account.key_version == current and account.data_readable is True

    def test_an_unknown_version_fails_with_a_reason(self):
        op = self.change("update_version", "face-stale-eastus", version="0" * 32)
        assert op.status == "failed" and op.error_code == "version" and "version" in op.reason.lower()

    def test_it_changes_to_another_key_in_the_same_vault_and_in_another_vault(self):
        op = self.change("change_key", "face-cmk-eastus", key_uri=f"{PROD}/face-cmk-2")
        self.assert_succeeded(op)
        assert op.steps.get(name="grant_access").status == "skipped"  # same vault: access already there
        op = self.change(
            "change_key",
            "face-cmk-eastus",
            key_uri="https://kv-shared-eastus.vault.azure.net/keys/face-cmk-shared",
            vault_subscription_id=CONTOSO_DEV,
        )
        self.assert_succeeded(op)
        assert op.steps.get(name="grant_access").status == "succeeded"  # another vault: granted there
        account = self.account("face-cmk-eastus")
        assert account.key_name == "face-cmk-shared" and account.data_readable is True

    def test_it_rotates_and_moves_the_accounts_on_the_key(self):
        vault = "https://kv-prod-eastus.vault.azure.net/"
        before = {v.version for v in gw.list_key_versions(vault, "face-cmk")}
        op = self.change("rotate_key", "face-cmk-eastus", update_accounts=True)
        self.assert_succeeded(op)
        after = {v.version for v in gw.list_key_versions(vault, "face-cmk")}
        assert len(after - before) == 1
        new = (after - before).pop()
        assert op.result["new_version"] == new
        for name in ("face-cmk-eastus", "face-stale-eastus"):
            account = self.account(name)
            assert account.key_version == new and account.data_readable is True, name
        # Delivered again after the rotation: no second version.
        Operation.objects.filter(pk=op.pk).update(status="running", finished_at=None, lease_expires_at=EXPIRED)
        self.assert_succeeded(run_to_end(op))
        assert {v.version for v in gw.list_key_versions(vault, "face-cmk")} == after

    def test_it_rotates_without_moving_accounts(self):
        version = self.account("face-cmk-eastus").key_version
        op = self.change("rotate_key", None, vault_uri="https://kv-prod-eastus.vault.azure.net/", key_name="face-cmk")
        self.assert_succeeded(op)
        assert self.account("face-cmk-eastus").key_version == version
        assert not op.steps.filter(name__startswith="set_key").exists()


class RevokeAndRestoreTests(EngineTestCase):
    def test_revoking_the_policy_makes_data_unreadable_and_restoring_makes_it_readable(self):
        op = self.change("revoke_access", "face-cmk-eastus", method="access_policy")
        self.assert_succeeded(op)
        account = self.account("face-cmk-eastus")
        assert account.data_readable is False and op.result["readable"] is False
        op = self.change("restore_access", "face-cmk-eastus")
        self.assert_succeeded(op)
        assert op.steps.get(name="grant_access").status == "succeeded"
        assert self.account("face-cmk-eastus").data_readable is True

    def test_revoking_a_role_assignment_on_an_rbac_vault(self):
        self.assert_succeeded(
            self.change(
                "enable_cmk", "face-prod-eastus", key_uri="https://kv-rbac-eastus.vault.azure.net/keys/face-cmk-rbac"
            )
        )
        op = self.change("revoke_access", "face-prod-eastus")
        self.assert_succeeded(op)
        assert "role assignment" in op.steps.get(name="remove_access").detail
        assert self.account("face-prod-eastus").data_readable is False
        self.assert_succeeded(self.change("restore_access", "face-prod-eastus"))
        assert self.account("face-prod-eastus").data_readable is True

    def test_disabling_the_key_and_restoring(self):
        op = self.change("revoke_access", "face-cmk-eastus", method="disable_key")
        self.assert_succeeded(op)
        assert self.account("face-cmk-eastus").data_readable is False
        op = self.change("restore_access", "face-cmk-eastus")
        self.assert_succeeded(op)
        assert op.steps.get(name="enable_key").status == "succeeded"
        assert op.steps.get(name="grant_access").status == "skipped"
        assert self.account("face-cmk-eastus").data_readable is True

    def test_restoring_the_seeded_broken_account(self):
        op = self.change("restore_access", "face-broken-eastus")
        self.assert_succeeded(op)
        assert self.account("face-broken-eastus").data_readable is True

    def test_restoring_recovers_a_soft_deleted_key(self):
        from emulator import keystore
        from emulator.models import Key

        keystore.delete_key(Key.objects.get(name="face-cmk-2"))
        op = self.change("restore_access", "face-e0-eastus")
        self.assert_succeeded(op)
        assert op.steps.get(name="recover_key").status == "succeeded"
        assert self.account("face-e0-eastus").data_readable is True

    def test_restore_with_nothing_to_restore_changes_nothing(self):
        requests = request_count("PATCH") + request_count("PUT")
        op = self.change("restore_access", "face-cmk-eastus")
        self.assert_succeeded(op)
        assert {s.status for s in op.steps.exclude(name__in=["probe", "refresh", "read_account"])} == {"skipped"}
        assert request_count("PATCH") + request_count("PUT") == requests


class DisableCmkTests(EngineTestCase):
    def test_it_goes_back_to_microsoft_managed_keys_and_keeps_the_identity(self):
        op = self.change("disable_cmk", "face-cmk-eastus")
        self.assert_succeeded(op)
        account = self.account("face-cmk-eastus")
        assert not account.uses_cmk and account.has_system_identity and account.data_readable is True
        assert account.cmk_tenant_id == ""


class JobTests(EngineTestCase):
    def job(self, kind: str, name: str | None, **params) -> Operation:
        account = self.account(name) if name else None
        op = services.request_job(actor=services.Actor.from_cli(self.admin), account=account, kind=kind, params=params)
        return run_to_end(op)

    def test_preflight_returns_every_check(self):
        op = self.job("preflight", "face-free-eastus", key_uri=f"{PROD}/face-cmk")
        self.assert_succeeded(op)
        states = {c["id"]: c["state"] for c in op.result["checks"]}
        assert states["sku"] == "blocks" and states["identity"] == "will_be_done" and states["vault"] == "passes"
        assert self.patches("face-free-eastus") == 0

    def test_diagnose_explains_an_unreadable_account(self):
        op = self.job("diagnose", "face-broken-eastus")
        self.assert_succeeded(op)
        assert op.result["readable"] is False and op.result["causes"]

    def test_sync_and_refresh(self):
        Account.objects.filter(name="face-cmk-eastus").update(data_readable=None)
        self.assert_succeeded(self.job("refresh", "face-cmk-eastus"))
        assert self.account("face-cmk-eastus").data_readable is True
        op = self.job("sync", None)
        self.assert_succeeded(op)
        assert "accounts" in op.steps.get(name="sync").detail


class FailureTests(EngineTestCase):
    def test_transient_errors_past_the_retries_fail_the_operation_with_a_reason(self):
        inject_faults(503, host="management.azure.com", retry_after=0)
        op = run_to_end(self.ask("disable_cmk", "face-cmk-eastus"), attempts=2)
        assert op.status == "failed" and "temporary errors" in op.reason
        assert AuditEvent.objects.filter(operation=op, action="operation.failed").exists()

    @override_settings(OPERATION_MAX_DELIVERIES=2)
    def test_an_operation_whose_workers_keep_dying_fails(self):
        op = self.ask("disable_cmk", "face-cmk-eastus")
        Operation.objects.filter(pk=op.pk).update(status="running", deliveries=2, lease_expires_at=EXPIRED)
        op.steps.create(name="set_microsoft_key", label="Switch")  # the step the dead worker was in
        op = run_to_end(op)
        assert op.status == "failed" and op.error_code == "TooManyDeliveries"
        assert "stopped 3 times" in op.reason
        assert op.steps.get().status == "failed" and "Interrupted" in op.steps.get().detail
        assert self.patches("face-cmk-eastus") == 0

    def test_a_running_operation_with_a_live_lease_is_left_to_its_worker(self):
        op = self.ask("disable_cmk", "face-cmk-eastus")
        assert op.claim()
        operations.run_operation(op.pk)
        op.refresh_from_db()
        assert op.status == "running" and op.deliveries == 1 and not op.steps.exists()


@override_settings(AZURE_RETRY_TOTAL=6)
class FlakyAzureTests(EngineTestCase):
    def test_every_operation_succeeds_with_a_fifth_of_requests_failing(self):
        # A fifth of every request fails, the emulated service's own Key Vault calls included: those surface
        # as a retryable 503 (KeyVaultUnavailable) or keep the LRO in progress, never as a refusal.
        inject_faults(503, probability=0.2, retry_after=0)
        inject_faults(429, probability=0.05, retry_after=1, host="management.azure.com")
        runs = [
            ("enable_cmk", "face-prod-eastus", {"key_uri": f"{PROD}/face-cmk"}),
            ("update_version", "face-stale-eastus", {"version": self.account("face-cmk-eastus").key_version}),
            ("change_key", "face-e0-eastus", {"key_uri": f"{PROD}/face-cmk"}),
            ("revoke_access", "face-cmk-eastus", {"method": "disable_key"}),
            ("restore_access", "face-cmk-eastus", {}),
            ("rotate_key", "face-cmk-eastus", {"update_accounts": True}),
            ("disable_cmk", "face-prod-eastus", {}),
        ]
        for kind, name, params in runs:
            with self.subTest(kind=kind):
                op = run_to_end(self.ask(kind, name, **params), attempts=20)
                self.assert_succeeded(op)
        assert request_count() > 0
