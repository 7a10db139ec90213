"""The emulator's tables, one module per part: the platform (clock, faults, request log, principals),
Key Vault (vaults, role assignments, keys) and ARM resources (subscriptions, accounts, data at rest)."""

from __future__ import annotations

from emulator.models.arm import *  # noqa: F403
from emulator.models.keyvault import *  # noqa: F403
from emulator.models.platform import *  # noqa: F403
