"""The emulator's ARM for subscriptions and Cognitive Services accounts, driven by the real SDK clients."""

from __future__ import annotations

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.core.rest import HttpRequest
from azure.mgmt.cognitiveservices.models import Account, AccountProperties, Encryption, Identity, Sku
from django.test import override_settings

from emulator import keystore
from emulator.models import ArmOperation, CognitiveAccount, RoleAssignment, Vault
from emulator.testing import request_count
from tests.emulator.arm_builders import (
    OTHER_SUBSCRIPTION_ID,
    RESOURCE_GROUP,
    SUBSCRIPTION_ID,
    TENANT_ID,
    ArmTestCase,
    StartOnly,
    cmk_update,
    cs_client,
    grant,
    make_account,
    make_estate,
    make_key,
    make_vault,
    subscription_client,
    versions_of,
)

API = "api-version=2025-09-01"


def _arm(method: str, path: str, **kwargs):
    return subscription_client().send_request(HttpRequest(method, f"https://management.azure.com{path}", **kwargs))


# Subscriptions, tenants, regions, resource groups


class SubscriptionTests(ArmTestCase):
    @classmethod
    def setUpTestData(cls):
        make_estate()

    @override_settings(EMULATOR_ARM_PAGE_SIZE=1)
    def test_it_lists_subscriptions_past_one_page(self):
        subscriptions = list(subscription_client().subscriptions.list())

        assert {(s.display_name, s.subscription_id) for s in subscriptions} == {
            ("arm-tests", SUBSCRIPTION_ID),
            ("arm-tests-other", OTHER_SUBSCRIPTION_ID),
        }
        assert all(str(s.state) in {"Enabled", "SubscriptionState.ENABLED"} for s in subscriptions)
        # Page size 1 and two subscriptions: the SDK followed one nextLink.
        assert request_count("GET", "/subscriptions") == 2

    def test_it_gets_a_subscription_and_refuses_an_unknown_one(self):
        found = subscription_client().subscriptions.get(SUBSCRIPTION_ID)

        assert found.tenant_id == TENANT_ID
        assert found.display_name == "arm-tests"
        with self.assertRaises(ResourceNotFoundError) as raised:
            subscription_client().subscriptions.get("00000000-0000-0000-0000-000000000000")
        assert raised.exception.error.code == "SubscriptionNotFound"

    def test_it_lists_tenants(self):
        tenants = {t.tenant_id: t for t in subscription_client().tenants.list()}

        assert tenants[TENANT_ID].default_domain == "armtests.onmicrosoft.com"
        assert len(tenants) == 2

    def test_it_lists_locations(self):
        locations = {loc.name: loc for loc in subscription_client().subscriptions.list_locations(SUBSCRIPTION_ID)}

        assert locations["eastus"].display_name == "East US"
        assert locations["westeurope"].metadata.paired_region[0].name == "northeurope"

    def test_it_gets_lists_and_creates_resource_groups(self):
        created = _arm(
            "PUT", f"/subscriptions/{SUBSCRIPTION_ID}/resourcegroups/rg-new?{API}", json={"location": "West Europe"}
        )
        got = _arm("GET", f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/RG-NEW?{API}")
        listed = _arm("GET", f"/subscriptions/{SUBSCRIPTION_ID}/resourcegroups?{API}")
        missing = _arm("GET", f"/subscriptions/{SUBSCRIPTION_ID}/resourcegroups/nope?{API}")

        assert created.status_code == 201
        # Resource group names are case-insensitive; the location is normalised.
        assert got.json()["name"] == "rg-new"
        assert got.json()["location"] == "westeurope"
        assert {g["name"] for g in listed.json()["value"]} == {RESOURCE_GROUP, "rg-new"}
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "ResourceGroupNotFound"


# Reading accounts


class AccountReadTests(ArmTestCase):
    @classmethod
    def setUpTestData(cls):
        make_estate()
        cls.account = make_account("face-one")
        make_account("face-free", sku="F0", identity=None)

    def test_it_gets_an_account_in_arm_shape(self):
        account = cs_client().accounts.get(RESOURCE_GROUP, "face-one")

        assert account.id == self.account.arm_id
        assert account.kind == "Face"
        assert account.sku.name == "S0"
        assert account.identity.type == "SystemAssigned"
        assert account.identity.principal_id == self.account.principal_id
        assert account.identity.tenant_id == TENANT_ID
        assert account.properties.endpoint == "https://face-one.cognitiveservices.azure.com/"
        assert account.properties.provisioning_state == "Succeeded"
        # Microsoft-managed keys: no encryption block at all, as Azure returns it.
        assert account.properties.encryption is None
        assert "CustomerManagedKey" in {c.name for c in account.properties.capabilities}
        assert account.system_data.created_by == "tests"
        assert account.etag == self.account.etag

    def test_it_gives_f0_no_customer_managed_key_capability(self):
        account = cs_client().accounts.get(RESOURCE_GROUP, "face-free")

        assert "CustomerManagedKey" not in {c.name for c in account.properties.capabilities}
        assert account.identity.type == "None"
        assert account.identity.principal_id is None

    @override_settings(EMULATOR_CMK_SKUS=("E0",))
    def test_it_makes_the_capability_configurable(self):
        account = cs_client().accounts.get(RESOURCE_GROUP, "face-one")

        assert "CustomerManagedKey" not in {c.name for c in account.properties.capabilities}

    def test_it_answers_arm_404s(self):
        with self.assertRaises(ResourceNotFoundError) as missing_account:
            cs_client().accounts.get(RESOURCE_GROUP, "nope")
        with self.assertRaises(ResourceNotFoundError) as missing_group:
            cs_client().accounts.get("rg-nope", "face-one")

        assert missing_account.exception.error.code == "ResourceNotFound"
        assert "face-one" not in missing_account.exception.error.message
        assert missing_group.exception.error.code == "ResourceGroupNotFound"

    @override_settings(EMULATOR_ARM_PAGE_SIZE=2)
    def test_it_lists_by_subscription_past_one_page(self):
        for index in range(3):
            make_account(f"face-extra-{index}", identity=None)

        names = [a.name for a in cs_client().accounts.list()]

        assert sorted(names) == sorted(["face-one", "face-free", "face-extra-0", "face-extra-1", "face-extra-2"])
        # Five accounts, two per page: three pages.
        assert request_count("GET", "/providers/Microsoft.CognitiveServices/accounts") == 3

    def test_it_lists_by_resource_group(self):
        make_account("face-elsewhere", subscription_id=OTHER_SUBSCRIPTION_ID, identity=None)

        names = {a.name for a in cs_client().accounts.list_by_resource_group(RESOURCE_GROUP)}
        other = {a.name for a in cs_client(OTHER_SUBSCRIPTION_ID).accounts.list_by_resource_group(RESOURCE_GROUP)}

        assert names == {"face-one", "face-free"}
        assert other == {"face-elsewhere"}


# Creating and deleting


class AccountCreateDeleteTests(ArmTestCase):
    @classmethod
    def setUpTestData(cls):
        make_estate()

    def _create(self, name: str, **fields) -> Account:
        body = Account(
            kind="Face",
            sku=Sku(name=fields.pop("sku", "S0")),
            location="eastus",
            identity=Identity(type="SystemAssigned"),
            properties=AccountProperties(custom_sub_domain_name=name, **fields),
        )
        return cs_client().accounts.begin_create(RESOURCE_GROUP, name, body).result()

    def test_it_creates_an_account_as_a_long_running_operation(self):
        account = self._create("face-new")

        assert account.properties.provisioning_state == "Succeeded"
        assert account.identity.principal_id
        assert account.identity.tenant_id == TENANT_ID
        # The SDK polled the operation status the PUT pointed it to.
        assert request_count("GET", "/operationStatuses/") == 1
        assert ArmOperation.objects.get(action="create").status == "Succeeded"

    def test_it_validates_names(self):
        for name in ("a", "bad name!", "-dash", "x" * 65):
            with self.subTest(name=name), self.assertRaises(HttpResponseError) as raised:
                self._create(name)
            assert raised.exception.status_code == 400
            assert raised.exception.error.code == "InvalidAccountName"
        body = Account(kind="Face", sku=Sku(name="S0"), location="eastus")
        with self.assertRaises(HttpResponseError) as group:
            cs_client().accounts.begin_create("g" * 91, "face-x", body)
        assert group.exception.error.code == "InvalidResourceGroupName"

    def test_it_refuses_an_unknown_sku(self):
        with self.assertRaises(HttpResponseError) as raised:
            self._create("face-sku", sku="P9")

        assert raised.exception.error.code == "InvalidSkuName"

    def test_it_refuses_a_customer_managed_key_at_creation(self):
        encryption = Encryption(key_source="Microsoft.KeyVault")

        with self.assertRaises(HttpResponseError) as raised:
            self._create("face-cmk-create", encryption=encryption)

        assert raised.exception.error.code == "CustomerManagedKeyNotAllowedOnCreate"

    def test_it_deletes_as_a_long_running_operation(self):
        vault = make_vault()
        account = make_account("face-doomed")
        grant(vault, account.principal_id)

        cs_client().accounts.begin_delete(RESOURCE_GROUP, "face-doomed").result()

        assert not CognitiveAccount.objects.filter(name="face-doomed").exists()
        with self.assertRaises(ResourceNotFoundError):
            cs_client().accounts.get(RESOURCE_GROUP, "face-doomed")
        # Its system identity's service principal went with it, and so did that principal's access.
        assert Vault.objects.get(pk=vault.pk).policy_for(account.principal_id) is None


# Updating: the LRO, etags, identities


class AccountUpdateTests(ArmTestCase):
    @classmethod
    def setUpTestData(cls):
        make_estate()
        cls.vault = make_vault()
        cls.key = make_key(cls.vault, "cmk", versions=2)
        cls.account = make_account("face-upd")
        grant(cls.vault, cls.account.principal_id)

    def _path(self) -> str:
        return self.account.arm_id

    @override_settings(EMULATOR_LRO_POLLS=2)
    def test_it_answers_a_patch_with_the_async_operation_headers(self):
        response = _arm("PATCH", f"{self._path()}?{API}", json={"tags": {"team": "vision"}})
        status_url = response.headers["Azure-AsyncOperation"]

        assert response.status_code == 202
        assert response.headers["Retry-After"] == "1"
        assert "/operationResults/" in response.headers["Location"]
        assert "/locations/eastus/operationStatuses/" in status_url and "api-version=2025-09-01" in status_url
        assert response.json()["properties"]["provisioningState"] == "Accepted"
        # Accepted until the operation finishes, on its second status poll here.
        assert _arm("GET", f"{self._path()}?{API}").json()["properties"]["provisioningState"] == "Accepted"
        assert subscription_client().send_request(HttpRequest("GET", status_url)).json()["status"] == "InProgress"
        done = subscription_client().send_request(HttpRequest("GET", status_url)).json()
        assert done["status"] == "Succeeded"
        after = _arm("GET", f"{self._path()}?{API}").json()
        assert after["properties"]["provisioningState"] == "Succeeded"
        assert after["tags"] == {"team": "vision"}

    @override_settings(EMULATOR_LRO_POLLS=3)
    def test_it_finishes_after_the_configured_number_of_polls(self):
        poller = cs_client().accounts.begin_update(RESOURCE_GROUP, "face-upd", Account(tags={"a": "b"}))

        assert poller.result().tags == {"a": "b"}
        assert request_count("GET", "/operationStatuses/") == 3

    def test_it_changes_the_etag_on_every_write_and_honours_if_match(self):
        client = cs_client()
        before = client.accounts.get(RESOURCE_GROUP, "face-upd").etag

        after = client.accounts.begin_update(
            RESOURCE_GROUP, "face-upd", Account(tags={"x": "1"}), headers={"If-Match": before}
        ).result()
        with self.assertRaises(HttpResponseError) as stale:
            client.accounts.begin_update(
                RESOURCE_GROUP, "face-upd", Account(tags={"x": "2"}), headers={"If-Match": before}
            )

        assert after.etag != before
        assert stale.exception.status_code == 412
        assert stale.exception.error.code == "PreconditionFailed"
        assert client.accounts.get(RESOURCE_GROUP, "face-upd").tags == {"x": "1"}

    def test_it_resumes_from_a_continuation_token_on_a_new_client(self):
        started = cs_client().accounts.begin_update(
            RESOURCE_GROUP, "face-upd", cmk_update(self.vault, "cmk", versions_of(self.key)[0]), polling=StartOnly()
        )
        token = started.continuation_token()

        assert CognitiveAccount.objects.get(name="face-upd").provisioning_state == "Accepted"
        resumed = cs_client().accounts.begin_update(RESOURCE_GROUP, "face-upd", None, continuation_token=token)
        account = resumed.result()

        assert account.properties.provisioning_state == "Succeeded"
        assert account.properties.encryption.key_vault_properties.key_version == versions_of(self.key)[0]
        # The initial PATCH was sent once; the new client only polled.
        assert request_count("PATCH", "/accounts/face-upd") == 1

    def test_it_ends_failed_when_the_key_is_disabled_while_the_operation_runs(self):
        version = versions_of(self.key)[0]
        started = cs_client().accounts.begin_update(
            RESOURCE_GROUP, "face-upd", cmk_update(self.vault, "cmk", version), polling=StartOnly()
        )
        # Validation passed when the PATCH arrived; the key is disabled before the operation finishes.
        keystore.update_key_version(self.key.versions.get(version=version), enabled=False)

        with self.assertRaises(HttpResponseError) as raised:
            cs_client().accounts.begin_update(
                RESOURCE_GROUP, "face-upd", None, continuation_token=started.continuation_token()
            ).result()

        assert raised.exception.error.code == "KeyDisabled"
        account = cs_client().accounts.get(RESOURCE_GROUP, "face-upd")
        assert account.properties.provisioning_state == "Failed"
        assert account.properties.encryption is None
        assert ArmOperation.objects.get(action="update").error["code"] == "KeyDisabled"

    def test_it_refuses_a_second_change_while_one_runs(self):
        cs_client().accounts.begin_update(RESOURCE_GROUP, "face-upd", Account(tags={"a": "1"}), polling=StartOnly())

        with self.assertRaises(ResourceExistsError) as raised:
            cs_client().accounts.begin_update(RESOURCE_GROUP, "face-upd", Account(tags={"a": "2"}))

        assert raised.exception.error.code == "AnotherOperationInProgress"

    @override_settings(EMULATOR_LRO_TIMEOUT_SECONDS=5)
    def test_it_finishes_an_abandoned_operation_after_the_timeout(self):
        from emulator.testing import shift_clock

        cs_client().accounts.begin_update(RESOURCE_GROUP, "face-upd", Account(tags={"a": "1"}), polling=StartOnly())
        shift_clock(10)

        account = cs_client().accounts.get(RESOURCE_GROUP, "face-upd")

        assert account.properties.provisioning_state == "Succeeded"
        assert account.tags == {"a": "1"}

    def test_it_refuses_key_vault_encryption_without_key_vault_properties(self):
        # The SDK trap: Encryption() defaults key_source to Microsoft.KeyVault (azure-api.md 2.2).
        body = Account(properties=AccountProperties(encryption=Encryption()))

        with self.assertRaises(HttpResponseError) as raised:
            cs_client().accounts.begin_update(RESOURCE_GROUP, "face-upd", body)

        assert raised.exception.status_code == 400
        assert raised.exception.error.code == "KeyVaultPropertiesRequired"
        assert "Microsoft.CognitiveServices" in raised.exception.error.message

    def test_it_disables_the_system_identity_and_revokes_its_access(self):
        old_principal = self.account.principal_id
        keystore.assign_role(self.vault.arm_id, old_principal, keystore.CRYPTO_SERVICE_ENCRYPTION_USER)

        off = (
            cs_client()
            .accounts.begin_update(RESOURCE_GROUP, "face-upd", Account(identity=Identity(type="None")))
            .result()
        )
        on = (
            cs_client()
            .accounts.begin_update(RESOURCE_GROUP, "face-upd", Account(identity=Identity(type="SystemAssigned")))
            .result()
        )

        assert off.identity.type == "None" and off.identity.principal_id is None
        # As in Azure, the deleted service principal's access went with it...
        assert Vault.objects.get(pk=self.vault.pk).policy_for(old_principal) is None
        assert not RoleAssignment.objects.filter(principal_id=old_principal).exists()
        # ...and turning the identity on again creates a new principal, with no access yet.
        assert on.identity.principal_id not in {None, old_principal}
        assert on.identity.tenant_id == TENANT_ID

    def test_it_keeps_user_assigned_identities_when_the_system_identity_is_added(self):
        uami = (
            f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{RESOURCE_GROUP}/providers/"
            "Microsoft.ManagedIdentity/userAssignedIdentities/id-face"
        )
        account = make_account("face-uami", identity=None)
        client = cs_client()
        client.accounts.begin_update(
            RESOURCE_GROUP,
            account.name,
            Account(identity=Identity(type="UserAssigned", user_assigned_identities={uami: {}})),
        ).result()

        both = client.accounts.begin_update(
            RESOURCE_GROUP, account.name, Account(identity=Identity(type="SystemAssigned"))
        ).result()

        assert both.identity.type == "SystemAssigned, UserAssigned"
        assert both.identity.principal_id
        assert both.identity.user_assigned_identities[uami].client_id

    def test_it_refuses_an_invalid_identity_type(self):
        with self.assertRaises(HttpResponseError) as raised:
            cs_client().accounts.begin_update(RESOURCE_GROUP, "face-upd", Account(identity=Identity(type="Everything")))

        assert raised.exception.error.code == "InvalidIdentityType"

    def test_it_changes_the_sku(self):
        account = cs_client().accounts.begin_update(RESOURCE_GROUP, "face-upd", Account(sku=Sku(name="E0"))).result()

        assert account.sku.name == "E0"
