"""Account > Encryption: the Azure blade's page, its htmx fragments, and Save.

The page is a function of its query string (the chosen type, key source, picker choices, and the
preflight or refresh job to show), so a plain post without JavaScript can redirect back to the very
same state, and htmx fragments are the same view rendering one partial.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.http import HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods

from encryption import services
from encryption.forms import Change, EncryptionForm, current_key, initial_for
from encryption.http import PortalRequest, require_perm
from encryption.models import Account, Operation

PAGE_TEMPLATE = "encryption/account_encryption.html"
# Fragments of the page an htmx request may ask for by its hx-target (partial name = DOM id). The form's
# own fragments are change controls: only roles that may change encryption get them.
FORM_PARTIALS = ("key-picker", "key-uri")
PARTIALS = (*FORM_PARTIALS, "current-state")
# A preflight older than this no longer vouches for a Save: the vault may have changed since.
PREFLIGHT_MAX_AGE = timedelta(minutes=15)
# The fields that make the page show posted choices; a bare ?preflight= shows the account as it stands.
FORM_FIELDS = frozenset(EncryptionForm.base_fields) - {"preflight"}


# Helpers


def get_account(pk: int) -> Account:
    return get_object_or_404(Account.objects.select_related("subscription"), pk=pk)


def encryption_url(account: Account, query: dict[str, Any] | None = None) -> str:
    url = reverse("encryption:account-encryption", args=[account.pk])
    return f"{url}?{urlencode(query)}" if query else url


def job_of(account: Account | None, kind: str, raw_id: str | None) -> Operation | None:
    """The job named in the query string, only if it is of that kind and belongs to this account."""
    if not raw_id or not raw_id.isdigit():
        return None
    return Operation.objects.filter(pk=int(raw_id), kind=kind, account=account).first()


def blocking_checks(preflight: Operation | None) -> list[dict[str, Any]]:
    if preflight is None or not isinstance(preflight.result, dict):
        return []
    return [c for c in preflight.result.get("checks", []) if isinstance(c, dict) and c.get("state") == "blocks"]


def preflight_context(preflight: Operation | None) -> dict[str, Any]:
    """What partials/preflight.html shows for a preflight job (or for none yet)."""
    checks = preflight.result.get("checks", []) if preflight and isinstance(preflight.result, dict) else []
    blocks = blocking_checks(preflight)
    failed = preflight is not None and preflight.status == Operation.Status.FAILED
    return {
        "preflight": preflight,
        "checks": checks,
        "blocking": bool(blocks) or failed,
        "blocking_count": len(blocks),
    }


def _form_for(request: PortalRequest, account: Account) -> EncryptionForm:
    # A query string with form fields (a fragment request, or the redirect after a plain post) shows those
    # choices; otherwise the form shows the account as it stands.
    if FORM_FIELDS & set(request.GET):
        return EncryptionForm(request.GET, account=account)
    return EncryptionForm(initial=initial_for(account), account=account)


def page_context(request: PortalRequest, account: Account, form: EncryptionForm) -> dict[str, Any]:
    key = current_key(account)
    changes = account.operations.filter(kind__in=Operation.CHANGE_KINDS).order_by("-created_at", "-pk")
    active = changes.filter(status__in=Operation.ACTIVE_STATUSES).first()
    preflight_id = request.GET.get("preflight") or form["preflight"].value() or ""
    preflight = job_of(account, Operation.Kind.PREFLIGHT, str(preflight_id))
    context = {
        "account": account,
        "form": form,
        "picker": form.picker,
        "key": key,
        "latest_version": key.current_version if key else "",
        "newer_version": bool(key and key.current_version and key.current_version != account.key_version),
        "active_operation": active,
        "last_operation": active or changes.first(),
        "refresh_job": job_of(account, Operation.Kind.REFRESH, request.GET.get("refresh")),
        "sync_job": job_of(None, Operation.Kind.SYNC, request.GET.get("sync")),
        "can_change": request.user.has_perm("encryption.change_encryption"),
        "can_view_operations": request.user.has_perm("encryption.view_operation"),
        "tenant_changed": bool(
            account.uses_cmk and account.cmk_tenant_id and account.cmk_tenant_id != account.subscription.tenant_id
        ),
    }
    context.update(preflight_context(preflight))
    return context


def render_page(
    request: PortalRequest, account: Account, form: EncryptionForm, *, status: int = 200, **extra: Any
) -> HttpResponse:
    context = page_context(request, account, form)
    context.update(extra)
    template = PAGE_TEMPLATE
    if request.htmx and request.htmx.target in PARTIALS:
        template += f"#{request.htmx.target}"
    return render(request, template, context, status=status)


def start_preflight(request: PortalRequest, account: Account, form: EncryptionForm) -> Operation:
    assert form.target is not None  # callers only start a preflight for a chosen key
    return services.request_job(
        actor=services.Actor.from_request(request),
        account=account,
        kind=Operation.Kind.PREFLIGHT,
        params=form.target.params,
    )


def _vouching_preflight(account: Account, form: EncryptionForm) -> Operation | None:
    """The preflight the form carries, if it checked exactly this key recently."""
    assert form.target is not None
    preflight = job_of(account, Operation.Kind.PREFLIGHT, str(form.cleaned_data.get("preflight") or ""))
    if preflight is None or preflight.params != form.target.params:
        return None
    if preflight.created_at < timezone.now() - PREFLIGHT_MAX_AGE:
        return None
    return preflight


def _back(account: Account, form: EncryptionForm, **extra: Any) -> HttpResponseRedirect:
    return redirect(encryption_url(account, {**form.query(), **extra}))


# Save


def _save(request: PortalRequest, account: Account) -> HttpResponse:
    form = EncryptionForm(request.POST, account=account)
    intent = request.POST.get("intent", "save")
    if intent == "pick":
        # Without JavaScript the cascading selects are filled by posting and coming back with the choices.
        return _back(account, form)
    if not form.is_valid():
        return render_page(request, account, form, status=400)
    if intent == "check" and form.target is not None:
        return _back(account, form, preflight=start_preflight(request, account, form).pk)
    change = form.change()
    if change is None:
        messages.info(request, "Nothing to save: the account already uses this encryption setting.")
        return redirect(encryption_url(account))
    if change.needs_preflight:
        refused = _check_preflight(request, account, form)
        if refused is not None:
            return refused
    return _request(request, account, form, change)


def _check_preflight(request: PortalRequest, account: Account, form: EncryptionForm) -> HttpResponse | None:
    """None when a recent preflight of this key passed; otherwise the response that stops the Save."""
    preflight = _vouching_preflight(account, form)
    if preflight is None:
        preflight = start_preflight(request, account, form)
        messages.info(request, "Keyward is checking every prerequisite first. Save again once the checks pass.")
        return _back(account, form, preflight=preflight.pk)
    if not preflight.is_finished:
        messages.info(request, "The checks are still running. Save again once they pass.")
        return _back(account, form, preflight=preflight.pk)
    if preflight.status == Operation.Status.FAILED or blocking_checks(preflight):
        # The server refuses what the disabled button already shows, whatever was posted.
        form.add_error(None, "Save is blocked: fix what the blocking checks below say, then run the checks again.")
        return render_page(request, account, form, status=409)
    return None


def _request(request: PortalRequest, account: Account, form: EncryptionForm, change: Change) -> HttpResponse:
    try:
        operation = services.request_change(
            actor=services.Actor.from_request(request), account=account, kind=change.kind, params=change.params
        )
    except services.OperationConflict as exc:
        messages.error(request, str(exc))
        return render_page(request, account, form, status=409)
    except services.InvalidRequest as exc:
        form.add_error(None, str(exc))
        return render_page(request, account, form, status=400)
    return redirect("encryption:operation-detail", operation.pk)


save_encryption = require_perm("encryption.change_encryption")(_save)


def _form_fragment(request: PortalRequest, account: Account) -> HttpResponse:
    return render_page(request, account, _form_for(request, account))


form_fragment = require_perm("encryption.change_encryption")(_form_fragment)


# Views


@require_http_methods(["GET", "HEAD", "POST"])
@require_perm("encryption.view_account")
def account_encryption(request: PortalRequest, pk: int) -> HttpResponse:
    account = get_account(pk)
    if request.method == "POST":
        return save_encryption(request, account)
    if request.htmx and request.htmx.target in FORM_PARTIALS:
        return form_fragment(request, account)
    return render_page(request, account, _form_for(request, account))


@require_GET
@require_perm("encryption.view_account")
def account_encryption_by_name(request: PortalRequest, name: str) -> HttpResponse:
    matches = list(Account.objects.filter(name__iexact=name).values_list("pk", flat=True)[:2])
    if len(matches) == 1:
        return redirect("encryption:account-encryption", matches[0])
    # None, or the same name in two subscriptions: let the list's search show what there is.
    return redirect(f"{reverse('encryption:account-list')}?{urlencode({'q': name})}")
