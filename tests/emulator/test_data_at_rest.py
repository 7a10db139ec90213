"""The data at rest: records under a data key wrapped by the Microsoft-managed key and, under CMK, by the
customer's key through Key Vault as the account's identity. The probe really decrypts the records."""

from __future__ import annotations

import base64
from datetime import timedelta
from io import StringIO

from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest
from azure.mgmt.cognitiveservices.models import Account, Identity
from django.core.management import call_command

from emulator import clock, data_at_rest, keystore
from emulator.models import AccountData, CognitiveAccount, DataRecord
from emulator.testing import shift_clock
from tests.emulator.arm_builders import (
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
    subscription_client,
    versions_of,
)


def probe(account: CognitiveAccount) -> dict:
    """The emulator's ARM extension, called as any client would."""
    request = HttpRequest(
        "POST", f"https://management.azure.com{account.arm_id}/probeDataAccess?api-version=2025-09-01"
    )
    response = subscription_client().send_request(request)
    assert response.status_code == 200
    return response.json()


def ciphertexts(account: CognitiveAccount) -> dict[str, bytes]:
    return {r.name: bytes(r.ciphertext) for r in DataRecord.objects.filter(account_id=account.arm_id.lower())}


def wrapped_dek(account: CognitiveAccount) -> tuple[bytes, str]:
    data = AccountData.objects.get(account_id=account.arm_id.lower())
    return bytes(data.wrapped_dek), data.cmk_kid


class DataAtRestTests(ArmTestCase):
    @classmethod
    def setUpTestData(cls):
        make_estate()
        cls.vault = make_vault()
        cls.key = make_key(cls.vault, "cmk")
        cls.account = make_account("face-data")
        grant(cls.vault, cls.account.principal_id)

    def _set(self, vault, key_name: str, version: str, account: str = "face-data") -> None:
        cs_client().accounts.begin_update(RESOURCE_GROUP, account, cmk_update(vault, key_name, version)).result()

    def _enable_cmk(self) -> str:
        version = versions_of(self.key)[-1]
        self._set(self.vault, "cmk", version)
        return version

    def test_it_walks_the_data_through_enable_revoke_restore_new_version_and_disable(self):
        account, principal = self.account, self.account.principal_id
        records = ciphertexts(account)
        microsoft_only, kid = wrapped_dek(account)
        assert kid == "" and len(records) == 3
        start = probe(account)
        assert (start["readable"], start["code"]) == (True, "DataReadable")

        # Enable CMK: the data key gains the customer layer; no record is re-encrypted.
        first = self._enable_cmk()
        under_first, kid = wrapped_dek(account)
        assert kid.endswith(f"/keys/cmk/{first}")
        assert under_first != microsoft_only
        assert probe(account)["readable"] is True
        assert ciphertexts(account) == records

        # Revoke the identity's access policy: Key Vault refuses the unwrap, the data is unreadable.
        keystore.set_access_policy(self.vault, principal, ["get", "wrapKey", "unwrapKey"], mode="remove")
        revoked = probe(account)
        assert revoked["readable"] is False
        assert revoked["code"] == "KeyVaultAccessDenied"

        # Restore it: readable again, nothing was re-wrapped.
        grant(self.vault, principal)
        assert probe(account)["readable"] is True
        assert wrapped_dek(account) == (under_first, kid)

        # A new version: the data key is re-wrapped (unwrapped with the old, wrapped with the new).
        second = keystore.rotate_key(self.key).version
        self._set(self.vault, "cmk", second)
        under_second, kid = wrapped_dek(account)
        assert kid.endswith(f"/keys/cmk/{second}")
        assert under_second != under_first
        assert probe(account)["readable"] is True
        assert ciphertexts(account) == records

        # Back to Microsoft-managed keys: only the Microsoft wrap is left (AES key wrap is deterministic).
        cs_client().accounts.begin_update(RESOURCE_GROUP, "face-data", microsoft_update()).result()
        assert wrapped_dek(account) == (microsoft_only, "")
        assert probe(account)["readable"] is True
        assert ciphertexts(account) == records

    def test_it_decrypts_the_records_themselves(self):
        self._enable_cmk()

        records = data_at_rest.read_records(
            self.account, data_at_rest.current_customer_key(CognitiveAccount.objects.get(pk=self.account.pk))
        )

        assert records["person-group/employees"]["name"] == "Employees"
        assert set(records) == {name for name, _ in data_at_rest.DEMO_RECORDS}

    def test_it_moves_to_a_key_in_another_vault(self):
        self._enable_cmk()
        records = ciphertexts(self.account)
        other = make_vault("kv-other-eastus")
        grant(other, self.account.principal_id)
        other_key = make_key(other, "cmk-other")

        self._set(other, "cmk-other", versions_of(other_key)[-1])

        assert wrapped_dek(self.account)[1].startswith("https://kv-other-eastus.vault.azure.net/keys/cmk-other/")
        assert probe(self.account)["readable"] is True
        assert ciphertexts(self.account) == records
        # The old vault's key is no longer needed: revoking it there changes nothing.
        keystore.set_access_policy(self.vault, self.account.principal_id, ["unwrapKey"], mode="remove")
        assert probe(self.account)["readable"] is True

    def test_it_is_unreadable_while_the_key_is_disabled(self):
        version = self._enable_cmk()
        row = self.key.versions.get(version=version)

        keystore.update_key_version(row, enabled=False)
        disabled = probe(self.account)
        keystore.update_key_version(row, enabled=True)

        assert disabled["readable"] is False and disabled["code"] == "KeyDisabled"
        assert probe(self.account)["readable"] is True

    def test_it_is_unreadable_once_the_key_expires(self):
        key = make_key(self.vault, "expiring", exp=clock.now() + timedelta(days=5))
        self._set(self.vault, "expiring", versions_of(key)[-1])
        assert probe(self.account)["readable"] is True

        shift_clock(6 * 86400)

        expired = probe(self.account)
        assert expired["readable"] is False and expired["code"] == "KeyExpired"

    def test_it_is_unreadable_while_the_key_is_deleted_and_readable_after_recovery(self):
        self._enable_cmk()

        keystore.delete_key(self.key)
        deleted = probe(self.account)
        keystore.recover_key(self.key)

        assert deleted["readable"] is False and deleted["code"] == "KeyNotFound"
        assert probe(self.account)["readable"] is True

    def test_it_is_unreadable_once_the_identity_is_turned_off(self):
        self._enable_cmk()
        client = cs_client()

        client.accounts.begin_update(RESOURCE_GROUP, "face-data", Account(identity=Identity(type="None"))).result()
        off = probe(self.account)
        on = client.accounts.begin_update(
            RESOURCE_GROUP, "face-data", Account(identity=Identity(type="SystemAssigned"))
        ).result()
        new_principal_only = probe(self.account)
        grant(self.vault, on.identity.principal_id)

        assert off["readable"] is False and off["code"] == "IdentityNotEnabled"
        # The identity comes back as a new principal, which the vault does not know yet.
        assert new_principal_only["readable"] is False and new_principal_only["code"] == "KeyVaultAccessDenied"
        assert probe(self.account)["readable"] is True

    def test_it_never_puts_key_material_in_the_probe(self):
        self._enable_cmk()
        wrapped, _ = wrapped_dek(self.account)

        answer = probe(self.account)

        assert set(answer) == {"readable", "code", "reason"}
        for encoding in (wrapped.hex(), base64.b64encode(wrapped).decode()[:20]):
            assert encoding not in answer["reason"]


