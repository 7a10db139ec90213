"""The one door to Azure: what the rest of Keyward calls, as functions named after what the product does.

The work is done in `encryption/azure/` (one module per Azure service, plus the client factory, the
results and the errors); this module is its public face, so callers write `azure_gateway.get_account(...)`
and never import an Azure SDK or exception type. Results are frozen dataclasses; failures are
`TransientAzureError` (worth retrying; `retry_after`) or `PermanentAzureError` (an Azure error code and a
message a person can act on). `with collect_request_ids() as ids:` gathers the `x-ms-request-id` of every
response inside. Long-running PATCHes are polled in the calling thread, so request ids, database
connections (the emulator's) and errors stay with the caller.
"""

from __future__ import annotations

from encryption.azure.accounts import (
    enable_system_identity,
    get_account,
    list_accounts,
    list_subscriptions,
    probe_data_access,
    set_customer_managed_key,
    set_microsoft_managed_key,
)
from encryption.azure.clients import (
    CLOUDS,
    Cloud,
    azure_now,
    checked_vault_uri,
    collect_request_ids,
    current_cloud,
    pipeline_override,
    reset_clients,
)
from encryption.azure.errors import AzureError, PermanentAzureError, TransientAzureError
from encryption.azure.keys import (
    get_deleted_key,
    get_key,
    get_rotation_policy,
    list_key_versions,
    list_keys,
    recover_deleted_key,
    rotate_key,
    set_key_enabled,
)
from encryption.azure.results import (
    CMK_KEY_PERMISSIONS,
    CRYPTO_SERVICE_ENCRYPTION_USER,
    CRYPTO_SERVICE_ENCRYPTION_USER_NAME,
    KEY_SOURCE_KEY_VAULT,
    KEY_SOURCE_MICROSOFT,
    AccessPolicy,
    AccountInfo,
    ArmId,
    KeyInfo,
    KeyVersionInfo,
    ProbeResult,
    SubscriptionInfo,
    VaultInfo,
    parse_arm_id,
)
from encryption.azure.vaults import (
    find_vault,
    get_vault,
    grant_key_access,
    key_access_of,
    list_vaults,
    revoke_key_access,
)

__all__ = [
    "CLOUDS",
    "CMK_KEY_PERMISSIONS",
    "CRYPTO_SERVICE_ENCRYPTION_USER",
    "CRYPTO_SERVICE_ENCRYPTION_USER_NAME",
    "KEY_SOURCE_KEY_VAULT",
    "KEY_SOURCE_MICROSOFT",
    "AccessPolicy",
    "AccountInfo",
    "ArmId",
    "AzureError",
    "Cloud",
    "KeyInfo",
    "KeyVersionInfo",
    "PermanentAzureError",
    "ProbeResult",
    "SubscriptionInfo",
    "TransientAzureError",
    "VaultInfo",
    "azure_now",
    "checked_vault_uri",
    "collect_request_ids",
    "current_cloud",
    "enable_system_identity",
    "find_vault",
    "get_account",
    "get_deleted_key",
    "get_key",
    "get_rotation_policy",
    "get_vault",
    "grant_key_access",
    "key_access_of",
    "list_accounts",
    "list_key_versions",
    "list_keys",
    "list_subscriptions",
    "list_vaults",
    "parse_arm_id",
    "pipeline_override",
    "probe_data_access",
    "recover_deleted_key",
    "reset_clients",
    "revoke_key_access",
    "rotate_key",
    "set_customer_managed_key",
    "set_key_enabled",
    "set_microsoft_managed_key",
]
