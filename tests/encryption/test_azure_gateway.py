"""The Azure gateway against the seeded emulator, through the real SDK clients (contract tests)."""

from __future__ import annotations

from django.test import TestCase, override_settings

from emulator import keystore, testing
from emulator.credential import EmulatorCredential
from emulator.models import Key as EmuKey
from emulator.models import Vault as EmuVault
from emulator.seed import seed, subscription_id
from emulator.transport import EmulatorTransport
from encryption import azure_gateway as gw

PROD = subscription_id("contoso-prod")
DEV = subscription_id("contoso-dev")
FABRIKAM = subscription_id("fabrikam-prod")
KV_PROD = "https://kv-prod-eastus.vault.azure.net/"
KV_RBAC = "https://kv-rbac-eastus.vault.azure.net/"
STRANGER = "44444444-4444-4444-8444-444444444444"  # a principal the seed never granted anything


class WorkerDied(Exception):
    """Stands for a worker killed right after the initial PATCH left."""


def account_id(name: str, sub: str = PROD, rg: str = "rg-face-eastus") -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.CognitiveServices/accounts/{name}"


class GatewayTestCase(TestCase):
    databases = {"default", "emulator"}

    @classmethod
    def setUpTestData(cls):
        seed()

    def setUp(self):
        testing.clear_faults()
        testing.reset_request_log()
        gw.reset_clients()
        self.addCleanup(gw.reset_clients)

    def vault(self, name: str) -> gw.VaultInfo:
        found = [v for v in gw.list_vaults(PROD) + gw.list_vaults(DEV) if v.name == name]
        assert len(found) == 1
        return found[0]


class SubscriptionAndAccountTests(GatewayTestCase):
    def test_it_lists_subscriptions_with_their_tenants(self):
        subs = {s.display_name: s for s in gw.list_subscriptions()}
        assert set(subs) >= {"contoso-prod", "contoso-dev", "fabrikam-prod"}
        assert subs["contoso-prod"].subscription_id == PROD
        assert subs["contoso-prod"].tenant_id == subs["contoso-dev"].tenant_id != subs["fabrikam-prod"].tenant_id

    def test_it_lists_accounts_with_their_encryption(self):
        accounts = {a.name: a for a in gw.list_accounts(PROD)}
        cmk = accounts["face-cmk-eastus"]
        assert cmk.uses_cmk and cmk.key_name == "face-cmk" and cmk.key_vault_uri == KV_PROD
        assert len(cmk.key_version) == 32
        assert not accounts["face-prod-eastus"].uses_cmk
        assert accounts["face-prod-eastus"].cmk_capable and not accounts["face-free-eastus"].cmk_capable
        assert accounts["face-prod-eastus"].has_system_identity
        assert accounts["face-prod-eastus"].principal_id and accounts["face-prod-eastus"].identity_tenant_id

    def test_it_reads_one_account(self):
        info = gw.get_account(account_id("face-uami-eastus"))
        assert info.name == "face-uami-eastus" and info.subscription_id == PROD
        assert info.identity_type == "UserAssigned" and len(info.user_assigned_identities) == 1
        assert info.identity_client_id  # CMK through the user-assigned identity

    def test_it_turns_the_identity_on_once(self):
        arm_id = account_id("face-noid-eastus")
        info = gw.enable_system_identity(arm_id)
        assert info.identity_type == "SystemAssigned" and info.principal_id
        patches = testing.request_count("PATCH", "face-noid-eastus")
        assert patches == 1
        again = gw.enable_system_identity(arm_id)
        # Already on: nothing is sent, and the principal is the same identity.
        assert testing.request_count("PATCH", "face-noid-eastus") == patches
        assert again.principal_id == info.principal_id

    def test_it_keeps_user_assigned_identities_when_turning_on_the_system_one(self):
        arm_id = account_id("face-uami-eastus")
        before = gw.get_account(arm_id)
        info = gw.enable_system_identity(arm_id)
        assert info.identity_type == "SystemAssigned, UserAssigned"
        assert set(info.user_assigned_identities) == set(before.user_assigned_identities)
        assert info.principal_id


