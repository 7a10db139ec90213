from __future__ import annotations

from django.urls import path

from encryption import views

app_name = "encryption"

urlpatterns = [
    path("", views.account_list, name="account-list"),
]
