"""`python manage.py encryption VERB`: the portal's operations for scripts and terminals.

It goes through the same services, operations and audit trail as the pages: a change is recorded as an
operation of the user named by `--as` (whose role is enforced) and carried out by a worker. Exit codes:
0 done, 1 refused or failed (or a preflight with a blocking check), 2 bad usage, 3 still queued or
running when --wait gave up.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from encryption import services
from encryption.cli_output import account_dict, account_lines, operation_dict, operation_lines, step_line
from encryption.models import Account, KeyVault, Operation, Subscription
from encryption.services import Actor, RequestRefused

EXIT_FAILED = 1
EXIT_PENDING = 3
POLL_SECONDS = 0.25

Kind = Operation.Kind
# verb -> (operation kind, is a change)
OPERATION_VERBS: dict[str, tuple[str, bool]] = {
    "preflight": (Kind.PREFLIGHT, False),
    "enable-cmk": (Kind.ENABLE_CMK, True),
    "update-version": (Kind.UPDATE_VERSION, True),
    "change-key": (Kind.CHANGE_KEY, True),
    "rotate": (Kind.ROTATE_KEY, True),
    "revoke": (Kind.REVOKE_ACCESS, True),
    "restore-access": (Kind.RESTORE_ACCESS, True),
    "disable-cmk": (Kind.DISABLE_CMK, True),
    "sync": (Kind.SYNC, False),
    "diagnose": (Kind.DIAGNOSE, False),
}


class Command(BaseCommand):
    help = "Read and change the encryption of Azure AI services accounts (see `encryption VERB --help`)."

    def add_arguments(self, parser: CommandParser) -> None:
        common = CommandParser(add_help=False)
        common.add_argument(
            "--as", dest="as_user", metavar="USERNAME", help="the portal user acting (required for changes)"
        )
        common.add_argument("--json", action="store_true", help="print machine-readable JSON")
        common.add_argument("--wait", action="store_true", default=None, help="wait for the operation to end")
        common.add_argument("--no-wait", dest="wait", action="store_false", help="return once the operation is queued")
        common.add_argument("--timeout", type=float, default=120.0, help="seconds --wait waits (default 120)")
        verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

        def verb(name: str, text: str, account: bool = True) -> argparse.ArgumentParser:
            sub: argparse.ArgumentParser = verbs.add_parser(name, parents=[common], help=text, description=text)
            if account:
                sub.add_argument("account", metavar="ACCOUNT", help="the account's ARM id or its (unique) name")
            return sub

        verb("list", "list accounts as Keyward last read them", account=False).add_argument(
            "--subscription", help="only this subscription (id or name)"
        )
        verb("show", "show one account's encryption and recent operations")
        for name, text in (
            ("preflight", "check every prerequisite for a key, changing nothing"),
            ("enable-cmk", "switch the account to a customer-managed key"),
            ("change-key", "move the account to another key (same or another vault)"),
        ):
            sub = verb(name, text)
            sub.add_argument("--key-uri", required=True, help="https://{vault}.vault.azure.net/keys/{name}[/{version}]")
            sub.add_argument("--subscription", help="the key vault's subscription (id or name; default: the account's)")
        verb("update-version", "move the account to another version of its key").add_argument(
            "--version", required=True, help="32 hexadecimal characters"
        )
        rotate = verb("rotate", "create a new version of a key in Key Vault", account=False)
        rotate.add_argument("vault", metavar="VAULT", help="the vault's name or URI")
        rotate.add_argument("key", metavar="KEY", help="the key's name")
        rotate.add_argument("--update-accounts", action="store_true", help="move the accounts on the key to it")
        verb("revoke", "remove the account's access to its key").add_argument(
            "--disable-key", action="store_true", help="disable the key version instead of removing access"
        )
        verb("restore-access", "give the account back access to its key (re-grant, re-enable, recover)")
        verb("disable-cmk", "switch the account back to Microsoft-managed keys")
        verb("sync", "read the whole estate from Azure into Keyward", account=False)
        verb("diagnose", "explain why the account can or cannot read its data")

    def handle(self, *args: Any, **options: Any) -> None:
        self.json = bool(options["json"])
        self.reported = False  # with --json, stdout carries exactly one JSON document
        try:
            if options["verb"] == "list":
                self._list(options)
            elif options["verb"] == "show":
                self._show(options)
            else:
                self._operation(options)
        except CommandError as exc:
            if self.json and not self.reported:
                self.stdout.write(json.dumps({"error": str(exc)}))
            raise

    # Reading the mirror

    def _list(self, options: dict[str, Any]) -> None:
        self._reader(options)
        accounts = Account.objects.select_related("subscription").order_by("name", "arm_id")
        if options.get("subscription"):
            accounts = accounts.filter(subscription=self._subscription(options["subscription"]))
        if self.json:
            self.stdout.write(json.dumps([account_dict(a) for a in accounts], indent=2))
            return
        for account in accounts:
            key = f"{account.key_name}/{account.key_version[:8]}" if account.uses_cmk else "-"
            readable = {True: "readable", False: "UNREADABLE", None: "not probed"}[account.data_readable]
            self.stdout.write(
                f"{account.name:32} {account.subscription.display_name:20} {account.sku:3} "
                f"{'CMK' if account.uses_cmk else 'MMK'} {key:42} {readable}"
            )

    def _show(self, options: dict[str, Any]) -> None:
        self._reader(options)
        account = self._account(options["account"])
        recent = list(account.operations.order_by("-created_at")[:5])
        if self.json:
            self.stdout.write(
                json.dumps({**account_dict(account), "operations": [operation_dict(o) for o in recent]}, indent=2)
            )
            return
        for line in account_lines(account):
            self.stdout.write(line)
        if recent:
            self.stdout.write("Recent operations:")
        for operation in recent:
            self.stdout.write(
                f"  #{operation.pk} {operation.get_kind_display()}: {operation.status} ({operation.actor})"
            )

    def _reader(self, options: dict[str, Any]) -> None:
        if options.get("as_user"):
            actor = Actor.from_cli(self._user(options["as_user"]))
            if not services.may(actor, "encryption.view_account"):
                raise CommandError(f"{actor.username} may not read accounts.")

    # Operations

    def _operation(self, options: dict[str, Any]) -> None:
        kind, is_change = OPERATION_VERBS[options["verb"]]
        if is_change and not options.get("as_user"):
            raise CommandError("Changes need --as USERNAME: the portal user on whose behalf this runs.")
        user = self._user(options["as_user"]) if options.get("as_user") else None
        actor = Actor.from_cli(user)
        account, params = self._params(options)
        try:
            if is_change:
                operation = services.request_change(actor=actor, account=account, kind=kind, params=params)
            else:
                operation = services.request_job(actor=actor, account=account, kind=kind, params=params)
        except RequestRefused as exc:
            raise CommandError(f"Refused: {exc}", returncode=EXIT_FAILED) from None
        wait = options["wait"] if options["wait"] is not None else not is_change
        queued = (
            ""
            if services.is_published(operation)
            else " The task queue did not answer; it will be sent when it is back."
        )
        if not wait:
            self._report(operation, f"Operation #{operation.pk} ({operation.get_kind_display()}) is queued.{queued}")
            return
        if not self.json:
            self.stdout.write(f"Operation #{operation.pk} ({operation.get_kind_display()}) queued.{queued} Waiting...")
        self._wait(operation, options["timeout"])

    def _params(self, options: dict[str, Any]) -> tuple[Account | None, dict[str, Any]]:
        verb = options["verb"]
        if verb == "rotate":
            return None, {"vault_uri": self._vault_uri(options["vault"]), "key_name": options["key"],
                          "update_accounts": bool(options["update_accounts"])}  # fmt: skip
        if verb == "sync":
            return None, {}
        account = self._account(options["account"])
        if verb in ("preflight", "enable-cmk", "change-key"):
            params = {"key_uri": options["key_uri"]}
            if options.get("subscription"):
                params["vault_subscription_id"] = self._subscription(options["subscription"]).subscription_id
            return account, params
        if verb == "update-version":
            return account, {"version": options["version"]}
        if verb == "revoke":
            return account, {"method": "disable_key" if options["disable_key"] else "access_policy"}
        return account, {}

    def _wait(self, operation: Operation, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        shown: set[int] = set()
        while True:
            operation.refresh_from_db()
            if not self.json:
                for step in operation.steps.exclude(status="running").exclude(pk__in=shown):
                    shown.add(step.pk)
                    self.stdout.write(step_line(step))
            if operation.is_finished or time.monotonic() >= deadline:
                break
            time.sleep(POLL_SECONDS)
        if not operation.is_finished:
            state = (
                "still queued: no worker has picked it up. It runs as soon as a worker is started (bin/run)"
                if operation.status == Operation.Status.QUEUED
                else "still running"
            )
            message = f"Timed out after {timeout:g}s: operation #{operation.pk} is {state}."
            if self.json:
                self._report(operation, message)
            raise CommandError(message, returncode=EXIT_PENDING)
        self._report(operation, "")
        if operation.status == Operation.Status.FAILED:
            raise CommandError(f"Operation #{operation.pk} failed (reason above).", returncode=EXIT_FAILED)
        blocking = [c for c in (operation.result or {}).get("checks", []) if c.get("state") == "blocks"]
        if operation.kind == Kind.PREFLIGHT and blocking:
            raise CommandError(f"{len(blocking)} check(s) block this key.", returncode=EXIT_FAILED)

    def _report(self, operation: Operation, message: str) -> None:
        if self.json:
            self.stdout.write(json.dumps({"operation": operation_dict(operation), "message": message}, indent=2))
            self.reported = True
            return
        if operation.is_finished:
            for line in operation_lines(operation):
                self.stdout.write(line)
        elif message:
            self.stdout.write(message)

    # Lookups

    def _user(self, username: str) -> Any:
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise CommandError(f"No active portal user named {username!r}.")
        return user

    def _account(self, ref: str) -> Account:
        ref = ref.strip()
        if ref.lower().startswith("/subscriptions/"):
            matches = list(Account.objects.filter(arm_id__iexact=ref.rstrip("/")))
        else:
            matches = list(Account.objects.filter(name__iexact=ref).order_by("arm_id"))
        if not matches:
            raise CommandError(f"No account {ref!r} in Keyward (run `encryption sync` if it is new).")
        if len(matches) > 1:
            listed = "\n  ".join(a.arm_id for a in matches)
            raise CommandError(f"{len(matches)} accounts are named {ref!r}; give the ARM id of one:\n  {listed}")
        return matches[0]

    def _subscription(self, ref: str) -> Subscription:
        found = list(Subscription.objects.filter(subscription_id__iexact=ref)) or list(
            Subscription.objects.filter(display_name__iexact=ref)
        )
        if len(found) != 1:
            raise CommandError(f"No single subscription {ref!r} in Keyward (give its id, or sync first).")
        return found[0]

    def _vault_uri(self, ref: str) -> str:
        if "://" in ref:
            return ref
        vault = KeyVault.objects.filter(name__iexact=ref).first()
        if vault is None:
            raise CommandError(f"No key vault named {ref!r} in Keyward (give its URI, or sync first).")
        return vault.vault_uri
