"""Microsoft.KeyVault/vaults and role assignments over ARM, through the real KeyVaultManagementClient and
AuthorizationManagementClient (azure-api.md sections 3 and 0)."""

from __future__ import annotations

import uuid

from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError, ServiceRequestError
from azure.keyvault.keys.crypto import KeyWrapAlgorithm
from azure.mgmt.authorization.models import RoleAssignmentCreateParameters
from azure.mgmt.keyvault.models import (
    AccessPolicyEntry,
    Permissions,
    Sku,
    VaultAccessPolicyParameters,
    VaultAccessPolicyProperties,
    VaultCreateOrUpdateParameters,
    VaultPatchParameters,
    VaultPatchProperties,
    VaultProperties,
)
from django.test import override_settings

from emulator import keystore
from emulator.identities import PORTAL_PRINCIPAL_ID
from emulator.models import RoleAssignment, Vault
from emulator.testing import request_count
from tests.emulator.kv_builders import (
    OTHER_TENANT_ID,
    RESOURCE_GROUP,
    SUBSCRIPTION_ID,
    TENANT_ID,
    EmulatorTestCase,
    authorization_mgmt,
    crypto_client,
    key_client,
    make_estate,
    make_vault,
    vault_mgmt,
)

ENCRYPTION_USER_ROLE = f"/subscriptions/{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/roleDefinitions/e147488a-f6f5-4113-8e2d-b22465e65bf6"


def _create_params(**properties):
    values = {"tenant_id": TENANT_ID, "sku": Sku(family="A", name="standard"), "access_policies": []}
    values.update(properties)
    return VaultCreateOrUpdateParameters(location="eastus", properties=VaultProperties(**values))


def _policy(object_id, keys, tenant_id=TENANT_ID):
    return AccessPolicyEntry(tenant_id=tenant_id, object_id=object_id, permissions=Permissions(keys_property=keys))


