from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from django.test import Client
from django.urls import reverse

from encryption.models import AuditEvent, Operation
from tests.builders import make_operation
from tests.encryption.blade_helpers import DEV, PROD, BladeTestCase, blocking_checks

CHANGES = Operation.objects.filter(kind__in=Operation.CHANGE_KINDS)


def page_url(account) -> str:
    return reverse("encryption:account-encryption", args=[account.pk])


class SaveTestCase(BladeTestCase):
    def picker_post(self, account, *, version="", key=None, preflight=None, **extra):
        key = key or self.key
        data = {
            "encryption_type": "cmk",
            "use_own_key": "on",
            "key_source": "vault",
            "subscription": key.vault.subscription.subscription_id,
            "vault": str(key.vault.pk),
            "key": str(key.pk),
            "version": version or key.current_version,
        }
        if preflight is not None:
            data["preflight"] = str(preflight.pk)
        data.update(extra)
        return self.client.post(page_url(account), data)

    def uri_post(self, account, uri, subscription=PROD, preflight=None, **extra):
        data = {"encryption_type": "cmk", "use_own_key": "on", "key_source": "uri", "key_uri": uri}
        data["uri_subscription"] = subscription
        if preflight is not None:
            data["preflight"] = str(preflight.pk)
        data.update(extra)
        return self.client.post(page_url(account), data)


class SaveNeedsPreflightTests(SaveTestCase):
    def test_a_save_without_checks_starts_them_and_changes_nothing(self):
        self.login()
        response = self.picker_post(self.mmk)
        assert response.status_code == 302
        preflight = Operation.objects.get(kind=Operation.Kind.PREFLIGHT, account=self.mmk)
        assert preflight.params == {"key_uri": self.key_uri(self.v3), "vault_subscription_id": PROD}
        query = parse_qs(urlsplit(response["Location"]).query)
        assert query["preflight"] == [str(preflight.pk)]
        assert query["key"] == [str(self.key.pk)]
        assert "csrfmiddlewaretoken" not in query  # never in a URL, where logs would keep it
        assert not CHANGES.exists()

    def test_a_save_whose_checks_pass_enables_cmk(self):
        self.login()
        preflight = self.preflight(self.mmk, self.key_uri(self.v3))
        response = self.picker_post(self.mmk, preflight=preflight)
        operation = CHANGES.get()
        assert response.status_code == 302
        assert response["Location"] == reverse("encryption:operation-detail", args=[operation.pk])
        assert operation.kind == Operation.Kind.ENABLE_CMK
        assert operation.params == {"key_uri": self.key_uri(self.v3), "vault_subscription_id": PROD}
        assert operation.actor == self.cast["admin"].username
        assert AuditEvent.objects.filter(action="operation.requested", operation=operation).exists()

    def test_the_server_refuses_a_save_whose_checks_block(self):
        self.login()
        uri = "https://kv-nopurge-eastus.vault.azure.net/keys/face-cmk"
        preflight = self.preflight(self.mmk, uri, checks=blocking_checks())
        response = self.uri_post(self.mmk, uri, preflight=preflight)
        body = response.content.decode()
        assert response.status_code == 409
        assert "Save is blocked" in body
        assert "Turn on purge protection in the key vault." in body
        assert 'id="save-button" class="command primary save-button" disabled' in body
        assert not CHANGES.exists()

    def test_checks_that_could_not_run_block_too(self):
        self.login()
        preflight = self.preflight(self.mmk, self.key_uri(self.v3), status=Operation.Status.FAILED, result=None)
        assert self.picker_post(self.mmk, preflight=preflight).status_code == 409
        assert not CHANGES.exists()

    def test_a_save_while_the_checks_run_waits_for_them(self):
        self.login()
        preflight = self.preflight(self.mmk, self.key_uri(self.v3), status=Operation.Status.RUNNING, result=None)
        response = self.picker_post(self.mmk, preflight=preflight)
        assert response.status_code == 302
        assert f"preflight={preflight.pk}" in response["Location"]
        assert not CHANGES.exists()

    def test_checks_of_another_key_do_not_vouch_for_this_one(self):
        # The form names a passing preflight of face-cmk, but the admin switched to another version since.
        self.login()
        preflight = self.preflight(self.mmk, self.key_uri(self.v3))
        response = self.picker_post(self.mmk, version=self.v1, preflight=preflight)
        assert response.status_code == 302
        assert not CHANGES.exists()
        assert Operation.objects.filter(kind=Operation.Kind.PREFLIGHT).count() == 2

    def test_checks_of_another_account_do_not_vouch_for_this_one(self):
        self.login()
        preflight = self.preflight(self.stale, self.key_uri(self.v3))
        self.picker_post(self.mmk, preflight=preflight)
        assert not CHANGES.exists()

    def test_an_explicit_check_starts_a_preflight(self):
        self.login()
        response = self.picker_post(self.mmk, intent="check")
        preflight = Operation.objects.get(kind=Operation.Kind.PREFLIGHT)
        assert f"preflight={preflight.pk}" in response["Location"]
        assert not CHANGES.exists()


