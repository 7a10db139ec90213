from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from encryption.demo import DemoUser, ensure_demo_users


class Command(BaseCommand):
    help = "Create the three demo users (one per role) and print their passwords once."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--reset-passwords", action="store_true", help="Give every demo user a new password and print it."
        )

    def handle(self, *args: Any, reset_passwords: bool = False, **options: Any) -> None:
        users = ensure_demo_users(reset_passwords=reset_passwords)
        self.stdout.write(self._table(users))
        if all(u.password for u in users):
            self.stdout.write("These passwords are shown once. `bin/run --reset-passwords` prints new ones.")
        else:
            self.stdout.write(
                "Existing demo users and passwords were kept. For new passwords: bin/run --reset-passwords"
            )

    def _table(self, users: list[DemoUser]) -> str:
        rows = [("user", "role", "password")]
        rows += [(u.username, u.role_label, u.password or "(unchanged)") for u in users]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * width for width in widths))
        return "\n".join(["Demo users:", *("  " + line for line in lines)])
