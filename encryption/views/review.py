"""Security reviewers' pages: the audit trail, an event, chain verification, evidence export, key inventory.

Read-only by design: no view here changes or deletes an event. The only POSTs start a verification or an
export, which append `audit.verified` / `audit.exported` events like any other action.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, cast

from django.http import Http404, HttpResponse, HttpResponseRedirect, QueryDict, StreamingHttpResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from encryption import audit, audit_query, audit_verification, key_inventory
from encryption import audit_export as exports
from encryption.actors import Actor
from encryption.http import PortalRequest, require_perm
from encryption.models import Account, AuditEvent, AuditExport, Key
from encryption.roles import ROLE_LABELS

KNOWN_ACTIONS = (
    "operation.requested",
    "operation.step",
    "operation.succeeded",
    "operation.failed",
    "access.refused",
    "auth.login",
    "auth.login_failed",
    "auth.logout",
    "role.changed",
    "sync.external_change",
    "audit.exported",
    "audit.verified",
)


# Helpers


def _cursor(raw: str | None) -> int | None:
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


def _filter_query(params: QueryDict) -> str:
    """The filter part of the query string (no cursor), to carry into paging and export links."""
    query = params.copy()
    for name in ("before", "after"):
        query.pop(name, None)
    return query.urlencode()


def _filter_choices() -> dict[str, Any]:
    return {
        "roles": sorted(ROLE_LABELS.items()),
        "accounts": Account.objects.order_by("name").values_list("arm_id", "name"),
        "keys": [(k.uri, str(k)) for k in Key.objects.select_related("vault").filter(deleted=False)],
        "known_actions": KNOWN_ACTIONS,
    }


def _pretty(value: Any) -> str:
    return "" if value is None else json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


# Audit trail


@require_GET
@require_perm("encryption.view_audit")
def audit_list(request: PortalRequest) -> HttpResponse:
    form = audit_query.AuditFilterForm(request.GET)
    if form.is_valid():
        page = audit_query.page(
            form.filters(), before=_cursor(request.GET.get("before")), after=_cursor(request.GET.get("after"))
        )
    else:
        page = audit_query.AuditPage(events=[], older=None, newer=None)
    context = {
        "form": form,
        "page": page,
        "filter_query": _filter_query(request.GET),
        "can_export": request.user.has_perm("encryption.export_audit"),
        **_filter_choices(),
    }
    template = "encryption/audit_list.html"
    if request.htmx:
        template += "#audit-table"
    return render(request, template, context)


def _neighbours(event: AuditEvent) -> tuple[AuditEvent | None, AuditEvent | None]:
    events = AuditEvent.objects.only("seq", "hash", "prev_hash", "action", "created_at")
    previous = events.filter(seq__lt=event.seq).order_by("-seq").first()
    following = events.filter(seq__gt=event.seq).order_by("seq").first()
    return previous, following


@require_GET
@require_perm("encryption.view_audit")
def audit_detail(request: PortalRequest, seq: int) -> HttpResponse:
    event = get_object_or_404(AuditEvent.objects.select_related("operation", "operation__account"), seq=seq)
    previous, following = _neighbours(event)
    row = AuditEvent.objects.filter(pk=event.pk).values_list(*audit.HASHED_FIELDS).get()
    context = {
        "event": event,
        "before_json": _pretty(event.before),
        "after_json": _pretty(event.after),
        "content_matches": audit.event_hash(row) == event.hash,
        "previous": previous,
        "following": following,
        "chains_to_previous": event.prev_hash == (previous.hash if previous else audit.GENESIS_HASH),
        "operation": event.operation,
        "steps": list(event.operation.steps.all()) if event.operation else [],
        "operation_params_json": _pretty(event.operation.params) if event.operation else "",
    }
    return render(request, "encryption/audit_detail.html", context)


# Verification


@require_http_methods(["GET", "POST"])
@require_perm("encryption.view_audit")
def audit_verify(request: PortalRequest) -> HttpResponse:
    result = None
    if request.method == "POST":
        result = audit_verification.run(actor=Actor.from_request(request))
    context = {"result": result, "last": result or audit_verification.last()}
    template = "encryption/audit_verify.html"
    if request.htmx:
        template += "#verify-result"
    return render(request, template, context)


@require_GET
@require_perm("encryption.view_audit")
def audit_public_key(request: PortalRequest) -> HttpResponse:
    response = HttpResponse(audit.public_key_pem(), content_type="application/x-pem-file")
    response["Content-Disposition"] = 'attachment; filename="keyward-audit-public-key.pem"'
    return response


# Export


@require_http_methods(["GET", "POST"])
@require_perm("encryption.export_audit")
def audit_export(request: PortalRequest) -> HttpResponse:
    params = request.POST if request.method == "POST" else request.GET
    form = audit_query.AuditFilterForm(params)
    fmt = params.get("format", "")
    if request.method == "POST" and form.is_valid() and fmt in AuditExport.Format.values:
        export = exports.start_export(actor=Actor.from_request(request), fmt=fmt, filters=form.filters())
        return HttpResponseRedirect(reverse("encryption:audit-export-detail", args=[export.export_id]))
    context = {
        "form": form,
        "filters": form.filters().as_dict() if form.is_valid() else {},
        "format_error": request.method == "POST" and fmt not in AuditExport.Format.values,
        "formats": AuditExport.Format.choices,
        "recent": AuditExport.objects.filter(actor=request.user.get_username())[:10],
    }
    return render(request, "encryption/audit_export.html", context, status=400 if request.method == "POST" else 200)


def _own_export(request: PortalRequest, export_id: uuid.UUID) -> AuditExport:
    # An export belongs to whoever asked for it: the manifest names them as the exporter.
    return get_object_or_404(AuditExport, export_id=export_id, actor=request.user.get_username())


@require_GET
@require_perm("encryption.export_audit")
def audit_export_detail(request: PortalRequest, export_id: uuid.UUID) -> HttpResponse:
    export = _own_export(request, export_id)
    context = {
        "export": export,
        "file_name": exports.file_name(export),
        "manifest_name": exports.manifest_name(export),
        "interrupted": exports.is_interrupted(export),
    }
    template = "encryption/audit_export_detail.html"
    if request.htmx:
        template += "#export-status"
    return render(request, template, context)


@require_GET
@require_perm("encryption.export_audit")
def audit_export_data(request: PortalRequest, export_id: uuid.UUID) -> HttpResponse:
    export = _own_export(request, export_id)
    if not exports.claim_stream(export):
        return render(request, "encryption/audit_export_gone.html", {"export": export}, status=410)
    response = StreamingHttpResponse(
        exports.stream(export, actor=Actor.from_request(request)),
        content_type=exports.CONTENT_TYPES[AuditExport.Format(export.format)],
    )
    response["Content-Disposition"] = f'attachment; filename="{exports.file_name(export)}"'
    response["Cache-Control"] = "no-store"
    # require_perm is typed for HttpResponse views; a streamed body is the one exception, and Django
    # handles both through HttpResponseBase.
    return cast(HttpResponse, response)


@require_GET
@require_perm("encryption.export_audit")
def audit_export_manifest(request: PortalRequest, export_id: uuid.UUID) -> HttpResponse:
    export = _own_export(request, export_id)
    if not export.is_finished:
        raise Http404("The manifest is ready once the file has been downloaded in full.")
    body = json.dumps(exports.signed_manifest(export), indent=2, sort_keys=True)
    response = HttpResponse(body + "\n", content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{exports.manifest_name(export)}"'
    return response


# Key-usage inventory


@require_GET
@require_perm("encryption.view_key_inventory")
def key_list(request: PortalRequest) -> HttpResponse:
    context = {
        "vaults": key_inventory.inventory(),
        "orphans": key_inventory.orphan_accounts(),
        "near_expiry_days": key_inventory.NEAR_EXPIRY.days,
    }
    return render(request, "encryption/key_list.html", context)


@require_GET
@require_perm("encryption.view_key_inventory")
def key_detail(request: PortalRequest, pk: int) -> HttpResponse:
    key = get_object_or_404(Key.objects.select_related("vault", "vault__subscription"), pk=pk, deleted=False)
    usage = key_inventory.key_usage(key)
    context = {
        "key": key,
        "vault": key.vault,
        "usage": usage,
        "blast": key_inventory.blast_radius(usage),
        "near_expiry_days": key_inventory.NEAR_EXPIRY.days,
    }
    return render(request, "encryption/key_detail.html", context)
