"""Faults on demand: ARM token-bucket throttling honoured by the SDK, injected 429/500/503 and latency,
the shiftable clock, the request log, and the commands that drive them."""

from __future__ import annotations

import threading
import time
from io import StringIO

from azure.core.exceptions import HttpResponseError
from azure.core.rest import HttpRequest
from azure.keyvault.keys.crypto import KeyWrapAlgorithm
from azure.mgmt.keyvault.models import VaultPatchParameters
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connections
from django.test import override_settings

from emulator import clock, faults, keystore
from emulator.credential import EmulatorCredential
from emulator.identities import principal_from_token
from emulator.models import FaultRule, RequestLog, ThrottleBucket
from emulator.testing import (
    clear_faults,
    inject_faults,
    request_count,
    reset_request_log,
    set_throttle_limit,
    shift_clock,
)
from emulator.transport import EmulatorTransport
from tests.emulator.kv_builders import (
    RESOURCE_GROUP,
    SUBSCRIPTION_ID,
    EmulatorTestCase,
    crypto_client,
    key_client,
    make_estate,
    make_vault,
    vault_mgmt,
)
from tests.harness import CrossProcessTestCase


def _tag(client, value):
    return client.vaults.update(RESOURCE_GROUP, "kv-test-eastus", VaultPatchParameters(tags={"n": value}))


class ThrottlingTests(EmulatorTestCase):
    @classmethod
    def setUpTestData(cls):
        make_estate()
        cls.vault = make_vault()

    def test_it_reports_remaining_quota_on_every_arm_response(self):
        token = EmulatorCredential().get_token("https://management.azure.com/.default").token
        url = f"https://management.azure.com/subscriptions/{SUBSCRIPTION_ID}/providers/Microsoft.KeyVault/vaults?api-version=1"
        first = EmulatorTransport().send(HttpRequest("GET", url, headers={"Authorization": f"Bearer {token}"}))
        second = EmulatorTransport().send(HttpRequest("GET", url, headers={"Authorization": f"Bearer {token}"}))
        assert first.headers["x-ms-ratelimit-remaining-subscription-reads"] == "249"
        # Integer division of a refilling bucket: 248 or, a moment later, back to 249.
        assert second.headers["x-ms-ratelimit-remaining-subscription-reads"] in {"248", "249"}
        patch = EmulatorTransport().send(
            HttpRequest(
                "PATCH", url.replace("vaults?", "vaults/x?"), headers={"Authorization": f"Bearer {token}"}, content="{}"
            )
        )
        assert patch.headers["x-ms-ratelimit-remaining-subscription-writes"] == "199"

    def test_it_throttles_writes_and_the_sdk_honours_retry_after(self):
        set_throttle_limit("writes", capacity=1, refill_per_second=1)
        transport = EmulatorTransport()
        client = vault_mgmt(transport=transport)
        _tag(client, "1")
        started = time.monotonic()
        _tag(client, "2")  # the bucket is empty: 429 with Retry-After: 1, then the SDK's retry succeeds
        # azure-core slept exactly the Retry-After the emulator sent, through the transport, which really waited.
        assert transport.sleeps == [1.0]
        assert time.monotonic() - started >= 0.5
        assert request_count("PATCH", "/vaults/kv-test-eastus", status=429) == 1
        assert request_count("PATCH", "/vaults/kv-test-eastus", status=200) == 2

    def test_it_refuses_at_once_without_retries(self):
        set_throttle_limit("writes", capacity=1, refill_per_second=0.1)
        client = vault_mgmt(retry_total=0)
        _tag(client, "x")
        with self.assertRaises(HttpResponseError) as caught:
            _tag(client, "y")
        assert caught.exception.status_code == 429
        assert caught.exception.error.code == "TooManyRequests"
        assert caught.exception.response.headers["Retry-After"] == "10"
        assert caught.exception.response.headers["x-ms-ratelimit-remaining-subscription-writes"] == "0"

    def test_it_keeps_one_bucket_per_subscription_and_kind(self):
        set_throttle_limit("writes", capacity=1, refill_per_second=0.01)
        assert faults.take_token(SUBSCRIPTION_ID, "writes").allowed
        assert not faults.take_token(SUBSCRIPTION_ID, "writes").allowed
        assert faults.take_token("another-subscription", "writes").allowed
        assert faults.take_token(SUBSCRIPTION_ID, "reads").allowed

    def test_it_does_not_throttle_the_data_plane_by_the_arm_bucket(self):
        set_throttle_limit("reads", capacity=1, refill_per_second=0.01)
        keystore.create_key(self.vault, "cmk")
        for _ in range(3):
            assert key_client(self.vault).get_key("cmk").name == "cmk"