class TenantMoveTests(ArmTestCase):
    @classmethod
    def setUpTestData(cls):
        make_estate()
        cls.vault = make_vault()
        cls.key = make_key(cls.vault, "cmk")
        cls.cmk_account = make_account("face-moving")
        cls.mmk_account = make_account("face-plain")
        grant(cls.vault, cls.cmk_account.principal_id)

    def test_it_breaks_customer_managed_keys_after_a_tenant_move(self):
        cs_client().accounts.begin_update(
            RESOURCE_GROUP, "face-moving", cmk_update(self.vault, "cmk", versions_of(self.key)[-1])
        ).result()
        assert probe(self.cmk_account)["readable"] is True
        out = StringIO()

        call_command("emulator_move_tenant", "arm-tests", "armtestsother", stdout=out)

        moved = cs_client().accounts.get(RESOURCE_GROUP, "face-moving")
        assert moved.identity.tenant_id == OTHER_TENANT_ID
        # The vault keeps its old tenant, as Azure leaves it until someone fixes it.
        assert self.vault.tenant_id != OTHER_TENANT_ID
        broken = probe(self.cmk_account)
        assert broken["readable"] is False and broken["code"] == "TenantMismatch"
        # Microsoft-managed data does not depend on any identity.
        assert probe(self.mmk_account)["readable"] is True
        assert "Moved subscription arm-tests" in out.getvalue()

    def test_it_refuses_new_cmk_across_the_moved_tenant(self):
        call_command("emulator_move_tenant", "arm-tests", OTHER_TENANT_ID, stdout=StringIO())

        with self.assertRaises(HttpResponseError) as raised:
            cs_client().accounts.begin_update(
                RESOURCE_GROUP, "face-moving", cmk_update(self.vault, "cmk", versions_of(self.key)[-1])
            ).result()

        assert raised.exception.error.code == "TenantMismatch"

    def test_the_command_refuses_unknown_names(self):
        from django.core.management.base import CommandError

        with self.assertRaises(CommandError):
            call_command("emulator_move_tenant", "no-such-subscription", "armtestsother", stdout=StringIO())
