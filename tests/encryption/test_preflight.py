"""Preflight: every CMK prerequisite read live from the seeded emulator, each check in its right state."""

from __future__ import annotations

from datetime import timedelta

from emulator import clock, keystore, testing
from emulator.models import Key as EmuKey
from encryption import preflight
from encryption.key_uri import parse_key_uri
from encryption.models import Account, Subscription
from encryption.preflight import BLOCKS, PASSES, WILL_BE_DONE
from tests.encryption.azure_helpers import (
    DEV,
    FABRIKAM,
    KV_PROD,
    PROD,
    SeededTestCase,
    account_id,
    delete_key,
    disable_key_versions,
)


def run(name: str, key_uri: str, vault_sub: str = PROD) -> dict[str, preflight.Check]:
    checks = preflight.run_checks(account_id(name), key_uri=key_uri, vault_subscription_id=vault_sub)
    by_id = {c.id: c for c in checks}
    assert len(by_id) == len(checks) == len(preflight.LABELS)  # every check, every time, once
    return by_id


def states(checks: dict[str, preflight.Check]) -> dict[str, str]:
    return {i: c.state for i, c in checks.items()}


def blocking(checks: dict[str, preflight.Check]) -> set[str]:
    return {i for i, c in checks.items() if c.state == BLOCKS}


class PassingPreflightTests(SeededTestCase):
    def test_it_passes_with_access_to_be_granted(self):
        checks = run("face-prod-eastus", KV_PROD + "keys/face-cmk")
        assert blocking(checks) == set()
        assert checks["access"].state == WILL_BE_DONE
        assert checks["access"].detail == "Access will be granted: get, wrapKey, unwrapKey."
        assert checks["identity"].state == PASSES  # the seed gives face-prod-eastus its identity already

    def test_it_will_turn_the_identity_on(self):
        checks = run("face-noid-eastus", KV_PROD + "keys/face-cmk")
        assert blocking(checks) == set()
        assert checks["identity"].state == WILL_BE_DONE
        assert checks["identity"].detail == "The system-assigned identity will be turned on."
        assert checks["access"].state == WILL_BE_DONE

    def test_it_resolves_a_versionless_uri_to_the_current_version(self):
        current = current_version_of("face-cmk")
        checks = run("face-prod-eastus", KV_PROD + "keys/face-cmk")
        assert checks["version"].state == PASSES
        assert f"the current version {current} will be used" in checks["version"].detail

    def test_it_accepts_an_older_version_and_says_a_newer_one_exists(self):
        key = EmuKey.objects.get(vault__name="kv-prod-eastus", name="face-cmk")
        older = key.versions.order_by("created_at", "id")[0].version
        checks = run("face-prod-eastus", f"{KV_PROD}keys/face-cmk/{older}")
        assert blocking(checks) == set() and "a newer current version" in checks["version"].detail

    def test_it_passes_access_already_held(self):
        # face-cmk-eastus's identity holds get/wrapKey/unwrapKey on kv-prod-eastus since the seed set its CMK.
        checks = run("face-cmk-eastus", KV_PROD + "keys/face-cmk-2")
        assert checks["access"].state == PASSES and checks["current_key"].state == PASSES
        assert blocking(checks) == set()

    def test_it_will_grant_the_role_on_an_rbac_vault(self):
        checks = run("face-prod-eastus", "https://kv-rbac-eastus.vault.azure.net/keys/face-cmk-rbac")
        assert checks["access"].state == WILL_BE_DONE
        assert "Key Vault Crypto Service Encryption User" in checks["access"].detail

    def test_it_runs_from_a_mirrored_account_and_a_parsed_uri(self):
        subscription = Subscription.objects.create(subscription_id=PROD, display_name="contoso-prod", tenant_id="")
        account = Account.objects.create(
            arm_id=account_id("face-prod-eastus"),
            name="face-prod-eastus",
            subscription=subscription,
            resource_group="rg-face-eastus",
            location="eastus",
            sku="S0",
        )
        checks = preflight.run_preflight(account, parse_key_uri(KV_PROD + "keys/face-cmk"), PROD)
        assert [c.id for c in checks] == list(preflight.LABELS)
        assert checks[0].as_dict() == {
            "id": "sku",
            "label": "Pricing tier supports customer-managed keys",
            "state": PASSES,
            "detail": "The S0 tier of face-prod-eastus supports customer-managed keys.",
            "action": "",
        }


