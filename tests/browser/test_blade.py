"""The Encryption blade in Chromium: a live server, a real Celery worker, the seeded emulator, a first sync.

One browser, server and worker serve the whole class. The emulator is seeded and the mirror synced once;
both databases are snapshot then, and restored before each test (the harness empties the tables after
each one), so every test starts from the same estate and the tests pass in any order.
"""

from __future__ import annotations

import contextlib
import re

import pytest
from django.apps import apps
from django.core import serializers
from django.core.management import call_command
from django.db import connections, router

from encryption import sync
from encryption.models import Account, AuditEvent, Operation
from encryption.roles import ADMINS, HELP_DESK
from tests.browser import screenshots
from tests.builders import PASSWORD, make_user
from tests.harness import ALL_DATABASES, BrowserTestCase, start_worker

pytestmark = pytest.mark.browser

# An operation runs several Azure calls through the emulator, one worker, and 1 s polling on the page.
OPERATION_TIMEOUT_MS = 90_000
PREFLIGHT_TIMEOUT_MS = 60_000


def snapshot(alias: str) -> str:
    """The emulator's estate and Keyward's mirror as JSON (Django's own tables are the harness's business)."""

    def objects():
        for label in ("emulator", "encryption"):
            if not apps.is_installed(label):
                continue
            for model in apps.get_app_config(label).get_models():
                if router.allow_migrate_model(alias, model):
                    yield from model._base_manager.using(alias).order_by("pk")

    return serializers.serialize("json", objects())


