from __future__ import annotations

from django.test import TestCase
from django.urls import reverse

from encryption.models import Account, AuditEvent, Operation
from tests.builders import actor_for, make_account, make_cast, make_event, make_key, make_operation, make_vault

DISABLED_RESULT = {
    "readable": False,
    "causes": [
        {
            "code": "key_disabled",
            "summary": "Key kv-prod-eastus/cmk-prod is disabled",
            "detail": "The key version the account uses is disabled in the vault.",
            "who": "The owner of key vault kv-prod-eastus",
            "action": "Enable key cmk-prod in the vault: Restore access does it.",
        }
    ],
}


class HelpdeskTestCase(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.cast = make_cast()
        cls.key = make_key(make_vault("kv-prod-eastus"), "cmk-prod")
        cls.broken = make_account("face-broken-eastus", key=cls.key)
        cls.healthy = make_account("face-healthy-eastus", key=cls.key)
        cls.other = make_account("vision-westus")


class HelpdeskSearchTests(HelpdeskTestCase):
    def setUp(self):
        self.client.force_login(self.cast["helpdesk"])

    def test_it_finds_an_account_by_part_of_its_name(self):
        response = self.client.get(reverse("encryption:helpdesk"), {"q": "eastus"})
        assert [a.name for a in response.context["results"]] == ["face-broken-eastus", "face-healthy-eastus"]
        assert response.context.get("account") is None

    def test_it_opens_the_only_match_by_arm_id_or_endpoint(self):
        for text in (self.broken.arm_id, self.broken.endpoint, self.broken.name.upper()):
            response = self.client.get(reverse("encryption:helpdesk"), {"q": text})
            assert response.context["account"] == self.broken, text

    def test_it_says_when_nothing_matches(self):
        body = self.client.get(reverse("encryption:helpdesk"), {"q": "nope"}).content.decode()
        assert "No account matches" in body

    def test_it_shows_the_latest_diagnosis_in_plain_language(self):
        make_operation(self.broken, status="succeeded", result={"readable": True, "causes": []})
        make_operation(self.broken, status="succeeded", result=DISABLED_RESULT)
        body = self.client.get(reverse("encryption:helpdesk"), {"account": self.broken.pk}).content.decode()
        assert "Data is not readable." in body
        assert "Key kv-prod-eastus/cmk-prod is disabled" in body
        assert "Who to ask" in body and "The owner of key vault kv-prod-eastus" in body
        assert "What they must do" in body and "Restore access does it." in body

    def test_a_running_diagnosis_polls_and_a_finished_one_does_not(self):
        op = make_operation(self.broken, status="running")
        url = reverse("encryption:helpdesk-diagnosis", args=[self.broken.pk])
        fragment = self.client.get(url, headers={"HX-Request": "true"}).content.decode()
        assert 'id="diagnosis"' in fragment and "<html" not in fragment
        assert 'hx-trigger="every 2s"' in fragment and "Run diagnosis" not in fragment
        Operation.objects.filter(pk=op.pk).update(status="succeeded", result=DISABLED_RESULT)
        fragment = self.client.get(url, headers={"HX-Request": "true"}).content.decode()
        assert "every 2s" not in fragment and "is disabled" in fragment and "Run diagnosis" in fragment

    def test_it_shows_only_the_accounts_own_recent_events(self):
        admin = actor_for(self.cast["admin"])
        make_event(actor=admin, target=self.broken.arm_id, message="Revoke access requested", after={"secretish": "x"})
        make_event(actor=admin, target=self.other.arm_id, message="Something on another account")
        body = self.client.get(reverse("encryption:helpdesk"), {"account": self.broken.pk}).content.decode()
        assert "Revoke access requested" in body
        assert "Something on another account" not in body
        # What the event holds beyond its message stays with reviewers, and nothing links to the trail.
        assert "secretish" not in body and 'href="/audit/' not in body


class HelpdeskDiagnoseTests(HelpdeskTestCase):
    def setUp(self):
        self.client.force_login(self.cast["helpdesk"])

    def test_run_diagnosis_asks_a_worker_and_polls(self):
        url = reverse("encryption:helpdesk-diagnose", args=[self.broken.pk])
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            response = self.client.post(url, headers={"HX-Request": "true"})
        op = Operation.objects.get(account=self.broken, kind=Operation.Kind.DIAGNOSE)
        assert op.status == "queued" and op.actor == self.cast["helpdesk"].username
        assert len(callbacks) == 1  # the publish to the broker, once the row is committed
        body = response.content.decode()
        assert 'id="diagnosis"' in body and 'hx-trigger="every 2s"' in body
        assert AuditEvent.objects.filter(action="operation.requested", operation=op).exists()

    def test_without_javascript_it_redirects_back_to_the_account(self):
        with self.captureOnCommitCallbacks(execute=False):
            response = self.client.post(reverse("encryption:helpdesk-diagnose", args=[self.broken.pk]))
        assert response.status_code == 302
        assert response["Location"] == f"{reverse('encryption:helpdesk')}?account={self.broken.pk}"

    def test_diagnose_only_takes_posts(self):
        assert self.client.get(reverse("encryption:helpdesk-diagnose", args=[self.broken.pk])).status_code == 405


class HelpdeskPermissionTests(HelpdeskTestCase):
    def test_every_role_that_may_diagnose_can_open_it(self):
        for who in ("admin", "reviewer", "helpdesk"):
            self.client.force_login(self.cast[who])
            assert self.client.get(reverse("encryption:helpdesk"), {"q": "face"}).status_code == 200, who

    def test_outsiders_cannot_search_nor_diagnose(self):
        self.client.force_login(self.cast["outsider"])
        assert self.client.get(reverse("encryption:helpdesk")).status_code == 403
        assert self.client.post(reverse("encryption:helpdesk-diagnose", args=[self.broken.pk])).status_code == 403
        assert self.client.get(reverse("encryption:helpdesk-diagnosis", args=[self.broken.pk])).status_code == 403
        assert not Operation.objects.exists()

    def test_help_desk_cannot_open_audit_export_or_keys(self):
        self.client.force_login(self.cast["helpdesk"])
        for name in ("audit-list", "audit-export", "audit-verify", "key-list"):
            assert self.client.get(reverse(f"encryption:{name}")).status_code == 403, name


class HelpdeskAgainstTheEmulatorTests(TestCase):
    """The seeded face-broken-eastus, synced into the mirror and diagnosed by the real engine."""

    databases = {"default", "emulator"}

    def test_a_help_desk_user_sees_face_broken_eastus_diagnosed_as_key_disabled_with_the_key_named(self):
        from emulator.seed import seed
        from encryption import operations, sync

        seed()
        sync.sync_estate()
        helpdesk = make_cast()["helpdesk"]
        account = Account.objects.get(name="face-broken-eastus")
        self.client.force_login(helpdesk)
        with self.captureOnCommitCallbacks(execute=False):
            self.client.post(reverse("encryption:helpdesk-diagnose", args=[account.pk]))
        op = Operation.objects.get(account=account, kind=Operation.Kind.DIAGNOSE)
        operations.run_operation(op.pk)  # what the worker does with the task
        body = self.client.get(reverse("encryption:helpdesk"), {"q": "face-broken-eastus"}).content.decode()
        assert "Data is not readable." in body
        assert "is disabled" in body and "face-cmk-broken" in body
        assert 'data-code="key_disabled"' in body
