"""Serve the emulated Azure over plain HTTP on loopback, for inspection with curl.

The same `emulator.app.handle` answers as in-process. Say which Azure host a request is for with the Host
header or a path prefix:

  TOKEN=$(python manage.py emulator_token)
  curl -H 'Host: management.azure.com' -H "Authorization: Bearer $TOKEN" \\
       'http://127.0.0.1:8765/subscriptions?api-version=2022-12-01'
  curl -H "Authorization: Bearer $TOKEN" \\
       'http://127.0.0.1:8765/management.azure.com/subscriptions?api-version=2022-12-01'

Key Vault wants a token for the vault's tenant (a request without one gets the 401 challenge naming it):

  curl -i -H 'Host: kv-prod-eastus.vault.azure.net' 'http://127.0.0.1:8765/keys?api-version=7.5'
  VT=$(python manage.py emulator_token --resource vault --tenant <tenant id from the challenge>)
  curl -H 'Host: kv-prod-eastus.vault.azure.net' -H "Authorization: Bearer $VT" \\
       'http://127.0.0.1:8765/keys?api-version=7.5'
"""

from __future__ import annotations

import json
from argparse import ArgumentParser, RawDescriptionHelpFormatter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from emulator import app
from emulator.http import EmuRequest
from emulator.models.keyvault import VAULT_HOST_SUFFIX


def emulated_host(path: str, host_header: str) -> tuple[str, str]:
    """(Azure host, path) from a path prefix (`/management.azure.com/...`) or the Host header."""
    first, _, rest = path.lstrip("/").partition("/")
    if _is_azure_host(first.lower()):
        return first.lower(), "/" + rest
    host = host_header.rsplit(":", 1)[0].lower() if host_header else ""
    return (host, path) if _is_azure_host(host) else ("", path)


def _is_azure_host(host: str) -> bool:
    return host == app.ARM_HOST or host.endswith(VAULT_HOST_SUFFIX)


class EmulatorHTTPHandler(BaseHTTPRequestHandler):
    server_version = "KeywardEmulator/1"

    def _answer(self) -> None:
        try:
            host, path = emulated_host(self.path, self.headers.get("Host", ""))
            if not host:
                self._send_json(
                    400,
                    "NoAzureHost",
                    "Name the Azure host: -H 'Host: management.azure.com' or a path prefix such as /kv-prod-eastus.vault.azure.net/keys.",
                )
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            request = EmuRequest.build(self.command, f"https://{host}{path}", headers, body)
            try:
                response = app.handle(request)
            except app.UnknownHost as exc:
                self._send_json(502, "HostNotFound", str(exc))
                return
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)
        finally:
            # Each request runs in its own thread: give its database connections back.
            connections.close_all()

    def _send_json(self, status: int, code: str, message: str) -> None:
        payload = json.dumps({"error": {"code": code, "message": message}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_PUT = do_PATCH = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        # One line per request on stderr; headers (and so tokens) are never printed.
        self.server_log(format % args)

    def server_log(self, line: str) -> None:
        import sys

        sys.stderr.write(f"serve_emulator: {line}\n")


class Command(BaseCommand):
    help = __doc__ or ""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.formatter_class = RawDescriptionHelpFormatter
        return parser

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument("--bind", default="127.0.0.1", help="loopback only: 127.0.0.1 or ::1")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["bind"] not in {"127.0.0.1", "::1", "localhost"}:
            raise CommandError("serve_emulator listens on loopback only (127.0.0.1 or ::1)")
        server = ThreadingHTTPServer((options["bind"], options["port"]), EmulatorHTTPHandler)
        server.daemon_threads = True
        self.stdout.write(f"Emulated Azure on http://{options['bind']}:{server.server_address[1]}/ (Ctrl-C stops)")
        self.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
