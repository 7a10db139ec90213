from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, connection, transaction
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory, TestCase, override_settings
from django.urls import reverse
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.extra.django import TestCase as HypothesisTestCase

from encryption import audit, audit_chain, signing
from encryption.actors import Actor, acting_as
from encryption.http import require_perm
from encryption.models import AuditCheckpoint, AuditEvent, Subscription
from encryption.roles import ADMINS, HELP_DESK, REVIEWERS
from tests.audit_helpers import failing_audit_inserts, privileged_execute, reset_audit_tables
from tests.harness import ReloadingTransactionTestCase, worker_environment

BASE_DIR = Path(settings.BASE_DIR)
JWT = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJhdWQiOiJodHRwczovL3ZhdWx0LmF6dXJlLm5ldCJ9.c2lnbmF0dXJlLXBhcnQtMTIzNDU2"
PEM = (
    "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIBIGT4q4jS0cY8kq0i3p0d8lC9rV+f1mU6bH6c0Y1o2Q\n"
    "-----END PRIVATE KEY-----"
)
BLOB = "q3Vb7Zk9XyT2mN8pL4rW6sJ1hG5fD0aC" * 4  # 128 chars of base64: a wrapped key or an RSA modulus
ARM_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-prod/"
    "providers/Microsoft.CognitiveServices/accounts/face-prod-eastus"
)
KEY_ID = "https://kv-shared-eastus.vault.azure.net/keys/cmk/0123456789abcdef0123456789abcdef"


def system() -> Actor:
    return Actor.system(detail="test")


def record(n: int = 1, **fields: object) -> list[AuditEvent]:
    values: dict[str, object] = {"action": "operation.step", "outcome": "succeeded", "message": "step"}
    values.update(fields)
    return [audit.record(actor=system(), **values) for _ in range(n)]  # type: ignore[arg-type]


def stored_text(event: AuditEvent) -> str:
    """Everything stored for an event, as it reads back from the database."""
    row = AuditEvent.objects.filter(pk=event.pk).values().get()
    return json.dumps(row, default=str)


class RecordTests(TestCase):
    def test_it_chains_events_in_seq_order(self) -> None:
        events = record(3)
        assert [e.seq for e in events] == [1, 2, 3]
        assert events[0].prev_hash == audit.GENESIS_HASH
        assert events[1].prev_hash == events[0].hash
        assert events[2].prev_hash == events[1].hash
        # The stored hash is the hash of the content as it reads back from the database.
        for event in events:
            row = AuditEvent.objects.filter(pk=event.pk).values_list(*audit.HASHED_FIELDS).get()
            assert audit.event_hash(row) == event.hash

    def test_it_records_the_actor_and_fields(self) -> None:
        actor = Actor(user=None, username="alice", role=ADMINS, source="web", ip="10.1.2.3")
        event = audit.record(
            actor=actor,
            action="operation.requested",
            outcome="requested",
            target=ARM_ID,
            key_id=KEY_ID,
            before={"keySource": "Microsoft.CognitiveServices"},
            after={"keySource": "Microsoft.KeyVault", "keyVersion": "0123456789abcdef0123456789abcdef"},
            request_ids=["a1b2c3d4-0000-1111-2222-333344445555"],
            message="Enable CMK requested.",
        )
        event.refresh_from_db()
        assert (event.actor, event.actor_role, event.source, event.source_ip) == ("alice", ADMINS, "web", "10.1.2.3")
        assert event.target == ARM_ID  # ARM ids and key ids are not mistaken for secrets
        assert event.key_id == KEY_ID
        assert event.after == {"keySource": "Microsoft.KeyVault", "keyVersion": "0123456789abcdef0123456789abcdef"}
        assert event.request_ids == ["a1b2c3d4-0000-1111-2222-333344445555"]

    def test_it_refuses_an_unknown_outcome(self) -> None:
        with pytest.raises(ValueError):
            audit.record(actor=system(), action="x.y", outcome="maybe")
        assert not AuditEvent.objects.exists()

    def test_it_commits_with_the_callers_transaction_or_not_at_all(self) -> None:
        with pytest.raises(RuntimeError), transaction.atomic():
            Subscription.objects.create(subscription_id="s1", display_name="one", tenant_id="t1")
            record()
            raise RuntimeError("the change failed after its audit event was written")
        # The change and its audit event went together: neither was kept, and the chain has no hole.
        assert not Subscription.objects.exists()
        assert not AuditEvent.objects.exists()
        assert record()[0].seq == 1

    def test_it_rolls_the_change_back_when_its_audit_event_cannot_be_written(self) -> None:
        with failing_audit_inserts(), pytest.raises(DatabaseError), transaction.atomic():
            Subscription.objects.create(subscription_id="s1", display_name="one", tenant_id="t1")
            record(action="sync.external_change")
        assert not Subscription.objects.exists()
        assert not AuditEvent.objects.exists()

    def test_it_normalises_json_so_the_hash_survives_the_database(self) -> None:
        record(before={"n": 1.0, "x": 2.5, "big": 10.0**17, "nan": float("nan"), 3: ("a", "b")}, message="nul\x00byte")
        event = AuditEvent.objects.get()
        assert event.before == {"n": 1, "x": 2.5, "big": 10**17, "nan": "nan", "3": ["a", "b"]}
        assert event.message == "nulbyte"
        assert audit.verify_chain().ok

    def test_it_cuts_overlong_fields_to_their_column(self) -> None:
        record(target="t" * 1000)
        assert len(AuditEvent.objects.get().target) == 400
        assert audit.verify_chain().ok


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def _finite(value: object) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


