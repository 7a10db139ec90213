"""A small estate in the mirror for the Encryption blade's view tests (no Azure involved)."""

from __future__ import annotations

from typing import Any

from django.test import TestCase

from encryption.models import Account, Operation
from tests.builders import (
    TENANT_ID,
    make_account,
    make_cast,
    make_key,
    make_operation,
    make_subscription,
    make_vault,
    version_names,
)

PROD = "11111111-1111-4111-8111-111111111111"  # the builders' default subscription
DEV = "55555555-5555-4555-8555-555555555555"
OTHER_TENANT = "66666666-6666-4666-8666-666666666666"
INLINE_SCRIPT = "<script>"


def passing_checks() -> list[dict[str, str]]:
    return [
        {
            "id": "identity",
            "label": "System-assigned identity",
            "state": "will_be_done",
            "detail": "It will be turned on.",
            "action": "",
        },
        {
            "id": "purge_protection",
            "label": "Soft delete and purge protection",
            "state": "passes",
            "detail": "Both on.",
            "action": "",
        },
    ]


def blocking_checks() -> list[dict[str, str]]:
    return [
        {
            "id": "purge_protection",
            "label": "Soft delete and purge protection",
            "state": "blocks",
            "detail": "Purge protection is off on kv-nopurge-eastus.",
            "action": "Turn on purge protection in the key vault.",
        }
    ]


class BladeTestCase(TestCase):
    """face-prod-eastus (Microsoft-managed), face-cmk-eastus (latest), face-stale-eastus (old version),
    face-broken-eastus (unreadable); vaults in and out of region and tenant, and one in another subscription."""

    @classmethod
    def setUpTestData(cls):
        cls.cast = make_cast()
        cls.prod = make_subscription(PROD, name="contoso-prod")
        cls.dev = make_subscription(DEV, name="contoso-dev")
        cls.vault = make_vault("kv-prod-eastus")
        cls.key = make_key(cls.vault, "face-cmk", versions=3)
        cls.v1, cls.v2, cls.v3 = version_names(cls.key)
        cls.ec_key = make_key(cls.vault, "face-ec")
        cls.ec_key.kty, cls.ec_key.key_size = "EC", 256
        cls.ec_key.save()
        cls.nopurge = make_vault("kv-nopurge-eastus", purge_protection_enabled=False)
        make_key(cls.nopurge, "face-cmk")
        cls.westeurope = make_vault("kv-prod-westeurope", location="westeurope")
        cls.fabrikam = make_vault("kv-fabrikam-eastus", tenant_id=OTHER_TENANT)
        cls.shared = make_vault("kv-shared-eastus", subscription=cls.dev)
        cls.shared_key = make_key(cls.shared, "shared-cmk", versions=1)
        cls.mmk = make_account("face-prod-eastus", data_readable=True)
        cls.cmk = make_account("face-cmk-eastus", key=cls.key, data_readable=True)
        cls.stale = make_account("face-stale-eastus", key=cls.key, version=cls.v1, data_readable=True)
        cls.broken = make_account("face-broken-eastus", key=cls.key, version=cls.v2, data_readable=False)

    def login(self, role: str = "admin") -> None:
        self.client.force_login(self.cast[role])

    def preflight(
        self, account: Account, key_uri: str, *, checks: list[dict[str, str]] | None = None, **fields: Any
    ) -> Operation:
        """A preflight job that has finished with `checks` (passing ones by default)."""
        values: dict[str, Any] = {
            "status": Operation.Status.SUCCEEDED,
            "params": {"key_uri": key_uri, "vault_subscription_id": fields.pop("subscription_id", PROD)},
            "result": {"checks": passing_checks() if checks is None else checks},
        }
        values.update(fields)
        return make_operation(account, Operation.Kind.PREFLIGHT, **values)

    def key_uri(self, version: str = "") -> str:
        base = "https://kv-prod-eastus.vault.azure.net/keys/face-cmk"
        return f"{base}/{version}" if version else base


__all__ = ["TENANT_ID", "BladeTestCase", "blocking_checks", "passing_checks"]