class InjectedFaultTests(EmulatorTestCase):
    @classmethod
    def setUpTestData(cls):
        make_estate()
        cls.vault = make_vault()
        keystore.create_key(cls.vault, "cmk")

    def test_it_retries_injected_500s(self):
        inject_faults(500, count=2, host="management.azure.com", method="GET", path_contains="/vaults/kv-test-eastus")
        transport = EmulatorTransport()
        client = vault_mgmt(transport=transport)
        assert client.vaults.get(RESOURCE_GROUP, "kv-test-eastus").name == "kv-test-eastus"
        assert request_count("GET", "/vaults/kv-test-eastus", status=500) == 2
        assert request_count("GET", "/vaults/kv-test-eastus", status=200) == 1
        # azure-core's exponential backoff: no wait before the first retry, 0.8 * 2 s before the second.
        assert transport.sleeps == [1.6]
        # The count is spent: the rule is gone.
        assert not FaultRule.objects.exists()

    def test_it_retries_injected_503s_on_the_data_plane(self):
        key_client(self.vault).get_key("cmk")  # the challenge is behind us
        inject_faults(503, count=1, path_contains="/keys/cmk", retry_after=1)
        transport = EmulatorTransport()
        assert key_client(self.vault, transport=transport).get_key("cmk").name == "cmk"
        assert request_count("GET", "/keys/cmk", status=503) == 1
        assert transport.sleeps == [1.0]

    def test_it_injects_a_429_with_its_retry_after(self):
        inject_faults(429, count=1, method="GET", retry_after=2)
        transport = EmulatorTransport()
        vault_mgmt(transport=transport).vaults.get(RESOURCE_GROUP, "kv-test-eastus")
        assert transport.sleeps == [2.0]
        assert request_count("GET", status=429) == 1

    def test_it_fails_every_request_with_probability_one(self):
        inject_faults(500, probability=1.0, path_contains="/vaults/kv-test-eastus")
        with self.assertRaises(HttpResponseError) as caught:
            vault_mgmt(retry_total=0).vaults.get(RESOURCE_GROUP, "kv-test-eastus")
        assert caught.exception.status_code == 500
        assert caught.exception.error.code == "InternalServerError"
        clear_faults()
        assert vault_mgmt(retry_total=0).vaults.get(RESOURCE_GROUP, "kv-test-eastus").name == "kv-test-eastus"

    def test_it_leaves_unmatched_requests_alone(self):
        inject_faults(503, path_contains="/vaults/kv-other", method="GET")
        assert vault_mgmt(retry_total=0).vaults.get(RESOURCE_GROUP, "kv-test-eastus").name == "kv-test-eastus"

    def test_it_adds_latency(self):
        inject_faults(latency_ms=300, method="GET", path_contains="/vaults/kv-test-eastus")
        started = time.monotonic()
        vault_mgmt().vaults.get(RESOURCE_GROUP, "kv-test-eastus")
        assert time.monotonic() - started >= 0.3

    def test_it_validates_fault_rules(self):
        for kwargs in ({"status": 404}, {}, {"status": 500, "probability": 0}, {"status": 500, "count": 0}):
            with self.assertRaises(ValueError):
                inject_faults(**kwargs)