class RoundTripPropertyTests(HypothesisTestCase):
    @given(
        before=json_values,
        after=json_values,
        message=st.text(),
        target=st.text(max_size=500),
        request_ids=st.lists(st.text(max_size=40) | st.uuids().map(str), max_size=3),
    )
    @hypothesis_settings(max_examples=60, deadline=None)
    def test_whatever_is_recorded_verifies_after_reading_it_back(
        self, before, after, message, target, request_ids
    ) -> None:
        # Any JSON (floats, NaN, NUL, odd Unicode) is stored so that it hashes the same from the database:
        # record() hashes Python values, verify_chain() re-reads raw database text.
        audit.record(
            actor=system(),
            action="x.y",
            outcome="info",
            before=before,
            after=after,
            message=message,
            target=target,
            request_ids=request_ids,
        )
        report = audit.verify_chain()
        assert report.ok, report.reason

    @given(
        seq=st.integers(min_value=1, max_value=2**62),
        created_at=st.datetimes(datetime(1970, 1, 1), datetime(9999, 1, 1), timezones=st.just(UTC)),
        texts=st.lists(st.text(), min_size=9, max_size=9),
        operation_id=st.none() | st.integers(min_value=1, max_value=2**62),
        before=json_values.filter(_finite),
        after=json_values.filter(_finite),
        request_ids=st.lists(st.text()),
    )
    def test_the_canonical_form_is_exactly_sorted_compact_json(
        self, seq, created_at, texts, operation_id, before, after, request_ids
    ) -> None:
        actor, role, source, ip, detail, action, target, key_id, message = texts
        row = (seq, created_at, actor, role, source, ip, detail, action, target, key_id, operation_id, texts[0],
               before, after, request_ids, message, "ab" * 32)  # fmt: skip
        content = dict(zip(audit.HASHED_FIELDS, row, strict=True))
        content["operation"] = content.pop("operation_id")
        content["created_at"] = created_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        reference = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
        assert audit_chain.canonical_text(row) == reference


