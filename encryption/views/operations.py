"""Live progress: an operation's page and its polled fragment, and the blade's preflight fragment.

Both poll our own Operation row (never Celery's results). While the row is queued or running the fragment
carries its own `hx-trigger="every 1s"`; once it has ended it is rendered without the trigger and with
status 286, so htmx stops polling either way.
"""

from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import HTMX_STOP_POLLING

from encryption import services
from encryption.forms import EncryptionForm
from encryption.http import PortalRequest, require_perm
from encryption.models import Account, Operation
from encryption.views.blade import encryption_url, get_account, job_of, preflight_context, render_page

STATUS_TEMPLATE = "encryption/partials/operation_status.html"
PREFLIGHT_TEMPLATE = "encryption/partials/preflight.html"


def _polled(response: HttpResponse, operation: Operation | None) -> HttpResponse:
    """Answer 286 to a poll of an operation that has ended, so htmx stops asking."""
    if operation is not None and operation.is_finished:
        response.status_code = HTMX_STOP_POLLING
    return response


# The operation page


@require_GET
@require_perm("encryption.view_operation")
def operation_detail(request: PortalRequest, pk: int) -> HttpResponse:
    operation = get_object_or_404(Operation.objects.select_related("account__subscription"), pk=pk)
    context = {
        "operation": operation,
        "account": operation.account,
        "checks": operation.result.get("checks", []) if isinstance(operation.result, dict) else [],
        "can_change": request.user.has_perm("encryption.change_encryption"),
        # The blade shows the same fragment in a smaller form (no account summary, no way back).
        "compact": request.GET.get("compact") == "1",
    }
    if request.htmx:
        return _polled(render(request, STATUS_TEMPLATE, context), operation)
    return render(request, "encryption/operation_detail.html", context)


# The preflight fragment


def _preflight_fragment(
    request: PortalRequest, account: Account, preflight: Operation | None, *, message: str = "", status: int = 200
) -> HttpResponse:
    context = {"account": account, "message": message, **preflight_context(preflight)}
    return render(request, PREFLIGHT_TEMPLATE, context, status=status)


def _start_preflight(request: PortalRequest, account: Account) -> HttpResponse:
    form = EncryptionForm(request.POST, account=account)
    if not form.is_valid() or form.target is None:
        if not request.htmx:
            return render_page(request, account, form, status=400)
        errors = [str(e) for errors in form.errors.values() for e in errors]
        # Nothing to check yet (Microsoft-managed keys chosen, or the key not chosen): say what is missing.
        message = errors[0] if errors and form.wants_cmk else "Choose a customer-managed key to see the checks."
        return _preflight_fragment(request, account, None, message=message)
    try:
        preflight = services.request_job(
            actor=services.Actor.from_request(request),
            account=account,
            kind=Operation.Kind.PREFLIGHT,
            params=form.target.params,
        )
    except services.RequestRefused as exc:
        return _preflight_fragment(request, account, None, message=str(exc), status=400)
    if not request.htmx:
        return redirect(encryption_url(account, {**form.query(), "preflight": preflight.pk}))
    return _preflight_fragment(request, account, preflight)


start_preflight = require_perm("encryption.change_encryption")(_start_preflight)


@require_http_methods(["GET", "HEAD", "POST"])
@require_perm("encryption.view_account")
def account_preflight(request: PortalRequest, pk: int) -> HttpResponse:
    account = get_account(pk)
    if request.method == "POST":
        return start_preflight(request, account)
    preflight = job_of(account, Operation.Kind.PREFLIGHT, request.GET.get("operation"))
    if not request.htmx:
        return redirect(encryption_url(account, {"preflight": preflight.pk} if preflight else None))
    return _polled(_preflight_fragment(request, account, preflight), preflight)
