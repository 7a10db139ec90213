"""Tenants, subscriptions and resource groups: create them (the seed, tests) and move a subscription to
another tenant, as Azure's "Change directory" does.

A tenant move re-homes the accounts' managed identities in the new tenant but leaves every vault's
tenantId as it was (Azure keeps it until someone fixes it), so customer-managed keys stop working.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.db.models import Q

from emulator import regions
from emulator.identities import derived_id, register_principal
from emulator.models import CognitiveAccount, ResourceGroup, Subscription, Tenant, Vault
from emulator.router import EMULATOR_ALIAS


class EstateError(ValueError):
    """A name or id that does not resolve, or a request Azure would refuse."""


def create_tenant(name: str, display_name: str = "", *, tenant_id: str = "") -> Tenant:
    tenant_id = (tenant_id or derived_id("tenant", name)).lower()
    with transaction.atomic(using=EMULATOR_ALIAS):
        tenant, _ = Tenant.objects.update_or_create(
            tenant_id=tenant_id,
            defaults={
                "name": name,
                "display_name": display_name or name.capitalize(),
                "default_domain": f"{name}.onmicrosoft.com",
            },
        )
    return tenant


def create_subscription(display_name: str, tenant: Tenant, *, subscription_id: str = "") -> Subscription:
    subscription_id = (subscription_id or derived_id("subscription", display_name)).lower()
    with transaction.atomic(using=EMULATOR_ALIAS):
        subscription, _ = Subscription.objects.update_or_create(
            subscription_id=subscription_id,
            defaults={"display_name": display_name, "tenant_id": tenant.tenant_id, "state": "Enabled"},
        )
    return subscription


def create_resource_group(
    subscription_id: str, name: str, location: str, tags: dict[str, str] | None = None
) -> ResourceGroup:
    if regions.find(location) is None:
        raise EstateError(f"The location '{location}' is not available for resource groups.")
    with transaction.atomic(using=EMULATOR_ALIAS):
        group = find_resource_group(subscription_id, name)
        if group is None:
            group = ResourceGroup(subscription_id=subscription_id.lower(), name=name)
        group.location = regions.normalize(location)
        group.tags = dict(tags or group.tags or {})
        group.save()
    return group


def find_subscription(subscription_id: str) -> Subscription | None:
    return Subscription.objects.filter(subscription_id=subscription_id.lower()).first()


def find_resource_group(subscription_id: str, name: str) -> ResourceGroup | None:
    # Resource group names are case-insensitive in ARM.
    return ResourceGroup.objects.filter(subscription_id=subscription_id.lower(), name__iexact=name).first()


def resolve_tenant(text: str) -> Tenant:
    """A tenant by short name, display name, default domain or id."""
    query = Q(tenant_id=text.lower()) | Q(name__iexact=text) | Q(display_name__iexact=text)
    tenant = Tenant.objects.filter(query | Q(default_domain__iexact=text)).first()
    if tenant is None:
        raise EstateError(f"No tenant is named or has the id '{text}'.")
    return tenant


def resolve_subscription(text: str) -> Subscription:
    """A subscription by display name or id."""
    found = Subscription.objects.filter(Q(subscription_id=text.lower()) | Q(display_name__iexact=text)).first()
    if found is None:
        raise EstateError(f"No subscription is named or has the id '{text}'.")
    return found


# The tenant move


@dataclass(frozen=True)
class TenantMove:
    subscription: Subscription
    old_tenant_id: str
    new_tenant_id: str
    identities_moved: int
    vaults_left_behind: int


def move_subscription(subscription: Subscription, tenant: Tenant) -> TenantMove:
    """Move `subscription` to `tenant`: its accounts' identities now belong to the new tenant, while its
    vaults (and every other vault) keep their old tenantId, so CMK data can no longer be unwrapped."""
    old_tenant_id = subscription.tenant_id
    if old_tenant_id == tenant.tenant_id:
        raise EstateError(f"Subscription '{subscription.display_name}' is already in tenant '{tenant.name}'.")
    moved = 0
    with transaction.atomic(using=EMULATOR_ALIAS):
        subscription.tenant_id = tenant.tenant_id
        subscription.save(update_fields=["tenant_id"])
        for account in CognitiveAccount.objects.filter(subscription_id=subscription.subscription_id):
            moved += _rehome_identities(account, tenant.tenant_id)
        left = Vault.objects.filter(subscription_id=subscription.subscription_id).exclude(tenant_id=tenant.tenant_id)
        vaults_left_behind = left.count()
    return TenantMove(subscription, old_tenant_id, tenant.tenant_id, moved, vaults_left_behind)


def _rehome_identities(account: CognitiveAccount, tenant_id: str) -> int:
    moved = 0
    if account.principal_id:
        register_principal(account.principal_id, tenant_id, display_name=account.name)
        account.identity_tenant_id = tenant_id
        moved += 1
    for resource_id, entry in account.user_assigned_identities.items():
        register_principal(str(entry["principalId"]), tenant_id, display_name=resource_id.rsplit("/", 1)[-1])
        moved += 1
    account.save(update_fields=["identity_tenant_id"])
    return moved