class ScrubberTests(TestCase):
    def test_it_keeps_tokens_and_key_material_out_of_the_trail(self) -> None:
        with self.assertLogs("encryption.audit", "WARNING") as logs:
            event = audit.record(
                actor=system(),
                action="operation.step",
                outcome="failed",
                before={"headers": {"Authorization": f"Bearer {JWT}"}, "password": "hunter2-hunter2"},
                after={
                    "jwk": {"kty": "RSA", "n": BLOB, "e": "AQAB", "d": BLOB[::-1]},
                    "pem": PEM,
                    "nested": [f"x {JWT}"],
                },
                message=f"Azure said 401 to Bearer {JWT}; wrapped key {BLOB}; {PEM}",
            )
        text = stored_text(event)
        # The log names where a secret was caught, never the secret.
        assert any("from the before of a 'operation.step' event" in line for line in logs.output)
        assert not any(JWT in line or BLOB in line for line in logs.output)
        for secret in (JWT, BLOB, BLOB[::-1], "hunter2", "MC4CAQAwBQYDK2Vw", "BEGIN PRIVATE KEY"):
            assert secret not in text
        assert "[redacted" in text
        # What is not a secret stays readable.
        event.refresh_from_db()
        assert isinstance(event.after, dict) and event.after["jwk"]["kty"] == "RSA"
        assert event.message.startswith("Azure said 401 to Bearer [redacted token]")
        assert audit.verify_chain().ok  # the chain covers what was stored, after scrubbing

    def test_it_keeps_ids_hashes_and_paths(self) -> None:
        long_rg = ARM_ID.replace("rg-prod", "rg-" + "Prod2024" * 12)
        message = f"{ARM_ID} {KEY_ID} {audit.GENESIS_HASH} {long_rg} a1b2c3d4-0000-1111-2222-333344445555"
        event = record(message=message, after={"arm_id": long_rg, "kid": KEY_ID})[0]
        event.refresh_from_db()
        assert event.message == message
        assert event.after == {"arm_id": long_rg, "kid": KEY_ID}

    def test_it_keeps_ordinary_azure_properties(self) -> None:
        state = {
            "networkAcls": {"bypass": "AzureServices", "defaultAction": "Deny"},
            "keySource": "Microsoft.KeyVault",
            "keyVaultUri": "https://kv1.vault.azure.net/",
            "identity": {"principalId": "11111111-2222-3333-4444-555555555555", "type": "SystemAssigned"},
            "keyOps": ["wrapKey", "unwrapKey"],
            "kty": "RSA-HSM",
            "e": "AQAB",
        }
        event = record(after=state)[0]
        event.refresh_from_db()
        assert event.after == state

    def test_it_never_stores_the_actor_detail_token(self) -> None:
        actor = Actor(user=None, username="ops", role="", source="cli", detail=f"Bearer {JWT}")
        event = audit.record(actor=actor, action="operation.requested", outcome="requested")
        assert JWT not in stored_text(event)


class CheckpointTests(TestCase):
    @override_settings(AUDIT_CHECKPOINT_EVERY=5)
    def test_it_signs_a_checkpoint_every_n_events(self) -> None:
        record(12)
        checkpoints = list(AuditCheckpoint.objects.order_by("seq"))
        assert [c.seq for c in checkpoints] == [5, 10]
        for checkpoint in checkpoints:
            assert checkpoint.event_hash == AuditEvent.objects.get(seq=checkpoint.seq).hash
            payload = f"keyward-audit-checkpoint|{checkpoint.seq}|{checkpoint.event_hash}".encode()
            assert audit.verify_signature(audit.public_key_pem(), payload, checkpoint.signature)
            assert checkpoint.public_key_fingerprint == audit.public_key_fingerprint()
        report = audit.verify_chain()
        assert report.ok and report.checkpoint_seq == 10

    def test_it_writes_a_checkpoint_on_demand_once(self) -> None:
        assert audit.write_checkpoint() is None  # nothing to sign yet
        record(3)
        first = audit.write_checkpoint()
        assert first is not None and first.seq == 3
        assert audit.write_checkpoint() == first


class SigningTests(TestCase):
    def test_it_generates_the_key_file_private_to_its_owner(self) -> None:
        path = Path(os.environ["KEYWARD_VAR_DIR"]) / f"signing-{self.id()}.pem"
        with override_settings(AUDIT_SIGNING_KEY_FILE=path):
            signature = audit.sign(b"manifest")
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
            public = audit.public_key_pem()
        assert "PRIVATE" not in public
        assert audit.verify_signature(public, b"manifest", signature)
        assert not audit.verify_signature(public, b"manifest!", signature)
        assert not audit.verify_signature(public, b"manifest", "not base64!")
        # Another key's public half does not verify it.
        assert not audit.verify_signature(audit.public_key_pem(), b"manifest", signature)

    def test_it_refuses_a_key_file_that_is_not_ed25519(self) -> None:
        path = Path(os.environ["KEYWARD_VAR_DIR"]) / f"garbage-{self.id()}.pem"
        path.write_text("not a key")
        with override_settings(AUDIT_SIGNING_KEY_FILE=path), pytest.raises(Exception, match="not a readable Ed25519"):
            signing.sign(b"x")


