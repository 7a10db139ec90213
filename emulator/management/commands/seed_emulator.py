"""`python manage.py seed_emulator [--reset]`: migrate the emulator's database, then create the demo estate."""

from __future__ import annotations

import time
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from emulator.router import EMULATOR_ALIAS
from emulator.seed import SeedSummary, seed


class Command(BaseCommand):
    help = "Create the emulator's demo estate (idempotent); --reset starts over with the same ids."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reset", action="store_true", help="empty every emulator table first")

    def handle(self, *args: Any, **options: Any) -> None:
        started = time.monotonic()
        call_command("migrate", database=EMULATOR_ALIAS, verbosity=0, interactive=False)
        summary = seed(reset=options["reset"])
        self._print(summary, time.monotonic() - started)

    def _print(self, summary: SeedSummary, seconds: float) -> None:
        out = self.stdout
        action = f"created {len(summary.created)} resources" if summary.created else "nothing new to create"
        out.write(self.style.SUCCESS(f"Emulator seeded in {seconds:.1f} s ({action})."))
        out.write("\nTenants:")
        for name, tenant_id in summary.tenants:
            out.write(f"  {name:<12} {tenant_id}")
        out.write("\nSubscriptions:")
        for display, sub_id, tenant in summary.subscriptions:
            out.write(f"  {display:<14} {sub_id}  tenant {tenant}")
        out.write("\nKey vaults:")
        for name, location, flags in summary.vaults:
            out.write(f"  {name:<20} {location:<11} {flags}")
        out.write("\nFace accounts:")
        for name, sku, source, state, note in summary.accounts:
            out.write(f"  {name:<22} {sku:<3} {source:<18} {state:<32} {note}")