class EncryptionUpdateTests(GatewayTestCase):
    def enable_cmk(self, name: str, **kwargs):
        arm_id = account_id(name)
        info = gw.enable_system_identity(arm_id)
        vault = self.vault("kv-prod-eastus")
        gw.grant_key_access(vault, info.principal_id)
        key = gw.get_key(KV_PROD, "face-cmk")
        return gw.set_customer_managed_key(
            arm_id, vault_uri=KV_PROD, key_name="face-cmk", key_version=key.version, **kwargs
        )

    def test_it_sets_a_customer_managed_key_and_reports_the_token(self):
        tokens: list[str] = []
        info = self.enable_cmk("face-prod-eastus", on_continuation=tokens.append)
        assert info.uses_cmk and info.key_name == "face-cmk" and info.provisioning_state == "Succeeded"
        # The token was handed over right after the PATCH, before polling ended.
        assert len(tokens) == 1 and tokens[0]
        assert gw.probe_data_access(info.arm_id).readable is True

    def test_it_resumes_polling_from_a_token_without_sending_again(self):
        tokens: list[str] = []
        self.enable_cmk("face-prod-eastus", on_continuation=tokens.append)
        patches = testing.request_count("PATCH", "face-prod-eastus")
        info = gw.set_customer_managed_key(
            account_id("face-prod-eastus"),
            vault_uri=KV_PROD,
            key_name="face-cmk",
            key_version="0" * 32,  # ignored: a resumed poll sends no body
            continuation_token=tokens[0],
        )
        assert testing.request_count("PATCH", "face-prod-eastus") == patches
        assert info.uses_cmk and info.key_version != "0" * 32

    def test_it_resumes_an_operation_interrupted_after_the_patch(self):
        tokens: list[str] = []

        def worker_dies(token: str) -> None:
            tokens.append(token)
            raise WorkerDied

        with self.assertRaises(WorkerDied):
            self.enable_cmk("face-prod-eastus", on_continuation=worker_dies)
        assert gw.get_account(account_id("face-prod-eastus")).provisioning_state == "Accepted"
        info = self.enable_cmk("face-prod-eastus", continuation_token=tokens[0])
        # The retried task polled the running operation to its end; Azure saw one PATCH of the encryption.
        assert info.uses_cmk and info.provisioning_state == "Succeeded"
        assert testing.request_count("PATCH", "face-prod-eastus") == 1

    def test_it_hands_back_a_slow_operation_to_be_resumed(self):
        tokens: list[str] = []
        with (
            override_settings(AZURE_LRO_WAIT_SECONDS=1, EMULATOR_LRO_POLLS=3),
            self.assertRaises(gw.TransientAzureError) as caught,
        ):
            self.enable_cmk("face-prod-eastus", on_continuation=tokens.append)
        # Still running at the deadline: transient, so the task retries later rather than hold the worker.
        assert caught.exception.code == "OperationStillRunning" and caught.exception.retry_after
        info = self.enable_cmk("face-prod-eastus", continuation_token=tokens[0])
        assert info.uses_cmk and testing.request_count("PATCH", "face-prod-eastus") == 1

    def test_it_reports_an_operation_that_fails_while_running_as_permanent(self):
        key = EmuKey.objects.get(vault__name="kv-prod-eastus", name="face-cmk")

        def disable_key_meanwhile(token: str) -> None:
            # Validation passed when the PATCH arrived; the key is disabled before the operation ends.
            for version in key.versions.all():
                keystore.update_key_version(version, enabled=False)

        with self.assertRaises(gw.PermanentAzureError) as caught:
            self.enable_cmk("face-prod-eastus", on_continuation=disable_key_meanwhile)
        assert caught.exception.code == "KeyDisabled"
        assert gw.get_account(account_id("face-prod-eastus")).provisioning_state == "Failed"

    def test_it_goes_back_to_microsoft_managed_keys_keeping_the_identity(self):
        info = gw.set_microsoft_managed_key(account_id("face-cmk-eastus"))
        # keySource is sent explicitly: the SDK's Encryption() default would have asked for Key Vault again.
        assert not info.uses_cmk and info.key_source == gw.KEY_SOURCE_MICROSOFT
        assert info.has_system_identity
        assert gw.probe_data_access(info.arm_id).readable is True

    def test_it_sends_the_etag_read_before_and_refuses_a_stale_one(self):
        arm_id = account_id("face-cmk-eastus")
        read = gw.get_account(arm_id)
        gw.set_microsoft_managed_key(arm_id, etag=read.etag)  # the etag read just before: accepted
        # The account changed since `read`: ARM's If-Match check answers 412 and nothing changes.
        with self.assertRaises(gw.PermanentAzureError) as caught:
            gw.set_customer_managed_key(
                arm_id, vault_uri=KV_PROD, key_name=read.key_name, key_version=read.key_version, etag=read.etag
            )
        assert caught.exception.code == "PreconditionFailed" and caught.exception.status == 412
        assert not gw.get_account(arm_id).uses_cmk

    def test_it_reports_a_refused_key_as_permanent_with_the_code(self):
        with self.assertRaises(gw.PermanentAzureError) as caught:
            gw.set_customer_managed_key(
                account_id("face-cmk-eastus"), vault_uri=KV_PROD, key_name="no-such-key", key_version="1" * 32
            )
        error = caught.exception
        assert error.code == "KeyNotFound"
        assert "no-such-key" in error.message and error.message.startswith("Could not set key no-such-key")

    def test_it_refuses_a_vault_in_another_region(self):
        arm_id = account_id("face-prod-eastus")
        info = gw.get_account(arm_id)
        vault = self.vault("kv-prod-westeurope")
        gw.grant_key_access(vault, info.principal_id)
        key = gw.get_key(vault.vault_uri, "face-cmk-weu")
        with self.assertRaises(gw.PermanentAzureError) as caught:
            gw.set_customer_managed_key(
                arm_id, vault_uri=vault.vault_uri, key_name="face-cmk-weu", key_version=key.version
            )
        assert caught.exception.code == "KeyVaultRegionMismatch"


