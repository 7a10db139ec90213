"""`python manage.py verify_export FILE MANIFEST --public-key KEY`: prove offline that an export is intact.

Exit status 0 when the manifest's signature, the file's SHA-256, the event count and the first/last event
hashes all match; non-zero with the reason otherwise.
"""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from encryption.export_verify import ExportInvalid, verify_export


class Command(BaseCommand):
    help = "Check an audit export file against its signed manifest and the audit public key."
    requires_system_checks: list[str] = []  # offline: needs neither the database nor a configured server

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("file", type=Path, help="the exported CSV or JSON-lines file")
        parser.add_argument("manifest", type=Path, help="its .manifest.json")
        parser.add_argument("--public-key", required=True, type=Path, help="the audit public key (PEM)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            public_pem = options["public_key"].read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read the public key: {exc}") from None
        try:
            check = verify_export(options["file"], options["manifest"], public_pem)
        except ExportInvalid as exc:
            raise CommandError(f"export NOT verified: {exc}") from None
        manifest = check.manifest
        self.stdout.write(
            f"export verified: {check.count} events (#{manifest.get('first_seq')}..#{manifest.get('last_seq')}), "
            f"sha256 {check.sha256}, exported by {manifest.get('exported_by')} at {manifest.get('exported_at')}"
        )