class SaveDecidesTheOperationTests(SaveTestCase):
    def test_a_key_in_another_subscription_is_entered_by_uri(self):
        self.login()
        uri = "https://kv-shared-eastus.vault.azure.net/keys/shared-cmk"
        preflight = self.preflight(self.mmk, uri, subscription_id=DEV)
        response = self.uri_post(self.mmk, uri, subscription=DEV, preflight=preflight)
        assert response.status_code == 302
        assert CHANGES.get().params == {"key_uri": uri, "vault_subscription_id": DEV}

    def test_another_version_of_the_same_key_updates_the_version(self):
        self.login()
        preflight = self.preflight(self.stale, self.key_uri(self.v3))
        self.picker_post(self.stale, preflight=preflight)
        operation = CHANGES.get()
        assert operation.kind == Operation.Kind.UPDATE_VERSION
        assert operation.params == {"version": self.v3}

    def test_another_key_changes_the_key(self):
        self.login()
        uri = f"https://kv-shared-eastus.vault.azure.net/keys/shared-cmk/{self.shared_key.current_version}"
        preflight = self.preflight(self.cmk, uri, subscription_id=DEV)
        self.picker_post(self.cmk, key=self.shared_key, preflight=preflight)
        assert CHANGES.get().kind == Operation.Kind.CHANGE_KEY

    def test_clearing_use_your_own_key_disables_cmk_without_checks(self):
        self.login()
        response = self.client.post(page_url(self.cmk), {"encryption_type": "cmk", "key_source": "vault"})
        operation = CHANGES.get()
        assert operation.kind == Operation.Kind.DISABLE_CMK
        assert response["Location"] == reverse("encryption:operation-detail", args=[operation.pk])

    def test_choosing_microsoft_managed_keys_disables_cmk(self):
        self.login()
        self.client.post(page_url(self.cmk), {"encryption_type": "mmk", "use_own_key": "on"})
        assert CHANGES.get().kind == Operation.Kind.DISABLE_CMK

    def test_saving_what_is_already_there_does_nothing(self):
        self.login()
        response = self.client.post(page_url(self.mmk), {"encryption_type": "mmk"})
        assert response.status_code == 302
        assert not Operation.objects.exists()
        preflight = self.preflight(self.cmk, self.key_uri(self.v3))
        self.picker_post(self.cmk, preflight=preflight)
        assert not CHANGES.exists()

    def test_a_bad_key_uri_is_refused_with_what_to_fix(self):
        self.login()
        response = self.uri_post(self.mmk, "https://vault.azure.net@evil.example/keys/k")
        assert response.status_code == 400
        assert 'class="errorlist' in response.content.decode()
        assert not Operation.objects.exists()  # refused before any job: no token goes to that host

    def test_a_missing_choice_is_refused(self):
        self.login()
        response = self.client.post(
            page_url(self.mmk), {"encryption_type": "cmk", "use_own_key": "on", "key_source": "vault"}
        )
        assert response.status_code == 400
        assert "Choose a subscription." in response.content.decode()

    def test_a_forged_disabled_vault_is_refused(self):
        self.login()
        data = {"encryption_type": "cmk", "use_own_key": "on", "key_source": "vault", "subscription": PROD}
        data["vault"] = str(self.westeurope.pk)
        response = self.client.post(page_url(self.mmk), data)
        assert response.status_code == 400
        assert not Operation.objects.exists()

    def test_a_second_change_while_one_runs_is_refused_with_its_name(self):
        make_operation(self.stale, Operation.Kind.ROTATE_KEY, status=Operation.Status.RUNNING, actor="someone")
        self.login()
        preflight = self.preflight(self.stale, self.key_uri(self.v3))
        response = self.picker_post(self.stale, preflight=preflight)
        assert response.status_code == 409
        assert "already has a change in progress" in response.content.decode()
        assert CHANGES.count() == 1

    def test_without_javascript_the_picker_is_filled_by_posting(self):
        self.login()
        response = self.client.post(
            page_url(self.mmk), {"intent": "pick", "encryption_type": "cmk", "use_own_key": "on", "subscription": DEV}
        )
        assert response.status_code == 302
        query = parse_qs(urlsplit(response["Location"]).query)
        assert query["subscription"] == [DEV]
        assert "csrfmiddlewaretoken" not in query
        body = self.client.get(response["Location"]).content.decode()
        assert "kv-shared-eastus" in body


class SavePermissionTests(SaveTestCase):
    def test_read_only_roles_get_403_whatever_they_post(self):
        preflight = self.preflight(self.mmk, self.key_uri(self.v3))
        for role in ("reviewer", "helpdesk", "outsider"):
            self.login(role)
            assert self.picker_post(self.mmk, preflight=preflight).status_code == 403
            assert self.client.post(page_url(self.cmk), {"encryption_type": "mmk"}).status_code == 403
            assert self.client.post(page_url(self.mmk), {"intent": "check"}).status_code == 403
            assert self.client.post(page_url(self.mmk), {}).status_code == 403
        assert not CHANGES.exists()
        assert Operation.objects.filter(kind=Operation.Kind.PREFLIGHT).count() == 1
        # Each refusal is in the audit trail.
        assert AuditEvent.objects.filter(action="access.refused").count() == 12

    def test_a_post_without_the_csrf_token_is_refused(self):
        client = Client(enforce_csrf_checks=True)
        client.force_login(self.cast["admin"])
        response = client.post(page_url(self.cmk), {"encryption_type": "mmk"})
        assert response.status_code == 403
        assert not CHANGES.exists()
