"""Turn Azure's error codes into sentences an admin can act on, for an operation's failure reason.

The codes marked "emulator" are the local emulator's own (Azure documents none for Cognitive Services CMK
validation); real Azure answers with generic codes, whose message is then shown as Azure wrote it.
"""

from __future__ import annotations

from encryption.azure_gateway import AzureError

# code -> what to do. The Azure message follows in the reason, so these say the fix, not the symptom.
_SENTENCES: dict[str, str] = {
    # The emulator's CMK rules (stable codes, see docs/architecture.md)
    "IdentityNotEnabled": "The account has no system-assigned managed identity; turn it on, then try again.",
    "KeyVaultNotFound": "The key vault was not found; check the key URI and the vault's subscription.",
    "KeyVaultPurgeProtectionRequired": "The key vault must have purge protection on; turn it on in the vault "
    "(it cannot be turned off again), then try again.",
    "KeyVaultSoftDeleteRequired": "The key vault must have soft delete on; turn it on in the vault, then try again.",
    "KeyNotFound": "The key (or that version of it) does not exist in the vault; check the key URI.",
    "KeyDisabled": "The key is disabled; enable it in the vault (or pick an enabled version), then try again.",
    "KeyExpired": "The key version has expired; pick or create a version that is valid now.",
    "KeyNotYetValid": "The key version is not valid yet (its activation date is in the future); pick another.",
    "KeyVersionRequired": "Azure needs a pinned key version; give the full key URI with its version.",
    "KeyVersionNotFound": "That version of the key does not exist; check the version in the key URI.",
    "UnsupportedKeySize": "The key must be 2048, 3072 or 4096 bits; pick or create such a key.",
    "KeyOperationsMissing": "The key must permit wrapKey and unwrapKey; add them to its permitted operations.",
    "KeyVaultRequestFailed": "Key Vault could not wrap and unwrap with the key; check the key and try again.",
    "UnsupportedKeyType": "The key must be RSA or RSA-HSM of 2048, 3072 or 4096 bits; pick or create such a key.",
    "KeyVaultAccessDenied": "The account's identity may not use the key (it needs get, wrapKey and unwrapKey); "
    "grant access in the vault, then try again.",
    "KeyVaultRegionMismatch": "The key vault is in another region than the account; use a vault in the "
    "account's region.",
    "TenantMismatch": "The key vault belongs to another Microsoft Entra tenant than the account; use a vault "
    "in the account's tenant.",
    "SkuNotSupported": "The account's pricing tier does not support customer-managed keys; change the tier first.",
    "CurrentKeyUnreachable": "The account's current key cannot be reached, so its data cannot be re-wrapped; "
    "restore access to the current key first, then change keys.",
    # Azure's own
    "Forbidden": "Keyward's identity is not allowed to do this in Azure; ask for the missing role or access policy.",
    "AuthorizationFailed": "Keyward's identity is not allowed to do this in Azure; ask for the missing role "
    "assignment.",
    "ForbiddenByRbac": "The vault uses Azure RBAC and the caller lacks the role for this; ask for it.",
    "ResourceNotFound": "The Azure resource no longer exists; run a sync to refresh Keyward's view.",
    "ResourceGroupNotFound": "The resource group no longer exists; run a sync to refresh Keyward's view.",
    "SubscriptionNotFound": "The subscription is not visible to Keyward's identity; check its access.",
    "ObjectIsDeletedButRecoverable": "The key is soft-deleted; restore access (which recovers it) first.",
    "Conflict": "Azure reports a conflicting change in progress; wait a minute and try again.",
    "PreconditionFailed": "The account was changed elsewhere while Keyward worked on it; try again.",
}


def explain(error: AzureError) -> str:
    """One or two sentences: what to do, then what Azure said (code in brackets)."""
    sentence = _SENTENCES.get(error.code, "")
    said = error.message.strip()
    if error.code:
        said = f"{said} [{error.code}]" if said else f"Azure answered {error.code}."
    return f"{sentence} {said}".strip() if sentence else said or "Azure refused the request."


def transient_gave_up(error: AzureError, attempts: int) -> str:
    return (
        f"Azure kept answering with temporary errors ({error.code or 'unavailable'}) after {attempts} "
        "attempts; nothing more was sent. Try again in a few minutes."
    )
