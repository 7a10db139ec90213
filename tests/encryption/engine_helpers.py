"""Shared setup for the engine's tests (services, operations, tasks, CLI): a cast of users, mirror rows,
the broker, and running an operation to its end the way the task's retry policy would."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from django.contrib.auth.models import Group, User
from django.test import TestCase

from emulator.seed import subscription_id
from emulator.testing import clear_faults, request_count, reset_clock
from encryption import azure_gateway, operations, services
from encryption.models import KEY_SOURCE_KEY_VAULT, Account, Operation, Subscription
from encryption.roles import ADMINS, HELP_DESK, REVIEWERS
from encryption.services import Actor
from portal.celery import app, ensure_broker_folders

SUB = "11111111-1111-4111-8111-111111111111"
TENANT = "22222222-2222-4222-8222-222222222222"


def make_user(username: str, role: str | None) -> User:
    user = User.objects.create_user(username=username, password="not-used-in-these-tests-9431")
    if role:
        user.groups.add(Group.objects.get(name=role))
    return user


def make_cast() -> dict[str, User]:
    return {
        "admin": make_user("alice-admin", ADMINS),
        "reviewer": make_user("rita-reviewer", REVIEWERS),
        "helpdesk": make_user("hank-helpdesk", HELP_DESK),
        "outsider": make_user("olga-outsider", None),
    }


def cli_actor(user: User | None) -> Actor:
    return Actor.from_cli(user)


def make_account(name: str = "face-test", *, cmk: bool = False, subscription_id: str = SUB) -> Account:
    subscription, _ = Subscription.objects.get_or_create(
        subscription_id=subscription_id, defaults={"display_name": "test-sub", "tenant_id": TENANT}
    )
    fields: dict[str, Any] = {}
    if cmk:
        fields = {
            "key_source": KEY_SOURCE_KEY_VAULT,
            "key_vault_uri": "https://kv-test.vault.azure.net/",
            "key_name": "cmk",
            "key_version": "0" * 32,
            "identity_type": "SystemAssigned",
            "principal_id": "33333333-3333-4333-8333-333333333333",
        }
    return Account.objects.create(
        arm_id=f"/subscriptions/{subscription_id}/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/{name}",
        name=name,
        subscription=subscription,
        resource_group="rg",
        location="eastus",
        sku="S0",
        cmk_capable=True,
        **fields,
    )


def engine_estate() -> User:
    """The seeded emulator mirrored by a first sync (as `bin/run` does), and an encryption admin."""
    from emulator.seed import seed
    from encryption import sync

    seed()
    sync.sync_estate()
    return make_user("ada-engine-admin", ADMINS)


def run_to_end(operation: Operation, *, attempts: int = 12) -> Operation:
    """Run an operation as the task would: again after each transient error (what its retry policy does),
    giving up like the task does once the attempts are spent."""
    for _ in range(attempts):
        try:
            operations.run_operation(operation.pk)
        except azure_gateway.TransientAzureError as exc:
            last = exc
            continue
        break
    else:
        operations.give_up(operation.pk, last)
    operation.refresh_from_db()
    return operation


@contextmanager
def broker(url: str) -> Iterator[None]:
    """Point the Celery app at another broker for the block (a closed port stands for a broker that is down)."""
    saved = app.conf.broker_url
    _reset_pools()
    app.conf.broker_url = url
    try:
        # Celery reads CELERY_BROKER_URL from the environment before its own setting (bin/test sets it
        # under CI=true), so the stand-in broker goes there too.
        with mock.patch.dict(os.environ, {"CELERY_BROKER_URL": url}):
            yield
    finally:
        _reset_pools()
        app.conf.broker_url = saved


def _reset_pools() -> None:
    # What Celery itself does after a fork: forget the cached connection and producer pools.
    app._pool = None
    if "amqp" in app.__dict__:
        app.__dict__["amqp"]._producer_pool = None


def broker_ready() -> None:
    ensure_broker_folders()


# The seeded estate

PROD = "https://kv-prod-eastus.vault.azure.net/keys"
CONTOSO_DEV = subscription_id("contoso-dev")
FABRIKAM = subscription_id("fabrikam-prod")
EXPIRED = "2000-01-01T00:00:00Z"  # a lease that ran out: its worker is gone


class EngineTestCase(TestCase):
    """The seeded emulator, mirrored by a first sync, and an admin to ask for changes."""

    databases = {"default", "emulator"}

    @classmethod
    def setUpTestData(cls):
        cls.admin = engine_estate()

    def setUp(self):
        clear_faults()
        self.addCleanup(clear_faults)
        self.addCleanup(reset_clock)

    def account(self, name: str) -> Account:
        return Account.objects.get(name=name)

    def ask(self, kind: str, name: str | None, **params) -> Operation:
        account = self.account(name) if name else None
        return services.request_change(
            actor=services.Actor.from_cli(self.admin), account=account, kind=kind, params=params
        )

    def change(self, kind: str, name: str | None, **params) -> Operation:
        return run_to_end(self.ask(kind, name, **params))

    def patches(self, name: str) -> int:
        return request_count("PATCH", f"/accounts/{name}")

    def assert_succeeded(self, op: Operation) -> None:
        assert op.status == "succeeded", (
            f"{op} failed: {op.reason} / steps: {list(op.steps.values_list('name', 'status', 'detail'))}"
        )
