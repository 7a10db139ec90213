"""Who is calling: the emulated Entra ID's tokens and directory.

Tokens look like `emu.<base64url JSON>.<base64url HMAC>`; the HMAC key is derived from SECRET_KEY, so a
caller cannot mint a token for another principal. The JSON carries the object id (`oid`), tenant (`tid`),
audience (`aud`) and expiry (`exp`, wall-clock seconds: shifting the emulator's clock must not expire the
tokens SDK clients have cached).

Stable ids: `derived_id(kind, name)` gives the GUID the emulator uses for a named tenant, subscription or
principal (uuid5), so ids survive a reseed. The portal's own principal is `PORTAL_PRINCIPAL_ID`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from emulator.models import DirectoryPrincipal
from emulator.router import EMULATOR_ALIAS

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://keyward.local/emulator")
VAULT_AUDIENCE = "https://vault.azure.net"
ARM_AUDIENCE = "https://management.azure.com"
TOKEN_LIFETIME_SECONDS = 3600


def derived_id(kind: str, name: str) -> str:
    """A stable GUID for a named thing, e.g. derived_id("tenant", "contoso")."""
    return str(uuid.uuid5(NAMESPACE, f"{kind}/{name}"))


PORTAL_PRINCIPAL_ID = derived_id("principal", "keyward-portal")
# The tenant the portal's app registration lives in; it is multi-tenant, so Key Vault challenges from
# another tenant's vault still get a token for that tenant.
PORTAL_HOME_TENANT_ID = derived_id("tenant", "contoso")


@dataclass(frozen=True)
class Caller:
    object_id: str
    tenant_id: str
    audience: str

    @property
    def issuer(self) -> str:
        return f"https://sts.windows.net/{self.tenant_id}/"

    def describe(self) -> str:
        # Key Vault's way of naming a caller in 403 messages.
        return f"appid=;oid={self.object_id};iss={self.issuer}"


# The directory


def register_principal(object_id: str, tenant_id: str, *, display_name: str = "", multi_tenant: bool = False) -> None:
    """Record (or update) a principal's home tenant: single-tenant principals such as managed identities only
    ever get tokens for it, and Key Vault refuses them on another tenant's vault."""
    with transaction.atomic(using=EMULATOR_ALIAS):
        DirectoryPrincipal.objects.update_or_create(
            object_id=object_id.lower(),
            defaults={"tenant_id": tenant_id.lower(), "display_name": display_name, "multi_tenant": multi_tenant},
        )


def forget_principal(object_id: str) -> None:
    with transaction.atomic(using=EMULATOR_ALIAS):
        DirectoryPrincipal.objects.filter(object_id=object_id.lower()).delete()


def home_tenant(object_id: str) -> tuple[str, bool] | None:
    """(tenant id, multi-tenant?) for a registered principal, else None (treated as multi-tenant)."""
    row = DirectoryPrincipal.objects.filter(object_id=object_id.lower()).values_list("tenant_id", "multi_tenant")
    found = row.first()
    return (found[0], found[1]) if found else None


def token_tenant(object_id: str, requested: str | None) -> str:
    """The tenant a token for `object_id` is issued for when `requested` is asked (None: no preference)."""
    entry = home_tenant(object_id)
    if entry is not None and not entry[1]:
        return entry[0]
    if requested:
        return requested.lower()
    return entry[0] if entry else PORTAL_HOME_TENANT_ID


# Tokens


def _signing_key() -> bytes:
    return hashlib.sha256(b"keyward-emulator-token\x00" + settings.SECRET_KEY.encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def audience_of_scope(scope: str) -> str:
    """`https://vault.azure.net/.default` -> `https://vault.azure.net`."""
    base = scope[: -len(".default")] if scope.endswith(".default") else scope
    return base.rstrip("/")


def issue_token(
    object_id: str, tenant_id: str, audience: str, *, lifetime: int = TOKEN_LIFETIME_SECONDS
) -> tuple[str, int]:
    expires_on = int(time.time()) + lifetime
    claims = {"oid": object_id.lower(), "tid": tenant_id.lower(), "aud": audience, "exp": expires_on, "ver": 1}
    payload = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    signature = _b64(hmac.new(_signing_key(), payload.encode(), hashlib.sha256).digest())
    return f"emu.{payload}.{signature}", expires_on


def principal_from_token(token: str) -> Caller | None:
    """The caller a bearer token stands for, or None when it is malformed, forged or expired."""
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != "emu":
        return None
    expected = _b64(hmac.new(_signing_key(), parts[1].encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, parts[2]):
        return None
    try:
        claims = json.loads(_unb64(parts[1]))
        if int(claims["exp"]) <= time.time():
            return None
        return Caller(object_id=str(claims["oid"]), tenant_id=str(claims["tid"]), audience=str(claims["aud"]))
    except (ValueError, KeyError, TypeError):
        return None