class BlockingPreflightTests(SeededTestCase):
    def test_it_blocks_a_vault_without_purge_protection(self):
        checks = run("face-prod-eastus", "https://kv-nopurge-eastus.vault.azure.net/keys/face-cmk-nopurge")
        assert blocking(checks) == {"purge_protection"}
        assert "purge protection" in checks["purge_protection"].action

    def test_it_blocks_a_tier_without_the_capability(self):
        checks = run("face-free-eastus", KV_PROD + "keys/face-cmk")
        assert blocking(checks) == {"sku"}
        assert "F0" in checks["sku"].detail and checks["sku"].action
        assert checks["identity"].state == WILL_BE_DONE

    def test_it_blocks_a_vault_in_another_region(self):
        checks = run("face-prod-eastus", "https://kv-prod-westeurope.vault.azure.net/keys/face-cmk-weu")
        assert blocking(checks) == {"region"}
        assert checks["region"].detail == "kv-prod-westeurope is in westeurope, the account in eastus."

    def test_it_blocks_a_vault_in_another_tenant(self):
        checks = run("face-prod-eastus", "https://kv-fabrikam-eastus.vault.azure.net/keys/face-cmk-fabrikam", FABRIKAM)
        assert blocking(checks) == {"tenant"}
        assert "tenant" in checks["tenant"].action

    def test_it_blocks_a_key_of_another_type(self):
        checks = run("face-prod-eastus", KV_PROD + "keys/signing-ec")
        # An EC key also lacks wrap/unwrap: both are reported, not just the first.
        assert blocking(checks) == {"key_type", "key_ops"}
        assert "EC" in checks["key_type"].detail and "RSA" in checks["key_type"].action

    def test_it_blocks_a_disabled_key(self):
        checks = run("face-prod-eastus", KV_PROD + "keys/face-cmk-broken")
        assert blocking(checks) == {"enabled"}
        assert "disabled" in checks["enabled"].detail and checks["enabled"].action

    def test_it_blocks_when_the_current_key_is_unreachable(self):
        # face-broken-eastus is on face-cmk-broken, which was disabled: its data key cannot be re-wrapped.
        checks = run("face-broken-eastus", KV_PROD + "keys/face-cmk")
        assert blocking(checks) == {"current_key"}
        assert "face-cmk-broken in kv-prod-eastus" in checks["current_key"].detail
        assert "Restore access" in checks["current_key"].action

    def test_it_returns_every_failure_at_once(self):
        checks = run("face-free-eastus", "https://kv-prod-westeurope.vault.azure.net/keys/face-cmk-weu")
        assert blocking(checks) == {"sku", "region"}

    def test_it_blocks_a_vault_not_in_the_subscription(self):
        checks = run("face-prod-eastus", "https://kv-shared-eastus.vault.azure.net/keys/face-cmk-shared", PROD)
        assert {"vault", "tenant", "region", "soft_delete", "purge_protection", "access"} == blocking(checks)
        assert checks["region"].detail == "Not checked: the key vault was not found."
        # The key itself is still read through its URI.
        assert checks["key"].state == PASSES and checks["enabled"].state == PASSES
        assert (
            blocking(run("face-prod-eastus", "https://kv-shared-eastus.vault.azure.net/keys/face-cmk-shared", DEV))
            == set()
        )

    def test_it_blocks_a_vault_that_does_not_exist(self):
        checks = run("face-prod-eastus", "https://kv-nowhere-eastus.vault.azure.net/keys/cmk")
        assert checks["vault"].state == BLOCKS and checks["key"].state == BLOCKS
        assert "no such key vault" in checks["key"].detail

    def test_it_blocks_a_missing_key_and_what_depends_on_it(self):
        checks = run("face-prod-eastus", KV_PROD + "keys/no-such-key")
        assert blocking(checks) == {"key", "version", "enabled", "validity", "key_type", "key_ops"}
        assert checks["key"].detail == "No key no-such-key in kv-prod-eastus."

    def test_it_blocks_a_deleted_key_saying_it_can_be_recovered(self):
        delete_key("kv-prod-eastus", "face-cmk-2")
        checks = run("face-prod-eastus", KV_PROD + "keys/face-cmk-2")
        assert "is deleted (recoverable until" in checks["key"].detail
        assert "Recover the key" in checks["key"].action

    def test_it_blocks_a_missing_version(self):
        checks = run("face-prod-eastus", KV_PROD + "keys/face-cmk/" + "ab" * 16)
        assert blocking(checks) == {"version", "enabled", "validity", "key_type", "key_ops"}

    def test_it_blocks_a_managed_hsm_key(self):
        checks = run("face-prod-eastus", "https://hsm-one.managedhsm.azure.net/keys/cmk")
        assert checks["vault"].state == BLOCKS and "Managed HSM" in checks["vault"].detail

    def test_it_refuses_an_invalid_key_uri_as_one_blocking_check(self):
        testing.reset_request_log()
        checks = preflight.run_checks(
            account_id("face-prod-eastus"), key_uri="https://evil.example/keys/x", vault_subscription_id=PROD
        )
        assert [(c.id, c.state) for c in checks] == [("key", BLOCKS)]
        assert testing.request_count() == 0  # refused before anything was sent


class ValidityPreflightTests(SeededTestCase):
    def test_it_warns_of_a_key_near_expiry(self):
        checks = run("face-prod-eastus", KV_PROD + "keys/face-cmk-expiring")
        assert checks["validity"].state == PASSES
        assert "in 6 days" in checks["validity"].detail or "in 7 days" in checks["validity"].detail
        assert "Rotate the key" in checks["validity"].action

    def test_it_blocks_an_expired_key_by_the_emulator_clock(self):
        testing.shift_clock(8 * 86400)
        self.addCleanup(testing.reset_clock)
        checks = run("face-prod-eastus", KV_PROD + "keys/face-cmk-expiring")
        assert blocking(checks) == {"validity"} and "expired on" in checks["validity"].detail

    def test_it_blocks_a_key_not_valid_yet(self):
        version = EmuKey.objects.get(vault__name="kv-prod-eastus", name="face-cmk-2").versions.get()
        keystore.update_key_version(version, nbf=clock.now() + timedelta(days=2))
        checks = run("face-prod-eastus", KV_PROD + "keys/face-cmk-2")
        assert blocking(checks) == {"validity"} and "not valid before" in checks["validity"].detail

    def test_it_blocks_a_version_disabled_later(self):
        disable_key_versions("kv-prod-eastus", "face-cmk-2")
        assert blocking(run("face-prod-eastus", KV_PROD + "keys/face-cmk-2")) == {"enabled"}


def current_version_of(name: str) -> str:
    key = EmuKey.objects.get(vault__name="kv-prod-eastus", name=name)
    return key.versions.order_by("-created_at", "-id")[0].version
