"""Display filters for the reviewers' and help-desk pages."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def arm_name(arm_id: str) -> str:
    """The resource name at the end of an ARM id (`/subscriptions/.../accounts/face-x` -> `face-x`)."""
    return (arm_id or "").rstrip("/").rsplit("/", 1)[-1]


@register.filter
def short_hash(value: str) -> str:
    """The first 12 hex characters of a SHA-256: enough to compare neighbours by eye."""
    return (value or "")[:12]


@register.filter
def key_label(key_id: str) -> str:
    """`https://v.vault.azure.net/keys/k/0123...` -> `v/k/01234567`, short enough for a table cell."""
    text = (key_id or "").removeprefix("https://")
    host, _, rest = text.partition("/")
    parts = rest.split("/")
    if len(parts) >= 2 and parts[0] == "keys":
        label = f"{host.split('.', 1)[0]}/{parts[1]}"
        return f"{label}/{parts[2][:8]}" if len(parts) > 2 and parts[2] else label
    return key_id
