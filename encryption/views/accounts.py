"""The Accounts page: every account with its encryption state, filtered, searched, sorted and paged."""

from __future__ import annotations

from typing import Any

from django.core.paginator import Paginator
from django.db.models import F, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Concat, Lower
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from encryption.http import PortalRequest, require_perm
from encryption.models import KEY_SOURCE_KEY_VAULT, KEY_SOURCE_MICROSOFT, Account, Key, Operation, Subscription

PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50

HEALTH_CHOICES = (
    ("healthy", "Healthy"),
    ("outdated", "Not on the latest key version"),
    ("unreadable", "Data unreadable"),
    ("unknown", "Not probed yet"),
    ("failed", "Last operation failed"),
)
TYPE_CHOICES = (("cmk", "Customer Managed Keys"), ("mmk", "Microsoft Managed Keys"))

# Column name in the URL -> ORM ordering. Only these are accepted, so `?sort=` cannot reach other fields.
SORTS: dict[str, str] = {
    "name": "name",
    "subscription": "subscription__display_name",
    "region": "location",
    "sku": "sku",
    "type": "key_source",
    "vault": "key_vault_uri",
    "key": "key_name",
    "version": "key_version",
    "data": "data_readable",
    "operation": "last_op_created_at",
    "synced": "last_synced_at",
}


def _latest_version() -> Subquery:
    """The mirror's current version of the account's key, matched however ARM spelled the vault URI."""
    account_uri = Lower(OuterRef("key_vault_uri"))
    keys = Key.objects.annotate(vault_uri_lower=Lower("vault__vault_uri")).filter(
        Q(vault_uri_lower=account_uri) | Q(vault_uri_lower=Concat(account_uri, Value("/"))),
        name=OuterRef("key_name"),
        deleted=False,
    )
    return Subquery(keys.order_by().values("current_version")[:1])


def _last_change(field: str) -> Subquery:
    ops = Operation.objects.filter(account=OuterRef("pk"), kind__in=Operation.CHANGE_KINDS).order_by(
        "-created_at", "-pk"
    )
    return Subquery(ops.values(field)[:1])


def accounts_with_state() -> QuerySet[Account]:
    """Accounts annotated with what the list shows; a fixed number of subqueries, however many rows."""
    return Account.objects.select_related("subscription").annotate(
        latest_version=_latest_version(),
        last_op_id=_last_change("pk"),
        last_op_kind=_last_change("kind"),
        last_op_status=_last_change("status"),
        last_op_created_at=_last_change("created_at"),
    )


def _health_filter(health: str) -> Q:
    cmk = Q(key_source=KEY_SOURCE_KEY_VAULT)
    outdated = cmk & Q(latest_version__isnull=False) & ~Q(latest_version=F("key_version"))
    return {
        "healthy": Q(data_readable=True) & ~outdated,
        "outdated": outdated,
        "unreadable": Q(data_readable=False),
        "unknown": Q(data_readable__isnull=True),
        "failed": Q(last_op_status=Operation.Status.FAILED),
    }[health]


def _filtered(params: dict[str, str]) -> QuerySet[Account]:
    accounts = accounts_with_state()
    if params["subscription"]:
        accounts = accounts.filter(subscription__subscription_id=params["subscription"])
    if params["type"] == "cmk":
        accounts = accounts.filter(key_source=KEY_SOURCE_KEY_VAULT)
    elif params["type"] == "mmk":
        accounts = accounts.exclude(key_source=KEY_SOURCE_KEY_VAULT)
    if params["health"]:
        accounts = accounts.filter(_health_filter(params["health"]))
    if params["q"]:
        q = params["q"]
        accounts = accounts.filter(
            Q(name__icontains=q)
            | Q(arm_id__icontains=q)
            | Q(endpoint__icontains=q)
            | Q(key_vault_uri__icontains=q)
            | Q(key_name__icontains=q)
        )
    field = SORTS[params["sort"].lstrip("-")]
    descending = params["sort"].startswith("-")
    order = F(field).desc(nulls_last=True) if descending else F(field).asc(nulls_last=True)
    return accounts.order_by(order, "name", "pk")


def _params(request: PortalRequest) -> dict[str, str]:
    """The list's query parameters, each reduced to an accepted value (anything else means 'no filter')."""
    get = request.GET
    sort = get.get("sort", "name")
    health = get.get("health", "")
    kind = get.get("type", "")
    return {
        "q": get.get("q", "").strip()[:200],
        "subscription": get.get("subscription", "").strip()[:36],
        "type": kind if kind in dict(TYPE_CHOICES) else "",
        "health": health if health in dict(HEALTH_CHOICES) else "",
        "sort": sort if sort.lstrip("-") in SORTS else "name",
    }


def _page_size(request: PortalRequest) -> int:
    raw = request.GET.get("per_page", "")
    return int(raw) if raw.isdigit() and int(raw) in PAGE_SIZES else DEFAULT_PAGE_SIZE


def _columns(sort: str) -> list[dict[str, Any]]:
    labels = {
        "name": "Name",
        "subscription": "Subscription",
        "region": "Region",
        "sku": "SKU",
        "type": "Encryption type",
        "vault": "Key vault",
        "key": "Key",
        "version": "Version",
        "data": "Data",
        "operation": "Last operation",
        "synced": "Last synced",
    }
    columns = []
    for name, label in labels.items():
        current = sort.lstrip("-") == name
        descending = sort.startswith("-")
        columns.append(
            {
                "name": name,
                "label": label,
                "next": f"-{name}" if current and not descending else name,
                "aria_sort": ("descending" if descending else "ascending") if current else "",
            }
        )
    return columns


@require_GET
@require_perm("encryption.view_account")
def account_list(request: PortalRequest) -> HttpResponse:
    params = _params(request)
    page = Paginator(_filtered(params), _page_size(request)).get_page(request.GET.get("page"))
    context = {
        "page": page,
        "accounts": page.object_list,
        "params": params,
        "columns": _columns(params["sort"]),
        "subscriptions": Subscription.objects.order_by("display_name"),
        "type_choices": TYPE_CHOICES,
        "health_choices": HEALTH_CHOICES,
        "page_sizes": PAGE_SIZES,
        "page_size": page.paginator.per_page,
        "key_source_microsoft": KEY_SOURCE_MICROSOFT,
    }
    template = "encryption/account_list.html"
    if request.htmx:
        template += "#account-table"
    return render(request, template, context)
