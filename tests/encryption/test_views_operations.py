from __future__ import annotations

from django.urls import reverse
from django.utils import timezone

from encryption.models import Operation, OperationStep
from tests.builders import make_operation
from tests.encryption.blade_helpers import PROD, BladeTestCase, blocking_checks

HTMX = {"HX-Request": "true"}


def detail_url(operation) -> str:
    return reverse("encryption:operation-detail", args=[operation.pk])


def preflight_url(account, query: str = "") -> str:
    return reverse("encryption:account-preflight", args=[account.pk]) + query


def step(operation, label, status, detail="", **fields):
    return OperationStep.objects.create(
        operation=operation,
        name=label[:20],
        label=label,
        status=status,
        detail=detail,
        finished_at=timezone.now(),
        **fields,
    )


class OperationDetailTests(BladeTestCase):
    def test_it_shows_the_steps_of_a_running_operation_and_polls(self):
        operation = make_operation(self.mmk, Operation.Kind.ENABLE_CMK, status=Operation.Status.RUNNING)
        step(operation, "Turn on the system-assigned identity", OperationStep.Status.SUCCEEDED, duration_ms=120)
        step(operation, "Grant the identity access to the key", OperationStep.Status.RUNNING)
        self.login()
        body = self.client.get(detail_url(operation)).content.decode()
        assert "<html" in body
        assert "Turn on the system-assigned identity" in body and "Succeeded" in body
        assert "Running…" in body
        assert f'hx-get="{detail_url(operation)}" hx-trigger="every 1s"' in body

    def test_the_fragment_keeps_polling_while_the_operation_runs(self):
        operation = make_operation(self.mmk, Operation.Kind.ENABLE_CMK, status=Operation.Status.RUNNING)
        self.login()
        response = self.client.get(detail_url(operation), headers=HTMX)
        body = response.content.decode()
        assert response.status_code == 200
        assert body.lstrip().startswith('<section id="operation-status"')
        assert "<html" not in body
        assert 'hx-trigger="every 1s"' in body

    def test_the_fragment_stops_polling_once_the_operation_ends(self):
        operation = make_operation(
            self.cmk,
            Operation.Kind.ENABLE_CMK,
            status=Operation.Status.SUCCEEDED,
            reason="face-cmk-eastus now uses face-cmk.",
        )
        self.login()
        response = self.client.get(detail_url(operation), headers=HTMX)
        body = response.content.decode()
        assert response.status_code == 286  # htmx's "stop polling"
        assert "hx-trigger" not in body
        assert "Succeeded." in body and "face-cmk-eastus now uses face-cmk." in body
        # The account as it is now: the new state and whether its data can be read.
        assert 'id="result-encryption-type">Customer Managed Keys' in body
        assert "Readable" in body

    def test_a_failed_step_says_what_to_do(self):
        operation = make_operation(
            self.mmk,
            Operation.Kind.ENABLE_CMK,
            status=Operation.Status.FAILED,
            reason="The key vault must have purge protection on.",
            error_code="KeyVaultPurgeProtectionRequired",
        )
        step(
            operation,
            "Check every prerequisite",
            OperationStep.Status.FAILED,
            "Turn purge protection on in kv-nopurge-eastus, then try again.",
            error_code="KeyVaultPurgeProtectionRequired",
        )
        self.login()
        body = self.client.get(detail_url(operation)).content.decode()
        assert "What to do: Turn purge protection on in kv-nopurge-eastus, then try again." in body
        assert "Failed." in body and "The key vault must have purge protection on." in body
        assert "KeyVaultPurgeProtectionRequired" in body and "local Azure emulator" in body

    def test_a_queued_operation_says_it_is_queued(self):
        operation = make_operation(self.mmk, Operation.Kind.ENABLE_CMK, status=Operation.Status.QUEUED)
        self.login()
        body = self.client.get(detail_url(operation), headers=HTMX).content.decode()
        assert "Queued: waiting for a worker" in body
        assert "message broker is down" in body

    def test_a_finished_preflight_shows_its_checks(self):
        operation = make_operation(
            self.mmk, Operation.Kind.PREFLIGHT, status=Operation.Status.SUCCEEDED, result={"checks": blocking_checks()}
        )
        self.login("reviewer")
        body = self.client.get(detail_url(operation)).content.decode()
        assert "Blocks" in body and "What to do: Turn on purge protection in the key vault." in body

    def test_reviewers_read_it_help_desk_does_not(self):
        operation = make_operation(self.mmk, Operation.Kind.ENABLE_CMK, status=Operation.Status.RUNNING)
        self.login("reviewer")
        assert self.client.get(detail_url(operation)).status_code == 200
        assert self.client.get(detail_url(operation), headers=HTMX).status_code == 200
        for role in ("helpdesk", "outsider"):
            self.login(role)
            assert self.client.get(detail_url(operation)).status_code == 403
            assert self.client.get(detail_url(operation), headers=HTMX).status_code == 403

    def test_it_is_404_for_an_unknown_operation(self):
        self.login()
        assert self.client.get(reverse("encryption:operation-detail", args=[999999])).status_code == 404


