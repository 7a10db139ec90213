"""The emulator's platform: transport, request/response shapes, authentication, credential and tokens,
`sdk_options()` with every client the portal uses, and `serve_emulator` over real HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from io import StringIO

from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ServiceRequestError
from azure.core.rest import HttpRequest
from azure.mgmt.resource.subscriptions import SubscriptionClient
from django.core.management import call_command
from django.test import override_settings

from emulator import estate, keystore, sdk_options
from emulator.credential import EmulatorCredential
from emulator.identities import PORTAL_PRINCIPAL_ID, issue_token, principal_from_token, register_principal
from emulator.models import RequestLog
from emulator.testing import share_connections
from emulator.transport import EmulatorTransport
from tests.emulator.kv_builders import (
    OTHER_TENANT_ID,
    RESOURCE_GROUP,
    SUBSCRIPTION_ID,
    TENANT_ID,
    EmulatorTestCase,
    key_client,
    make_estate,
    make_vault,
    vault_mgmt,
)
from tests.harness import CrossProcessTestCase, database_url, free_port, wait_until

ARM = "https://management.azure.com"
VAULT_PATH = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{RESOURCE_GROUP}/providers/Microsoft.KeyVault/vaults"


def _arm_token(identity: str | None = None) -> str:
    return EmulatorCredential(identity).get_token(f"{ARM}/.default").token


def _send(method: str, url: str, *, token: str | None = None, body: str | None = None, **headers: str):
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return EmulatorTransport().send(HttpRequest(method, url, headers=headers, content=body))


class TransportTests(EmulatorTestCase):
    @classmethod
    def setUpTestData(cls):
        make_estate()
        cls.vault = make_vault()

    def test_it_stamps_request_ids_and_echoes_the_client_one(self):
        client_id = str(uuid.uuid4())
        response = _send(
            "GET",
            f"{ARM}{VAULT_PATH}/kv-test-eastus?api-version=2026-05-15",
            token=_arm_token(),
            **{"x-ms-client-request-id": client_id},
        )
        assert response.status_code == 200
        assert uuid.UUID(response.headers["x-ms-request-id"])
        assert response.headers["x-ms-client-request-id"] == client_id
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        logged = RequestLog.objects.get(request_id=response.headers["x-ms-request-id"])
        assert (logged.method, logged.host, logged.status, logged.principal, logged.client_request_id) == (
            "GET",
            "management.azure.com",
            200,
            PORTAL_PRINCIPAL_ID,
            client_id,
        )

    def test_it_requires_a_bearer_token_on_arm(self):
        missing = _send("GET", f"{ARM}{VAULT_PATH}?api-version=1")
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "AuthenticationFailed"
        forged = _send("GET", f"{ARM}{VAULT_PATH}?api-version=1", token=_arm_token()[:-4] + "AAAA")
        assert forged.json()["error"]["code"] == "InvalidAuthenticationToken"
        vault_token = EmulatorCredential().get_token("https://vault.azure.net/.default").token
        wrong = _send("GET", f"{ARM}{VAULT_PATH}?api-version=1", token=vault_token)
        assert wrong.json()["error"]["code"] == "InvalidAuthenticationTokenAudience"

    def test_it_raises_client_authentication_error_through_the_sdk(self):
        class Junk:
            def get_token(self, *scopes, **kwargs):
                return AccessToken("not-an-emulator-token", int(time.time()) + 3600)

        from azure.mgmt.keyvault import KeyVaultManagementClient

        client = KeyVaultManagementClient(Junk(), SUBSCRIPTION_ID, transport=EmulatorTransport())
        with self.assertRaises(ClientAuthenticationError):
            client.vaults.get(RESOURCE_GROUP, "kv-test-eastus")

    def test_it_answers_unknown_hosts_like_dns(self):
        with self.assertRaises(ServiceRequestError):
            _send("GET", "https://management.chinacloudapi.cn/subscriptions?api-version=1")
        with self.assertRaises(ServiceRequestError):
            _send("GET", "https://kv-test-eastus.vault.azure.cn/keys?api-version=1")

    def test_it_answers_unknown_paths_and_methods(self):
        token = _arm_token()
        unknown = _send(
            "GET", f"{ARM}/subscriptions/{SUBSCRIPTION_ID}/providers/Microsoft.Nope/things?api-version=1", token=token
        )
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "InvalidResourceType"
        wrong_method = _send("POST", f"{ARM}{VAULT_PATH}/kv-test-eastus?api-version=1", token=token)
        assert wrong_method.status_code == 405
        assert "GET" in wrong_method.headers["Allow"]
        kv_token = EmulatorCredential().get_token("https://vault.azure.net/.default", tenant_id=TENANT_ID).token
        kv_unknown = _send("GET", "https://kv-test-eastus.vault.azure.net/secretsish?api-version=7.5", token=kv_token)
        assert kv_unknown.status_code == 400
        assert kv_unknown.json()["error"]["code"] == "BadParameter"

    def test_it_matches_paths_case_insensitively_and_decodes_segments(self):
        token = _arm_token()
        lower = _send("GET", f"{ARM}{VAULT_PATH.lower()}/KV-TEST-EASTUS?api-version=1", token=token)
        assert lower.status_code == 200 and lower.json()["name"] == "kv-test-eastus"
        bad = _send("PUT", f"{ARM}{VAULT_PATH}/bad%20name%21?api-version=1", token=token, body="{}")
        assert bad.status_code == 400
        assert "'bad name!'" in bad.json()["error"]["message"]

    def test_it_answers_bad_json_with_400(self):
        response = _send(
            "PATCH",
            f"{ARM}{VAULT_PATH}/kv-test-eastus?api-version=1",
            token=_arm_token(),
            body="{not json",
            **{"Content-Type": "application/json"},
        )
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "InvalidRequestContent"

    @override_settings(EMULATOR_SLEEP_CAP_SECONDS=0.05)
    def test_it_caps_sleeps_and_records_them(self):
        transport = EmulatorTransport()
        started = time.monotonic()
        transport.sleep(30)
        assert time.monotonic() - started < 1
        assert transport.sleeps == [30.0]

    def test_it_lets_poller_threads_see_the_test_rows(self):
        vault = self.vault
        keystore.create_key(vault, "threaded")
        client = key_client(vault, _polling_interval=0)
        with share_connections():
            poller = client.begin_delete_key("threaded")
            # .wait() polls GET /deletedkeys from a thread of its own.
            poller.wait(timeout=10)
        assert poller.done()
        assert client.get_deleted_key("threaded").name == "threaded"


class CredentialTests(EmulatorTestCase):
    def test_it_issues_tokens_that_carry_the_principal(self):
        credential = EmulatorCredential("11111111-2222-3333-4444-555555555555")
        info = credential.get_token_info(
            "https://vault.azure.net/.default", options={"tenant_id": TENANT_ID, "enable_cae": True}
        )
        caller = principal_from_token(info.token)
        assert caller is not None
        assert (caller.object_id, caller.tenant_id, caller.audience) == (
            "11111111-2222-3333-4444-555555555555",
            TENANT_ID,
            "https://vault.azure.net",
        )
        assert 3500 < info.expires_on - time.time() <= 3600
        token = credential.get_token(
            "https://management.azure.com/.default", claims=None, tenant_id=None, enable_cae=True
        )
        assert principal_from_token(token.token).audience == "https://management.azure.com"

    def test_it_acts_as_the_portal_by_default(self):
        assert sdk_options()["credential"].principal == PORTAL_PRINCIPAL_ID
        assert sdk_options("abc")["credential"].principal == "abc"
        assert "emu." not in repr(sdk_options()["credential"])

    def test_it_binds_single_tenant_principals_to_their_home_tenant(self):
        identity = str(uuid.uuid4())
        register_principal(identity, OTHER_TENANT_ID)
        token = EmulatorCredential(identity).get_token("https://vault.azure.net/.default", tenant_id=TENANT_ID).token
        # A managed identity cannot get a token for another tenant, whatever the challenge asked.
        assert principal_from_token(token).tenant_id == OTHER_TENANT_ID

    def test_it_refuses_forged_and_expired_tokens(self):
        token, _ = issue_token(PORTAL_PRINCIPAL_ID, TENANT_ID, "https://vault.azure.net")
        header, payload, signature = token.split(".")
        other_payload = issue_token(str(uuid.uuid4()), TENANT_ID, "https://vault.azure.net")[0].split(".")[1]
        assert principal_from_token(f"{header}.{other_payload}.{signature}") is None
        expired, _ = issue_token(PORTAL_PRINCIPAL_ID, TENANT_ID, "https://vault.azure.net", lifetime=-1)
        assert principal_from_token(expired) is None
        with override_settings(SECRET_KEY="another-secret-key-for-another-installation-0123456789"):
            assert principal_from_token(token) is None


class SdkClientsTests(EmulatorTestCase):
    """Every client the portal uses works with nothing but the two keyword arguments."""

    @classmethod
    def setUpTestData(cls):
        make_estate()
        cls.vault = make_vault()
        keystore.create_key(cls.vault, "cmk")

    def test_it_drives_every_client(self):
        from azure.keyvault.keys import KeyClient
        from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
        from azure.mgmt.authorization import AuthorizationManagementClient
        from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient
        from azure.mgmt.keyvault import KeyVaultManagementClient

        key = KeyClient("https://kv-test-eastus.vault.azure.net/", **sdk_options()).get_key("cmk")
        crypto = CryptographyClient(key.id, **sdk_options())
        wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"k" * 32).encrypted_key
        assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key == b"k" * 32
        assert [
            v.name
            for v in KeyVaultManagementClient(
                subscription_id=SUBSCRIPTION_ID, **sdk_options()
            ).vaults.list_by_subscription()
        ] == ["kv-test-eastus"]
        assert (
            list(CognitiveServicesManagementClient(subscription_id=SUBSCRIPTION_ID, **sdk_options()).accounts.list())
            == []
        )
        authorization = AuthorizationManagementClient(subscription_id=SUBSCRIPTION_ID, **sdk_options())
        assert list(authorization.role_assignments.list_for_scope(self.vault.arm_id)) == []
        subscriptions = [s.subscription_id for s in SubscriptionClient(**sdk_options()).subscriptions.list()]
        assert SUBSCRIPTION_ID in subscriptions

    def test_it_sends_the_challenge_tenant_of_each_vault(self):
        # The portal's principal is multi-tenant: it gets a token for whichever tenant a vault names.
        other = estate.create_tenant("kvteststhird", tenant_id=str(uuid.uuid4()))
        foreign = make_vault("kv-foreign", tenant_id=other.tenant_id)
        keystore.create_key(foreign, "cmk")
        assert key_client(foreign).get_key("cmk").name == "cmk"
        assert key_client(self.vault).get_key("cmk").name == "cmk"


class ServeEmulatorTests(CrossProcessTestCase):
    """`serve_emulator` answers plain HTTP from another process, over the same emulator database."""

    def setUp(self):
        super().setUp()
        make_estate()
        self.vault = make_vault("kv-served")
        keystore.create_key(self.vault, "cmk")
        self.port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url("default"),
            "EMULATOR_DATABASE_URL": database_url("emulator"),
        }
        self.server = subprocess.Popen(
            [sys.executable, "manage.py", "serve_emulator", "--port", str(self.port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.addCleanup(self._stop)
        wait_until(self._answers, timeout=30, message="serve_emulator listening")

    def _stop(self):
        self.server.terminate()
        try:
            self.server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()
        for stream in (self.server.stdout, self.server.stderr):
            if stream:
                stream.close()

    def _answers(self):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1)
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    def _get(self, path, **headers):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, dict(response.headers), json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), json.loads(error.read() or b"null")

    def test_it_serves_arm_and_key_vault_over_http(self):
        token = StringIO()
        call_command("emulator_token", stdout=token)
        status, _, body = self._get(
            f"/management.azure.com{VAULT_PATH}/kv-served?api-version=2026-05-15",
            Authorization=f"Bearer {token.getvalue().strip()}",
        )
        assert status == 200 and body["properties"]["vaultUri"] == "https://kv-served.vault.azure.net/"
        # Key Vault by Host header: first the challenge, then with a vault token for the vault's tenant.
        status, headers, body = self._get("/keys?api-version=7.5", Host="kv-served.vault.azure.net")
        assert status == 401 and TENANT_ID in headers["WWW-Authenticate"]
        vault_token = StringIO()
        call_command("emulator_token", "--resource", "vault", "--tenant", TENANT_ID, stdout=vault_token)
        status, _, body = self._get(
            "/keys?api-version=7.5",
            Host="kv-served.vault.azure.net",
            Authorization=f"Bearer {vault_token.getvalue().strip()}",
        )
        assert status == 200
        assert [item["kid"] for item in body["value"]] == ["https://kv-served.vault.azure.net/keys/cmk"]
        status, _, body = self._get("/keys", Host="kv-nowhere.vault.azure.net")
        assert status == 502 and body["error"]["code"] == "HostNotFound"

    def test_it_refuses_a_non_loopback_bind(self):
        from django.core.management.base import CommandError

        with self.assertRaises(CommandError):
            call_command("serve_emulator", "--bind", "0.0.0.0")


class ErrorShapeTests(EmulatorTestCase):
    @classmethod
    def setUpTestData(cls):
        make_estate()
        cls.vault = make_vault()

    def test_it_maps_arm_errors_to_sdk_exceptions(self):
        with self.assertRaises(HttpResponseError) as caught:
            vault_mgmt(retry_total=0).vaults.get(RESOURCE_GROUP, "bad name!")
        assert caught.exception.status_code == 404
        assert str(caught.exception).startswith("(ResourceNotFound)")
