"""The three roles, as Django groups, and the permissions behind them."""

from __future__ import annotations

from typing import Any

ADMINS = "encryption-admins"
REVIEWERS = "security-reviewers"
HELP_DESK = "help-desk"

ROLE_LABELS = {
    ADMINS: "Encryption admin",
    REVIEWERS: "Security reviewer",
    HELP_DESK: "Help-desk",
}

# app_label.codename granted to each group by the data migration.
ROLE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    ADMINS: (
        "encryption.view_account",
        "encryption.change_encryption",
        "encryption.view_diagnosis",
        "encryption.view_key_inventory",
        "encryption.view_operation",
        "encryption.view_auditevent",
        "encryption.view_audit",
        "encryption.export_audit",
    ),
    REVIEWERS: (
        "encryption.view_account",
        "encryption.view_diagnosis",
        "encryption.view_key_inventory",
        "encryption.view_operation",
        "encryption.view_auditevent",
        "encryption.view_audit",
        "encryption.export_audit",
    ),
    HELP_DESK: (
        "encryption.view_account",
        "encryption.view_diagnosis",
    ),
}


def role_of(user: Any) -> str:
    """The user's role group name, or '' when they have none (superusers count as admins)."""
    if not getattr(user, "is_authenticated", False):
        return ""
    names = {g.name for g in user.groups.all()}
    for role in (ADMINS, REVIEWERS, HELP_DESK):
        if role in names:
            return role
    return ADMINS if user.is_superuser else ""


def role_label(user: Any) -> str:
    return ROLE_LABELS.get(role_of(user), "No role")
