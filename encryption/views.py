from __future__ import annotations

from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from encryption.http import PortalRequest, require_perm
from encryption.models import Account


@require_GET
@require_perm("encryption.view_account")
def account_list(request: PortalRequest) -> HttpResponse:
    accounts = Account.objects.select_related("subscription").order_by("name")
    return render(request, "encryption/account_list.html", {"accounts": accounts})
