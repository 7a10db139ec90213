"""The blade's actions beside Save: refresh, update key version, rotate, revoke and restore access.

Every change is a plain form post that redirects to the operation's page, so each works without
JavaScript; rotate and revoke ask first, on a page that htmx can also show as a modal.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db.models import Q
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from encryption import services
from encryption.forms import EncryptionForm, RevokeForm, RotateForm, current_key, initial_for
from encryption.http import PortalRequest, require_perm
from encryption.models import KEY_SOURCE_KEY_VAULT, Account, Operation
from encryption.views.blade import encryption_url, get_account, render_page

# Helpers


def _request_change(request: PortalRequest, account: Account, kind: str, params: dict[str, Any]) -> HttpResponse:
    try:
        operation = services.request_change(
            actor=services.Actor.from_request(request), account=account, kind=kind, params=params
        )
    except services.RequestRefused as exc:
        messages.error(request, str(exc))
        return redirect(encryption_url(account))
    return redirect("encryption:operation-detail", operation.pk)


def accounts_on_key(account: Account, *, same_version: bool) -> list[Account]:
    """Accounts in the mirror using the account's key (and version): what disabling it makes unreadable."""
    base = account.key_vault_uri.rstrip("/")
    same = Q(key_vault_uri__iexact=base) | Q(key_vault_uri__iexact=f"{base}/")
    accounts = Account.objects.filter(same, key_source=KEY_SOURCE_KEY_VAULT, key_name__iexact=account.key_name)
    if same_version:
        accounts = accounts.filter(key_version=account.key_version)
    return list(accounts.select_related("subscription").order_by("name"))


def _confirm_page(
    request: PortalRequest, page: str, modal: str, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    # One view, two renderings: the confirmation as a page of its own, or as a modal over the blade.
    template = modal if request.htmx else page
    return render(request, template, context, status=status)


def _no_key(request: PortalRequest, account: Account) -> HttpResponse:
    messages.info(request, f"{account.name} uses Microsoft-managed keys: there is no key of yours to act on.")
    return redirect(encryption_url(account))


# Refresh from Azure (read-only jobs: every role may ask, as services.request_job allows)


@require_POST
@require_perm("encryption.view_account")
def account_refresh(request: PortalRequest, pk: int) -> HttpResponse:
    account = get_account(pk)
    try:
        job = services.request_job(
            actor=services.Actor.from_request(request), account=account, kind=Operation.Kind.REFRESH, params={}
        )
    except services.RequestRefused as exc:
        messages.error(request, str(exc))
        return redirect(encryption_url(account))
    if request.htmx:
        return render_page(
            request, account, EncryptionForm(initial=initial_for(account), account=account), refresh_job=job
        )
    return redirect(encryption_url(account, {"refresh": job.pk}))


@require_POST
@require_perm("encryption.view_account")
def account_sync_vaults(request: PortalRequest, pk: int) -> HttpResponse:
    """The picker's "Refresh from Azure": re-read subscriptions, vaults and keys into the mirror."""
    account = get_account(pk)
    form = EncryptionForm(request.POST, account=account)
    try:
        job = services.request_job(
            actor=services.Actor.from_request(request), account=None, kind=Operation.Kind.SYNC, params={}
        )
    except services.RequestRefused as exc:
        messages.error(request, str(exc))
        return redirect(encryption_url(account, form.query()))
    if request.htmx:
        return render_page(request, account, form, sync_job=job)
    return redirect(encryption_url(account, {**form.query(), "sync": job.pk}))


# Changes


@require_POST
@require_perm("encryption.change_encryption")
def account_update_version(request: PortalRequest, pk: int) -> HttpResponse:
    account = get_account(pk)
    key = current_key(account)
    if key is None or not key.current_version or key.current_version == account.key_version:
        messages.info(
            request, "The account already uses the latest version Keyward knows of. Refresh from Azure to check."
        )
        return redirect(encryption_url(account))
    return _request_change(request, account, Operation.Kind.UPDATE_VERSION, {"version": key.current_version})


@require_http_methods(["GET", "HEAD", "POST"])
@require_perm("encryption.change_encryption")
def account_rotate(request: PortalRequest, pk: int) -> HttpResponse:
    account = get_account(pk)
    if not account.uses_cmk:
        return _no_key(request, account)
    form = RotateForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        params = {
            "vault_uri": account.key_vault_uri,
            "key_name": account.key_name,
            "update_accounts": form.cleaned_data["update_accounts"],
        }
        return _request_change(request, account, Operation.Kind.ROTATE_KEY, params)
    context = {
        "account": account,
        "form": form,
        "key": current_key(account),
        "others": accounts_on_key(account, same_version=False),
    }
    return _confirm_page(
        request, "encryption/account_rotate.html", "encryption/partials/key_rotate_modal.html", context
    )


@require_http_methods(["GET", "HEAD", "POST"])
@require_perm("encryption.change_encryption")
def account_revoke(request: PortalRequest, pk: int) -> HttpResponse:
    account = get_account(pk)
    if not account.uses_cmk:
        return _no_key(request, account)
    form = RevokeForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        return _request_change(request, account, Operation.Kind.REVOKE_ACCESS, {"method": form.cleaned_data["method"]})
    context = {
        "account": account,
        "form": form,
        "same_version": accounts_on_key(account, same_version=True),
    }
    status = 400 if request.method == "POST" else 200
    return _confirm_page(
        request, "encryption/account_revoke.html", "encryption/partials/account_revoke_modal.html", context, status
    )


@require_POST
@require_perm("encryption.change_encryption")
def account_restore(request: PortalRequest, pk: int) -> HttpResponse:
    return _request_change(request, get_account(pk), Operation.Kind.RESTORE_ACCESS, {})
