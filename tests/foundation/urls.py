"""The portal's URLs plus one admin-only view, to test `require_perm` apart from any real page."""

from __future__ import annotations

from django.http import HttpResponse
from django.urls import path
from django.views.decorators.http import require_GET

from encryption.http import PortalRequest, require_perm
from portal.urls import urlpatterns as portal_urlpatterns


@require_GET
@require_perm("encryption.change_encryption")
def admin_only(request: PortalRequest) -> HttpResponse:
    return HttpResponse("only encryption admins get here")


urlpatterns = [path("test-admin-only/", admin_only, name="test-admin-only"), *portal_urlpatterns]