class VaultTests(EmulatorTestCase):
    @classmethod
    def setUpTestData(cls):
        make_estate()

    def test_it_creates_and_reads_a_vault(self):
        client = vault_mgmt(retry_total=0)
        params = _create_params(
            enable_purge_protection=True,
            soft_delete_retention_in_days=30,
            access_policies=[_policy(PORTAL_PRINCIPAL_ID, ["get", "list", "WRAPKEY"])],
        )
        created = client.vaults.begin_create_or_update(RESOURCE_GROUP, "kv-new-eastus", params).result()
        assert created.properties.vault_uri == "https://kv-new-eastus.vault.azure.net/"
        vault = client.vaults.get(RESOURCE_GROUP, "kv-new-eastus")
        assert (
            vault.id
            == f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.KeyVault/vaults/kv-new-eastus"
        )
        assert vault.location == "eastus"
        assert vault.properties.tenant_id == TENANT_ID
        assert vault.properties.enable_soft_delete is True
        assert vault.properties.enable_purge_protection is True
        assert vault.properties.soft_delete_retention_in_days == 30
        # Permission names come back in ARM's own casing.
        assert vault.properties.access_policies[0].permissions.keys_property == ["get", "list", "wrapKey"]
        # Finished in one request: no polling, no sleep.
        assert request_count("PUT", "/vaults/kv-new-eastus") == 1
        assert request_count("GET", "/vaults/kv-new-eastus") == 1

    def test_it_answers_404_for_a_missing_vault(self):
        with self.assertRaises(ResourceNotFoundError) as caught:
            vault_mgmt().vaults.get(RESOURCE_GROUP, "kv-nowhere")
        assert caught.exception.error.code == "ResourceNotFound"

    @override_settings(EMULATOR_ARM_PAGE_SIZE=2)
    def test_it_lists_vaults_past_one_page(self):
        for index in range(5):
            make_vault(f"kv-list-{index}")
        client = vault_mgmt()
        names = [v.name for v in client.vaults.list_by_subscription()]
        assert names == [f"kv-list-{i}" for i in range(5)]
        assert request_count("GET", "/providers/Microsoft.KeyVault/vaults", status=200) == 3
        assert len(list(client.vaults.list_by_resource_group(RESOURCE_GROUP))) == 5
        # vaults.list() goes through the generic resources API.
        assert sorted(r.name for r in client.vaults.list()) == names

    def test_it_validates_vault_names(self):
        client = vault_mgmt(retry_total=0)
        for name in ("kv", "1vault", "kv--double", "kv-ends-", "kv_under", "x" * 25):
            with self.assertRaises(HttpResponseError) as caught:
                client.vaults.begin_create_or_update(RESOURCE_GROUP, name, _create_params()).result()
            assert caught.exception.status_code == 400, name
            assert caught.exception.error.code == "VaultNameNotValid"

    def test_it_keeps_vault_names_globally_unique(self):
        make_vault("kv-taken")
        estate_rg = "rg-other"
        from emulator import estate

        estate.create_resource_group(SUBSCRIPTION_ID, estate_rg, "eastus")
        with self.assertRaises(ResourceExistsError) as caught:
            vault_mgmt().vaults.begin_create_or_update(estate_rg, "kv-taken", _create_params()).result()
        assert caught.exception.error.code == "VaultAlreadyExists"

    def test_it_refuses_an_unknown_resource_group(self):
        with self.assertRaises(ResourceNotFoundError) as caught:
            vault_mgmt().vaults.begin_create_or_update("rg-missing", "kv-orphan", _create_params()).result()
        assert caught.exception.error.code == "ResourceGroupNotFound"

    def test_it_turns_purge_protection_on_but_never_off(self):
        make_vault("kv-patch", purge_protection=False)
        client = vault_mgmt(retry_total=0)
        patched = client.vaults.update(
            RESOURCE_GROUP,
            "kv-patch",
            VaultPatchParameters(properties=VaultPatchProperties(enable_purge_protection=True)),
        )
        assert patched.properties.enable_purge_protection is True
        with self.assertRaises(HttpResponseError) as caught:
            client.vaults.update(
                RESOURCE_GROUP,
                "kv-patch",
                VaultPatchParameters(properties=VaultPatchProperties(enable_purge_protection=False)),
            )
        assert caught.exception.status_code == 400
        assert caught.exception.error.code == "BadRequest"
        assert "Enabling the purge protection for a vault is an irreversible action" in caught.exception.error.message
        assert Vault.objects.get(name="kv-patch").purge_protection_enabled is True

    def test_it_refuses_to_turn_soft_delete_off(self):
        make_vault("kv-soft")
        with self.assertRaises(HttpResponseError) as caught:
            vault_mgmt(retry_total=0).vaults.update(
                RESOURCE_GROUP,
                "kv-soft",
                VaultPatchParameters(properties=VaultPatchProperties(enable_soft_delete=False)),
            )
        assert "enableSoftDelete" in caught.exception.error.message

    def test_it_keeps_retention_between_7_and_90_days(self):
        make_vault("kv-retain")
        client = vault_mgmt(retry_total=0)
        for days in (6, 91):
            with self.assertRaises(HttpResponseError) as caught:
                client.vaults.update(
                    RESOURCE_GROUP,
                    "kv-retain",
                    VaultPatchParameters(properties=VaultPatchProperties(soft_delete_retention_in_days=days)),
                )
            assert caught.exception.status_code == 400
        patched = client.vaults.update(
            RESOURCE_GROUP,
            "kv-retain",
            VaultPatchParameters(properties=VaultPatchProperties(soft_delete_retention_in_days=7)),
        )
        assert patched.properties.soft_delete_retention_in_days == 7

    def test_it_adds_replaces_and_removes_access_policies(self):
        vault = make_vault("kv-policies")
        keystore.create_key(vault, "cmk")
        identity = str(uuid.uuid4())
        client = vault_mgmt()

        def change(kind, keys):
            params = VaultAccessPolicyParameters(
                properties=VaultAccessPolicyProperties(access_policies=[_policy(identity, keys)])
            )
            return client.vaults.update_access_policy(RESOURCE_GROUP, "kv-policies", kind, params)

        def granted():
            entry = Vault.objects.get(name="kv-policies").policy_for(identity)
            return entry["permissions"]["keys"] if entry else None

        echoed = change("add", ["get", "wrapKey"])
        assert echoed.properties.access_policies[0].object_id == identity
        change("add", ["unwrapKey"])
        assert granted() == ["get", "wrapKey", "unwrapKey"]
        kid = key_client(vault, identity=identity).get_key("cmk").id
        wrapped = crypto_client(kid, identity=identity).wrap_key(KeyWrapAlgorithm.rsa_oaep, b"p" * 32).encrypted_key
        assert crypto_client(kid, identity=identity).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped).key == b"p" * 32
        change("remove", ["unwrapKey"])
        assert granted() == ["get", "wrapKey"]
        # The data plane sees the revocation at once.
        with self.assertRaises(HttpResponseError) as caught:
            crypto_client(kid, identity=identity).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped)
        assert caught.exception.status_code == 403
        change("replace", ["list"])
        assert granted() == ["list"]
        change("remove", ["list"])
        assert granted() is None

    def test_it_refuses_a_policy_of_another_tenant(self):
        make_vault("kv-tenanted")
        params = VaultAccessPolicyParameters(
            properties=VaultAccessPolicyProperties(
                access_policies=[_policy(str(uuid.uuid4()), ["get"], OTHER_TENANT_ID)]
            )
        )
        with self.assertRaises(HttpResponseError) as caught:
            vault_mgmt(retry_total=0).vaults.update_access_policy(RESOURCE_GROUP, "kv-tenanted", "add", params)
        assert caught.exception.status_code == 400

    def test_it_refuses_unknown_permissions(self):
        make_vault("kv-perms")
        params = VaultAccessPolicyParameters(
            properties=VaultAccessPolicyProperties(access_policies=[_policy(str(uuid.uuid4()), ["fly"])])
        )
        with self.assertRaises(HttpResponseError) as caught:
            vault_mgmt(retry_total=0).vaults.update_access_policy(RESOURCE_GROUP, "kv-perms", "add", params)
        assert "fly" in caught.exception.error.message

    def test_it_deletes_a_vault_and_its_host(self):
        vault = make_vault("kv-doomed")
        keystore.create_key(vault, "cmk")
        assert key_client(vault).get_key("cmk").name == "cmk"
        vault_mgmt().vaults.delete(RESOURCE_GROUP, "kv-doomed")
        assert not Vault.objects.filter(name="kv-doomed").exists()
        with self.assertRaises(ServiceRequestError):
            key_client(vault, retry_total=0).get_key("cmk")
        # Deleting again is a quiet 204.
        vault_mgmt().vaults.delete(RESOURCE_GROUP, "kv-doomed")

    def test_it_checks_name_availability(self):
        make_vault("kv-used")
        client = vault_mgmt()
        from azure.mgmt.keyvault.models import VaultCheckNameAvailabilityParameters

        used = client.vaults.check_name_availability(VaultCheckNameAvailabilityParameters(name="kv-used"))
        free = client.vaults.check_name_availability(VaultCheckNameAvailabilityParameters(name="kv-free"))
        assert (used.name_available, used.reason, free.name_available) == (False, "AlreadyExists", True)


