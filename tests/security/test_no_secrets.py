"""No token, secret or key material anywhere Keyward writes or shows.

A full flow runs against the seeded emulator through the real SDK clients (enable CMK, rotate and move the
account, revoke, restore, a change that fails and one that meets transient Azure errors, exports in both
formats) with every logger at DEBUG, the Azure SDK's included. Then every log record, every field of every
audit row, operation and step, every page and error page, both exports and their manifests, and the
command line's JSON are searched for bearer tokens (the emulator's `emu.` tokens, `Bearer `, JWTs), PEM
private keys, and the emulator's own private key material (each RSA key's private numbers and PEM body,
the platform keys, the wrapped data keys), Keyward's SECRET_KEY and its audit signing key.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from emulator.models import AccountData, PlatformKey
from emulator.models import KeyVersion as EmulatorKeyVersion
from emulator.testing import inject_faults
from encryption import signing
from encryption.models import AuditEvent, AuditExport, Operation, OperationStep
from tests.encryption.engine_helpers import PROD, EngineTestCase

TOKEN_PATTERNS = {
    "emulator token": re.compile(r"emu\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
    "bearer token": re.compile(r"Bearer\s+(?!\[redacted)[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE),
    "JWT": re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"),
    "PEM private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|PRIVATE KEY-----"),
}
LOGGERS = ("", "azure", "django", "encryption", "emulator", "celery", "urllib3", "axes")


def _b64(data: bytes) -> list[str]:
    return [base64.b64encode(data).decode(), base64.urlsafe_b64encode(data).decode().rstrip("=")]


def _int_forms(n: int) -> list[str]:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return [format(n, "x"), str(n), raw.hex(), *_b64(raw)]


def secret_material() -> dict[str, list[str]]:
    """Pieces (32 characters, enough to be unique) of every secret the emulator and Keyward hold."""
    found: dict[str, list[str]] = {}
    for pem in EmulatorKeyVersion.objects.values_list("private_pem", flat=True):
        pem = bytes(pem)
        numbers = serialization.load_pem_private_key(pem, password=None).private_numbers()  # type: ignore[union-attr]
        body = "".join(pem.decode().splitlines()[1:-1])
        private = (numbers.d, numbers.p, numbers.q) if hasattr(numbers, "d") else (numbers.private_value,)
        forms = [f for n in private for f in _int_forms(n)]
        found.setdefault("private key", []).extend([*forms, body[64:128]])
    for secret in PlatformKey.objects.values_list("secret", flat=True):
        found.setdefault("platform key", []).extend([bytes(secret).hex(), *_b64(bytes(secret))])
    for dek in AccountData.objects.values_list("wrapped_dek", flat=True):
        found.setdefault("wrapped data key", []).extend([bytes(dek).hex(), *_b64(bytes(dek))])
    private = signing._private_key(signing._key_path()).private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    found["audit signing key"] = [private.hex(), *_b64(private)]
    found["SECRET_KEY"] = [settings.SECRET_KEY]
    return {what: [piece[:32] for piece in pieces if len(piece) >= 16] for what, pieces in found.items()}


def leaks(texts: dict[str, str], material: dict[str, list[str]]) -> list[str]:
    found = []
    for where, text in texts.items():
        for what, pattern in TOKEN_PATTERNS.items():
            if match := pattern.search(text):
                found.append(f"{what} in {where}: ...{text[max(0, match.start() - 40) : match.end() + 10]}...")
        for what, pieces in material.items():
            if any(piece in text for piece in pieces):
                found.append(f"{what} in {where}")
    return found


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # message, arguments and any traceback, as a handler writes them


@contextmanager
def every_logger_at_debug() -> Iterator[Capture]:
    capture = Capture()
    saved = {name: logging.getLogger(name).level for name in LOGGERS}
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    logging.getLogger().addHandler(capture)
    try:
        yield capture
    finally:
        logging.getLogger().removeHandler(capture)
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


class NoSecretsTests(EngineTestCase):
    def test_the_detector_finds_what_it_looks_for(self):
        # The search below must be able to fail: plant each kind of secret and see it found.
        material = secret_material()
        assert material["private key"] and material["platform key"]
        planted = {
            "token": "Authorization: Bearer emu.eyJvaWQiOiJ4In0.c2lnbmF0dXJlLXBhcnQ",
            "pem": "-----BEGIN RSA PRIVATE KEY-----\nMIIE...",
            "rsa": f"d={material['private key'][0]}",
            "signing": material["audit signing key"][0],
        }
        assert len(leaks(planted, material)) >= 5

    def test_a_full_flow_leaves_no_secret_in_logs_rows_pages_or_exports(self):
        web = Client()
        web.force_login(self.admin)
        pages: dict[str, str] = {}
        with every_logger_at_debug() as capture:
            enabled = self.change("enable_cmk", "face-prod-eastus", key_uri=f"{PROD}/face-cmk")
            inject_faults(503, count=2, method="GET", path_contains="/keys/face-cmk")  # retried, logged
            rotated = self.change(
                "rotate_key",
                None,
                vault_uri="https://kv-prod-eastus.vault.azure.net/",
                key_name="face-cmk",
                update_accounts=True,
            )
            revoked = self.change("revoke_access", "face-prod-eastus", method="access_policy")
            restored = self.change("restore_access", "face-prod-eastus")
            blocked = self.change(
                "enable_cmk",
                "face-noid-eastus",
                key_uri="https://kv-nopurge-eastus.vault.azure.net/keys/face-cmk-nopurge",
            )
            for op in (enabled, rotated, revoked, restored):
                self.assert_succeeded(op)
            assert blocked.status == "failed" and blocked.reason
            for op in Operation.objects.all():
                pages[f"operation page #{op.pk}"] = web.get(f"/operations/{op.pk}/").content.decode()
            for event in AuditEvent.objects.order_by("-seq")[:30]:
                pages[f"audit event #{event.seq}"] = web.get(f"/audit/{event.seq}/").content.decode()
            account = self.account("face-prod-eastus")
            for path in (
                "/",
                "/audit/",
                "/keys/",
                f"/accounts/{account.pk}/encryption/",
                f"/helpdesk/?account={account.pk}",
            ):
                pages[path] = web.get(path).content.decode()
            helpdesk = Client()
            helpdesk.force_login(self.make_helpdesk())
            pages["403 page"] = helpdesk.get("/audit/").content.decode()
            pages["404 page"] = web.get("/operations/999999/").content.decode()
            for fmt in ("csv", "jsonl"):
                started = web.post(reverse("encryption:audit-export"), {"format": fmt})
                export = AuditExport.objects.latest("created_at")
                assert started.status_code == 302
                data = web.get(reverse("encryption:audit-export-data", args=[export.export_id]))
                pages[f"{fmt} export"] = b"".join(data.streaming_content).decode()
                pages[f"{fmt} manifest"] = web.get(
                    reverse("encryption:audit-export-manifest", args=[export.export_id])
                ).content.decode()
            out = io.StringIO()
            call_command("encryption", "show", "face-prod-eastus", "--json", stdout=out)
            pages["encryption show --json"] = out.getvalue()
        # The capture really saw the SDK at work, at DEBUG: the search below covers its output too.
        assert any(line.startswith("DEBUG azure") or " azure." in line for line in capture.lines), capture.lines[:5]
        assert len(pages["csv export"].splitlines()) > 20
        texts = {f"log line {i}": line for i, line in enumerate(capture.lines)}
        texts.update(pages)
        for event in AuditEvent.objects.values():
            texts[f"audit row #{event['seq']}"] = json.dumps(event, default=str)
        for op in Operation.objects.values():
            texts[f"operation row #{op['id']}"] = json.dumps(op, default=str)
        for step in OperationStep.objects.values():
            texts[f"step row #{step['id']}"] = json.dumps(step, default=str)
        for export in AuditExport.objects.values():
            texts[f"export row {export['export_id']}"] = json.dumps(export, default=str)
        problems = leaks(texts, secret_material())
        assert not problems, "\n".join(problems[:20])

    def make_helpdesk(self):
        from tests.encryption.engine_helpers import make_user

        return make_user("hank-secrets", "help-desk")