class RefusalTests(TestCase):
    def test_a_403_is_recorded_with_who_and_what(self) -> None:
        user = User.objects.create_user("helen", password="x" * 16)
        user.groups.add(Group.objects.get(name=HELP_DESK))

        @require_perm("encryption.view_audit")
        def view(request: HttpRequest) -> HttpResponse:
            return HttpResponse("secret")

        request = RequestFactory().get("/audit/?token=abc", REMOTE_ADDR="10.9.8.7")
        request.user = user
        with pytest.raises(PermissionDenied):
            view(request)
        event = AuditEvent.objects.get(action="access.refused")
        assert (event.actor, event.actor_role, event.source_ip, event.outcome) == (
            "helen",
            HELP_DESK,
            "10.9.8.7",
            "refused",
        )
        assert event.target == "/audit/"
        assert "encryption.view_audit" in event.message
        assert "token=abc" not in stored_text(event)  # the query string is never recorded


class SignInEventTests(TestCase):
    password = "correct horse battery staple"

    def setUp(self) -> None:
        self.user = User.objects.create_user("rita", password=self.password)
        self.user.groups.add(Group.objects.get(name=REVIEWERS))

    def test_it_records_a_sign_in(self) -> None:
        response = self.client.post(reverse("login"), {"username": "rita", "password": self.password})
        assert response.status_code == 302
        event = AuditEvent.objects.get(action="auth.login")
        assert (event.actor, event.actor_role, event.source, event.outcome) == ("rita", REVIEWERS, "web", "succeeded")
        assert event.source_ip == "127.0.0.1"

    def test_it_records_a_failed_sign_in_without_the_password(self) -> None:
        response = self.client.post(reverse("login"), {"username": "rita", "password": "wrong-password-123"})
        assert response.status_code == 200
        event = AuditEvent.objects.get(action="auth.login_failed")
        assert (event.actor, event.outcome) == ("rita", "failed")
        assert "wrong-password-123" not in stored_text(event)

    def test_it_records_a_sign_out(self) -> None:
        self.client.force_login(self.user)
        self.client.post(reverse("logout"))
        event = AuditEvent.objects.get(action="auth.logout")
        assert event.actor == "rita"


class RoleChangeEventTests(TestCase):
    def test_it_records_groups_before_and_after(self) -> None:
        user = User.objects.create_user("hank")
        user.groups.add(Group.objects.get(name=HELP_DESK))
        with acting_as(Actor(user=None, username="boss", role=ADMINS, source="web", ip="10.0.0.1")):
            user.groups.add(Group.objects.get(name=ADMINS))
        events = list(AuditEvent.objects.filter(action="role.changed").order_by("seq"))
        assert [(e.before, e.after) for e in events] == [
            ({"groups": []}, {"groups": [HELP_DESK]}),
            ({"groups": [HELP_DESK]}, {"groups": [ADMINS, HELP_DESK]}),
        ]
        assert events[0].actor == "system"  # no request, no command: the system did it
        assert events[1].actor == "boss"
        assert events[1].target == "user:hank"

    def test_it_records_changes_made_from_the_group_side(self) -> None:
        users = [User.objects.create_user(f"u{i}") for i in range(2)]
        group = Group.objects.get(name=REVIEWERS)
        group.user_set.add(*users)
        group.user_set.clear()
        events = AuditEvent.objects.filter(action="role.changed").order_by("seq")
        assert [(e.target, e.after) for e in events] == [
            ("user:u0", {"groups": [REVIEWERS]}),
            ("user:u1", {"groups": [REVIEWERS]}),
            ("user:u0", {"groups": []}),
            ("user:u1", {"groups": []}),
        ]

    def test_it_names_the_admin_who_changed_a_role_in_the_django_admin(self) -> None:
        boss = User.objects.create_superuser("boss", password="p" * 16)
        user = User.objects.create_user("hank")
        self.client.force_login(boss)
        url = reverse("admin:auth_user_change", args=[user.pk])
        form = {
            "username": "hank",
            "groups": [Group.objects.get(name=HELP_DESK).pk],
            "is_active": "on",
            "date_joined_0": "2026-01-01",
            "date_joined_1": "00:00:00",
            "initial-date_joined_0": "2026-01-01",
            "initial-date_joined_1": "00:00:00",
        }
        response = self.client.post(url, form)
        assert response.status_code == 302, response.content[:2000]
        event = AuditEvent.objects.get(action="role.changed")
        assert (event.actor, event.target, event.after) == ("boss", "user:hank", {"groups": [HELP_DESK]})


