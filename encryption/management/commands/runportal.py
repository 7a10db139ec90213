"""Run the web server and a Celery worker (with embedded beat) side by side, and stop both together.

Each child runs in a process group of its own, so a Ctrl-C at the terminal reaches this supervisor only,
and the supervisor decides the order: a warm shutdown for the worker (it finishes or re-queues its
task), then, after a grace period, SIGKILL to whatever is left in each child's group (pool processes,
beat). SIGTERM is handled the same way, so `kill` and service managers stop it cleanly too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from argparse import ArgumentParser
from types import FrameType
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from encryption.demo import DEMO_USERS
from encryption.roles import ROLE_LABELS
from portal.celery import ensure_broker_folders
from portal.processes import web_argv, worker_argv


def _default_port() -> int:
    raw = os.environ.get("PORT", "8000")
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise CommandError(f"PORT must be a TCP port number, not {raw!r}")
    return int(raw)


def _accepts_connections(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Command(BaseCommand):
    help = "Serve Keyward on 127.0.0.1 with a Celery worker and beat; Ctrl-C or SIGTERM stops them all."
    requires_system_checks: list[str] = []  # the web server runs them; checking twice only slows start-up

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--port", type=int, default=None, help="Web port (default: $PORT or 8000).")
        parser.add_argument("--concurrency", type=int, default=2, help="Worker processes (default 2).")
        parser.add_argument("--grace", type=float, default=10.0, help="Seconds children get to stop cleanly.")

    def handle(self, *args: Any, port: int | None, concurrency: int, grace: float, **options: Any) -> None:
        port = port or _default_port()
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)

        ensure_broker_folders()
        if not settings.DEBUG:
            # WhiteNoise serves from STATIC_ROOT when DEBUG is off.
            call_command("collectstatic", interactive=False, verbosity=0)

        children: dict[str, subprocess.Popen[bytes]] = {}
        try:
            children["worker"] = self._spawn(worker_argv(concurrency=concurrency, beat=True))
            children["web"] = self._spawn(web_argv(port))
            if self._wait_until_serving(port, children, stop):
                self._print_banner(port)
            elif not stop.is_set():
                self.stderr.write(f"The web server did not answer on port {port}; see its output above.")
            failed = self._supervise(children, stop)
        finally:
            self._stop_all(children, grace)
        if failed:
            raise CommandError(f"the {failed} process stopped unexpectedly; everything else was stopped too")

    # Children

    def _spawn(self, argv: list[str]) -> subprocess.Popen[bytes]:
        # process_group=0: the child leads a group of its own, which the supervisor can signal as a whole.
        return subprocess.Popen(argv, cwd=settings.BASE_DIR, stdin=subprocess.DEVNULL, process_group=0)

    def _wait_until_serving(
        self, port: int, children: dict[str, subprocess.Popen[bytes]], stop: threading.Event
    ) -> bool:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not stop.is_set():
            if any(child.poll() is not None for child in children.values()):
                return False
            if _accepts_connections(port):
                return True
            stop.wait(0.2)
        return False

    def _supervise(self, children: dict[str, subprocess.Popen[bytes]], stop: threading.Event) -> str:
        """Wait for a stop signal; return the name of a child that died on its own, or ''."""
        while not stop.is_set():
            for name, child in children.items():
                if child.poll() is not None:
                    return name
            stop.wait(0.5)
        return ""

    def _stop_all(self, children: dict[str, subprocess.Popen[bytes]], grace: float) -> None:
        # SIGTERM is Celery's warm shutdown and runserver's plain exit.
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in children.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
        # Whatever is left in a child's group (a stuck task, beat, pool processes) goes now.
        for child in children.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        self.stdout.write("Keyward stopped.")

    # Output

    def _print_banner(self, port: int) -> None:
        try:
            existing = set(
                User.objects.filter(username__in=[name for name, _ in DEMO_USERS]).values_list("username", flat=True)
            )
        except DatabaseError:
            existing = set()  # not migrated yet (runportal without bootstrap): the pages will say so
        users = ", ".join(f"{name} ({ROLE_LABELS[role]})" for name, role in DEMO_USERS if name in existing)
        lines = [
            "",
            f"Keyward is running at http://127.0.0.1:{port}/",
        ]
        if users:
            lines.append(f"  Sign in as {users}.")
            lines.append("  Passwords are printed when created; `bin/run --reset-passwords` prints new ones.")
        lines += ["  Press Ctrl-C to stop the web server and the worker.", ""]
        self.stdout.write("\n".join(lines))
