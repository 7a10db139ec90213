from __future__ import annotations

from django.urls import reverse

from encryption.models import Account, Operation
from tests.audit_helpers import failing_audit_inserts
from tests.builders import make_account, make_operation
from tests.encryption.blade_helpers import PROD, BladeTestCase

HTMX = {"HX-Request": "true"}
CHANGES = Operation.objects.filter(kind__in=Operation.CHANGE_KINDS)


def url(name: str, account: Account) -> str:
    return reverse(f"encryption:{name}", args=[account.pk])


def detail(operation: Operation) -> str:
    return reverse("encryption:operation-detail", args=[operation.pk])


class UpdateVersionTests(BladeTestCase):
    def test_it_moves_the_account_to_the_latest_version(self):
        self.login()
        response = self.client.post(url("account-update-version", self.stale))
        operation = CHANGES.get()
        assert operation.kind == Operation.Kind.UPDATE_VERSION
        assert operation.params == {"version": self.v3}
        assert response["Location"] == detail(operation)

    def test_it_does_nothing_when_the_account_is_on_the_latest(self):
        self.login()
        response = self.client.post(url("account-update-version", self.cmk), follow=True)
        assert "already uses the latest version" in response.content.decode()
        assert not CHANGES.exists()

    def test_it_refuses_read_only_roles_and_get(self):
        for role in ("reviewer", "helpdesk"):
            self.login(role)
            assert self.client.post(url("account-update-version", self.stale)).status_code == 403
        self.login()
        assert self.client.get(url("account-update-version", self.stale)).status_code == 405
        assert not CHANGES.exists()


class RotateTests(BladeTestCase):
    def test_it_asks_first_as_a_page_or_a_modal(self):
        self.login()
        page = self.client.get(url("account-rotate", self.cmk)).content.decode()
        assert "<html" in page and "Rotate key face-cmk?" in page
        assert "does not re-encrypt your data" in page
        for name in ("face-broken-eastus", "face-cmk-eastus", "face-stale-eastus"):
            assert name in page  # the accounts on the key, which the checkbox would move too
        modal = self.client.get(url("account-rotate", self.cmk), headers=HTMX).content.decode()
        assert "<html" not in modal
        assert modal.lstrip().startswith('<div id="modal" class="modal-backdrop"')
        assert 'role="dialog" aria-modal="true"' in modal

    def test_it_rotates_and_optionally_moves_the_accounts(self):
        self.login()
        response = self.client.post(url("account-rotate", self.cmk), {"update_accounts": "on"})
        operation = CHANGES.get()
        assert response["Location"] == detail(operation)
        assert operation.kind == Operation.Kind.ROTATE_KEY
        assert operation.params == {
            "vault_uri": "https://kv-prod-eastus.vault.azure.net/",
            "key_name": "face-cmk",
            "update_accounts": True,
        }

    def test_it_rotates_without_moving_when_the_box_is_clear(self):
        self.login()
        self.client.post(url("account-rotate", self.cmk), {})
        assert CHANGES.get().params["update_accounts"] is False

    def test_a_microsoft_managed_account_has_nothing_to_rotate(self):
        self.login()
        response = self.client.get(url("account-rotate", self.mmk), follow=True)
        assert "uses Microsoft-managed keys" in response.content.decode()
        self.client.post(url("account-rotate", self.mmk), {"update_accounts": "on"})
        assert not CHANGES.exists()

    def test_it_refuses_read_only_roles(self):
        for role in ("reviewer", "helpdesk", "outsider"):
            self.login(role)
            assert self.client.get(url("account-rotate", self.cmk)).status_code == 403
            assert self.client.get(url("account-rotate", self.cmk), headers=HTMX).status_code == 403
            assert self.client.post(url("account-rotate", self.cmk), {"update_accounts": "on"}).status_code == 403
        assert not CHANGES.exists()