class ProbeTests(GatewayTestCase):
    def test_it_probes_a_readable_account(self):
        result = gw.probe_data_access(account_id("face-cmk-eastus"))
        assert result.readable is True

    def test_it_probes_an_unreadable_account_with_the_reason(self):
        result = gw.probe_data_access(account_id("face-broken-eastus"))
        assert result.readable is False and result.code and result.reason


class VaultTests(GatewayTestCase):
    def test_it_lists_vaults_with_their_protections(self):
        vaults = {v.name: v for v in gw.list_vaults(PROD)}
        assert set(vaults) >= {"kv-prod-eastus", "kv-nopurge-eastus", "kv-rbac-eastus", "kv-prod-westeurope"}
        prod = vaults["kv-prod-eastus"]
        assert prod.vault_uri == KV_PROD and prod.location == "eastus"
        assert prod.soft_delete_enabled and prod.purge_protection_enabled and not prod.rbac_authorization
        assert not vaults["kv-nopurge-eastus"].purge_protection_enabled
        assert vaults["kv-rbac-eastus"].rbac_authorization

    def test_it_reads_and_finds_a_vault(self):
        prod = self.vault("kv-prod-eastus")
        assert gw.get_vault(prod.arm_id) == prod
        assert gw.find_vault("https://KV-PROD-EASTUS.vault.azure.net", PROD) == prod
        # A vault in another subscription is not found in this one.
        assert gw.find_vault("https://kv-shared-eastus.vault.azure.net/", PROD) is None
        assert gw.find_vault("https://kv-shared-eastus.vault.azure.net/", DEV) is not None

    def test_it_grants_and_revokes_an_access_policy(self):
        vault = self.vault("kv-nopurge-eastus")
        assert gw.key_access_of(vault, STRANGER) == set()
        gw.grant_key_access(vault, STRANGER)
        gw.grant_key_access(vault, STRANGER)  # idempotent: merged into the same entry
        vault = gw.get_vault(vault.arm_id)
        assert gw.key_access_of(vault, STRANGER) == {"get", "wrapKey", "unwrapKey"}
        assert len([p for p in vault.access_policies if p.object_id == STRANGER]) == 1
        gw.revoke_key_access(vault, STRANGER)
        assert gw.key_access_of(gw.get_vault(vault.arm_id), STRANGER) == set()
        gw.revoke_key_access(gw.get_vault(vault.arm_id), STRANGER)  # nothing left: no call fails

    def test_it_grants_and_revokes_the_role_on_an_rbac_vault(self):
        vault = self.vault("kv-rbac-eastus")
        assert gw.key_access_of(vault, STRANGER) == set()
        gw.grant_key_access(vault, STRANGER)
        puts = testing.request_count("PUT", "roleAssignments")
        gw.grant_key_access(vault, STRANGER)  # the same deterministic assignment name: still one assignment
        assert testing.request_count("PUT", "roleAssignments") == puts + 1
        assert gw.key_access_of(vault, STRANGER) == {"get", "wrapKey", "unwrapKey"}
        gw.revoke_key_access(vault, STRANGER)
        assert gw.key_access_of(vault, STRANGER) == set()
        gw.revoke_key_access(vault, STRANGER)  # already gone: harmless


