from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from encryption.input_guard import AdminSignInForm, SignInForm

# Sign-in, sign-out and password change only: no self-service password reset, which would put an
# anonymous form that sends mail on an admin portal (accounts are managed by administrators).
auth_urlpatterns = [
    path("login/", auth_views.LoginView.as_view(authentication_form=SignInForm), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password_change/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("password_change/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
]

# The admin's sign-in refuses overlong usernames too (encryption/input_guard.py says why).
admin.site.login_form = AdminSignInForm

urlpatterns = [
    path("accounts/", include(auth_urlpatterns)),
    path("admin/", admin.site.urls),
    path("", include("encryption.urls")),
]
if settings.EMULATOR_ENABLED:
    # The emulator's HTTP face (curl-able ARM and Key Vault endpoints) is served by its own command,
    # `serve_emulator`, not by the portal; nothing to mount here.
    pass