class AdminTests(TestCase):
    def setUp(self) -> None:
        self.event = record()[0]
        audit.write_checkpoint()
        self.client.force_login(User.objects.create_superuser("root", password="p" * 16))

    def test_superusers_can_read_but_not_change_or_delete_events(self) -> None:
        count = AuditEvent.objects.count()
        assert self.client.get(reverse("admin:encryption_auditevent_changelist")).status_code == 200
        change_url = reverse("admin:encryption_auditevent_change", args=[self.event.pk])
        page = self.client.get(change_url)
        assert page.status_code == 200
        assert b'name="_save"' not in page.content  # a read-only view, no form to submit
        assert self.client.post(change_url, {"message": "rewritten"}).status_code == 403
        assert self.client.get(reverse("admin:encryption_auditevent_add")).status_code == 403
        delete_url = reverse("admin:encryption_auditevent_delete", args=[self.event.pk])
        assert self.client.post(delete_url, {"post": "yes"}).status_code == 403
        changelist = reverse("admin:encryption_auditevent_changelist")
        bulk = {"action": "delete_selected", "_selected_action": [self.event.pk], "post": "yes"}
        self.client.post(changelist, bulk)
        self.event.refresh_from_db()
        assert self.event.message == "step"
        assert AuditEvent.objects.count() == count

    def test_checkpoints_are_read_only_too(self) -> None:
        checkpoint = AuditCheckpoint.objects.get()
        change_url = reverse("admin:encryption_auditcheckpoint_change", args=[checkpoint.pk])
        assert self.client.get(change_url).status_code == 200
        assert self.client.post(change_url, {"seq": 99}).status_code == 403
        delete_url = reverse("admin:encryption_auditcheckpoint_delete", args=[checkpoint.pk])
        assert self.client.post(delete_url, {"post": "yes"}).status_code == 403
        assert AuditCheckpoint.objects.get().seq == 1


# Tampering: real rows changed behind the application's back. TransactionTestCase because on PostgreSQL
# the tampering goes through a privileged connection, which sees only committed rows.


