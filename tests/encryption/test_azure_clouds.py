"""The azure backend's path, without a network: a recording transport and a stub credential are injected into
the gateway's own client factory, and show which hosts each call reaches and which token scope it carries,
for each Azure cloud."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import case_insensitive_dict
from azure.identity import DefaultAzureCredential
from azure.keyvault.keys._shared import http_challenge_cache
from django.test import SimpleTestCase, override_settings

from encryption import azure_gateway as gw
from encryption.azure import clients

SUB = "11111111-1111-1111-1111-111111111111"
TENANT = "22222222-2222-2222-2222-222222222222"
PRINCIPAL = "33333333-3333-3333-3333-333333333333"
VERSION = "0123456789abcdef0123456789abcdef"
ACCOUNT_ID = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/face-1"
VAULT_ID = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.KeyVault/vaults/kv-one"

EXPECTED = {
    # cloud: (ARM host, ARM token scope, vault host suffix, Key Vault token scope, sign-in host)
    "public": (
        "management.azure.com",
        "https://management.azure.com/.default",
        "vault.azure.net",
        "https://vault.azure.net/.default",
        "login.microsoftonline.com",
    ),
    "china": (
        "management.chinacloudapi.cn",
        "https://management.chinacloudapi.cn/.default",
        "vault.azure.cn",
        "https://vault.azure.cn/.default",
        "login.chinacloudapi.cn",
    ),
    "usgov": (
        "management.usgovcloudapi.net",
        "https://management.usgovcloudapi.net/.default",
        "vault.usgovcloudapi.net",
        "https://vault.usgovcloudapi.net/.default",
        "login.microsoftonline.us",
    ),
}


class StubCredential:
    """Hands out a token that names its scope, and records every scope asked for."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken(f"stub-token-for {' '.join(scopes)}", 2_000_000_000)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.scopes.extend(scopes)
        return AccessTokenInfo(f"stub-token-for {' '.join(scopes)}", 2_000_000_000)


class _Closable:
    def close(self) -> None:
        pass


def _stream(pipeline: Any = None, response: Any = None, **kwargs: Any) -> Any:
    yield response._content


