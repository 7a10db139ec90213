from __future__ import annotations

import csv
import hashlib
import io
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import TestCase
from django.urls import reverse
from django.utils import timezone

from encryption import audit, audit_export
from encryption.models import AuditEvent, AuditExport
from tests.builders import actor_for, make_account, make_cast, make_event


class ExportTestCase(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.cast = make_cast()
        cls.east = make_account("face-east")
        cls.west = make_account("face-west")
        admin = actor_for(cls.cast["admin"])
        for i in range(30):
            make_event(
                actor=admin,
                target=(cls.east if i % 3 else cls.west).arm_id,
                before={"i": i},
                after={"note": f'naïve, "quoted"\nline {i}'},
                request_ids=[f"req-{i}"],
                message=f"Event {i}, with a comma",
            )

    def setUp(self):
        self.client.force_login(self.cast["reviewer"])
        self.tmp = Path(tempfile.mkdtemp())

    def export(self, fmt="csv", **filters):
        response = self.client.post(reverse("encryption:audit-export"), {"format": fmt, **filters})
        assert response.status_code == 302, response.content
        export = AuditExport.objects.order_by("-created_at").first()
        assert response["Location"] == reverse("encryption:audit-export-detail", args=[export.export_id])
        return export

    def download(self, export):
        response = self.client.get(reverse("encryption:audit-export-data", args=[export.export_id]))
        assert response.status_code == 200
        assert response.streaming
        data = b"".join(response.streaming_content)
        manifest = self.client.get(reverse("encryption:audit-export-manifest", args=[export.export_id]))
        assert manifest.status_code == 200
        data_path = self.tmp / f"export.{export.format}"
        manifest_path = self.tmp / "export.manifest.json"
        data_path.write_bytes(data)
        manifest_path.write_bytes(manifest.content)
        key_path = self.tmp / "audit.pem"
        key_path.write_bytes(self.client.get(reverse("encryption:audit-public-key")).content)
        return data_path, manifest_path, key_path

    def verify(self, data_path, manifest_path, key_path):
        out = io.StringIO()
        call_command("verify_export", str(data_path), str(manifest_path), "--public-key", str(key_path), stdout=out)
        return out.getvalue()


class ExportTests(ExportTestCase):
    def test_it_exports_the_filter_as_csv_and_verify_export_accepts_it(self):
        export = self.export("csv", account=self.east.arm_id)
        data_path, manifest_path, key_path = self.download(export)
        rows = list(csv.DictReader(io.StringIO(data_path.read_text(encoding="utf-8"))))
        expected = AuditEvent.objects.filter(target=self.east.arm_id, seq__lte=export.upto_seq).order_by("seq")
        assert [int(r["seq"]) for r in rows] == list(expected.values_list("seq", flat=True))
        assert len(rows) == 20
        # Values survive commas, quotes, newlines and non-ASCII text.
        assert json.loads(rows[0]["after"])["note"].startswith('naïve, "quoted"\nline')
        assert "verified: 20 events" in self.verify(data_path, manifest_path, key_path)

    def test_the_manifest_says_what_the_file_is(self):
        export = self.export("jsonl", outcome="info")
        data_path, manifest_path, _ = self.download(export)
        document = json.loads(manifest_path.read_text())
        manifest = document["manifest"]
        lines = data_path.read_bytes().splitlines()
        assert manifest["count"] == len(lines)
        assert manifest["sha256"] == hashlib.sha256(data_path.read_bytes()).hexdigest()
        assert manifest["first_hash"] == json.loads(lines[0])["hash"]
        assert manifest["last_hash"] == json.loads(lines[-1])["hash"]
        assert manifest["filter"] == {"outcome": "info"}
        assert manifest["exported_by"] == self.cast["reviewer"].username
        assert manifest["format"] == "jsonl"
        assert manifest["exported_at"] and manifest["requested_at"]
        assert audit.verify_signature(
            audit.public_key_pem(),
            json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode(),
            document["signature"],
        )

    def test_jsonl_exports_verify_too(self):
        data_path, manifest_path, key_path = self.download(self.export("jsonl"))
        assert "export verified" in self.verify(data_path, manifest_path, key_path)

    def test_the_export_is_an_audit_event_and_stops_at_the_head_it_was_asked_at(self):
        export = self.export("csv")
        requested = AuditEvent.objects.get(action="audit.exported", outcome="requested")
        assert requested.actor == self.cast["reviewer"].username
        assert requested.after["export_id"] == str(export.export_id)
        # Its own "requested" event came after the head the export covers.
        assert requested.seq == export.upto_seq + 1
        data_path, manifest_path, _ = self.download(export)
        manifest = json.loads(manifest_path.read_text())["manifest"]
        assert manifest["last_seq"] == export.upto_seq
        finished = AuditEvent.objects.get(action="audit.exported", outcome="succeeded")
        assert finished.after["sha256"] == manifest["sha256"]
        assert finished.after["count"] == manifest["count"]

    def test_a_file_is_streamed_once(self):
        export = self.export("csv")
        self.download(export)
        again = self.client.get(reverse("encryption:audit-export-data", args=[export.export_id]))
        assert again.status_code == 410

    def test_the_manifest_is_not_there_before_the_stream_has_finished(self):
        export = self.export("csv")
        assert self.client.get(reverse("encryption:audit-export-manifest", args=[export.export_id])).status_code == 404
        page = self.client.get(reverse("encryption:audit-export-detail", args=[export.export_id])).content.decode()
        assert "export-data-link" in page and "export-manifest-link" not in page
        assert 'hx-trigger="every 2s"' in page
        # A client that goes away mid-download closes the stream's generator: no manifest for a partial file.
        assert audit_export.claim_stream(export)
        stream = audit_export.stream(export, actor=actor_for(self.cast["reviewer"]))
        next(stream)
        stream.close()
        assert not AuditExport.objects.get(pk=export.pk).is_finished
        assert self.client.get(reverse("encryption:audit-export-manifest", args=[export.export_id])).status_code == 404

    def test_an_abandoned_download_stops_polling_and_says_so(self):
        export = self.export("csv")
        assert audit_export.claim_stream(export)
        AuditExport.objects.filter(pk=export.pk).update(started_at=timezone.now() - timedelta(hours=1))
        body = self.client.get(reverse("encryption:audit-export-detail", args=[export.export_id])).content.decode()
        assert "the download was interrupted" in body and "every 2s" not in body

    def test_the_status_fragment_shows_the_manifest_link_once_finished(self):
        export = self.export("csv")
        self.download(export)
        url = reverse("encryption:audit-export-detail", args=[export.export_id])
        body = self.client.get(url, headers={"HX-Request": "true"}).content.decode()
        assert 'id="export-status"' in body and "<html" not in body
        assert "export-manifest-link" in body and "every 2s" not in body

    def test_another_reviewer_cannot_take_someone_elses_export(self):
        export = self.export("csv")
        self.client.force_login(self.cast["admin"])
        for name in ("audit-export-detail", "audit-export-data", "audit-export-manifest"):
            assert self.client.get(reverse(f"encryption:{name}", args=[export.export_id])).status_code == 404

    def test_it_refuses_an_unknown_format_or_a_bad_filter(self):
        assert self.client.post(reverse("encryption:audit-export"), {"format": "xlsx"}).status_code == 400
        response = self.client.post(
            reverse("encryption:audit-export"), {"format": "csv", "from": "2026-03-02T00:00", "to": "2026-03-01T00:00"}
        )
        assert response.status_code == 400
        assert not AuditExport.objects.exists()

    def test_help_desk_cannot_export(self):
        self.client.force_login(self.cast["helpdesk"])
        assert self.client.get(reverse("encryption:audit-export")).status_code == 403
        assert self.client.post(reverse("encryption:audit-export"), {"format": "csv"}).status_code == 403
        assert not AuditExport.objects.exists()


class VerifyExportCommandTests(ExportTestCase):
    def setUp(self):
        super().setUp()
        self.data_path, self.manifest_path, self.key_path = self.download(self.export("csv"))

    def assert_refused(self, reason):
        with self.assertRaises(CommandError) as caught:
            self.verify(self.data_path, self.manifest_path, self.key_path)
        assert reason in str(caught.exception), str(caught.exception)

    def test_a_changed_byte_in_the_file_is_found(self):
        text = self.data_path.read_text(encoding="utf-8")
        self.data_path.write_text(text.replace("Event 7,", "Event 8,", 1), encoding="utf-8")
        self.assert_refused("SHA-256")

    def test_a_removed_row_is_found(self):
        lines = self.data_path.read_bytes().split(b"\r\n")
        self.data_path.write_bytes(b"\r\n".join(lines[:2] + lines[3:]))
        self.assert_refused("SHA-256")

    def test_an_edited_manifest_is_found(self):
        document = json.loads(self.manifest_path.read_text())
        document["manifest"]["count"] = 999
        self.manifest_path.write_text(json.dumps(document))
        self.assert_refused("signature does not verify")

    def test_a_file_and_manifest_forged_together_fail_on_the_signature(self):
        self.data_path.write_bytes(self.data_path.read_bytes() + b"extra\r\n")
        document = json.loads(self.manifest_path.read_text())
        document["manifest"]["sha256"] = hashlib.sha256(self.data_path.read_bytes()).hexdigest()
        self.manifest_path.write_text(json.dumps(document))
        self.assert_refused("signature does not verify")

    def test_another_key_is_refused(self):
        other = Ed25519PrivateKey.generate().public_key()
        self.key_path.write_bytes(
            other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        self.assert_refused("signature does not verify")

    def test_a_missing_file_is_reported(self):
        self.data_path.unlink()
        self.assert_refused("cannot be read")


class CsvEncodingTests(TestCase):
    def test_it_writes_exactly_what_the_standard_csv_writer_writes_with_every_field_quoted(self):
        rows = [
            (
                1,
                datetime(2026, 3, 1, 9, 0, 0, 123456, tzinfo=UTC),
                'say "hi", twice',
                None,
                "line\r\nbreak",
                "naïve ✓",
                "",
            ),
            (2, datetime(2026, 3, 1, 9, 0, tzinfo=UTC), '{"a": [1, "x,y"]}', "=cmd()", "\n", '"', "tab\there"),
        ]
        expected = io.StringIO()
        writer = csv.writer(expected, lineterminator="\r\n", quoting=csv.QUOTE_ALL)
        writer.writerow(audit_export.COLUMNS)
        writer.writerows(rows)
        assert audit_export._encode_csv(rows, header=True) == expected.getvalue().encode("utf-8")
