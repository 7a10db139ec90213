"""Azure's CMK rules as the emulator enforces them: one refusal per rule, each a 400 ARM error with its code,
through the real CognitiveServicesManagementClient."""

from __future__ import annotations

from datetime import timedelta

from azure.core.exceptions import HttpResponseError
from azure.mgmt.cognitiveservices.models import Account, Sku
from django.test import override_settings

from emulator import clock, keystore
from emulator.models import CognitiveAccount, Key, RequestLog, Vault
from emulator.testing import shift_clock
from tests.emulator.arm_builders import (
    OTHER_SUBSCRIPTION_ID,
    OTHER_TENANT_ID,
    RESOURCE_GROUP,
    ArmTestCase,
    cmk_update,
    cs_client,
    grant,
    make_account,
    make_estate,
    make_key,
    make_vault,
    microsoft_update,
    versions_of,
)


class CmkRuleTests(ArmTestCase):
    @classmethod
    def setUpTestData(cls):
        make_estate()
        cls.vault = make_vault()
        cls.key = make_key(cls.vault, "cmk", versions=2)
        cls.account = make_account("face-rules")
        grant(cls.vault, cls.account.principal_id)

    def _set(self, vault, key_name: str, version: str, account: str = "face-rules", **extra) -> Account:
        return (
            cs_client()
            .accounts.begin_update(RESOURCE_GROUP, account, cmk_update(vault, key_name, version, **extra))
            .result()
        )

    def _refused(self, vault, key_name: str, version: str, account: str = "face-rules", **extra) -> HttpResponseError:
        with self.assertRaises(HttpResponseError) as raised:
            self._set(vault, key_name, version, account, **extra)
        assert raised.exception.status_code == 400
        # A refusal changes nothing: the account stays on Microsoft-managed keys.
        assert CognitiveAccount.objects.get(name=account).encryption is None
        return raised.exception

    def _latest(self, key: Key) -> str:
        return versions_of(key)[-1]

    # The healthy path

    def test_it_accepts_a_valid_key_and_asks_key_vault_as_the_identity(self):
        account = self._set(self.vault, "cmk", self._latest(self.key))

        assert account.properties.encryption.key_source == "Microsoft.KeyVault"
        assert account.properties.encryption.key_vault_properties.key_vault_uri == self.vault.vault_uri
        # The rules read the key and round-tripped a wrap on the data plane as the account's identity.
        calls = RequestLog.objects.filter(principal=self.account.principal_id, host=self.vault.host)
        paths = [c.path.lower() for c in calls]
        assert any(p.endswith("/keys/cmk/") or p.endswith("/keys/cmk") for p in paths)
        assert any(p.endswith("/wrapkey") for p in paths) and any(p.endswith("/unwrapkey") for p in paths)

    def test_it_accepts_rsa_hsm_and_larger_keys(self):
        premium = make_vault("kv-premium-eastus", sku="premium")
        grant(premium, self.account.principal_id)
        for name, kty, size in (("hsm", "RSA-HSM", 2048), ("big", "RSA", 3072)):
            key = make_key(premium, name, kty=kty, size=size)
            with self.subTest(kty=kty, size=size):
                account = self._set(premium, name, self._latest(key))
                assert account.properties.encryption.key_vault_properties.key_name == name

    # Account and request rules

    def test_it_refuses_a_sku_without_the_capability(self):
        account = make_account("face-f0", sku="F0")
        grant(self.vault, account.principal_id)

        error = self._refused(self.vault, "cmk", self._latest(self.key), account="face-f0")

        assert error.error.code == "SkuNotSupported"
        assert "S0, E0" in error.error.message

    def test_it_refuses_moving_a_cmk_account_to_a_sku_without_the_capability(self):
        self._set(self.vault, "cmk", self._latest(self.key))

        with self.assertRaises(HttpResponseError) as raised:
            cs_client().accounts.begin_update(RESOURCE_GROUP, "face-rules", Account(sku=Sku(name="F0"))).result()

        assert raised.exception.error.code == "SkuNotSupported"

    def test_it_refuses_an_account_without_identity(self):
        make_account("face-noid", identity=None)

        error = self._refused(self.vault, "cmk", self._latest(self.key), account="face-noid")

        assert error.error.code == "IdentityNotEnabled"
        assert "SystemAssigned" in error.error.message

    def test_it_refuses_an_unknown_user_assigned_identity(self):
        error = self._refused(
            self.vault, "cmk", self._latest(self.key), identity_client_id="11111111-1111-1111-1111-111111111111"
        )

        assert error.error.code == "IdentityNotEnabled"

    def test_it_refuses_an_empty_key_version_by_default(self):
        error = self._refused(self.vault, "cmk", "")

        assert error.error.code == "KeyVersionRequired"

    @override_settings(EMULATOR_CMK_REQUIRE_KEY_VERSION=False)
    def test_it_accepts_a_versionless_key_when_configured(self):
        account = self._set(self.vault, "cmk", "")

        assert account.properties.encryption.key_vault_properties.key_version == ""

    # Vault rules

    def test_it_refuses_an_unknown_vault(self):
        # An unsaved Vault only lends its URI: no vault of that name exists in the emulator.
        error = self._refused(Vault(name="kv-missing-eastus"), "cmk", self._latest(self.key))

        assert error.error.code == "KeyVaultNotFound"
        assert "https://kv-missing-eastus.vault.azure.net/" in error.error.message

    def test_it_refuses_a_vault_of_another_tenant(self):
        other = make_vault("kv-other-tenant", subscription_id=OTHER_SUBSCRIPTION_ID, tenant_id=OTHER_TENANT_ID)
        key = make_key(other, "cmk")

        error = self._refused(other, "cmk", self._latest(key))

        assert error.error.code == "TenantMismatch"

    def test_it_refuses_a_vault_in_another_region(self):
        far = make_vault("kv-arm-westeurope", location="westeurope")
        grant(far, self.account.principal_id)
        key = make_key(far, "cmk")

        error = self._refused(far, "cmk", self._latest(key))

        assert error.error.code == "KeyVaultRegionMismatch"
        assert "eastus" in error.error.message

    def test_it_refuses_a_vault_without_soft_delete(self):
        bare = make_vault("kv-nosoft-eastus", soft_delete=False, purge_protection=False)
        grant(bare, self.account.principal_id)
        key = make_key(bare, "cmk")

        error = self._refused(bare, "cmk", self._latest(key))

        assert error.error.code == "KeyVaultSoftDeleteRequired"

    def test_it_refuses_a_vault_without_purge_protection(self):
        nopurge = make_vault("kv-nopurge-eastus", purge_protection=False)
        grant(nopurge, self.account.principal_id)
        key = make_key(nopurge, "cmk")

        error = self._refused(nopurge, "cmk", self._latest(key))

        assert error.error.code == "KeyVaultPurgeProtectionRequired"

    # Access

    def test_it_refuses_an_identity_without_an_access_policy(self):
        keystore.set_access_policy(
            self.vault, self.account.principal_id, ["get", "wrapKey", "unwrapKey"], mode="remove"
        )

        error = self._refused(self.vault, "cmk", self._latest(self.key))

        assert error.error.code == "KeyVaultAccessDenied"
        assert "access policy" in error.error.message and self.account.principal_id in error.error.message

    def test_it_refuses_an_identity_missing_unwrap_key(self):
        keystore.set_access_policy(self.vault, self.account.principal_id, ["unwrapKey"], mode="remove")

        error = self._refused(self.vault, "cmk", self._latest(self.key))

        # get and wrapKey pass; Key Vault itself refuses the unwrap.
        assert error.error.code == "KeyVaultAccessDenied"
        assert "unwrapKey" in error.error.message

    def test_it_refuses_an_rbac_vault_without_the_role_and_accepts_it_with_the_role(self):
        rbac = make_vault("kv-rbac-eastus", rbac=True)
        key = make_key(rbac, "cmk")

        error = self._refused(rbac, "cmk", self._latest(key))
        keystore.assign_role(rbac.arm_id, self.account.principal_id, keystore.CRYPTO_SERVICE_ENCRYPTION_USER)
        account = self._set(rbac, "cmk", self._latest(key))

        assert error.error.code == "KeyVaultAccessDenied"
        assert "Key Vault Crypto Service Encryption User" in error.error.message
        assert account.properties.encryption.key_vault_properties.key_name == "cmk"

    # Key rules

    def test_it_refuses_a_missing_key(self):
        error = self._refused(self.vault, "no-such-key", "0" * 32)

        assert error.error.code == "KeyNotFound"

    def test_it_refuses_a_deleted_key(self):
        keystore.delete_key(self.key)

        error = self._refused(self.vault, "cmk", self._latest(self.key))

        assert error.error.code == "KeyNotFound"
        assert "recover" in error.error.message

    def test_it_refuses_a_missing_version(self):
        error = self._refused(self.vault, "cmk", "f" * 32)

        assert error.error.code == "KeyVersionNotFound"

    def test_it_refuses_a_disabled_key(self):
        version = self._latest(self.key)
        keystore.update_key_version(self.key.versions.get(version=version), enabled=False)

        error = self._refused(self.vault, "cmk", version)

        assert error.error.code == "KeyDisabled"

    def test_it_refuses_an_expired_key(self):
        key = make_key(self.vault, "short-lived", exp=clock.now() + timedelta(days=2))
        shift_clock(3 * 86400)

        error = self._refused(self.vault, "short-lived", self._latest(key))

        assert error.error.code == "KeyExpired"

    def test_it_refuses_a_key_not_yet_valid(self):
        key = make_key(self.vault, "future", nbf=clock.now() + timedelta(days=2))

        error = self._refused(self.vault, "future", self._latest(key))

        assert error.error.code == "KeyNotYetValid"

    def test_it_refuses_an_ec_key(self):
        key = keystore.create_key(self.vault, "ec-key", "EC", curve="P-256")

        error = self._refused(self.vault, "ec-key", self._latest(key))

        assert error.error.code == "UnsupportedKeyType"

    @override_settings(EMULATOR_CMK_STRICT_KEY_SIZE=True)
    def test_it_refuses_other_sizes_in_strict_mode(self):
        key = make_key(self.vault, "rsa-3072", size=3072)

        error = self._refused(self.vault, "rsa-3072", self._latest(key))

        assert error.error.code == "UnsupportedKeySize"
        assert "2048" in error.error.message

    def test_it_refuses_a_key_without_wrap_operations(self):
        key = make_key(self.vault, "sign-only", key_ops=["sign", "verify"])

        error = self._refused(self.vault, "sign-only", self._latest(key))

        assert error.error.code == "KeyOperationsMissing"

    # The current key

    def test_it_refuses_a_change_while_the_current_key_is_unreachable(self):
        first, second = versions_of(self.key)
        self._set(self.vault, "cmk", first)
        keystore.update_key_version(self.key.versions.get(version=first), enabled=False)

        with self.assertRaises(HttpResponseError) as change:
            self._set(self.vault, "cmk", second)
        with self.assertRaises(HttpResponseError) as disable:
            cs_client().accounts.begin_update(RESOURCE_GROUP, "face-rules", microsoft_update()).result()

        # The data key must be unwrapped with the current (disabled) version before it can be re-wrapped.
        assert change.exception.error.code == "CurrentKeyUnreachable"
        assert disable.exception.error.code == "CurrentKeyUnreachable"
        assert "KeyDisabled" in change.exception.error.message
        assert CognitiveAccount.objects.get(name="face-rules").key_vault_properties["keyVersion"] == first
