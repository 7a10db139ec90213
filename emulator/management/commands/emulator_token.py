"""Print a bearer token the emulator accepts, for curl against `serve_emulator`."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from emulator.credential import EmulatorCredential
from emulator.identities import ARM_AUDIENCE, VAULT_AUDIENCE

RESOURCES = {"arm": ARM_AUDIENCE, "vault": VAULT_AUDIENCE}


class Command(BaseCommand):
    help = (
        "Print an emulator bearer token (valid one hour). ARM by default; --resource vault for Key Vault, with "
        "--tenant naming the vault's tenant. Acts as the portal's identity unless --identity is given."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--resource", choices=sorted(RESOURCES), default="arm")
        parser.add_argument("--identity", default=None, help="principal object id (default: the portal's)")
        parser.add_argument("--tenant", default=None, help="tenant id the token is for (Key Vault checks it)")

    def handle(self, *args: Any, **options: Any) -> None:
        credential = EmulatorCredential(options["identity"])
        scope = f"{RESOURCES[options['resource']]}/.default"
        self.stdout.write(credential.get_token(scope, tenant_id=options["tenant"]).token)
