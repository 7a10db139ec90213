"""ARM handlers for Microsoft.CognitiveServices/accounts (azure-api.md 2), their operation status
resources, and the emulator's read-only data access probe.

Creating, updating and deleting are long-running: 201/202 with `Azure-AsyncOperation`, `Location` and
`Retry-After: 1`, and the account reads Creating/Accepted/Deleting until the operation finishes.
"""

from __future__ import annotations

from typing import Any

from emulator import accounts, arm_subscriptions, data_at_rest, lro, updates  # noqa: F401 (routes)
from emulator.accounts import AccountError
from emulator.arm_common import caller_id, check_if_match, paged, resource_group_or_404, subscription_or_404
from emulator.http import EmuError, EmuRequest, EmuResponse, arm_error, empty_response, json_response
from emulator.kv_client import KeyVaultFailure
from emulator.models import ArmOperation, CognitiveAccount
from emulator.models.arm import ACCOUNT_TYPE
from emulator.routes import arm_route
from emulator.rules import CmkRefused

SUB = r"/subscriptions/(?P<subscription_id>[^/]+)"
RG = SUB + r"/resourcegroups/(?P<resource_group>[^/]+)"
ACCOUNTS = r"/providers/Microsoft\.CognitiveServices/accounts"
ACCOUNT = RG + ACCOUNTS + r"/(?P<name>[^/]+)"
OPERATIONS = SUB + r"/providers/Microsoft\.CognitiveServices/locations/(?P<location>[^/]+)"


def _refusal(exc: AccountError | CmkRefused) -> EmuResponse:
    if exc.status >= 500:
        return arm_error(exc.status, exc.code, exc.message, headers={"Retry-After": "1"})
    return arm_error(exc.status, exc.code, exc.message)


def _find(subscription_id: str, resource_group: str, name: str) -> CognitiveAccount | None:
    account = CognitiveAccount.objects.filter(
        subscription_id=subscription_id.lower(), resource_group__iexact=resource_group, name__iexact=name
    ).first()
    if account is not None:
        lro.settle_overdue(account)
    return account


def _account_or_404(subscription_id: str, resource_group: str, name: str) -> CognitiveAccount:
    resource_group_or_404(subscription_id, resource_group)
    account = _find(subscription_id, resource_group, name)
    if account is None:
        message = f"The Resource '{ACCOUNT_TYPE}/{name}' under resource group '{resource_group}' was not found."
        raise EmuError(arm_error(404, "ResourceNotFound", message))
    return account


def _refuse_if_busy(account: CognitiveAccount) -> None:
    operation = lro.active(account)
    if operation is not None:
        message = (
            f"Another operation ({operation.action}, id {operation.operation_id}) is in progress on account "
            f"'{account.name}'. Wait for it to finish, then retry."
        )
        raise EmuError(arm_error(409, "AnotherOperationInProgress", message))


def _accepted(
    status: int, account: CognitiveAccount | None, operation: ArmOperation, request: EmuRequest
) -> EmuResponse:
    headers = lro.headers(operation, request.api_version)
    if account is None:
        return empty_response(status, headers)
    return json_response(status, accounts.account_json(account), headers)


# Reads


@arm_route("GET", ACCOUNT)
def get_account(request: EmuRequest, subscription_id: str, resource_group: str, name: str) -> EmuResponse:
    account = _account_or_404(subscription_id, resource_group, name)
    return json_response(200, accounts.account_json(account), {"ETag": account.etag})


@arm_route("GET", SUB + ACCOUNTS)
def list_accounts(request: EmuRequest, subscription_id: str) -> EmuResponse:
    subscription = subscription_or_404(subscription_id)
    found = CognitiveAccount.objects.filter(subscription_id=subscription.subscription_id).order_by("name", "id")
    return paged(request, list(found), accounts.account_json)


@arm_route("GET", RG + ACCOUNTS)
def list_accounts_by_group(request: EmuRequest, subscription_id: str, resource_group: str) -> EmuResponse:
    group = resource_group_or_404(subscription_id, resource_group)
    found = CognitiveAccount.objects.filter(subscription_id=group.subscription_id, resource_group__iexact=group.name)
    return paged(request, list(found.order_by("name", "id")), accounts.account_json)


# Writes


@arm_route("PUT", ACCOUNT)
def put_account(request: EmuRequest, subscription_id: str, resource_group: str, name: str) -> EmuResponse:
    try:
        accounts.validate_names(resource_group, name)
    except AccountError as exc:
        return _refusal(exc)
    group = resource_group_or_404(subscription_id, resource_group)
    body = request.json_object()
    existing = _find(subscription_id, resource_group, name)
    check_if_match(request, existing.etag if existing else None)
    if existing is not None:
        return _update(request, existing, body, status=200)
    try:
        account = _create(request, group.subscription_id, group.name, name, body)
    except AccountError as exc:
        return _refusal(exc)
    operation = lro.start(account, "create", {}, caller_id(request))
    return _accepted(201, account, operation, request)


