"""A local Azure: ARM for Cognitive Services accounts, Key Vault vaults and subscriptions, and the Key
Vault keys data plane, reached by the real SDK clients through an in-process azure-core transport."""

from __future__ import annotations

from typing import Any


def sdk_options(identity: str | None = None) -> dict[str, Any]:
    """Keyword arguments (credential, transport) that point any Azure SDK client at the emulator.

    Without `identity` the caller acts as the portal's own identity; with it, as that principal.
    """
    from emulator.sdk import build_sdk_options

    return build_sdk_options(identity=identity)
