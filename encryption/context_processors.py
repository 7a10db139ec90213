from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from encryption.roles import role_label


def portal(request: HttpRequest) -> dict[str, Any]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {
        "user_role": role_label(user),
        "can_change_encryption": user.has_perm("encryption.change_encryption"),
        "can_view_audit": user.has_perm("encryption.view_audit"),
        "can_view_keys": user.has_perm("encryption.view_key_inventory"),
    }
