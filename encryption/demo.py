"""The three demo users that command one creates, one per role, with generated passwords."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.contrib.auth.models import Group, User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction

from encryption.roles import ADMINS, HELP_DESK, REVIEWERS, ROLE_LABELS

DEMO_USERS: tuple[tuple[str, str], ...] = (
    ("admin", ADMINS),
    ("reviewer", REVIEWERS),
    ("helpdesk", HELP_DESK),
)

# No look-alike characters (0/o, 1/l/i): people copy these passwords from a terminal by eye.
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


@dataclass(frozen=True)
class DemoUser:
    username: str
    role: str
    password: str  # "" when the existing password was kept: it cannot be shown again
    created: bool

    @property
    def role_label(self) -> str:
        return ROLE_LABELS[self.role]


def generate_password(user: User) -> str:
    """Four groups of four random characters (about 79 bits) that pass the configured validators."""
    while True:
        password = "-".join("".join(secrets.choice(_ALPHABET) for _ in range(4)) for _ in range(4))
        try:
            validate_password(password, user)
        except ValidationError:
            continue  # practically never: only if a group happened to spell something too common
        return password


def ensure_demo_users(*, reset_passwords: bool = False) -> list[DemoUser]:
    """Create the demo users if missing and put each in its role's group; keep passwords unless asked."""
    result = []
    with transaction.atomic():
        for username, role in DEMO_USERS:
            user, created = User.objects.get_or_create(username=username)
            password = ""
            if created or reset_passwords or not user.has_usable_password():
                password = generate_password(user)
                user.set_password(password)
                user.save()
            # Exactly one role each, so a second run also repairs a membership changed by hand.
            user.groups.set([Group.objects.get(name=role)])
            result.append(DemoUser(username=username, role=role, password=password, created=created))
    return result