class VerifyChainTests(ReloadingTransactionTestCase):
    def test_an_intact_chain_verifies(self) -> None:
        record(25)
        report = audit.verify_chain(batch_size=7)  # several keyset batches, one partial
        assert report.ok
        assert (report.count, report.head_seq, report.first_bad_seq) == (25, 25, None)
        assert report.head_hash == AuditEvent.objects.get(seq=25).hash

    def test_an_empty_trail_verifies(self) -> None:
        report = audit.verify_chain()
        assert report.ok and report.count == 0

    def test_it_detects_an_edited_event(self) -> None:
        record(10)
        privileged_execute("UPDATE encryption_auditevent SET message = %s WHERE seq = 4", ["nothing happened"])
        threads = threading.active_count()
        report = audit.verify_chain(batch_size=3)
        # Stopping early also stops the thread that reads the next batch ahead (PostgreSQL).
        assert threading.active_count() == threads
        assert not report.ok
        assert report.first_bad_seq == 4
        assert "edited" in report.reason
        assert report.count == 3  # events before the bad one were checked and are fine

    def test_it_names_a_forged_prev_hash_whatever_it_holds(self) -> None:
        # The batch hasher quotes prev_hash plainly (it must be hex to chain); anything else is still named.
        for forged in ['"}, "seq": 1, "x": "', "é" * 64, "\\u0041" + "0" * 58]:
            with self.subTest(forged=forged):
                reset_audit_tables()
                record(6)
                privileged_execute("UPDATE encryption_auditevent SET prev_hash = %s WHERE seq = 4", [forged])
                report = audit.verify_chain(batch_size=4)
                assert (report.ok, report.first_bad_seq, report.count) == (False, 4, 3)

    def test_it_detects_an_edit_whose_hash_was_recomputed(self) -> None:
        record(10)
        _rewrite(4, message="nothing happened")
        report = audit.verify_chain()
        # Event 4 is self-consistent now, but event 5 still points at the original.
        assert (report.ok, report.first_bad_seq) == (False, 5)
        assert "does not chain to event #4" in report.reason

    def test_it_detects_a_deleted_event(self) -> None:
        record(10)
        privileged_execute("DELETE FROM encryption_auditevent WHERE seq = 6")
        report = audit.verify_chain()
        assert (report.ok, report.first_bad_seq) == (False, 6)
        assert "#6 is missing (deleted)" in report.reason

    def test_it_detects_deleted_first_events(self) -> None:
        record(5)
        privileged_execute("DELETE FROM encryption_auditevent WHERE seq <= 2")
        report = audit.verify_chain()
        assert (report.ok, report.first_bad_seq) == (False, 1)
        assert "#1 to #2 is missing" in report.reason

    def test_it_detects_an_event_inserted_out_of_order(self) -> None:
        events = record(10)
        # A forged event with a valid hash of its own, chained to event 3 although it comes after event 10.
        _insert_forged(seq=11, prev_hash=events[2].hash)
        report = audit.verify_chain()
        assert (report.ok, report.first_bad_seq) == (False, 11)
        assert "inserted out of order" in report.reason

    def test_it_detects_an_event_inserted_before_the_first(self) -> None:
        record(3)
        _insert_forged(seq=0, prev_hash=audit.GENESIS_HASH)
        report = audit.verify_chain()
        assert (report.ok, report.first_bad_seq) == (False, 0)

    @override_settings(AUDIT_CHECKPOINT_EVERY=5)
    def test_it_detects_a_trail_cut_at_its_end_through_the_checkpoint(self) -> None:
        record(12)
        # Cutting events 8-12 leaves a perfectly chained trail of 7 events...
        privileged_execute("DELETE FROM encryption_auditevent WHERE seq >= 8")
        report = audit.verify_chain()
        # ...but checkpoint 10 was signed, so the cut shows.
        assert (report.ok, report.first_bad_seq, report.checkpoint_seq) == (False, 8, 10)
        assert "the trail was cut" in report.reason

    def test_it_detects_a_cut_of_the_very_last_event_after_an_on_demand_checkpoint(self) -> None:
        record(4)
        audit.write_checkpoint()
        privileged_execute("DELETE FROM encryption_auditevent WHERE seq = 4")
        assert audit.verify_chain().first_bad_seq == 4

    @override_settings(AUDIT_CHECKPOINT_EVERY=5)
    def test_it_detects_a_rewritten_chain_through_the_checkpoint(self) -> None:
        record(7)
        # Rewrite every event from 3 on with valid hashes: only the signed checkpoint at 5 can tell.
        _rewrite(3, message="history rewritten", cascade=True)
        report = audit.verify_chain()
        assert (report.ok, report.first_bad_seq) == (False, 5)
        assert "checkpoint #5" in report.reason

    @override_settings(AUDIT_CHECKPOINT_EVERY=5)
    def test_it_detects_a_forged_checkpoint_signature(self) -> None:
        record(5)
        forged = audit.sign(b"something else")
        privileged_execute("UPDATE encryption_auditcheckpoint SET signature = %s WHERE seq = 5", [forged])
        report = audit.verify_chain()
        assert (report.ok, report.first_bad_seq) == (False, 5)
        assert "invalid signature" in report.reason

    @override_settings(AUDIT_CHECKPOINT_EVERY=5)
    def test_recording_goes_on_after_a_cut_without_hiding_it(self) -> None:
        record(6)
        privileged_execute("DELETE FROM encryption_auditevent WHERE seq >= 4")
        record(3)  # seq 4, 5, 6 again: the checkpoint at 5 is kept, not replaced
        assert AuditCheckpoint.objects.count() == 1
        report = audit.verify_chain()
        assert (report.ok, report.first_bad_seq) == (False, 5)