class CannedResponse(HttpResponseImpl):
    def __init__(self, request: Any, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        merged = case_insensitive_dict(
            {"Content-Type": "application/json", "x-ms-request-id": "req-1", **(headers or {})}
        )
        super().__init__(
            request=request,
            internal_response=_Closable(),
            status_code=status,
            reason="",
            headers=merged,
            content_type=merged.get("Content-Type"),
            stream_download_generator=_stream,
        )
        self._content = json.dumps(body).encode() if body is not None else b""

    def body(self) -> bytes:
        return bytes(self._content or b"")


class RecordingTransport(HttpTransport[Any, Any]):
    """Answers like Azure would, from canned shapes, and records (method, host, path, token scope)."""

    def __init__(self, cloud: str) -> None:
        self.cloud = cloud
        self.calls: list[tuple[str, str, str, str]] = []

    def __enter__(self) -> RecordingTransport:
        return self

    def __exit__(self, *args: Any) -> None:
        pass

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def sleep(self, duration: float) -> None:
        pass

    def send(self, request: Any, **kwargs: Any) -> CannedResponse:
        url = urlsplit(request.url)
        auth = request.headers.get("Authorization", "")
        scope = auth.removeprefix("Bearer stub-token-for ") if auth else ""
        self.calls.append((request.method, url.hostname or "", url.path, scope))
        if url.hostname and url.hostname.startswith("kv-one."):
            return self._vault(request, url.path, auth)
        return self._arm(request, url.path)

    def _vault(self, request: Any, path: str, auth: str) -> CannedResponse:
        _, _, suffix, kv_scope, login = EXPECTED[self.cloud]
        if not auth:
            challenge = (
                f'Bearer authorization="https://{login}/{TENANT}", resource="{kv_scope.removesuffix("/.default")}"'
            )
            return CannedResponse(request, 401, {"error": {"code": "Unauthorized"}}, {"WWW-Authenticate": challenge})
        kid = f"https://kv-one.{suffix}/keys/cmk/{VERSION}"
        jwk = {"kid": kid, "kty": "RSA", "key_ops": ["wrapKey", "unwrapKey"], "n": "AQAB" * 86, "e": "AQAB"}
        return CannedResponse(request, 200, {"key": jwk, "attributes": {"enabled": True, "created": 1700000000}})

    def _arm(self, request: Any, path: str) -> CannedResponse:
        suffix = EXPECTED[self.cloud][2]
        account = {
            "id": ACCOUNT_ID,
            "name": "face-1",
            "location": "eastus",
            "kind": "Face",
            "sku": {"name": "S0"},
            "identity": {"type": "SystemAssigned", "principalId": PRINCIPAL, "tenantId": TENANT},
            "properties": {"provisioningState": "Succeeded"},
        }
        vault = {
            "id": VAULT_ID,
            "name": "kv-one",
            "location": "eastus",
            "properties": {
                "tenantId": TENANT,
                "sku": {"family": "A", "name": "standard"},
                "vaultUri": f"https://kv-one.{suffix}/",
                "accessPolicies": [],
                "enableRbacAuthorization": "rbac" in request.url,
            },
        }
        if path == "/subscriptions":
            body: Any = {"value": [{"subscriptionId": SUB, "tenantId": TENANT, "displayName": "One"}]}
        elif path.endswith("/accounts"):
            body = {"value": [account]}
        elif path.endswith("/vaults"):
            body = {"value": [vault]}
        elif "/accessPolicies/" in path:
            body = {"properties": {"accessPolicies": []}}
        elif "/roleAssignments/" in path:
            body = {"id": path, "name": path.rsplit("/", 1)[-1], "properties": {"principalId": PRINCIPAL}}
        else:
            body = account
        return CannedResponse(request, 200, body)


class CloudEndpointsTests(SimpleTestCase):
    def setUp(self):
        # Key Vault challenges are cached per host for the whole process; each test starts without one.
        http_challenge_cache.clear()

    def run_calls(self, cloud: str) -> tuple[RecordingTransport, StubCredential]:
        transport, credential = RecordingTransport(cloud), StubCredential()
        suffix = EXPECTED[cloud][2]
        with (
            override_settings(AZURE_BACKEND="azure", AZURE_CLOUD=cloud),
            gw.pipeline_override(credential=credential, transport=transport),
        ):
            gw.list_subscriptions()
            gw.list_accounts(SUB)
            gw.get_account(ACCOUNT_ID)
            gw.set_microsoft_managed_key(ACCOUNT_ID)
            vault = gw.list_vaults(SUB)[0]
            gw.grant_key_access(vault, PRINCIPAL)
            gw.get_key(f"https://kv-one.{suffix}/", "cmk")
        return transport, credential

    def assert_cloud(self, cloud: str) -> None:
        arm_host, arm_scope, suffix, kv_scope, _ = EXPECTED[cloud]
        transport, credential = self.run_calls(cloud)
        hosts = {host for _, host, _, _ in transport.calls}
        assert hosts == {arm_host, f"kv-one.{suffix}"}
        # Every ARM request carried an ARM token of this cloud; the vault got its own audience's token.
        assert {scope for _, host, _, scope in transport.calls if host == arm_host} == {arm_scope}
        vault_scopes = [scope for _, host, _, scope in transport.calls if host != arm_host]
        assert vault_scopes == ["", kv_scope]  # the challenge round trip first, sent without a token
        assert set(credential.scopes) == {arm_scope, kv_scope}
        assert ("PATCH", arm_host, ACCOUNT_ID, arm_scope) in transport.calls

    def test_it_uses_public_cloud_hosts_and_scopes(self):
        self.assert_cloud("public")

    def test_it_uses_china_cloud_hosts_and_scopes(self):
        self.assert_cloud("china")

    def test_it_uses_us_government_cloud_hosts_and_scopes(self):
        self.assert_cloud("usgov")

    def test_it_grants_a_role_on_an_rbac_vault_through_arm(self):
        transport, credential = RecordingTransport("china"), StubCredential()
        with (
            override_settings(AZURE_BACKEND="azure", AZURE_CLOUD="china"),
            gw.pipeline_override(credential=credential, transport=transport),
        ):
            vault = gw.list_vaults(SUB)[0]
            rbac_vault = gw.VaultInfo(**{**vault.__dict__, "rbac_authorization": True, "arm_id": VAULT_ID + "-rbac"})
            gw.grant_key_access(rbac_vault, PRINCIPAL)
        method, host, path, scope = transport.calls[-1]
        assert (method, host, scope) == ("PUT", "management.chinacloudapi.cn", EXPECTED["china"][1])
        assert path.startswith(f"{VAULT_ID}-rbac/providers/Microsoft.Authorization/roleAssignments/")

    def test_it_refuses_a_vault_of_another_cloud_before_sending(self):
        transport, credential = RecordingTransport("china"), StubCredential()
        with (
            override_settings(AZURE_BACKEND="azure", AZURE_CLOUD="china"),
            gw.pipeline_override(credential=credential, transport=transport),
            self.assertRaises(gw.PermanentAzureError) as caught,
        ):
            gw.get_key("https://kv-one.vault.azure.net/", "cmk")
        assert caught.exception.code == "InvalidVaultUri"
        assert transport.calls == [] and credential.scopes == []

    def test_it_has_no_probe_against_real_azure(self):
        transport, credential = RecordingTransport("public"), StubCredential()
        with (
            override_settings(AZURE_BACKEND="azure"),
            gw.pipeline_override(credential=credential, transport=transport),
        ):
            result = gw.probe_data_access(ACCOUNT_ID)
        assert result.readable is None and "no data-access probe" in result.reason
        assert transport.calls == []

    def test_it_builds_default_azure_credential_without_the_override(self):
        gw.reset_clients()
        with override_settings(AZURE_BACKEND="azure", AZURE_CLOUD="usgov"):
            options = clients.credential_and_transport()
        gw.reset_clients()
        assert isinstance(options["credential"], DefaultAzureCredential)
        assert "transport" not in options  # azure-core's own HTTP transport

    def test_it_never_logs_tokens(self):
        # Even with the SDK loggers at DEBUG, no record may carry the bearer token.
        azure_logger = logging.getLogger("azure")
        old_level = azure_logger.level
        azure_logger.setLevel(logging.DEBUG)
        try:
            with self.assertLogs(level=logging.DEBUG) as logs:
                logging.getLogger("keyward.test").debug("start")
                self.run_calls("public")
        finally:
            azure_logger.setLevel(old_level)
        assert not any("stub-token-for" in line for line in logs.output)
