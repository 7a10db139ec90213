"""The help-desk page: find an account, read in plain language why its data is or is not readable.

Help-desk staff see the account's own recent events and nothing else of the audit trail. The diagnosis is
a `diagnose` job run by a worker (no Azure call from the web process); the page polls our Operation row.
"""

from __future__ import annotations

from django.contrib import messages
from django.db.models import Q, QuerySet
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from encryption import services
from encryption.actors import Actor
from encryption.http import PortalRequest, require_perm
from encryption.models import Account, AuditEvent, Operation

MAX_RESULTS = 25
RECENT_EVENTS = 10


def _search(text: str) -> QuerySet[Account]:
    text = text.strip()
    if not text:
        return Account.objects.none()
    # An ARM id or an endpoint is pasted whole; a name is often typed in part.
    match = Q(name__icontains=text) | Q(endpoint__icontains=text.rstrip("/"))
    if text.startswith("/"):
        match |= Q(arm_id__iexact=text.rstrip("/"))
    return Account.objects.select_related("subscription").filter(match).order_by("name")


def _latest_diagnosis(account: Account) -> Operation | None:
    return account.operations.filter(kind=Operation.Kind.DIAGNOSE).order_by("-created_at", "-pk").first()


def _account_context(account: Account) -> dict[str, object]:
    return {
        "account": account,
        "diagnosis": _latest_diagnosis(account),
        # Only the account's own events, and only what they say (no before/after, no links to the trail).
        "events": AuditEvent.objects.filter(target=account.arm_id)
        .only("seq", "created_at", "actor", "action", "outcome", "message")
        .order_by("-seq")[:RECENT_EVENTS],
    }


@require_GET
@require_perm("encryption.view_diagnosis")
def helpdesk(request: PortalRequest) -> HttpResponse:
    query = request.GET.get("q", "")[:400]
    results = list(_search(query)[: MAX_RESULTS + 1])
    account = None
    if request.GET.get("account", "").isdigit():
        account = get_object_or_404(Account.objects.select_related("subscription"), pk=request.GET["account"])
    elif len(results) == 1:
        account = results[0]
    context: dict[str, object] = {
        "query": query,
        "results": results[:MAX_RESULTS],
        "too_many": len(results) > MAX_RESULTS,
    }
    if account is not None:
        context.update(_account_context(account))
    return render(request, "encryption/helpdesk.html", context)


@require_POST
@require_perm("encryption.view_diagnosis")
def helpdesk_diagnose(request: PortalRequest, pk: int) -> HttpResponse:
    account = get_object_or_404(Account, pk=pk)
    try:
        services.request_job(
            actor=Actor.from_request(request), account=account, kind=Operation.Kind.DIAGNOSE, params={}
        )
    except services.RequestRefused as exc:
        messages.error(request, str(exc))
    if request.htmx:
        return render(request, "encryption/helpdesk.html#diagnosis", _account_context(account))
    return HttpResponseRedirect(f"{reverse('encryption:helpdesk')}?account={account.pk}")


@require_GET
@require_perm("encryption.view_diagnosis")
def helpdesk_diagnosis(request: PortalRequest, pk: int) -> HttpResponse:
    account = get_object_or_404(Account, pk=pk)
    if request.htmx:
        return render(request, "encryption/helpdesk.html#diagnosis", _account_context(account))
    return HttpResponseRedirect(f"{reverse('encryption:helpdesk')}?account={account.pk}")
