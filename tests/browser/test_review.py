from __future__ import annotations

import io
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine
from django.core.management import call_command

from encryption.models import AuditEvent, Operation
from tests.audit_helpers import privileged_execute
from tests.builders import PASSWORD, actor_for, make_account, make_cast, make_event
from tests.harness import BrowserTestCase, wait_until

pytestmark = pytest.mark.browser

DAY = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


class ReviewAndHelpdeskTests(BrowserTestCase):
    # One class: the harness restores the data migrations' rows between tests, not between classes.

    def setUp(self):
        self.cast = make_cast()
        self.east = make_account("face-east")
        self.west = make_account("face-west")
        admin = actor_for(self.cast["admin"])
        with time_machine.travel(datetime(2026, 3, 1, 10, 0, tzinfo=UTC), tick=False):
            make_event(actor=admin, target=self.east.arm_id, message="east, the day before")
        with time_machine.travel(DAY, tick=False):
            self.wanted = make_event(
                actor=admin, target=self.east.arm_id, message="east, on the day", after={"keyVersion": "v2"}
            )
            make_event(actor=admin, target=self.west.arm_id, message="west, on the day")
        with time_machine.travel(datetime(2026, 3, 3, 10, 0, tzinfo=UTC), tick=False):
            make_event(actor=admin, target=self.east.arm_id, message="east, the day after")

    def downloads_dir(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="kw-review-"))

    def test_a_reviewer_filters_opens_an_event_exports_csv_and_verifies_it(self):
        page = self.new_page()
        self.sign_in(page, self.cast["reviewer"].username, PASSWORD)
        page.goto(f"{self.live_server_url}/audit/")
        page.get_by_label("Account").select_option(label="face-east")
        page.get_by_label("Day").fill("2026-03-02")
        page.get_by_role("button", name="Apply").click()
        page.wait_for_url(re.compile(r"day=2026-03-02"))  # htmx swapped the table and pushed the filter
        table = page.locator("#audit-table")
        table.get_by_text("east, on the day").wait_for()
        rows = table.locator("tbody tr")
        assert rows.count() == 1
        assert "west" not in table.inner_text() and "the day before" not in table.inner_text()

        table.get_by_role("link", name=str(self.wanted.seq)).click()
        page.get_by_role("heading", name=re.compile(f"Event #{self.wanted.seq}")).wait_for()
        assert "keyVersion" in page.locator("pre.json").last.inner_text()
        assert page.get_by_text("Content matches its hash").is_visible()

        page.go_back()
        page.locator("#audit-table").get_by_text("east, on the day").wait_for()
        page.get_by_role("button", name="Export CSV").click()
        page.get_by_role("heading", name=re.compile("Audit export")).wait_for()
        folder = self.downloads_dir()
        with page.expect_download() as data_download:
            page.locator("#export-data-link").click()
        data_path = folder / data_download.value.suggested_filename
        data_download.value.save_as(data_path)
        # The manifest link appears by itself once the stream has finished (the status fragment polls).
        manifest_link = page.locator("#export-manifest-link")
        manifest_link.wait_for(timeout=15000)
        with page.expect_download() as manifest_download:
            manifest_link.click()
        manifest_path = folder / manifest_download.value.suggested_filename
        manifest_download.value.save_as(manifest_path)
        page.goto(f"{self.live_server_url}/audit/verify/")
        with page.expect_download() as key_download:
            page.get_by_role("link", name="Download the public key (PEM)").click()
        key_path = folder / "audit.pem"
        key_download.value.save_as(key_path)

        out = io.StringIO()
        call_command("verify_export", str(data_path), str(manifest_path), "--public-key", str(key_path), stdout=out)
        assert "export verified: 1 events" in out.getvalue()
        assert "east, on the day" in data_path.read_text()

    def test_tampering_with_a_row_makes_the_verify_page_show_the_first_bad_event(self):
        victim = self.wanted
        privileged_execute(
            "UPDATE encryption_auditevent SET message = %s WHERE seq = %s", ["nothing to see", victim.seq]
        )
        page = self.new_page()
        self.sign_in(page, self.cast["reviewer"].username, PASSWORD)
        page.goto(f"{self.live_server_url}/audit/verify/")
        page.get_by_role("button", name="Verify now").click()
        result = page.locator("#verify-result")
        result.get_by_text("Broken.").wait_for()
        assert f"#{victim.seq}" in result.inner_text()
        result.get_by_role("link", name=f"#{victim.seq}").first.click()
        page.get_by_text("Content does not match its hash").wait_for()

    def test_a_help_desk_user_sees_face_broken_eastus_diagnosed_as_key_disabled_with_the_key_named(self):
        from emulator.seed import seed
        from encryption import operations, sync

        seed()
        sync.sync_estate()
        helpdesk = self.cast["helpdesk"]
        page = self.new_page()
        self.sign_in(page, helpdesk.username, PASSWORD)
        page.goto(f"{self.live_server_url}/helpdesk/")
        page.get_by_label("Account name, resource id or endpoint").fill("face-broken-eastus")
        page.get_by_role("button", name="Search").click()
        page.get_by_role("heading", name="face-broken-eastus").wait_for()
        page.get_by_role("button", name="Run diagnosis").click()
        page.locator("#diagnosis").get_by_text("Diagnosis").first.wait_for()
        # Play the worker: the page polls our Operation row until it is finished.
        op = wait_until(
            lambda: Operation.objects.filter(account__name="face-broken-eastus", kind="diagnose").first(),
            message="the diagnose job",
        )
        operations.run_operation(op.pk)
        diagnosis = page.locator("#diagnosis")
        diagnosis.get_by_text("Data is not readable.").wait_for(timeout=15000)
        cause = diagnosis.locator('[data-code="key_disabled"]')
        assert "is disabled" in cause.inner_text() and "face-cmk-broken" in cause.inner_text()
        assert "Who to ask" in cause.inner_text()
        # Help-desk sees no audit trail beyond this account's recent events.
        assert page.get_by_role("link", name="Audit").count() == 0
        assert not AuditEvent.objects.filter(action="access.refused", actor=helpdesk.username).exists()