class KeyTests(GatewayTestCase):
    def test_it_lists_keys_and_versions(self):
        names = {k.name for k in gw.list_keys(KV_PROD)}
        assert {"face-cmk", "face-cmk-2", "face-cmk-broken", "signing-ec"} <= names
        versions = gw.list_key_versions(KV_PROD, "face-cmk")
        assert len(versions) == 3 and all(len(v.version) == 32 for v in versions)

    def test_it_reads_a_key_with_its_type_and_size(self):
        key = gw.get_key(KV_PROD, "face-cmk")
        assert key.kty == "RSA" and key.key_size == 2048 and key.enabled
        assert {"wrapKey", "unwrapKey"} <= set(key.key_ops)
        assert key.kid.endswith(f"/keys/face-cmk/{key.version}")
        older = next(v for v in gw.list_key_versions(KV_PROD, "face-cmk") if v.version != key.version)
        assert gw.get_key(KV_PROD, "face-cmk", older.version).version == older.version
        ec = gw.get_key(KV_PROD, "signing-ec")
        assert ec.kty == "EC" and ec.key_size is None

    def test_it_reports_a_missing_key_as_not_found(self):
        with self.assertRaises(gw.PermanentAzureError) as caught:
            gw.get_key(KV_PROD, "no-such-key")
        assert caught.exception.not_found and caught.exception.code == "KeyNotFound"
        assert caught.exception.request_id

    def test_it_rotates_and_disables_a_key(self):
        before = gw.get_key(KV_PROD, "face-cmk-2")
        rotated = gw.rotate_key(KV_PROD, "face-cmk-2")
        assert rotated.version != before.version
        assert gw.get_key(KV_PROD, "face-cmk-2").version == rotated.version
        disabled = gw.set_key_enabled(KV_PROD, "face-cmk-2", rotated.version, enabled=False)
        assert not disabled.enabled and not gw.get_key(KV_PROD, "face-cmk-2", rotated.version).enabled
        assert gw.set_key_enabled(KV_PROD, "face-cmk-2", rotated.version, enabled=True).enabled

    def test_it_recovers_a_deleted_key(self):
        assert gw.get_deleted_key(KV_PROD, "face-cmk-2") is None
        keystore.delete_key(EmuKey.objects.get(vault__name="kv-prod-eastus", name="face-cmk-2"))
        deleted = gw.get_deleted_key(KV_PROD, "face-cmk-2")
        assert deleted is not None and deleted.deleted and deleted.scheduled_purge_on
        recovered = gw.recover_deleted_key(KV_PROD, "face-cmk-2")
        assert recovered.name == "face-cmk-2" and gw.get_deleted_key(KV_PROD, "face-cmk-2") is None

    def test_it_reads_a_rotation_policy(self):
        key = EmuKey.objects.get(vault__name="kv-prod-eastus", name="face-cmk")
        keystore.set_rotation_policy(
            key, [{"action": {"type": "Rotate"}, "trigger": {"timeAfterCreate": "P30D"}}], "P90D"
        )
        policy = gw.get_rotation_policy(KV_PROD, "face-cmk")
        assert policy is not None and policy["expiryTime"] == "P90D"
        assert {"action": "Rotate", "timeAfterCreate": "P30D", "timeBeforeExpiry": ""} in policy["lifetimeActions"]

    def test_it_refuses_a_host_that_is_not_a_vault_before_sending(self):
        for uri in (
            "https://evil.example/",
            "http://kv-prod-eastus.vault.azure.net/",
            "https://kv.vault.azure.net.evil/",
        ):
            with self.assertRaises(gw.PermanentAzureError) as caught:
                gw.get_key(uri, "face-cmk")
            assert caught.exception.code == "InvalidVaultUri"
        assert testing.request_count() == 0

    def test_it_answers_403_for_a_principal_without_permission_as_permanent(self):
        vault = EmuVault.objects.get(name="kv-prod-eastus")
        with (
            gw.pipeline_override(credential=EmulatorCredential(STRANGER), transport=EmulatorTransport()),
            self.assertRaises(gw.PermanentAzureError) as caught,
        ):
            gw.get_key(vault.vault_uri, "face-cmk")
        assert caught.exception.status == 403 and "lacks permission" in caught.exception.message


