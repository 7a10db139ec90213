"""Helpers the ARM handlers of subscriptions and accounts share: paging, lookups that answer ARM's 404s,
and etag preconditions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import quote

from django.conf import settings

from emulator.http import EmuError, EmuRequest, EmuResponse, arm_error, json_response
from emulator.models import ResourceGroup, Subscription

ARM_BASE = "https://management.azure.com"
SKIP_TOKEN = "$skipToken"

T = TypeVar("T")


def page_size() -> int:
    return int(getattr(settings, "EMULATOR_ARM_PAGE_SIZE", 5))


def paged(request: EmuRequest, items: Sequence[T], render: Callable[[T], dict[str, Any]]) -> EmuResponse:
    """One page of `items` and an absolute nextLink (null on the last page), as ARM pages lists.

    The skip token is a plain offset: the SDK re-quotes every query value of a nextLink, so it must be
    URL-safe as it is.
    """
    raw = request.param(SKIP_TOKEN, "0")
    if not raw.isdigit():
        raise EmuError(arm_error(400, "InvalidSkipToken", f"The skip token '{raw}' is not valid."))
    start = int(raw)
    size = page_size()
    chunk = items[start : start + size]
    next_link = None
    if start + size < len(items):
        api_version = quote(request.api_version, safe="")
        next_link = f"{ARM_BASE}{request.path.rstrip('/')}?api-version={api_version}&{SKIP_TOKEN}={start + size}"
    return json_response(200, {"value": [render(item) for item in chunk], "nextLink": next_link})


def subscription_or_404(subscription_id: str) -> Subscription:
    found = Subscription.objects.filter(subscription_id=subscription_id.lower()).first()
    if found is None:
        raise EmuError(
            arm_error(404, "SubscriptionNotFound", f"The subscription '{subscription_id}' could not be found.")
        )
    return found


def resource_group_or_404(subscription_id: str, name: str) -> ResourceGroup:
    subscription_or_404(subscription_id)
    group = ResourceGroup.objects.filter(subscription_id=subscription_id.lower(), name__iexact=name).first()
    if group is None:
        raise EmuError(arm_error(404, "ResourceGroupNotFound", f"Resource group '{name}' could not be found."))
    return group


def check_if_match(request: EmuRequest, etag: str | None) -> None:
    """Honour If-Match / If-None-Match as ARM does: 412 PreconditionFailed when the condition fails."""
    if_match = request.headers.get("If-Match")
    if if_match is not None:
        wanted = {tag.strip() for tag in if_match.split(",")}
        if etag is None or ("*" not in wanted and etag not in wanted and etag.strip('"') not in wanted):
            raise EmuError(_precondition_failed(f"The etag {if_match} does not match the resource's current etag."))
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None and etag is not None and if_none_match.strip() in {"*", etag}:
        raise EmuError(_precondition_failed("The resource already exists and If-None-Match forbids replacing it."))


def _precondition_failed(message: str) -> EmuResponse:
    return arm_error(412, "PreconditionFailed", f"{message} Read the resource again and retry with its new etag.")


def caller_id(request: EmuRequest) -> str:
    return request.principal.object_id if request.principal is not None else ""
