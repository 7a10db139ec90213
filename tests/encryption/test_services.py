from __future__ import annotations

import time
from datetime import timedelta
from unittest import mock

from django.contrib.auth.models import User
from django.db import DatabaseError
from django.test import TestCase, override_settings
from django.urls import reverse
from django.utils import timezone

from encryption import services
from encryption.models import AuditEvent, Operation
from encryption.services import InvalidRequest, NotAllowed, NotRecorded, OperationConflict
from tests.audit_helpers import failing_audit_inserts
from tests.encryption.engine_helpers import SUB, broker, broker_ready, cli_actor, make_account, make_cast

KEY_URI = "https://kv-test.vault.azure.net/keys/cmk"


class RequestChangeTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.cast = make_cast()
        cls.account = make_account("face-svc")
        cls.cmk_account = make_account("face-svc-cmk", cmk=True)

    def setUp(self):
        broker_ready()

    def ask(self, who="admin", account=None, kind="enable_cmk", params=None):
        return services.request_change(
            actor=cli_actor(self.cast[who]),
            account=account or self.account,
            kind=kind,
            params={"key_uri": KEY_URI} if params is None else params,
        )

    def test_it_records_the_operation_and_its_requested_event_then_enqueues_on_commit(self):
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            op = self.ask()
        assert op.status == "queued" and op.kind == "enable_cmk"
        assert op.actor == "alice-admin" and op.actor_role == "encryption-admins" and op.source == "cli"
        assert "@" in op.source_detail  # OS user and host of the terminal
        assert op.params == {"key_uri": KEY_URI, "vault_subscription_id": SUB}
        assert op.state_before["key_source"] == "Microsoft.CognitiveServices"
        event = AuditEvent.objects.get(operation=op)
        assert (event.action, event.outcome, event.target) == ("operation.requested", "requested", self.account.arm_id)
        assert event.key_id == KEY_URI
        # Nothing is sent before the transaction commits: a worker must never look for a row not yet there.
        assert len(callbacks) == 1 and op.enqueued_at is None
        with mock.patch("encryption.tasks.run_operation.delay") as delay:
            callbacks[0]()
        delay.assert_called_once_with(op.pk)
        op.refresh_from_db()
        assert op.enqueued_at is not None

    def test_it_publishes_to_the_real_broker(self):
        with self.captureOnCommitCallbacks(execute=True):
            op = self.ask()
        assert services.is_published(op)

    def test_it_pins_nothing_but_keeps_a_versioned_uri(self):
        op = self.ask(params={"key_uri": "https://KV-TEST.vault.azure.net/keys/cmk/" + "ab" * 16 + "/"})
        assert op.params["key_uri"] == "https://kv-test.vault.azure.net/keys/cmk/" + "ab" * 16

    def test_it_refuses_a_role_that_may_not_change(self):
        for who in ("reviewer", "helpdesk", "outsider"):
            with self.assertRaises(NotAllowed):
                self.ask(who)
        assert not Operation.objects.exists()
        refusals = AuditEvent.objects.filter(action="access.refused", outcome="refused")
        assert refusals.count() == 3
        assert "change_encryption" in refusals.first().message

    def test_it_refuses_a_change_without_a_named_user(self):
        with self.assertRaises(NotAllowed):
            services.request_change(actor=services.Actor.system(), account=self.account, kind="enable_cmk", params={})
        assert not Operation.objects.exists()

    def test_it_refuses_bad_input_and_records_why(self):
        cases = [
            {"key_uri": "https://evil.example/keys/cmk"},
            {"key_uri": "http://kv-test.vault.azure.net/keys/cmk"},
            {"key_uri": "https://kv-test.vault.azure.net/secrets/cmk"},
            {"key_uri": 42},
            {"key_uri": ""},
            {"key_uri": KEY_URI, "vault_subscription_id": "not-a-guid"},
            {"key_uri": KEY_URI, "vault_subscription_id": "99999999-9999-4999-8999-999999999999"},
            {"key_uri": KEY_URI, "extra": 1},
        ]
        for params in cases:
            with self.subTest(params=params), self.assertRaises(InvalidRequest):
                self.ask(params=params)
        assert not Operation.objects.exists()
        assert AuditEvent.objects.filter(action="operation.requested", outcome="refused").count() == len(cases)

    def test_it_validates_each_kind(self):
        bad = [
            ("update_version", self.cmk_account, {"version": "xyz"}),
            ("update_version", self.cmk_account, {"version": 7}),
            ("update_version", self.account, {"version": "a" * 32}),  # no key to update
            ("revoke_access", self.cmk_account, {"method": "delete_everything"}),
            ("revoke_access", self.account, {}),
            ("restore_access", self.account, {}),
            ("disable_cmk", self.account, {}),
            ("change_key", self.account, {"key_uri": KEY_URI}),
            ("rotate_key", self.cmk_account, {"update_accounts": "yes"}),
            ("sync", self.account, {}),  # a job, not a change
        ]
        for kind, account, params in bad:
            with self.subTest(kind=kind, params=params), self.assertRaises(InvalidRequest):
                self.ask(account=account, kind=kind, params=params)
        op = self.ask(account=self.cmk_account, kind="update_version", params={"version": "AB" * 16})
        assert op.params == {"version": "ab" * 16}

    def test_it_fills_rotation_from_the_accounts_key(self):
        op = self.ask(account=self.cmk_account, kind="rotate_key", params={"update_accounts": True})
        assert op.params == {
            "vault_uri": "https://kv-test.vault.azure.net/",
            "key_name": "cmk",
            "update_accounts": True,
        }
        rotation = services.request_change(
            actor=cli_actor(self.cast["admin"]),
            account=None,
            kind="rotate_key",
            params={"vault_uri": "https://kv-test.vault.azure.net", "key_name": "other"},
        )
        assert rotation.account is None and rotation.params["update_accounts"] is False

    def test_it_refuses_a_second_change_while_one_is_active(self):
        first = self.ask()
        with self.assertRaises(OperationConflict) as refused:
            self.ask(params={"key_uri": KEY_URI + "2"})
        assert refused.exception.operation == first
        assert f"#{first.pk}" in str(refused.exception) and "alice-admin" in str(refused.exception)
        assert Operation.objects.count() == 1
        event = AuditEvent.objects.get(outcome="refused")
        assert event.operation == first  # the refusal names the operation in the way
        # Jobs may run beside a change; only changes are one at a time.
        services.request_job(actor=cli_actor(self.cast["admin"]), account=self.account, kind="refresh", params={})
        # Once the first has ended, the account is free again.
        Operation.objects.filter(pk=first.pk).update(status="succeeded")
        self.ask(params={"key_uri": KEY_URI + "2"})

    def test_the_database_refuses_a_change_that_raced_past_the_check(self):
        first = self.ask()
        # Two requests both passed the check before either committed: the constraint lets one in.
        real_check = services._refuse_if_busy
        calls = iter([None])

        def check_once(account):
            if next(calls, "again") is None:
                return None
            return real_check(account)

        with (
            mock.patch.object(services, "_refuse_if_busy", side_effect=check_once),
            self.assertRaises(OperationConflict) as refused,
        ):
            self.ask(params={"key_uri": KEY_URI + "2"})
        assert refused.exception.operation == first
        assert Operation.objects.count() == 1

    def test_a_request_the_database_refuses_is_not_recorded_and_says_so(self):
        # SQLite's trigger raises an IntegrityError, PostgreSQL's a DatabaseError: neither is a race.
        events = AuditEvent.objects.count()
        with failing_audit_inserts(), self.assertRaises(NotRecorded) as failed:
            self.ask()
        assert isinstance(failed.exception.__cause__, DatabaseError)  # chained, and logged: not hidden
        assert "nothing was changed" in str(failed.exception)
        assert not Operation.objects.exists() and AuditEvent.objects.count() == events


class RequestJobTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.cast = make_cast()
        cls.account = make_account("face-job")

    def job(self, who, kind, params=None, account="default"):
        return services.request_job(
            actor=cli_actor(self.cast[who]) if who else services.Actor.system(),
            account=self.account if account == "default" else account,
            kind=kind,
            params=params or {},
        )

    def test_help_desk_may_diagnose_and_refresh(self):
        assert self.job("helpdesk", "diagnose").status == "queued"
        assert self.job("helpdesk", "refresh").status == "queued"

    def test_it_refuses_users_without_a_role(self):
        with self.assertRaises(NotAllowed):
            self.job("outsider", "diagnose")
        assert AuditEvent.objects.filter(action="access.refused").count() == 1

    def test_preflight_needs_a_valid_key(self):
        with self.assertRaises(InvalidRequest):
            self.job("helpdesk", "preflight", {"key_uri": "https://127.0.0.1/keys/x"})
        op = self.job("admin", "preflight", {"key_uri": KEY_URI})
        assert op.params["key_uri"] == KEY_URI

    def test_the_system_syncs_and_periodic_syncs_do_not_pile_up(self):
        first = services.request_periodic_sync()
        assert first is not None and first.actor == "system" and first.source == "system"
        assert services.request_periodic_sync() is None
        assert AuditEvent.objects.filter(operation=first, action="operation.requested").exists()

    def test_a_change_kind_is_not_a_job(self):
        with self.assertRaises(InvalidRequest):
            self.job("admin", "enable_cmk", {"key_uri": KEY_URI})


class BrokerDownTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.cast = make_cast()
        cls.account = make_account("face-broker")

    def test_a_request_succeeds_and_stays_queued_when_the_broker_is_down(self):
        started = time.monotonic()
        with broker("redis://127.0.0.1:1/0"), self.captureOnCommitCallbacks(execute=True):
            op = services.request_change(
                actor=cli_actor(self.cast["admin"]),
                account=self.account,
                kind="enable_cmk",
                params={"key_uri": KEY_URI},
            )
        # Publishing retries are bounded (CELERY_TASK_PUBLISH_RETRY_POLICY): the request does not hang.
        assert time.monotonic() - started < 10
        op.refresh_from_db()
        assert op.status == "queued" and op.enqueued_at is None
        assert not services.is_published(op)
        assert AuditEvent.objects.filter(operation=op, action="operation.requested").exists()
        # The broker is back: the sweeper sends what it lost.
        broker_ready()
        Operation.objects.filter(pk=op.pk).update(created_at=timezone.now() - timedelta(minutes=1))
        report = services.sweep_operations()
        assert report.resent == [op.pk]
        assert services.is_published(op)


@override_settings(OPERATION_MAX_DELIVERIES=3, OPERATION_REQUEUE_SECONDS=60)
class SweepTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.cast = make_cast()

    def setUp(self):
        broker_ready()

    def make(self, name, **fields):
        account = make_account(name)
        op = Operation.objects.create(kind="enable_cmk", account=account, actor="alice-admin", **fields)
        return op

    def test_it_resends_queued_rows_the_broker_lost_and_leaves_fresh_ones(self):
        old = timezone.now() - timedelta(minutes=5)
        never_sent = self.make("a", created_at=old)
        sent_long_ago = self.make("b", created_at=old, enqueued_at=old)
        just_sent = self.make("c", created_at=old, enqueued_at=timezone.now())
        just_created = self.make("d")  # its web process may still be publishing
        report = services.sweep_operations()
        assert sorted(report.resent) == sorted([never_sent.pk, sent_long_ago.pk])
        assert just_sent.pk not in report.resent and just_created.pk not in report.resent

    def test_it_resumes_running_rows_whose_lease_expired_and_fails_those_past_the_cap(self):
        past = timezone.now() - timedelta(seconds=1)
        resumable = self.make("e", status="running", lease_expires_at=past, deliveries=1)
        exhausted = self.make("f", status="running", lease_expires_at=past, deliveries=3)
        alive = self.make("g", status="running", lease_expires_at=timezone.now() + timedelta(minutes=5), deliveries=1)
        report = services.sweep_operations()
        assert report.resent == [resumable.pk] and report.failed == [exhausted.pk]
        exhausted.refresh_from_db()
        assert exhausted.status == "failed" and "stopped 3 times" in exhausted.reason
        assert exhausted.state_after is not None
        event = AuditEvent.objects.get(operation=exhausted, action="operation.failed")
        assert event.outcome == "failed"
        alive.refresh_from_db()
        assert alive.status == "running"


class OperationAdminTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.root = User.objects.create_superuser("root-admin", password="admin-pages-password-77")
        cls.op = Operation.objects.create(kind="enable_cmk", account=make_account("face-admin"), actor="alice-admin")
        cls.op.steps.create(name="preflight", label="Check every prerequisite", status="succeeded")

    def setUp(self):
        self.client.force_login(self.root)

    def test_operations_and_their_steps_are_shown_read_only(self):
        page = self.client.get(reverse("admin:encryption_operation_change", args=[self.op.pk]))
        assert page.status_code == 200
        assert b"Check every prerequisite" in page.content
        assert b'name="_save"' not in page.content  # nothing to save: even a superuser cannot edit the record
        assert self.client.get(reverse("admin:encryption_operation_add")).status_code == 403
        assert self.client.post(reverse("admin:encryption_operation_delete", args=[self.op.pk])).status_code == 403
        listing = self.client.get(reverse("admin:encryption_operation_changelist"))
        assert listing.status_code == 200 and b"face-admin" in listing.content