class AppendOnlyTests(ReloadingTransactionTestCase):
    def test_the_database_refuses_update_delete_and_truncate_on_postgresql(self) -> None:
        if connection.vendor != "postgresql":
            pytest.skip("the append-only trigger exists on PostgreSQL only")
        record(2)
        audit.write_checkpoint()
        for sql in (
            "UPDATE encryption_auditevent SET message = 'x'",
            "DELETE FROM encryption_auditevent",
            "TRUNCATE encryption_auditevent CASCADE",
            "UPDATE encryption_auditcheckpoint SET signature = 'x'",
            "DELETE FROM encryption_auditcheckpoint",
            "TRUNCATE encryption_auditcheckpoint",
        ):
            with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as c:
                c.execute(sql)
        with pytest.raises(DatabaseError, match="append-only"):
            AuditEvent.objects.filter(seq=1).update(message="x")
        assert AuditEvent.objects.count() == 2
        assert audit.verify_chain().ok

    # That the application's own (non-superuser) role cannot switch the trigger off is shown by
    # tests/faults/test_audit_under_fire.py, which connects as that role.


def _rewrite(seq: int, *, message: str, cascade: bool = False) -> None:
    """Change an event and recompute its hash (and, with cascade, every later event's): a careful forger."""
    prev = AuditEvent.objects.get(seq=seq - 1).hash if seq > 1 else audit.GENESIS_HASH
    for event in AuditEvent.objects.filter(seq__gte=seq).order_by("seq"):
        if event.seq == seq:
            event.message = message
        event.prev_hash = prev if (cascade or event.seq == seq) else event.prev_hash
        event.hash = audit.event_hash(tuple(getattr(event, f) for f in audit.HASHED_FIELDS))
        privileged_execute(
            "UPDATE encryption_auditevent SET message = %s, prev_hash = %s, hash = %s WHERE seq = %s",
            [event.message, event.prev_hash, event.hash, event.seq],
        )
        prev = event.hash
        if not cascade:
            return


def _insert_forged(*, seq: int, prev_hash: str) -> None:
    forged = AuditEvent(
        seq=seq,
        created_at=AuditEvent.objects.order_by("-seq").first().created_at,  # type: ignore[union-attr]
        actor="mallory",
        source="web",
        action="operation.succeeded",
        outcome="succeeded",
        request_ids=[],
        prev_hash=prev_hash,
    )
    forged.hash = audit.event_hash(tuple(getattr(forged, f) for f in audit.HASHED_FIELDS))
    forged.save(force_insert=True)  # inserting is what the application's role may do


# Two OS processes appending at once


APPENDER = textwrap.dedent(
    """
    import os, sys, time
    import django
    django.setup()
    from encryption import audit
    from encryption.actors import Actor
    name, count, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    open(f"{go}.{name}.ready", "w").close()
    while not os.path.exists(go):
        time.sleep(0.002)
    for i in range(count):
        audit.record(actor=Actor.system(detail=name), action="operation.step", outcome="info", message=f"{name} {i}")
        time.sleep(0.001)  # real appenders do other work between events; lets the other process in
    """
)


class ConcurrentAppendTests(ReloadingTransactionTestCase):
    def test_two_processes_appending_at_once_keep_one_chain(self) -> None:
        count = 150
        go = Path(os.environ["KEYWARD_VAR_DIR"]) / f"go-{os.getpid()}-{time.monotonic_ns()}"
        # The test database, this run's var folder (so the same signing key), through the shared harness.
        env = worker_environment(env={"PYTHONPATH": str(BASE_DIR)})
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", APPENDER, name, str(count), str(go)],
                cwd=BASE_DIR,
                env=env,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in ("proc-a", "proc-b")
        ]
        deadline = time.monotonic() + 60
        while not all(Path(f"{go}.{name}.ready").exists() for name in ("proc-a", "proc-b")):
            assert time.monotonic() < deadline, "the appenders did not start"
            time.sleep(0.01)
        go.touch()  # both are set up and waiting on the start line: they begin together
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        report = audit.verify_chain()
        assert report.ok, report.reason
        assert report.count == 2 * count
        seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(1, 2 * count + 1))
        details = list(AuditEvent.objects.order_by("seq").values_list("source_detail", flat=True))
        assert details.count("proc-a") == details.count("proc-b") == count
        # The two really ran at once: their events interleave in the chain.
        switches = sum(1 for a, b in zip(details, details[1:], strict=False) if a != b)
        assert switches > 1