class RevokeTests(BladeTestCase):
    def test_the_confirmation_names_what_becomes_unreadable(self):
        twin = make_account("face-twin-eastus", key=self.key, version=self.v3)
        self.login()
        body = self.client.get(url("account-revoke", self.cmk)).content.decode()
        assert "Revoke access to the key of face-cmk-eastus?" in body
        # Disabling the version reaches every account on it; the stale one is on another version.
        assert twin.name in body
        assert "face-stale-eastus" not in body
        assert "the data of <strong>face-cmk-eastus</strong> only" in body

    def test_the_confirmation_is_a_modal_for_htmx(self):
        self.login()
        body = self.client.get(url("account-revoke", self.cmk), headers=HTMX).content.decode()
        assert body.lstrip().startswith('<div id="modal" class="modal-backdrop"')
        assert "<html" not in body

    def test_it_needs_the_confirmation_ticked(self):
        self.login()
        response = self.client.post(url("account-revoke", self.cmk), {"method": "access_policy"})
        assert response.status_code == 400
        assert not CHANGES.exists()

    def test_it_revokes_by_the_chosen_method(self):
        self.login()
        response = self.client.post(url("account-revoke", self.cmk), {"method": "disable_key", "confirm": "on"})
        operation = CHANGES.get()
        assert response["Location"] == detail(operation)
        assert operation.kind == Operation.Kind.REVOKE_ACCESS
        assert operation.params == {"method": "disable_key"}

    def test_it_refuses_an_unknown_method(self):
        self.login()
        assert (
            self.client.post(url("account-revoke", self.cmk), {"method": "delete", "confirm": "on"}).status_code == 400
        )
        assert not CHANGES.exists()

    def test_it_refuses_read_only_roles(self):
        for role in ("reviewer", "helpdesk", "outsider"):
            self.login(role)
            assert self.client.get(url("account-revoke", self.cmk)).status_code == 403
            response = self.client.post(url("account-revoke", self.cmk), {"method": "access_policy", "confirm": "on"})
            assert response.status_code == 403
        assert not CHANGES.exists()


class RestoreTests(BladeTestCase):
    def test_it_restores_access(self):
        self.login()
        response = self.client.post(url("account-restore", self.broken))
        operation = CHANGES.get()
        assert operation.kind == Operation.Kind.RESTORE_ACCESS
        assert response["Location"] == detail(operation)

    def test_a_refused_request_comes_back_with_the_reason(self):
        make_operation(self.broken, Operation.Kind.REVOKE_ACCESS, status=Operation.Status.QUEUED, actor="someone")
        self.login()
        response = self.client.post(url("account-restore", self.broken), follow=True)
        assert "already has a change in progress" in response.content.decode()
        assert CHANGES.count() == 1

    def test_it_refuses_read_only_roles(self):
        for role in ("reviewer", "helpdesk"):
            self.login(role)
            assert self.client.post(url("account-restore", self.broken)).status_code == 403
        assert not CHANGES.exists()


class RefreshTests(BladeTestCase):
    def test_every_role_may_refresh_an_account_from_azure(self):
        # A refresh only reads Azure into the mirror: help-desk may ask for one (services.JOB_PERMS agrees).
        for role in ("admin", "reviewer", "helpdesk"):
            self.login(role)
            response = self.client.post(url("account-refresh", self.cmk))
            job = Operation.objects.filter(kind=Operation.Kind.REFRESH).latest("pk")
            assert response.status_code == 302
            assert response["Location"].endswith(f"?refresh={job.pk}")
        self.login("outsider")
        assert self.client.post(url("account-refresh", self.cmk)).status_code == 403

    def test_with_htmx_it_answers_the_polling_current_state(self):
        self.login("helpdesk")
        response = self.client.post(url("account-refresh", self.cmk), headers={**HTMX, "HX-Target": "current-state"})
        body = response.content.decode()
        job = Operation.objects.get(kind=Operation.Kind.REFRESH)
        assert body.lstrip().startswith('<section id="current-state"')
        assert f"?refresh={job.pk}" in body and 'hx-trigger="every 1s"' in body
        assert "Reading the account from Azure" in body

    def test_the_picker_refreshes_vaults_and_keys(self):
        self.login()
        data = {"subscription": PROD, "vault": str(self.vault.pk)}
        response = self.client.post(
            url("account-sync-vaults", self.mmk), data, headers={**HTMX, "HX-Target": "key-picker"}
        )
        body = response.content.decode()
        job = Operation.objects.get(kind=Operation.Kind.SYNC)
        assert job.account is None  # vaults and keys of every subscription, not only this account
        assert body.lstrip().startswith('<div id="key-picker"')
        assert f"?sync={job.pk}" in body and "Reading key vaults from Azure" in body

    def test_the_picker_refresh_works_without_javascript(self):
        self.login()
        response = self.client.post(url("account-sync-vaults", self.mmk), {"subscription": PROD})
        job = Operation.objects.get(kind=Operation.Kind.SYNC)
        assert f"sync={job.pk}" in response["Location"] and f"subscription={PROD}" in response["Location"]