class ClockAndLogTests(EmulatorTestCase):
    @classmethod
    def setUpTestData(cls):
        make_estate()
        cls.vault = make_vault()
        keystore.create_key(cls.vault, "cmk")

    def test_it_shifts_and_resets_the_clock(self):
        before = clock.now()
        after = shift_clock(86400)
        assert 86399 < (after - before).total_seconds() < 86460
        assert clock.offset() == 86400
        shift_clock(-3600)
        assert clock.offset() == 82800
        clock.reset()
        assert clock.offset() == 0

    def test_it_makes_a_key_expire_when_shifted(self):
        from datetime import UTC, datetime, timedelta

        client = key_client(self.vault)
        client.update_key_properties("cmk", expires_on=datetime.now(UTC) + timedelta(days=30))
        kid = client.get_key("cmk").id
        wrapped = crypto_client(kid).wrap_key(KeyWrapAlgorithm.rsa_oaep, b"c" * 32).encrypted_key
        shift_clock(31 * 86400)
        with self.assertRaises(HttpResponseError) as caught:
            crypto_client(kid).unwrap_key(KeyWrapAlgorithm.rsa_oaep, wrapped)
        assert caught.exception.error.innererror["code"] == "KeyExpired"

    def test_it_counts_and_resets_the_request_log(self):
        key_client(self.vault).get_key("cmk")
        assert request_count("GET", "/keys/cmk") == 2  # the challenge and the answer
        assert request_count(host="kv-test-eastus.vault.azure.net", status=401) == 1
        reset_request_log()
        assert request_count() == 0

    def test_it_never_logs_tokens(self):
        key_client(self.vault).get_key("cmk")
        for row in RequestLog.objects.values():
            assert not any("emu." in str(value) for value in row.values())


class CommandTests(EmulatorTestCase):
    def _run(self, *args):
        out = StringIO()
        call_command(*args, stdout=out)
        return out.getvalue()

    def test_it_sets_lists_and_clears_faults(self):
        assert "Added fault" in self._run(
            "emulator_faults", "set", "--status", "503", "--count", "2", "--path", "/keys"
        )
        listing = self._run("emulator_faults", "list")
        assert "503" in listing and "next 2" in listing
        assert "Removed 1" in self._run("emulator_faults", "clear")
        with self.assertRaises(CommandError):
            self._run("emulator_faults", "set", "--status", "500", "--probability", "2")

    def test_it_sets_throttling_limits(self):
        self._run("emulator_faults", "throttle", "--kind", "writes", "--capacity", "5", "--refill", "1")
        assert faults.limits("writes") == (5.0, 1.0)
        assert "5 tokens, 1/s (custom)" in self._run("emulator_faults", "list")
        self._run("emulator_faults", "throttle", "--reset")
        assert faults.limits("writes") == (200.0, 10.0)

    def test_it_shifts_the_clock(self):
        assert "offset +2592000s" in self._run("emulator_clock", "shift", "30d")
        assert "offset +2595600s" in self._run("emulator_clock", "shift", "1h")
        assert "offset +0s" in self._run("emulator_clock", "reset")
        with self.assertRaises(CommandError):
            self._run("emulator_clock", "shift", "soon")

    def test_it_prints_a_usable_token(self):
        caller = principal_from_token(self._run("emulator_token", "--resource", "vault", "--tenant", "t1").strip())
        assert caller is not None and caller.audience == "https://vault.azure.net" and caller.tenant_id == "t1"


class ConcurrencyTests(CrossProcessTestCase):
    """Buckets and counted faults are shared through the database: concurrent callers never overspend."""

    def _in_threads(self, work, count=4):
        errors = []

        def run():
            try:
                work()
            except Exception as exc:  # surfaced below
                errors.append(exc)
            finally:
                connections.close_all()

        threads = [threading.Thread(target=run) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors

    def test_it_never_spends_a_token_twice(self):
        set_throttle_limit("writes", capacity=20, refill_per_second=0.001)
        allowed = []
        self._in_threads(lambda: allowed.extend(faults.take_token("s", "writes").allowed for _ in range(10)))
        assert allowed.count(True) == 20 and len(allowed) == 40
        assert ThrottleBucket.objects.get(subscription_id="s").tokens < 1

    @override_settings(EMULATOR_SLEEP_CAP_SECONDS=0)
    def test_it_fires_a_counted_fault_exactly_n_times(self):
        from emulator.http import EmuRequest

        inject_faults(500, count=5)
        fired = []

        def work():
            for _ in range(5):
                request = EmuRequest.build("GET", "https://management.azure.com/x", {}, b"")
                request.plane = "arm"
                fired.append(faults.injected_fault(request) is not None)

        self._in_threads(work)
        assert fired.count(True) == 5
