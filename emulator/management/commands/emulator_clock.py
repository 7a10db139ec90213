"""Show, shift or reset the emulator's clock (shared by every process), to make keys expire and rotation
policies fire."""

from __future__ import annotations

import re
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from emulator import clock

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_span(text: str) -> float:
    """`90`, `90s`, `15m`, `6h`, `30d`, `-1d` -> seconds."""
    match = re.fullmatch(r"(-?\d+(?:\.\d+)?)([smhd]?)", text.strip().lower())
    if not match:
        raise CommandError(f"'{text}' is not a time span such as 3600, 15m, 6h or 30d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


class Command(BaseCommand):
    help = "Show the emulator's clock, shift it (emulator_clock shift 30d) or reset it to wall time."

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action")
        sub.add_parser("show")
        shift = sub.add_parser("shift")
        shift.add_argument("span", help="seconds, or with a unit: 15m, 6h, 30d (negative goes back)")
        sub.add_parser("reset")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options.get("action") or "show"
        if action == "shift":
            clock.shift(parse_span(options["span"]))
        elif action == "reset":
            clock.reset()
        self.stdout.write(f"Emulator time: {clock.now():%Y-%m-%dT%H:%M:%SZ} (offset {clock.offset():+.0f}s)")
