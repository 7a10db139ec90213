"""The Key Vault keys data plane through the real KeyClient and CryptographyClient (azure-api.md section 4)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.keyvault.keys import KeyRotationLifetimeAction, KeyRotationPolicyAction
from azure.keyvault.keys.crypto import EncryptionAlgorithm, KeyWrapAlgorithm, SignatureAlgorithm
from django.test import override_settings

from emulator import keystore
from emulator.identities import PORTAL_PRINCIPAL_ID, derived_id, register_principal
from emulator.models import KeyVersion, RequestLog
from emulator.testing import request_count, reset_request_log, shift_clock
from tests.emulator.kv_builders import (
    OTHER_TENANT_ID,
    SUBSCRIPTION_ID,
    TENANT_ID,
    EmulatorTestCase,
    crypto_client,
    key_client,
    make_estate,
    make_vault,
)

VERSION_RE = re.compile(r"^[0-9a-f]{32}$")
APP_ID = derived_id("principal", "kv-tests-app")


class KeyLifecycleTests(EmulatorTestCase):
    @classmethod
    def setUpTestData(cls):
        make_estate()
        cls.vault = make_vault()
        cls.premium = make_vault("kv-premium-eastus", sku="premium")
        cls.nopurge = make_vault("kv-nopurge-eastus", purge_protection=False)

    def test_it_creates_and_gets_rsa_keys(self):
        client = key_client(self.vault)
        created = client.create_rsa_key("cmk", size=2048)
        assert VERSION_RE.match(created.properties.version)
        assert created.id == f"https://kv-test-eastus.vault.azure.net/keys/cmk/{created.properties.version}"
        assert created.key_type == "RSA"
        assert created.key_operations == ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
        latest = client.get_key("cmk")
        by_version = client.get_key("cmk", created.properties.version)
        assert latest.id == by_version.id == created.id
        # Only the public half leaves the vault.
        assert latest.key.n and latest.key.e and latest.key.d is None and latest.key.p is None
        assert latest.properties.recovery_level == "Recoverable"
        assert latest.properties.recoverable_days == 90

    def test_it_never_returns_private_material(self):
        client = key_client(self.vault)
        client.create_rsa_key("secretive", size=2048)
        raw = client.send_request(_get("https://kv-test-eastus.vault.azure.net/keys/secretive/?api-version=2025-07-01"))
        jwk = raw.json()["key"]
        assert set(jwk) == {"kid", "kty", "key_ops", "n", "e"}

    def test_it_creates_larger_rsa_and_ec_keys(self):
        client = key_client(self.vault)
        client.create_rsa_key("big", size=3072)
        big = client.get_key("big")
        assert len(big.key.n) == 384  # 3072 bits
        ec_key = client.create_ec_key("signer", curve="P-256")
        assert ec_key.key_type == "EC" and ec_key.key.crv == "P-256"
        assert ec_key.key_operations == ["sign", "verify"]

    def test_it_refuses_hsm_keys_on_standard_vaults(self):
        with self.assertRaises(HttpResponseError) as caught:
            key_client(self.vault).create_rsa_key("hsm", size=2048, hardware_protected=True)
        assert caught.exception.status_code == 400
        assert caught.exception.error.code == "BadParameter"
        hsm = key_client(self.premium).create_rsa_key("hsm", size=2048, hardware_protected=True)
        assert hsm.key_type == "RSA-HSM"

    def test_it_refuses_bad_sizes_types_and_names(self):
        client = key_client(self.vault)
        for call in (
            lambda: client.create_rsa_key("small", size=1024),
            lambda: client.create_key("sym", "oct"),
            lambda: client.create_ec_key("curvy", curve="P-384"),
            lambda: client.create_rsa_key("bad_name!", size=2048),
            lambda: client.create_rsa_key("x" * 128, size=2048),
        ):
            with self.assertRaises(HttpResponseError) as caught:
                call()
            assert caught.exception.status_code == 400, caught.exception

    def test_it_lists_keys_past_one_page(self):
        for index in range(5):
            keystore.create_key(self.vault, f"key-{index}")
        reset_request_log()
        names = [k.name for k in key_client(self.vault).list_properties_of_keys(max_page_size=2)]
        assert names == [f"key-{i}" for i in range(5)]
        # Three pages of two (after the challenge), and the list entries carry versionless kids.
        assert request_count("GET", "/keys", status=200) == 3
        first = next(iter(key_client(self.vault).list_properties_of_keys()))
        assert first.version is None

    @override_settings(EMULATOR_KV_PAGE_SIZE=2)
    def test_it_pages_versions_with_the_default_page_size(self):
        keystore.create_key(self.vault, "multi", versions=3)
        versions = list(key_client(self.vault).list_properties_of_key_versions("multi"))
        assert len(versions) == 3
        assert all(VERSION_RE.match(v.version) for v in versions)
        assert request_count("GET", "/keys/multi/versions", status=200) == 2

    def test_it_updates_properties(self):
        client = key_client(self.vault)
        created = client.create_rsa_key("upd", size=2048)
        expires = datetime(2031, 1, 1, tzinfo=UTC)
        updated = client.update_key_properties(
            "upd", enabled=False, expires_on=expires, tags={"team": "id"}, key_operations=["wrapKey", "unwrapKey"]
        )
        assert updated.properties.enabled is False
        assert updated.properties.expires_on == expires
        assert updated.properties.tags == {"team": "id"}
        assert updated.key_operations == ["wrapKey", "unwrapKey"]
        # Versioned update touches only that version.
        again = client.update_key_properties("upd", created.properties.version, enabled=True)
        assert again.properties.enabled is True

    def test_it_rotates_and_keeps_old_versions(self):
        client = key_client(self.vault)
        first = client.create_rsa_key("rot", size=2048)
        second = client.rotate_key("rot")
        assert second.properties.version != first.properties.version
        assert client.get_key("rot").properties.version == second.properties.version
        assert client.get_key("rot", first.properties.version).properties.enabled is True

    def test_it_deletes_recovers_and_lists_deleted_keys(self):
        client = key_client(self.vault)
        client.create_rsa_key("gone", size=2048)
        deleted = client.begin_delete_key("gone").result()
        assert deleted.recovery_id == "https://kv-test-eastus.vault.azure.net/deletedkeys/gone"
        assert deleted.scheduled_purge_date - deleted.deleted_date == timedelta(days=90)
        with self.assertRaises(ResourceNotFoundError):
            client.get_key("gone")
        assert client.get_deleted_key("gone").name == "gone"
        assert [k.name for k in client.list_deleted_keys()] == ["gone"]
        # A soft-deleted name cannot be reused until it is recovered or purged.
        with self.assertRaises(ResourceExistsError) as caught:
            client.create_rsa_key("gone", size=2048)
        assert caught.exception.error.innererror["code"] == "ObjectIsDeletedButRecoverable"
        recovered = client.begin_recover_deleted_key("gone").result()
        assert recovered.name == "gone"
        assert client.get_key("gone").name == "gone"

    def test_it_refuses_purge_under_purge_protection(self):
        client = key_client(self.vault)
        client.create_rsa_key("kept", size=2048)
        client.begin_delete_key("kept").result()
        with self.assertRaises(HttpResponseError) as caught:
            client.purge_deleted_key("kept")
        assert caught.exception.status_code == 403

    def test_it_purges_without_purge_protection(self):
        client = key_client(self.nopurge)
        client.create_rsa_key("temp", size=2048)
        client.begin_delete_key("temp").result()
        client.purge_deleted_key("temp")
        with self.assertRaises(ResourceNotFoundError):
            client.get_deleted_key("temp")
        # The name is free again.
        assert client.create_rsa_key("temp", size=2048).name == "temp"

    def test_it_purges_deleted_keys_after_the_retention_period(self):
        client = key_client(self.vault)
        client.create_rsa_key("old", size=2048)
        client.begin_delete_key("old").result()
        shift_clock(91 * 86400)
        with self.assertRaises(ResourceNotFoundError):
            client.get_deleted_key("old")

    def test_it_deletes_for_good_without_soft_delete(self):
        vault = make_vault("kv-nosoft-eastus", soft_delete=False, purge_protection=False)
        client = key_client(vault)
        client.create_rsa_key("once", size=2048)
        deleted = client.begin_delete_key("once").result()
        assert deleted.recovery_id is None
        with self.assertRaises(ResourceNotFoundError):
            client.get_deleted_key("once")

    def test_it_backs_up_and_restores_without_exposing_the_private_key(self):
        client = key_client(self.nopurge)
        original = client.create_rsa_key("moved", size=2048)
        pem = bytes(KeyVersion.objects.get(version=original.properties.version).private_pem)
        blob = client.backup_key("moved")
        assert b"PRIVATE KEY" not in blob and pem[40:80] not in blob
        with self.assertRaises(ResourceExistsError):
            client.restore_key_backup(blob)
        client.begin_delete_key("moved").result()
        client.purge_deleted_key("moved")
        restored = client.restore_key_backup(blob)
        assert restored.id == original.id
        wrapped = crypto_client(original.id).wrap_key(KeyWrapAlgorithm.rsa_oaep, b"k" * 32).encrypted_key
        assert crypto_client(restored.id).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped).key == b"k" * 32

    def test_it_refuses_a_tampered_backup(self):
        client = key_client(self.vault)
        client.create_rsa_key("sealed", size=2048)
        blob = bytearray(client.backup_key("sealed"))
        blob[-1] ^= 1
        with self.assertRaises(HttpResponseError) as caught:
            client.restore_key_backup(bytes(blob))
        assert caught.exception.status_code == 400

    def test_it_gives_each_live_key_its_own_material(self):
        # The in-process pool reuses generated keys, but never for two keys alive at once.
        client = key_client(self.vault)
        ids = [client.create_rsa_key(f"pool-{i}", size=2048).id for i in range(3)]
        fingerprints = set(KeyVersion.objects.values_list("fingerprint", flat=True))
        assert len(fingerprints) == KeyVersion.objects.count() == 3
        wrapped = crypto_client(ids[0]).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, os.urandom(32)).encrypted_key
        with self.assertRaises(HttpResponseError):
            crypto_client(ids[1]).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)


class RotationPolicyTests(EmulatorTestCase):
    @classmethod
    def setUpTestData(cls):
        make_estate()
        cls.vault = make_vault()

    def test_it_returns_the_default_policy(self):
        client = key_client(self.vault)
        client.create_rsa_key("plain", size=2048)
        policy = client.get_key_rotation_policy("plain")
        assert policy.id == "https://kv-test-eastus.vault.azure.net/keys/plain/rotationpolicy"
        assert [(a.action, a.time_before_expiry) for a in policy.lifetime_actions] == [
            (KeyRotationPolicyAction.notify, "P30D")
        ]

    def test_it_sets_a_policy_and_adds_the_default_notify(self):
        client = key_client(self.vault)
        client.create_rsa_key("auto", size=2048)
        rotate = KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P30D")
        from azure.keyvault.keys import KeyRotationPolicy

        policy = client.update_key_rotation_policy(
            "auto", KeyRotationPolicy(lifetime_actions=[rotate], expires_in="P90D")
        )
        actions = {(a.action, a.time_after_create, a.time_before_expiry) for a in policy.lifetime_actions}
        assert actions == {
            (KeyRotationPolicyAction.rotate, "P30D", None),
            (KeyRotationPolicyAction.notify, None, "P30D"),
        }
        assert policy.expires_in == "P90D"

    def test_it_rejects_a_rotation_sooner_than_seven_days(self):
        from azure.keyvault.keys import KeyRotationPolicy

        client = key_client(self.vault)
        client.create_rsa_key("hasty", size=2048)
        rotate = KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P1D")
        with self.assertRaises(HttpResponseError) as caught:
            client.update_key_rotation_policy("hasty", KeyRotationPolicy(lifetime_actions=[rotate]))
        assert caught.exception.status_code == 400

    def test_it_rotates_when_the_clock_passes_the_trigger(self):
        from azure.keyvault.keys import KeyRotationPolicy

        client = key_client(self.vault)
        first = client.create_rsa_key("timed", size=2048)
        rotate = KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_after_create="P30D")
        client.update_key_rotation_policy("timed", KeyRotationPolicy(lifetime_actions=[rotate], expires_in="P90D"))
        shift_clock(29 * 86400)
        assert client.get_key("timed").properties.version == first.properties.version
        shift_clock(2 * 86400)
        rotated = client.get_key("timed")
        assert rotated.properties.version != first.properties.version
        # The new version expires as the policy's expiryTime says, counted on the emulator's clock.
        assert rotated.properties.expires_on - rotated.properties.created_on == timedelta(days=90)
        assert len(list(client.list_properties_of_key_versions("timed"))) == 2

    def test_it_rotates_before_expiry(self):
        from azure.keyvault.keys import KeyRotationPolicy

        client = key_client(self.vault)
        expires = datetime.now(UTC) + timedelta(days=40)
        first = client.create_rsa_key("expiring", size=2048, expires_on=expires)
        rotate = KeyRotationLifetimeAction(KeyRotationPolicyAction.rotate, time_before_expiry="P10D")
        client.update_key_rotation_policy("expiring", KeyRotationPolicy(lifetime_actions=[rotate], expires_in="P60D"))
        shift_clock(31 * 86400)
        # Seed and sync can run the same check without a request.
        assert keystore.apply_due_rotations(self.vault) == 1
        assert client.get_key("expiring").properties.version != first.properties.version


class CryptoTests(EmulatorTestCase):
    @classmethod
    def setUpTestData(cls):
        make_estate()
        cls.vault = make_vault()
        cls.key = keystore.create_key(cls.vault, "cmk")
        cls.ec = keystore.create_key(cls.vault, "signer", "EC")

    def _kid(self, name="cmk"):
        return key_client(self.vault).get_key(name).id

    def test_it_wraps_and_unwraps_with_every_rsa_algorithm(self):
        client = crypto_client(self._kid())
        data_key = os.urandom(32)
        for alg in (KeyWrapAlgorithm.rsa_oaep, KeyWrapAlgorithm.rsa_oaep_256, KeyWrapAlgorithm.rsa1_5):
            wrapped = client.wrap_key(alg, data_key)
            assert wrapped.encrypted_key != data_key
            assert client.unwrap_key(alg, wrapped.encrypted_key).key == data_key
        # The server did the unwrapping (the SDK wraps locally with the public key).
        assert request_count("POST", "/unwrapkey") == 3

    def test_it_wraps_on_the_server(self):
        # The SDK wraps locally when it can; a direct POST exercises the vault's own wrapKey.
        kid = self._kid()
        body = json.dumps({"alg": "RSA-OAEP-256", "value": _b64(b"x" * 32)})
        version = kid.rsplit("/", 1)[1]
        response = key_client(self.vault).send_request(
            _post(f"https://kv-test-eastus.vault.azure.net/keys/cmk/{version}/wrapkey?api-version=2025-07-01", body)
        )
        assert response.status_code == 200 and response.json()["kid"] == kid
        wrapped = _unb64(response.json()["value"])
        assert crypto_client(kid).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key == b"x" * 32

    def test_it_encrypts_and_decrypts(self):
        client = crypto_client(self._kid())
        sealed = client.encrypt(EncryptionAlgorithm.rsa_oaep_256, b"hello")
        assert client.decrypt(EncryptionAlgorithm.rsa_oaep_256, sealed.ciphertext).plaintext == b"hello"

    def test_it_signs_and_verifies(self):
        digest = hashlib.sha256(b"payload").digest()
        for name, alg in (
            ("cmk", SignatureAlgorithm.rs256),
            ("cmk", SignatureAlgorithm.ps256),
            ("signer", SignatureAlgorithm.es256),
        ):
            client = crypto_client(self._kid(name))
            signature = client.sign(alg, digest).signature
            assert client.verify(alg, digest, signature).is_valid
            assert not client.verify(alg, hashlib.sha256(b"other").digest(), signature).is_valid

    def test_it_accepts_an_empty_version_as_the_current_one(self):
        # A CryptographyClient whose key GET failed posts to /keys/{name}//unwrapkey.
        kid = self._kid()
        wrapped = crypto_client(kid).wrap_key(KeyWrapAlgorithm.rsa_oaep, b"y" * 32).encrypted_key
        body = json.dumps({"alg": "RSA-OAEP", "value": _b64(wrapped)})
        response = key_client(self.vault).send_request(
            _post("https://kv-test-eastus.vault.azure.net/keys/cmk//unwrapkey?api-version=2025-07-01", body)
        )
        assert response.status_code == 200
        assert response.json()["kid"] == kid

    def test_it_refuses_unwrap_on_a_disabled_key(self):
        kid = self._kid()
        wrapped = crypto_client(kid).wrap_key(KeyWrapAlgorithm.rsa_oaep, b"z" * 32).encrypted_key
        key_client(self.vault).update_key_properties("cmk", enabled=False)
        with self.assertRaises(HttpResponseError) as caught:
            crypto_client(kid).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped)
        assert caught.exception.status_code == 403
        assert caught.exception.error.innererror["code"] == "KeyDisabled"
        assert "not allowed on a disabled key" in caught.exception.error.message
        # Reading a disabled key still works, as in Azure.
        assert key_client(self.vault).get_key("cmk").properties.enabled is False

    def test_it_refuses_unwrap_once_the_key_has_expired(self):
        kid = self._kid()
        wrapped = crypto_client(kid).wrap_key(KeyWrapAlgorithm.rsa_oaep, b"e" * 32).encrypted_key
        expires = datetime.now(UTC) + timedelta(days=10)
        key_client(self.vault).update_key_properties("cmk", expires_on=expires)
        assert crypto_client(kid).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped).key == b"e" * 32
        shift_clock(11 * 86400)
        with self.assertRaises(HttpResponseError) as caught:
            crypto_client(kid).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped)
        assert caught.exception.error.innererror["code"] == "KeyExpired"
        assert "expired" in caught.exception.error.message

    def test_it_refuses_unwrap_before_not_before(self):
        kid = self._kid()
        wrapped = crypto_client(kid).wrap_key(KeyWrapAlgorithm.rsa_oaep, b"n" * 32).encrypted_key
        key_client(self.vault).update_key_properties("cmk", not_before=datetime.now(UTC) + timedelta(days=1))
        with self.assertRaises(HttpResponseError) as caught:
            crypto_client(kid).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped)
        assert caught.exception.error.innererror["code"] == "KeyNotYetValid"

    def test_it_refuses_an_operation_the_key_does_not_allow(self):
        key_client(self.vault).update_key_properties("cmk", key_operations=["wrapKey"])
        kid = self._kid()
        wrapped = crypto_client(kid).wrap_key(KeyWrapAlgorithm.rsa_oaep, b"o" * 32).encrypted_key
        with self.assertRaises(HttpResponseError) as caught:
            crypto_client(kid).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped)
        assert caught.exception.error.innererror["code"] == "KeyOperationForbidden"

    def test_it_answers_bad_ciphertext_with_bad_parameter(self):
        with self.assertRaises(HttpResponseError) as caught:
            crypto_client(self._kid()).unwrap_key(KeyWrapAlgorithm.rsa_oaep, b"not a wrapped key")
        assert caught.exception.status_code == 400
        assert caught.exception.error.code == "BadParameter"


class AuthenticationTests(EmulatorTestCase):
    @classmethod
    def setUpTestData(cls):
        make_estate()
        cls.vault = make_vault()
        keystore.create_key(cls.vault, "cmk")

    def test_it_challenges_the_first_request(self):
        key_client(self.vault).get_key("cmk")
        log = list(RequestLog.objects.filter(host="kv-test-eastus.vault.azure.net").values_list("status", "principal"))
        # The first request carries no token and gets the 401 challenge; the retry carries the portal's token.
        assert log == [(401, ""), (200, PORTAL_PRINCIPAL_ID)]

    def test_it_names_the_vault_tenant_in_the_challenge(self):
        response = key_client(self.vault).send_request(
            _get("https://kv-test-eastus.vault.azure.net/keys?api-version=2025-07-01")
        )
        assert response.status_code == 200
        from azure.core.rest import HttpRequest

        from emulator.transport import EmulatorTransport

        raw = EmulatorTransport().send(
            HttpRequest("GET", "https://kv-test-eastus.vault.azure.net/keys?api-version=7.5")
        )
        assert raw.status_code == 401
        assert raw.headers["WWW-Authenticate"] == (
            f'Bearer authorization="https://login.microsoftonline.com/{TENANT_ID}", resource="https://vault.azure.net"'
        )
        assert raw.json()["error"]["code"] == "Unauthorized"

    def test_it_refuses_a_caller_without_the_permission(self):
        outsider = str(uuid.uuid4())
        with self.assertRaises(HttpResponseError) as caught:
            key_client(self.vault, identity=outsider).get_key("cmk")
        error = caught.exception
        assert error.status_code == 403
        assert error.error.code == "Forbidden"
        assert error.error.innererror["code"] == "AccessDenied"
        assert f"oid={outsider}" in error.error.message
        assert "does not have keys get permission on key vault 'kv-test-eastus;location=eastus'" in error.error.message

    def test_it_enforces_each_permission_of_the_access_policy(self):
        identity = str(uuid.uuid4())
        keystore.set_access_policy(self.vault, identity, ["get", "wrapKey", "unwrapKey"])
        client = key_client(self.vault, identity=identity)
        kid = client.get_key("cmk").id
        wrapped = crypto_client(kid, identity=identity).wrap_key(KeyWrapAlgorithm.rsa_oaep, b"a" * 32).encrypted_key
        assert crypto_client(kid, identity=identity).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped).key == b"a" * 32
        with self.assertRaises(HttpResponseError) as caught:
            client.begin_delete_key("cmk")
        assert "does not have keys delete permission" in caught.exception.error.message
        with self.assertRaises(HttpResponseError):
            list(client.list_properties_of_keys())
        # Removing unwrapKey takes effect on the next call.
        keystore.set_access_policy(self.vault, identity, ["unwrapKey"], mode="remove")
        with self.assertRaises(HttpResponseError) as caught:
            crypto_client(kid, identity=identity).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped)
        assert "does not have keys unwrapKey permission" in caught.exception.error.message

    def test_it_enforces_role_assignments_on_rbac_vaults(self):
        vault = make_vault("kv-rbac-eastus", rbac=True)
        keystore.create_key(vault, "cmk")
        identity = str(uuid.uuid4())
        # An access policy is ignored on an RBAC vault.
        keystore.set_access_policy(vault, identity, ["all"])
        with self.assertRaises(HttpResponseError) as caught:
            key_client(vault, identity=identity).get_key("cmk")
        assert caught.exception.error.innererror["code"] == "ForbiddenByRbac"
        assert "Action: 'Microsoft.KeyVault/vaults/keys/read'" in caught.exception.error.message
        keystore.assign_role(vault.arm_id, identity, keystore.CRYPTO_SERVICE_ENCRYPTION_USER)
        kid = key_client(vault, identity=identity).get_key("cmk").id
        wrapped = crypto_client(kid, identity=identity).wrap_key(KeyWrapAlgorithm.rsa_oaep, b"r" * 32).encrypted_key
        assert crypto_client(kid, identity=identity).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped).key == b"r" * 32
        # The role grants get/wrap/unwrap only.
        with self.assertRaises(HttpResponseError) as caught:
            key_client(vault, identity=identity).rotate_key("cmk")
        assert "keys/rotate/action" in caught.exception.error.message

    def test_it_honours_a_role_assigned_on_one_key(self):
        vault = make_vault("kv-rbac-perkey", rbac=True)
        keystore.create_key(vault, "mine")
        keystore.create_key(vault, "theirs")
        identity = str(uuid.uuid4())
        keystore.assign_role(f"{vault.arm_id}/keys/mine", identity, keystore.READER)
        assert key_client(vault, identity=identity).get_key("mine").name == "mine"
        with self.assertRaises(HttpResponseError):
            key_client(vault, identity=identity).get_key("theirs")

    def test_it_inherits_role_assignments_from_the_subscription(self):
        vault = make_vault("kv-rbac-inherit", rbac=True)
        keystore.create_key(vault, "cmk")
        keystore.assign_role(f"/subscriptions/{SUBSCRIPTION_ID}", PORTAL_PRINCIPAL_ID, keystore.CRYPTO_OFFICER)
        assert key_client(vault).rotate_key("cmk").name == "cmk"

    def test_it_refuses_an_identity_of_another_tenant(self):
        identity = str(uuid.uuid4())
        register_principal(identity, OTHER_TENANT_ID, display_name="foreign managed identity")
        keystore.set_access_policy(self.vault, identity, ["get"])
        with self.assertRaises(ClientAuthenticationError) as caught:
            key_client(self.vault, identity=identity).get_key("cmk")
        assert "AKV10032" in str(caught.exception)

    def test_it_refuses_a_forged_token(self):
        from azure.core.rest import HttpRequest

        from emulator.transport import EmulatorTransport

        token = "emu.eyJvaWQiOiJ4In0.AAAA"
        raw = EmulatorTransport().send(
            HttpRequest(
                "GET",
                "https://kv-test-eastus.vault.azure.net/keys?api-version=7.5",
                headers={"Authorization": f"Bearer {token}"},
            )
        )
        assert raw.status_code == 401
        assert "WWW-Authenticate" in raw.headers

    def test_it_cannot_resolve_an_unknown_vault(self):
        client = key_client(self.vault)
        from azure.keyvault.keys import KeyClient

        from emulator import sdk_options

        options = sdk_options()
        missing = KeyClient("https://kv-missing.vault.azure.net/", options.pop("credential"), retry_total=0, **options)
        with self.assertRaises(ServiceRequestError):
            missing.get_key("cmk")
        assert client.get_key("cmk").name == "cmk"


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _get(url):
    from azure.core.rest import HttpRequest

    return HttpRequest("GET", url)


def _post(url, body):
    from azure.core.rest import HttpRequest

    return HttpRequest("POST", url, content=body, headers={"Content-Type": "application/json"})
