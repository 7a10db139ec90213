"""Everything `bin/run` does before serving, in one process (each Django start-up costs seconds).

Steps written by other parts of Keyward (seeding the emulator, the first sync) run only once their
command exists, so this works at every stage of the project and picks them up when they land.
"""

from __future__ import annotations

import argparse
from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management import call_command, get_commands, load_command_class
from django.core.management.base import BaseCommand, CommandError


def _subcommand_options(command: str, subcommand: str) -> set[str] | None:
    """The option strings of `manage.py COMMAND SUBCOMMAND`, or None if either does not exist."""
    app = get_commands().get(command)
    if app is None:
        return None
    parser = load_command_class(app, command).create_parser("manage.py", command)
    # argparse has no public way to list subcommands; _SubParsersAction has been stable since 2.7.
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and subcommand in action.choices:
            return {option for sub in action.choices[subcommand]._actions for option in sub.option_strings}
    return None


class Command(BaseCommand):
    help = "Migrate, seed the emulator, create the demo users and queue a first sync (bin/run's set-up)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--reset-passwords", action="store_true", help="New passwords for the demo users.")

    def handle(self, *args: Any, reset_passwords: bool = False, **options: Any) -> None:
        self._step("Migrating the database")
        call_command("migrate", interactive=False, verbosity=1)
        if settings.EMULATOR_ENABLED and "seed_emulator" in get_commands():
            self._step("Seeding the local Azure emulator")
            call_command("seed_emulator")
        call_command("demo_users", reset_passwords=reset_passwords)
        self._first_sync()

    def _first_sync(self) -> None:
        sync_options = _subcommand_options("encryption", "sync")
        if sync_options is None:
            return
        self._step("First sync from Azure (queued for the worker)")
        argv = ["sync"]
        # The worker is not running yet: queue the sync rather than wait for it; the worker takes it first.
        if "--no-wait" in sync_options:
            argv.append("--no-wait")
        if "--as" in sync_options:
            argv += ["--as", "admin"]
        try:
            call_command("encryption", *argv)
        except (CommandError, SystemExit) as exc:
            if isinstance(exc, SystemExit) and not exc.code:
                return
            # A failed first sync must not keep the portal down: the worker's beat syncs again on its own.
            self.stderr.write(f"The first sync failed ({exc}); the worker will sync periodically.")

    def _step(self, title: str) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(f"==> {title}"))
