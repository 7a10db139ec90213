"""An azure-core token credential for the emulator: acts as one principal and signs emulator tokens.

It accepts every keyword the SDKs pass (tenant_id from a Key Vault challenge, claims, enable_cae) as a
real credential does; which tenant the token is for follows the emulated directory (`token_tenant`).
"""

from __future__ import annotations

from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo, TokenRequestOptions

from emulator.identities import PORTAL_PRINCIPAL_ID, audience_of_scope, issue_token, token_tenant


class EmulatorCredential:
    def __init__(self, principal: str | None = None) -> None:
        self.principal = (principal or PORTAL_PRINCIPAL_ID).lower()

    def _issue(self, scopes: tuple[str, ...], tenant_id: str | None) -> tuple[str, int]:
        audience = audience_of_scope(scopes[0]) if scopes else ""
        return issue_token(self.principal, token_tenant(self.principal, tenant_id), audience)

    def get_token(
        self,
        *scopes: str,
        claims: str | None = None,
        tenant_id: str | None = None,
        enable_cae: bool = False,
        **kwargs: Any,
    ) -> AccessToken:
        token, expires_on = self._issue(scopes, tenant_id)
        return AccessToken(token, expires_on)

    def get_token_info(self, *scopes: str, options: TokenRequestOptions | None = None) -> AccessTokenInfo:
        tenant_id = (options or {}).get("tenant_id")
        token, expires_on = self._issue(scopes, tenant_id)
        return AccessTokenInfo(token, expires_on)

    def close(self) -> None:
        """Nothing to release; present because SDK clients close their credential."""

    def __enter__(self) -> EmulatorCredential:
        return self

    def __exit__(self, *args: object) -> None:
        self.close()

    def __repr__(self) -> str:
        # Never print a token; the principal id is not a secret.
        return f"EmulatorCredential(principal={self.principal!r})"