class PreflightFragmentTests(BladeTestCase):
    def form(self, **extra):
        data = {
            "encryption_type": "cmk",
            "use_own_key": "on",
            "key_source": "uri",
            "key_uri": self.key_uri(self.v3),
            "uri_subscription": PROD,
        }
        data.update(extra)
        return data

    def test_it_starts_a_preflight_and_polls_it(self):
        self.login()
        response = self.client.post(preflight_url(self.mmk), self.form(), headers=HTMX)
        body = response.content.decode()
        preflight = Operation.objects.get(kind=Operation.Kind.PREFLIGHT)
        assert response.status_code == 200
        assert body.lstrip().startswith('<div id="preflight-result"')
        assert preflight.params == {"key_uri": self.key_uri(self.v3), "vault_subscription_id": PROD}
        assert f'hx-get="{preflight_url(self.mmk, f"?operation={preflight.pk}")}" hx-trigger="every 1s"' in body
        assert f'name="preflight" value="{preflight.pk}"' in body

    def test_a_finished_preflight_stops_polling_and_shows_each_check(self):
        preflight = self.preflight(self.mmk, self.key_uri(self.v3))
        self.login()
        response = self.client.get(preflight_url(self.mmk, f"?operation={preflight.pk}"), headers=HTMX)
        body = response.content.decode()
        assert response.status_code == 286
        assert "hx-trigger" not in body
        assert 'data-blocking="false"' in body
        assert "Passes" in body and "Will be done by this change" in body
        assert "Nothing blocks Save" in body

    def test_a_blocking_check_is_marked_for_the_save_button(self):
        preflight = self.preflight(
            self.mmk, "https://kv-nopurge-eastus.vault.azure.net/keys/face-cmk", checks=blocking_checks()
        )
        self.login()
        body = self.client.get(preflight_url(self.mmk, f"?operation={preflight.pk}"), headers=HTMX).content.decode()
        assert 'data-blocking="true"' in body
        assert "1 check blocks Save." in body
        assert "Purge protection is off on kv-nopurge-eastus." in body

    def test_without_a_customer_managed_key_there_is_nothing_to_check(self):
        self.login()
        body = self.client.post(preflight_url(self.mmk), {"encryption_type": "mmk"}, headers=HTMX).content.decode()
        assert "Choose a customer-managed key to see the checks." in body
        assert not Operation.objects.exists()

    def test_a_bad_uri_says_why_and_starts_nothing(self):
        self.login()
        body = self.client.post(
            preflight_url(self.mmk), self.form(key_uri="http://kv-prod-eastus.vault.azure.net/keys/x"), headers=HTMX
        ).content.decode()
        assert 'id="preflight-result"' in body and "https" in body
        assert not Operation.objects.exists()

    def test_without_javascript_it_comes_back_to_the_page(self):
        self.login()
        response = self.client.post(preflight_url(self.mmk), self.form())
        preflight = Operation.objects.get(kind=Operation.Kind.PREFLIGHT)
        assert response.status_code == 302
        assert f"preflight={preflight.pk}" in response["Location"]
        body = self.client.get(response["Location"]).content.decode()
        assert f'name="preflight" value="{preflight.pk}"' in body

    def test_a_preflight_of_another_account_is_not_shown(self):
        preflight = self.preflight(self.cmk, self.key_uri(self.v3))
        self.login()
        body = self.client.get(preflight_url(self.mmk, f"?operation={preflight.pk}"), headers=HTMX).content.decode()
        assert "Choose a key" in body
        assert "Passes" not in body

    def test_read_only_roles_cannot_start_one(self):
        for role in ("reviewer", "helpdesk", "outsider"):
            self.login(role)
            assert self.client.post(preflight_url(self.mmk), self.form(), headers=HTMX).status_code == 403
            assert self.client.post(preflight_url(self.mmk), self.form()).status_code == 403
        assert not Operation.objects.exists()

    def test_the_blades_compact_fragment_stays_compact(self):
        operation = make_operation(self.mmk, Operation.Kind.ENABLE_CMK, status=Operation.Status.RUNNING)
        self.login()
        body = self.client.get(detail_url(operation) + "?compact=1", headers=HTMX).content.decode()
        assert f'hx-get="{detail_url(operation)}?compact=1"' in body
        assert "Back to" not in body