class ErrorTranslationTests(GatewayTestCase):
    def test_it_retries_a_throttled_read_honouring_retry_after(self):
        transport = EmulatorTransport()
        testing.inject_faults(429, count=1, path_contains="face-prod-eastus", retry_after=1)
        with gw.pipeline_override(credential=EmulatorCredential(), transport=transport):
            info = gw.get_account(account_id("face-prod-eastus"))
        assert info.name == "face-prod-eastus"
        assert testing.request_count("GET", "face-prod-eastus") == 2
        assert transport.sleeps == [1.0]

    @override_settings(AZURE_RETRY_TOTAL=2)
    def test_it_gives_up_as_transient_after_the_retries(self):
        testing.inject_faults(503, path_contains="face-prod-eastus", retry_after=0)
        with self.assertRaises(gw.TransientAzureError) as caught:
            gw.get_account(account_id("face-prod-eastus"))
        assert caught.exception.status == 503
        assert testing.request_count("GET", "face-prod-eastus") == 3  # the first try and two retries

    @override_settings(AZURE_RETRY_BUDGET_SECONDS=5)
    def test_it_does_not_wait_past_the_budget(self):
        transport = EmulatorTransport()
        testing.inject_faults(429, count=1, path_contains="face-prod-eastus", retry_after=120)
        with (
            gw.pipeline_override(credential=EmulatorCredential(), transport=transport),
            self.assertRaises(gw.TransientAzureError) as caught,
        ):
            gw.get_account(account_id("face-prod-eastus"))
        # A two-minute Retry-After is handed to the task's retry instead of holding the worker.
        assert caught.exception.retry_after == 120 and caught.exception.status == 429
        assert transport.sleeps == []
        assert testing.request_count("GET", "face-prod-eastus") == 1

    def test_it_collects_the_request_ids_of_every_call(self):
        with gw.collect_request_ids() as outer:
            gw.get_account(account_id("face-prod-eastus"))
            with gw.collect_request_ids() as inner:
                gw.get_key(KV_PROD, "face-cmk")
        logged = list(logged_request_ids())
        assert inner and set(inner) <= set(outer)
        assert outer == logged  # every response's id, in order, once each

    def test_it_puts_the_request_id_on_errors(self):
        with gw.collect_request_ids() as ids, self.assertRaises(gw.PermanentAzureError) as caught:
            gw.get_account(account_id("face-gone-eastus"))
        assert caught.exception.not_found and caught.exception.request_id in ids


def logged_request_ids() -> list[str]:
    from emulator.models import RequestLog

    return list(RequestLog.objects.order_by("id").values_list("request_id", flat=True))