class RoleAssignmentTests(EmulatorTestCase):
    @classmethod
    def setUpTestData(cls):
        make_estate()
        cls.vault = make_vault("kv-rbac-eastus", rbac=True)
        keystore.create_key(cls.vault, "cmk")
        keystore.assign_role(cls.vault.arm_id, PORTAL_PRINCIPAL_ID, keystore.CRYPTO_OFFICER)

    def _assign(self, principal, name=None, role=ENCRYPTION_USER_ROLE):
        params = RoleAssignmentCreateParameters(
            role_definition_id=role, principal_id=principal, principal_type="ServicePrincipal"
        )
        return authorization_mgmt().role_assignments.create(self.vault.arm_id, name or str(uuid.uuid4()), params)

    def test_it_creates_lists_gets_and_deletes_assignments(self):
        identity = str(uuid.uuid4())
        created = self._assign(identity)
        assert created.principal_id == identity
        assert created.role_definition_id.endswith("e147488a-f6f5-4113-8e2d-b22465e65bf6")
        assert created.scope == self.vault.arm_id
        client = authorization_mgmt()
        listed = list(client.role_assignments.list_for_scope(self.vault.arm_id, filter=f"principalId eq '{identity}'"))
        assert [a.name for a in listed] == [created.name]
        assert client.role_assignments.get(self.vault.arm_id, created.name).principal_id == identity
        client.role_assignments.delete(self.vault.arm_id, created.name)
        assert not RoleAssignment.objects.filter(name=created.name).exists()
        with self.assertRaises(ResourceNotFoundError):
            client.role_assignments.get(self.vault.arm_id, created.name)

    def test_it_refuses_a_duplicate_assignment(self):
        identity = str(uuid.uuid4())
        self._assign(identity)
        with self.assertRaises(ResourceExistsError) as caught:
            self._assign(identity)
        assert caught.exception.error.code == "RoleAssignmentExists"

    def test_it_refuses_an_unknown_role(self):
        bogus = f"/subscriptions/{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/roleDefinitions/{uuid.uuid4()}"
        with self.assertRaises(HttpResponseError) as caught:
            self._assign(str(uuid.uuid4()), role=bogus)
        assert caught.exception.error.code == "RoleDefinitionDoesNotExist"

    def test_it_lists_inherited_assignments(self):
        identity = str(uuid.uuid4())
        keystore.assign_role(f"/subscriptions/{SUBSCRIPTION_ID}", identity, keystore.READER)
        listed = list(
            authorization_mgmt().role_assignments.list_for_scope(
                self.vault.arm_id, filter=f"principalId eq '{identity}'"
            )
        )
        assert [a.scope for a in listed] == [f"/subscriptions/{SUBSCRIPTION_ID}"]
        below = str(uuid.uuid4())
        keystore.assign_role(f"{self.vault.arm_id}/keys/cmk", below, keystore.CRYPTO_USER)
        everything = list(authorization_mgmt().role_assignments.list_for_scope(self.vault.arm_id))
        assert {a.principal_id for a in everything} == {PORTAL_PRINCIPAL_ID, identity, below}
        # atScope() keeps the scope and what is above it, and leaves out assignments below it.
        at_scope = list(authorization_mgmt().role_assignments.list_for_scope(self.vault.arm_id, filter="atScope()"))
        assert {a.principal_id for a in at_scope} == {PORTAL_PRINCIPAL_ID, identity}

    def test_it_grants_data_plane_access_through_the_role(self):
        identity = str(uuid.uuid4())
        kid = key_client(self.vault).get_key("cmk").id
        wrapped = crypto_client(kid).wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"g" * 32).encrypted_key
        with self.assertRaises(HttpResponseError) as caught:
            crypto_client(kid, identity=identity).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
        assert caught.exception.error.innererror["code"] == "ForbiddenByRbac"
        assignment = self._assign(identity)
        assert crypto_client(kid, identity=identity).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key == b"g" * 32
        authorization_mgmt().role_assignments.delete(self.vault.arm_id, assignment.name)
        with self.assertRaises(HttpResponseError):
            crypto_client(kid, identity=identity).unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)

    def test_it_reads_role_definitions(self):
        client = authorization_mgmt()
        scope = f"/subscriptions/{SUBSCRIPTION_ID}"
        role = client.role_definitions.get(scope, "e147488a-f6f5-4113-8e2d-b22465e65bf6")
        assert role.role_name == "Key Vault Crypto Service Encryption User"
        assert "Microsoft.KeyVault/vaults/keys/unwrap/action" in role.permissions[0].data_actions
        found = list(client.role_definitions.list(scope, filter="roleName eq 'Key Vault Crypto Officer'"))
        assert [r.name for r in found] == [keystore.CRYPTO_OFFICER]

    def test_it_refuses_an_assignment_on_a_missing_vault(self):
        params = RoleAssignmentCreateParameters(role_definition_id=ENCRYPTION_USER_ROLE, principal_id=str(uuid.uuid4()))
        missing = self.vault.arm_id.replace("kv-rbac-eastus", "kv-gone")
        with self.assertRaises(ResourceNotFoundError):
            authorization_mgmt().role_assignments.create(missing, str(uuid.uuid4()), params)
