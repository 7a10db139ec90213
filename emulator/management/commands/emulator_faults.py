"""Inject faults into the emulated Azure and tune ARM throttling, for drills and demos."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from emulator import faults
from emulator.models import FaultRule, ThrottleLimit


class Command(BaseCommand):
    help = (
        "Faults on demand. Examples:\n"
        "  emulator_faults set --status 429 --count 3 --host management.azure.com --retry-after 2\n"
        "  emulator_faults set --status 503 --probability 0.2 --path /keys\n"
        "  emulator_faults set --latency-ms 800 --method PATCH\n"
        "  emulator_faults throttle --kind writes --capacity 5 --refill 1\n"
        "  emulator_faults list | clear | throttle --reset"
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        set_parser = sub.add_parser("set", help="add a fault rule")
        set_parser.add_argument("--status", type=int, default=0, choices=[0, *faults.FAULT_STATUSES])
        set_parser.add_argument("--latency-ms", type=int, default=0)
        scope = set_parser.add_mutually_exclusive_group()
        scope.add_argument("--count", type=int, help="only the next N matching requests")
        scope.add_argument("--probability", type=float, help="this share of matching requests (0-1]")
        set_parser.add_argument("--host", default="", help="host name contains")
        set_parser.add_argument("--method", default="", help="HTTP method")
        set_parser.add_argument("--path", default="", help="path contains")
        set_parser.add_argument("--retry-after", type=int, default=1, help="Retry-After seconds for 429/503")
        sub.add_parser("list", help="show fault rules and throttling limits")
        sub.add_parser("clear", help="remove every fault rule")
        throttle = sub.add_parser("throttle", help="set ARM token-bucket limits")
        throttle.add_argument("--kind", choices=sorted(faults.DEFAULT_LIMITS), default="writes")
        throttle.add_argument("--capacity", type=float)
        throttle.add_argument("--refill", type=float, help="tokens per second")
        throttle.add_argument("--reset", action="store_true", help="back to Azure's defaults")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        try:
            if action == "set":
                self._set(options)
            elif action == "clear":
                self.stdout.write(f"Removed {faults.clear_faults()} fault rule(s).")
            elif action == "throttle":
                self._throttle(options)
            else:
                self._list()
        except ValueError as exc:
            raise CommandError(str(exc)) from None

    def _set(self, options: dict[str, Any]) -> None:
        rule = faults.add_fault(
            status=options["status"],
            latency_ms=options["latency_ms"],
            probability=options["probability"],
            count=options["count"],
            host_contains=options["host"],
            method=options["method"],
            path_contains=options["path"],
            retry_after=options["retry_after"],
        )
        self.stdout.write(f"Added fault #{rule.pk}: {rule}")

    def _throttle(self, options: dict[str, Any]) -> None:
        if options["reset"]:
            faults.reset_limits()
            self.stdout.write("Throttling back to Azure's defaults.")
            return
        if options["capacity"] is None or options["refill"] is None:
            raise CommandError("throttle needs --capacity and --refill (or --reset)")
        faults.set_limit(options["kind"], capacity=options["capacity"], refill_per_second=options["refill"])
        self.stdout.write(f"{options['kind']}: {options['capacity']:g} tokens, refilled {options['refill']:g}/s")

    def _list(self) -> None:
        rules = list(FaultRule.objects.all())
        self.stdout.write("Fault rules:" if rules else "No fault rules.")
        for rule in rules:
            self.stdout.write(f"  #{rule.pk} {rule} latency={rule.latency_ms}ms retry-after={rule.retry_after}s")
        custom = {row.kind: row for row in ThrottleLimit.objects.all()}
        for kind in sorted(faults.DEFAULT_LIMITS):
            capacity, refill = faults.limits(kind)
            origin = "custom" if kind in custom else "default"
            self.stdout.write(f"Throttling {kind}: {capacity:g} tokens, {refill:g}/s ({origin})")
