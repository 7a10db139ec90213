"""ARM handlers for tenants, subscriptions, resource groups and regions (azure-api.md 3b)."""

from __future__ import annotations

from typing import Any

from emulator import estate, regions
from emulator.arm_common import paged, resource_group_or_404, subscription_or_404
from emulator.http import EmuError, EmuRequest, EmuResponse, arm_error, json_response
from emulator.models import ResourceGroup, Subscription, Tenant
from emulator.routes import arm_route

SUB = r"/subscriptions/(?P<subscription_id>[^/]+)"
RG = SUB + r"/resourcegroups/(?P<name>[^/]+)"


def tenant_json(tenant: Tenant) -> dict[str, Any]:
    return {
        "id": f"/tenants/{tenant.tenant_id}",
        "tenantId": tenant.tenant_id,
        "tenantCategory": "Home",
        "displayName": tenant.display_name,
        "defaultDomain": tenant.default_domain,
        "domains": [tenant.default_domain],
        "tenantType": "AAD",
        "countryCode": "US",
    }


def subscription_json(subscription: Subscription) -> dict[str, Any]:
    return {
        "id": f"/subscriptions/{subscription.subscription_id}",
        "subscriptionId": subscription.subscription_id,
        "tenantId": subscription.tenant_id,
        "displayName": subscription.display_name,
        "state": subscription.state,
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "PayAsYouGo_2014-09-01",
            "spendingLimit": "Off",
        },
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "tags": {},
    }


def resource_group_json(group: ResourceGroup) -> dict[str, Any]:
    return {
        "id": group.arm_id,
        "name": group.name,
        "type": "Microsoft.Resources/resourceGroups",
        "location": group.location,
        "tags": group.tags,
        "properties": {"provisioningState": "Succeeded"},
    }


# Tenants and subscriptions. ARM RBAC is not modelled: every caller sees every subscription.


@arm_route("GET", r"/tenants")
def list_tenants(request: EmuRequest) -> EmuResponse:
    return paged(request, list(Tenant.objects.all()), tenant_json)


@arm_route("GET", r"/subscriptions")
def list_subscriptions(request: EmuRequest) -> EmuResponse:
    return paged(request, list(Subscription.objects.all()), subscription_json)


@arm_route("GET", SUB)
def get_subscription(request: EmuRequest, subscription_id: str) -> EmuResponse:
    return json_response(200, subscription_json(subscription_or_404(subscription_id)))


@arm_route("GET", SUB + r"/locations")
def list_locations(request: EmuRequest, subscription_id: str) -> EmuResponse:
    subscription = subscription_or_404(subscription_id)
    value = [regions.location_json(subscription.subscription_id, region) for region in regions.REGIONS]
    return json_response(200, {"value": value})


# Resource groups


@arm_route("GET", SUB + r"/resourcegroups")
def list_resource_groups(request: EmuRequest, subscription_id: str) -> EmuResponse:
    subscription = subscription_or_404(subscription_id)
    groups = list(ResourceGroup.objects.filter(subscription_id=subscription.subscription_id))
    return paged(request, groups, resource_group_json)


@arm_route("GET", RG)
def get_resource_group(request: EmuRequest, subscription_id: str, name: str) -> EmuResponse:
    return json_response(200, resource_group_json(resource_group_or_404(subscription_id, name)))


@arm_route("PUT", RG)
def put_resource_group(request: EmuRequest, subscription_id: str, name: str) -> EmuResponse:
    subscription = subscription_or_404(subscription_id)
    if not 1 <= len(name) <= 90:
        raise EmuError(arm_error(400, "InvalidResourceGroup", "Resource group names are 1 to 90 characters long."))
    body = request.json_object()
    existed = estate.find_resource_group(subscription.subscription_id, name) is not None
    try:
        group = estate.create_resource_group(
            subscription.subscription_id, name, str(body.get("location") or ""), body.get("tags")
        )
    except estate.EstateError as exc:
        raise EmuError(arm_error(400, "LocationNotAvailableForResourceGroup", str(exc))) from None
    return json_response(200 if existed else 201, resource_group_json(group))