def _create(
    request: EmuRequest, subscription_id: str, resource_group: str, name: str, body: dict[str, Any]
) -> CognitiveAccount:
    properties = body.get("properties") or {}
    if str(body.get("kind") or "") == "":
        raise AccountError("InvalidKind", "kind is required (Face).")
    if not body.get("location"):
        raise AccountError("LocationRequired", "location is required.")
    if (properties.get("encryption") or {}).get("keySource", "").lower() == "microsoft.keyvault":
        # Documented for Cognitive Services: create with Microsoft-managed keys, then switch.
        raise AccountError(
            "CustomerManagedKeyNotAllowedOnCreate",
            "Customer-managed keys cannot be set when the account is created. Create it with Microsoft-managed "
            "keys, enable its identity, grant it access to the key, then set the key with a PATCH.",
        )
    return accounts.create_account(
        subscription_id=subscription_id,
        resource_group=resource_group,
        name=name,
        location=str(body["location"]),
        kind=str(body["kind"]),
        sku=accounts.validate_sku(body.get("sku")),
        custom_subdomain=str(properties.get("customSubDomainName") or ""),
        identity=body.get("identity"),
        tags=body.get("tags") if isinstance(body.get("tags"), dict) else None,
        created_by=caller_id(request),
        provisioning_state="Creating",
    )


@arm_route("PATCH", ACCOUNT)
def patch_account(request: EmuRequest, subscription_id: str, resource_group: str, name: str) -> EmuResponse:
    account = _account_or_404(subscription_id, resource_group, name)
    check_if_match(request, account.etag)
    return _update(request, account, request.json_object(), status=202)


def _update(request: EmuRequest, account: CognitiveAccount, body: dict[str, Any], *, status: int) -> EmuResponse:
    _refuse_if_busy(account)
    try:
        changes = updates.plan(account, body)
    except (AccountError, CmkRefused) as exc:
        # Returned, not raised: the data-plane calls the rules made stay in the request log.
        return _refusal(exc)
    operation = lro.start(account, "update", changes, caller_id(request))
    return _accepted(status, account, operation, request)


@arm_route("DELETE", ACCOUNT)
def delete_account(request: EmuRequest, subscription_id: str, resource_group: str, name: str) -> EmuResponse:
    resource_group_or_404(subscription_id, resource_group)
    account = _find(subscription_id, resource_group, name)
    if account is None:
        return empty_response(204)
    check_if_match(request, account.etag)
    _refuse_if_busy(account)
    operation = lro.start(account, "delete", {}, caller_id(request))
    return _accepted(202, None, operation, request)


# Operation status resources


def _operation_or_404(subscription_id: str, operation_id: str) -> ArmOperation:
    operation = ArmOperation.objects.filter(
        subscription_id=subscription_id.lower(), operation_id=operation_id.lower()
    ).first()
    if operation is None:
        raise EmuError(arm_error(404, "OperationNotFound", f"The operation '{operation_id}' was not found."))
    return operation


@arm_route("GET", OPERATIONS + r"/operationStatuses/(?P<operation_id>[^/]+)")
def operation_status(request: EmuRequest, subscription_id: str, location: str, operation_id: str) -> EmuResponse:
    operation = lro.poll(_operation_or_404(subscription_id, operation_id))
    headers = {} if operation.finished else {"Retry-After": lro.RETRY_AFTER_SECONDS}
    return json_response(200, lro.status_json(operation), headers)


@arm_route("GET", OPERATIONS + r"/operationResults/(?P<operation_id>[^/]+)")
def operation_result(request: EmuRequest, subscription_id: str, location: str, operation_id: str) -> EmuResponse:
    operation = lro.poll(_operation_or_404(subscription_id, operation_id))
    if not operation.finished:
        return empty_response(202, {"Location": lro.result_url(operation, request.api_version), "Retry-After": "1"})
    if operation.error:
        return arm_error(400, operation.error["code"], operation.error["message"])
    account = _find(operation.subscription_id, operation.resource_group, operation.account_name)
    if operation.action == "delete" or account is None:
        return empty_response(204)
    return json_response(200, accounts.account_json(account))


# The emulator's own extension: can the account read its data right now?


@arm_route("POST", ACCOUNT + r"/probeDataAccess")
def probe_data_access(request: EmuRequest, subscription_id: str, resource_group: str, name: str) -> EmuResponse:
    account = _account_or_404(subscription_id, resource_group, name)
    try:
        readable, code, reason = data_at_rest.probe_data_access(account)
    except KeyVaultFailure as failure:
        return arm_error(503, "KeyVaultUnavailable", f"{failure.message} Try again.", headers={"Retry-After": "1"})
    return json_response(200, {"readable": readable, "code": code, "reason": reason})