class BladeTests(BrowserTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        stack = contextlib.ExitStack()
        cls.addClassCleanup(stack.close)
        cls.worker = stack.enter_context(start_worker())
        # Seeding creates real RSA keys and takes seconds: do it once, then restore a snapshot per test.
        call_command("seed_emulator", verbosity=0)
        sync.sync_estate()
        cls.estate = {alias: snapshot(alias) for alias in ALL_DATABASES}

    def setUp(self):
        for alias, contents in self.estate.items():
            connections[alias].creation.deserialize_db_from_string(contents)
        self.admin = make_user("ada-admin", ADMINS)
        self.helpdesk = make_user("hal-helpdesk", HELP_DESK)

    # Helpers

    def open_blade(self, name: str, user=None):
        page = self.new_page()
        self.sign_in(page, (user or self.admin).username, PASSWORD)
        account = Account.objects.get(name=name)
        page.goto(f"{self.live_server_url}/accounts/{account.pk}/encryption/")
        return page

    def choose_customer_managed_keys(self, page, source: str) -> None:
        page.get_by_role("radio", name="Customer Managed Keys").check()
        page.get_by_role("radio", name=source).check()

    def pick(self, page, select: str, label: str) -> None:
        """Choose in one of the cascading selects and wait for the picker to come back with the next level."""
        with page.expect_response(lambda r: r.request.method == "GET" and "/encryption/?" in r.url):
            page.locator(select).select_option(label=label)
        page.wait_for_function("() => !document.querySelector('#key-picker.htmx-swapping, #key-picker.htmx-settling')")
        assert page.locator(select).locator("option:checked").inner_text() == label

    def wait_for_checks(self, page, text: str) -> None:
        page.locator("#preflight-result", has_text=text).wait_for(timeout=PREFLIGHT_TIMEOUT_MS)

    def save_and_wait(self, page) -> None:
        page.locator("#save-button").click()
        page.wait_for_url(re.compile(r"/operations/\d+/$"))
        self.wait_for_end(page)

    def wait_for_end(self, page) -> None:
        state = page.locator("#operation-state")
        state.filter(has_text=re.compile("Succeeded|Failed")).wait_for(timeout=OPERATION_TIMEOUT_MS)
        assert state.inner_text() == "Succeeded", page.locator("#operation-status").inner_text()

    # The journeys

    def test_an_admin_moves_an_account_to_a_key_picked_from_key_vault(self):
        page = self.new_page()
        self.sign_in(page, self.admin.username, PASSWORD)
        page.get_by_role("link", name="face-prod-eastus").wait_for()
        screenshots.capture(page, "accounts")
        page.get_by_role("link", name="face-prod-eastus").click()
        page.get_by_role("heading", name=re.compile("face-prod-eastus")).wait_for()

        self.choose_customer_managed_keys(page, "Select from Key Vault")
        self.pick(page, "#id_subscription", "contoso-prod")
        self.pick(page, "#id_vault", "kv-prod-eastus")
        self.pick(page, "#id_key", "face-cmk (RSA 2048)")
        latest = page.locator("#id_version option", has_text="(latest)")
        latest.wait_for(state="attached")
        assert page.locator("#id_version").input_value() == latest.get_attribute("value")
        self.wait_for_checks(page, "Nothing blocks Save")
        assert "Will be done by this change" in page.locator("#preflight-result").inner_text()  # the access grant
        screenshots.capture(page, "encryption")

        self.save_and_wait(page)
        assert page.locator("#result-encryption-type").inner_text() == "Customer Managed Keys"
        assert "Readable" in page.locator("#result-data-access").inner_text()
        screenshots.capture(page, "operation")
        page.get_by_role("link", name=re.compile("Back to face-prod-eastus")).click()
        state = page.locator("#current-state")
        assert "kv-prod-eastus.vault.azure.net/keys/face-cmk/" in state.inner_text()
        assert "latest" in state.inner_text()
        assert page.locator("#data-access").inner_text() == "Readable"

    def test_the_checks_stop_a_key_in_a_vault_without_purge_protection(self):
        page = self.open_blade("face-prod-eastus")
        self.choose_customer_managed_keys(page, "Enter key URI")
        page.get_by_label("Key URI", exact=True).fill("https://kv-nopurge-eastus.vault.azure.net/keys/face-cmk-nopurge")
        page.get_by_label("Key URI", exact=True).press("Tab")
        self.wait_for_checks(page, "blocks Save")
        checks = page.locator("#preflight-result").inner_text()
        assert "Purge protection is off on kv-nopurge-eastus" in checks
        assert "Turn on purge protection" in checks
        assert page.locator("#save-button").is_disabled()
        assert not Operation.objects.filter(kind__in=Operation.CHANGE_KINDS).exists()

    def test_an_admin_enters_the_uri_of_a_key_in_another_subscription(self):
        page = self.open_blade("face-prod-eastus")
        self.choose_customer_managed_keys(page, "Enter key URI")
        page.get_by_label("Key URI", exact=True).fill("https://kv-shared-eastus.vault.azure.net/keys/face-cmk-shared")
        page.get_by_label("Key URI", exact=True).press("Tab")
        page.locator("#id_uri_subscription").select_option(label="contoso-dev")
        self.wait_for_checks(page, "Nothing blocks Save")
        self.save_and_wait(page)
        assert "Readable" in page.locator("#result-data-access").inner_text()
        account = Account.objects.get(name="face-prod-eastus")
        assert account.key_vault_uri.startswith("https://kv-shared-eastus.vault.azure.net")
        assert account.key_version  # a versionless URI is pinned to the version it resolved to

    def test_an_admin_updates_a_stale_account_to_the_latest_version(self):
        page = self.open_blade("face-stale-eastus")
        assert "newer version available" in page.locator("#current-state").inner_text()
        page.get_by_role("button", name="Update key version").click()
        page.wait_for_url(re.compile(r"/operations/\d+/$"))
        self.wait_for_end(page)
        page.get_by_role("link", name=re.compile("Back to face-stale-eastus")).click()
        state = page.locator("#current-state").inner_text()
        assert "latest" in state and "newer version available" not in state

    def test_an_admin_revokes_access_then_restores_it(self):
        page = self.open_blade("face-cmk-eastus")
        page.get_by_role("link", name="Revoke access").click()
        dialog = page.get_by_role("dialog")
        assert "face-cmk-eastus" in dialog.inner_text()
        dialog.get_by_label("I understand").check()
        dialog.get_by_role("button", name="Revoke access").click()
        page.wait_for_url(re.compile(r"/operations/\d+/$"))
        self.wait_for_end(page)
        assert "Unreadable" in page.locator("#result-data-access").inner_text()

        page.get_by_role("link", name=re.compile("Back to face-cmk-eastus")).click()
        assert page.locator("#data-access").inner_text() == "Unreadable"
        page.get_by_role("button", name="Restore access").click()
        page.wait_for_url(re.compile(r"/operations/\d+/$"))
        self.wait_for_end(page)
        assert "Readable" in page.locator("#result-data-access").inner_text()

    def test_an_admin_goes_back_to_microsoft_managed_keys(self):
        page = self.open_blade("face-cmk-eastus")
        page.get_by_label("Use your own key").uncheck()
        # portal.js keeps the two controls in step: clearing the box selects Microsoft Managed Keys.
        assert page.get_by_role("radio", name="Microsoft Managed Keys").is_checked()
        self.save_and_wait(page)
        assert page.locator("#result-encryption-type").inner_text() == "Microsoft Managed Keys"
        assert "Readable" in page.locator("#result-data-access").inner_text()

    def test_help_desk_cannot_change_anything(self):
        page = self.open_blade("face-cmk-eastus", user=self.helpdesk)
        assert page.locator("#current-state").is_visible()
        for name in ("Save", "Update key version", "Restore access"):
            assert page.get_by_role("button", name=name).count() == 0
        for name in ("Rotate key", "Revoke access", "Discard"):
            assert page.get_by_role("link", name=name).count() == 0
        # Posting anyway, with a valid CSRF token from the page, is refused by the server and recorded.
        token = page.evaluate("JSON.parse(document.body.getAttribute('hx-headers'))['x-csrftoken']")
        account = Account.objects.get(name="face-cmk-eastus")
        for path in ("encryption/", "revoke/", "restore/", "update-version/"):
            response = page.request.post(
                f"{self.live_server_url}/accounts/{account.pk}/{path}",
                form={"encryption_type": "mmk", "method": "access_policy", "confirm": "on"},
                headers={"X-CSRFToken": token},
            )
            assert response.status == 403, path
        assert not Operation.objects.filter(kind__in=Operation.CHANGE_KINDS).exists()
        assert AuditEvent.objects.filter(action="access.refused", actor=self.helpdesk.username).count() == 4
