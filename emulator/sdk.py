"""The keyword arguments that point an Azure SDK client at the emulator: `credential` and `transport`."""

from __future__ import annotations

from typing import Any

from emulator.credential import EmulatorCredential
from emulator.transport import EmulatorTransport


def build_sdk_options(identity: str | None = None) -> dict[str, Any]:
    """Options for KeyClient, CryptographyClient, CognitiveServicesManagementClient, KeyVaultManagementClient,
    AuthorizationManagementClient and SubscriptionClient; as the portal's principal unless `identity` is given.

    Long-running operations need no `polling_interval`: the emulator answers `Retry-After: 1` and the
    transport caps every sleep at `EMULATOR_SLEEP_CAP_SECONDS`.
    """
    return {"credential": EmulatorCredential(identity), "transport": EmulatorTransport()}
