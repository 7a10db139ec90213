"""Plain `make_*` functions for test data, with explicit defaults (healthchecks-style, no factories).

Shared by every part's tests: add functions here, don't change what existing ones return.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.models import Group, Permission, User
from django.utils import timezone

from encryption import audit
from encryption.actors import Actor
from encryption.models import (
    KEY_SOURCE_KEY_VAULT,
    Account,
    AuditEvent,
    Key,
    KeyVault,
    KeyVersion,
    Operation,
    Subscription,
)
from encryption.roles import ADMINS, HELP_DESK, REVIEWERS, ROLE_PERMISSIONS

SUBSCRIPTION_ID = "11111111-1111-4111-8111-111111111111"
TENANT_ID = "22222222-2222-4222-8222-222222222222"
PASSWORD = "builders-password-1234"


# People


def role_group(role: str) -> Group:
    """The role's group, re-created with its permissions if a TransactionTestCase flush removed it (the
    flush re-creates permissions through post_migrate, but not the groups the data migration made)."""
    group, created = Group.objects.get_or_create(name=role)
    if created:
        for perm in ROLE_PERMISSIONS[role]:
            app_label, codename = perm.split(".")
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return group


def make_user(username: str, role: str | None = None, *, password: str = PASSWORD) -> User:
    user = User.objects.create_user(username=username, password=password)
    if role:
        user.groups.add(role_group(role))
    return user


def make_cast(prefix: str = "") -> dict[str, User]:
    """An admin who can, a reviewer and a help-desk user who can only read, an outsider who cannot."""
    return {
        "admin": make_user(f"{prefix}ada-admin", ADMINS),
        "reviewer": make_user(f"{prefix}rex-reviewer", REVIEWERS),
        "helpdesk": make_user(f"{prefix}hal-helpdesk", HELP_DESK),
        "outsider": make_user(f"{prefix}oz-outsider", None),
    }


def actor_for(user: User | None) -> Actor:
    return Actor.from_cli(user) if user is not None else Actor.system()


# The mirror


def make_subscription(subscription_id: str = SUBSCRIPTION_ID, *, name: str = "Contoso Production") -> Subscription:
    subscription, _ = Subscription.objects.get_or_create(
        subscription_id=subscription_id, defaults={"display_name": name, "tenant_id": TENANT_ID}
    )
    return subscription


def make_vault(name: str = "kv-test-eastus", *, location: str = "eastus", **fields: Any) -> KeyVault:
    subscription = fields.pop("subscription", None) or make_subscription()
    values: dict[str, Any] = {
        "arm_id": f"/subscriptions/{subscription.subscription_id}/resourceGroups/rg-keys/providers/Microsoft.KeyVault/vaults/{name}",
        "name": name,
        "subscription": subscription,
        "resource_group": "rg-keys",
        "location": location,
        "tenant_id": TENANT_ID,
        "vault_uri": f"https://{name}.vault.azure.net/",
        "soft_delete_enabled": True,
        "purge_protection_enabled": True,
    }
    values.update(fields)
    return KeyVault.objects.create(**values)


def make_key(
    vault: KeyVault, name: str = "cmk", *, versions: int = 1, expires_on: datetime | None = None, **fields: Any
) -> Key:
    """A key with `versions` versions (hex 32 names, oldest first); the newest is current."""
    key = Key.objects.create(vault=vault, name=name, kty="RSA", key_size=2048, expires_on=expires_on, **fields)
    now = timezone.now()
    names = []
    for i in range(versions):
        version = f"{name}{i}".encode().hex().ljust(32, "0")[:32]
        names.append(version)
        KeyVersion.objects.create(
            key=key, version=version, created_on=now - timedelta(days=versions - i), expires_on=expires_on
        )
    key.current_version = names[-1] if names else ""
    key.save(update_fields=["current_version"])
    return key


def version_names(key: Key) -> list[str]:
    """The key's versions, oldest first."""
    return list(key.versions.order_by("created_on").values_list("version", flat=True))


def make_account(
    name: str = "face-test-eastus", *, key: Key | None = None, version: str | None = None, **fields: Any
) -> Account:
    """A Face account; with `key`, under CMK on `version` (the key's current version by default)."""
    subscription = fields.pop("subscription", None) or make_subscription()
    values: dict[str, Any] = {
        "arm_id": f"/subscriptions/{subscription.subscription_id}/resourceGroups/rg-ai/providers/Microsoft.CognitiveServices/accounts/{name}",
        "name": name,
        "subscription": subscription,
        "resource_group": "rg-ai",
        "location": "eastus",
        "sku": "S0",
        "cmk_capable": True,
        "endpoint": f"https://{name}.cognitiveservices.azure.com/",
    }
    if key is not None:
        values.update(
            key_source=KEY_SOURCE_KEY_VAULT,
            key_vault_uri=key.vault.vault_uri,
            key_name=key.name,
            key_version=key.current_version if version is None else version,
            identity_type="SystemAssigned",
            principal_id="33333333-3333-4333-8333-333333333333",
        )
    values.update(fields)
    return Account.objects.create(**values)


# Operations and the audit trail


def make_operation(account: Account | None, kind: str = Operation.Kind.DIAGNOSE, **fields: Any) -> Operation:
    values: dict[str, Any] = {"kind": kind, "account": account, "actor": "system", "source": "system"}
    values.update(fields)
    return Operation.objects.create(**values)


def make_event(
    action: str = "operation.requested",
    *,
    actor: Actor | None = None,
    outcome: str = AuditEvent.Outcome.INFO,
    **fields: Any,
) -> AuditEvent:
    """One event appended through the real chain (audit.record), so verification sees a valid trail."""
    return audit.record(actor=actor or Actor.system(), action=action, outcome=outcome, **fields)