class BladeAccessMatrixTests(BladeTestCase):
    """Every view of the blade, as a page and as a fragment, for each role: what each may open or post."""

    READ = {"admin", "reviewer", "helpdesk"}
    CHANGE = {"admin"}

    def cases(self):
        operation = make_operation(self.cmk, Operation.Kind.ENABLE_CMK, status=Operation.Status.SUCCEEDED)
        # (url, who may GET, who may POST); None: the method is not allowed for anyone
        return [
            (url("account-encryption", self.cmk), self.READ, self.CHANGE),
            (url("account-preflight", self.cmk), self.READ, self.CHANGE),
            (url("account-refresh", self.cmk), None, self.READ),
            (url("account-sync-vaults", self.cmk), None, self.READ),
            (url("account-update-version", self.stale), None, self.CHANGE),
            (url("account-rotate", self.cmk), self.CHANGE, self.CHANGE),
            (url("account-revoke", self.cmk), self.CHANGE, self.CHANGE),
            (url("account-restore", self.broken), None, self.CHANGE),
            (detail(operation), {"admin", "reviewer"}, None),
        ]

    def test_each_role_gets_what_it_may_and_403_otherwise(self):
        for path, readers, writers in self.cases():
            for role in ("admin", "reviewer", "helpdesk", "outsider"):
                self.login(role)
                for headers in ({}, HTMX):
                    got = self.client.get(path, headers=headers).status_code
                    if readers is None:
                        assert got in (403, 405), (path, role, headers, got)
                    else:
                        assert (got != 403) == (role in readers), (path, role, headers, got)
                    got = self.client.post(path, {}, headers=headers).status_code
                    if writers is None:
                        assert got in (403, 405), (path, role, headers, got)
                    else:
                        assert (got != 403) == (role in writers), (path, role, headers, got)
        # Nothing a read-only role posted became a change.
        assert not CHANGES.exclude(actor=self.cast["admin"].username).exclude(actor="system").exists()

    def test_anonymous_visitors_are_sent_to_sign_in(self):
        for path, _, _ in self.cases():
            for method in (self.client.get, self.client.post):
                response = method(path)
                assert response.status_code == 302 and "/accounts/login/" in response["Location"], path


class AuditStoreDownTests(BladeTestCase):
    """A change whose audit event cannot be written is not made, and the admin is told so (not a 500)."""

    def test_the_page_says_nothing_was_changed(self):
        self.login()
        page = url("account-encryption", self.stale)
        with failing_audit_inserts():
            response = self.client.post(url("account-update-version", self.stale), headers={"Referer": page})
        assert response.status_code == 503 and response["Retry-After"] == "30"
        body = response.content.decode()
        assert "Nothing was changed" in body
        assert "Update key version was not started" in body and "nothing was sent to Azure" in body
        assert f'href="{page}"' in body
        assert not CHANGES.exists()
        # Once the store takes writes again, the same request goes through.
        self.client.post(url("account-update-version", self.stale))
        assert CHANGES.get().kind == Operation.Kind.UPDATE_VERSION

    def test_an_htmx_request_goes_back_to_its_page_with_the_message(self):
        self.login()
        page = url("account-encryption", self.cmk)
        with failing_audit_inserts():
            response = self.client.post(
                url("account-refresh", self.cmk), headers={**HTMX, "HX-Current-URL": f"http://testserver{page}"}
            )
        assert response.status_code == 503 and response["HX-Redirect"] == page
        assert not Operation.objects.exists()
        assert "Refresh from Azure was not started" in self.client.get(page).content.decode()

    def test_it_never_sends_anyone_to_another_site(self):
        self.login()
        with failing_audit_inserts():
            response = self.client.post(
                url("account-refresh", self.cmk), headers={**HTMX, "HX-Current-URL": "https://evil.example/phish"}
            )
        assert response["HX-Redirect"] == "/"
