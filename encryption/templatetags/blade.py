"""Small display filters for the Encryption blade's pages."""

from __future__ import annotations

from urllib.parse import urlsplit

from django import template

register = template.Library()


@register.filter
def vault_name(vault_uri: str) -> str:
    """`https://kv-prod-eastus.vault.azure.net/` -> `kv-prod-eastus` (the vault name is the first label)."""
    host = urlsplit(vault_uri or "").hostname or ""
    return host.split(".", 1)[0]


@register.filter
def short_version(version: str) -> str:
    """The first 8 characters of a 32-character key version, enough to tell versions apart on screen."""
    return (version or "")[:8]


@register.filter
def kind_label(kind: str) -> str:
    """An operation kind's label ("Rotate key") from its stored value ("rotate_key")."""
    from encryption.models import Operation

    return str(dict(Operation.Kind.choices).get(kind, kind))


@register.simple_tag
def emulator_enabled() -> bool:
    """Whether Azure is the local emulator, whose error codes are its own and are marked so on screen."""
    from django.conf import settings

    return bool(settings.EMULATOR_ENABLED)


@register.filter
def role_label(role: str) -> str:
    """A role's name for people ("Encryption admin") from its group name ("encryption-admins")."""
    from encryption.roles import ROLE_LABELS

    return ROLE_LABELS.get(role, role)
