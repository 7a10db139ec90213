from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
    path("", include("encryption.urls")),
]
if settings.EMULATOR_ENABLED:
    # The emulator's HTTP face (curl-able ARM and Key Vault endpoints) is served by its own command,
    # `serve_emulator`, not by the portal; nothing to mount here.
    pass
