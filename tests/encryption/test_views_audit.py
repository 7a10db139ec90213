from __future__ import annotations

from datetime import UTC, datetime, timedelta

import time_machine
from django.db import connection
from django.test import TestCase
from django.urls import reverse
from django.utils import timezone

from encryption import audit, audit_query
from encryption.models import AuditEvent, OperationStep
from tests.audit_helpers import privileged_execute
from tests.builders import actor_for, make_account, make_cast, make_event, make_key, make_operation, make_vault
from tests.harness import CrossProcessTestCase, require_postgresql

DAY1 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
DAY2 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
DAY3 = datetime(2026, 3, 3, 9, 0, tzinfo=UTC)


class AuditTestCase(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.cast = make_cast()
        vault = make_vault()
        cls.key = make_key(vault, "cmk", versions=2)
        cls.other_key = make_key(vault, "cmk2")
        cls.east = make_account("face-east", key=cls.key)
        cls.west = make_account("face-west")
        admin = actor_for(cls.cast["admin"])
        reviewer = actor_for(cls.cast["reviewer"])
        old, new = cls.key.versions.order_by("created_on").values_list("version", flat=True)
        with time_machine.travel(DAY1, tick=False):
            cls.e1 = make_event(
                actor=admin, target=cls.east.arm_id, key_id=f"{cls.key.uri}/{old}", message="Enable CMK requested"
            )
            cls.e2 = make_event(actor=admin, target=cls.west.arm_id, message="Refresh requested")
        with time_machine.travel(DAY2, tick=False):
            cls.e3 = make_event(
                "operation.succeeded",
                actor=admin,
                target=cls.east.arm_id,
                key_id=f"{cls.key.uri}/{new}",
                outcome=AuditEvent.Outcome.SUCCEEDED,
                message="Key version updated to the newest",
            )
            cls.e4 = make_event(
                "auth.login", actor=reviewer, outcome=AuditEvent.Outcome.SUCCEEDED, message="Chain intact"
            )
            cls.e5 = make_event(actor=admin, target=cls.east.arm_id, key_id=cls.other_key.uri, message="Change key")
        with time_machine.travel(DAY3, tick=False):
            cls.e6 = make_event(
                "access.refused",
                actor=actor_for(cls.cast["helpdesk"]),
                outcome=AuditEvent.Outcome.REFUSED,
                target="/audit/",
                message="GET /audit/ refused",
            )

    def mine(self):
        return {e.seq for e in (self.e1, self.e2, self.e3, self.e4, self.e5, self.e6)}

    def seqs(self, response):
        return [event.seq for event in response.context["page"].events]


class AuditListTests(AuditTestCase):
    url = reverse("encryption:audit-list")

    def setUp(self):
        self.client.force_login(self.cast["reviewer"])

    def test_it_lists_newest_first(self):
        response = self.client.get(self.url)
        assert response.status_code == 200
        seqs = self.seqs(response)
        # Making the cast recorded role changes too (audit signals); every event is there, newest first.
        assert seqs == sorted(AuditEvent.objects.values_list("seq", flat=True), reverse=True)
        assert [s for s in seqs if s in self.mine()] == [
            e.seq for e in (self.e6, self.e5, self.e4, self.e3, self.e2, self.e1)
        ]

    def test_it_filters_to_one_account_and_one_day(self):
        response = self.client.get(self.url, {"account": self.east.arm_id, "day": "2026-03-02"})
        # Day 2 holds e3, e4, e5; only e3 and e5 concern face-east.
        assert self.seqs(response) == [self.e5.seq, self.e3.seq]

    def test_it_filters_by_account_name_too(self):
        response = self.client.get(self.url, {"account": "face-west"})
        assert self.seqs(response) == [self.e2.seq]

    def test_it_filters_by_time_range(self):
        response = self.client.get(self.url, {"from": "2026-03-01T10:00", "to": "2026-03-03T08:00"})
        assert self.seqs(response) == [self.e5.seq, self.e4.seq, self.e3.seq]

    def test_it_filters_by_actor_role_action_and_outcome(self):
        assert self.seqs(self.client.get(self.url, {"actor": self.cast["reviewer"].username})) == [self.e4.seq]
        assert self.seqs(self.client.get(self.url, {"role": "help-desk"})) == [self.e6.seq]
        assert self.seqs(self.client.get(self.url, {"action": "operation.succeeded"})) == [self.e3.seq]
        assert self.seqs(self.client.get(self.url, {"outcome": "refused"})) == [self.e6.seq]

    def test_a_versionless_key_matches_every_version_but_not_a_key_with_a_longer_name(self):
        response = self.client.get(self.url, {"key": self.key.uri})
        # cmk2's URI starts with cmk's, yet e5 (on cmk2) must not match.
        assert self.seqs(response) == [self.e3.seq, self.e1.seq]

    def test_a_versioned_key_matches_that_version_only(self):
        response = self.client.get(self.url, {"key": self.e1.key_id})
        assert self.seqs(response) == [self.e1.seq]

    def test_it_searches_the_message(self):
        assert self.seqs(self.client.get(self.url, {"q": "KEY VERSION"})) == [self.e3.seq]

    def test_it_combines_filters(self):
        response = self.client.get(self.url, {"account": self.east.arm_id, "outcome": "succeeded", "day": "2026-03-02"})
        assert self.seqs(response) == [self.e3.seq]

    def test_an_empty_time_range_shows_nothing(self):
        assert self.seqs(self.client.get(self.url, {"day": "2025-01-01"})) == []
        assert b"No events match" in self.client.get(self.url, {"day": "2025-01-01"}).content

    def test_it_refuses_a_range_that_ends_before_it_starts(self):
        response = self.client.get(self.url, {"from": "2026-03-02T00:00", "to": "2026-03-01T00:00"})
        assert response.status_code == 200
        assert self.seqs(response) == []
        assert "must be after" in response.content.decode()

    def test_it_serves_the_table_fragment_to_htmx(self):
        response = self.client.get(self.url, {"outcome": "refused"}, headers={"HX-Request": "true"})
        body = response.content.decode()
        assert 'id="audit-table"' in body
        assert "<html" not in body
        assert "GET /audit/ refused" in body

    def test_it_offers_export_to_reviewers_with_the_filter(self):
        body = self.client.get(self.url, {"outcome": "refused"}).content.decode()
        assert 'action="/audit/export/"' in body
        assert 'name="outcome" value="refused"' in body


class AuditPagingTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.reviewer = make_cast()["reviewer"]
        for i in range(120):
            make_event(message=f"event {i}", outcome=AuditEvent.Outcome.INFO if i % 2 else AuditEvent.Outcome.FAILED)

    def setUp(self):
        self.client.force_login(self.reviewer)

    def test_it_pages_by_keyset_both_ways(self):
        url = reverse("encryption:audit-list")
        first = self.client.get(url).context["page"]
        # 120 events plus whatever refusals were recorded: the newest page starts at the head.
        head = AuditEvent.objects.order_by("-seq").first().seq
        assert [e.seq for e in first.events] == list(range(head, head - 50, -1))
        assert first.newer is None and first.older == head - 49
        second = self.client.get(url, {"before": first.older}).context["page"]
        assert [e.seq for e in second.events] == list(range(head - 50, head - 100, -1))
        assert second.newer == head - 50
        back = self.client.get(url, {"after": second.newer}).context["page"]
        assert [e.seq for e in back.events] == [e.seq for e in first.events]
        assert back.newer is None

    def test_the_cursor_keeps_the_filter(self):
        url = reverse("encryption:audit-list")
        response = self.client.get(url, {"outcome": "failed"})
        page = response.context["page"]
        assert len(page.events) == 50 and all(e.outcome == "failed" for e in page.events)
        assert f"outcome=failed&amp;before={page.older}" in response.content.decode()
        rest = self.client.get(url, {"outcome": "failed", "before": page.older}).context["page"]
        assert len(rest.events) == 10 and rest.older is None

    def test_a_bad_cursor_is_ignored(self):
        response = self.client.get(reverse("encryption:audit-list"), {"before": "x'; drop"})
        assert response.status_code == 200
        assert len(response.context["page"].events) == 50


class AuditDetailTests(AuditTestCase):
    def setUp(self):
        self.client.force_login(self.cast["admin"])

    def test_it_shows_everything_recorded_and_the_neighbours(self):
        event = make_event(
            actor=actor_for(self.cast["admin"]),
            target=self.east.arm_id,
            before={"keyVersion": "old"},
            after={"keyVersion": "new", "nested": {"a": 1}},
            request_ids=["req-123"],
            message="Version updated",
        )
        previous = AuditEvent.objects.get(seq=event.seq - 1)
        response = self.client.get(reverse("encryption:audit-detail", args=[event.seq]))
        body = response.content.decode()
        assert response.status_code == 200
        assert "req-123" in body and "Version updated" in body
        # Pretty JSON, not one line.
        assert "&quot;keyVersion&quot;: &quot;new&quot;" in body and '\n  "nested"'.replace('"', "&quot;") in body
        assert previous.hash[:12] in body and event.hash[:12] in body
        assert "Content matches its hash" in body and "Links to the event before it" in body
        assert "None yet: this is the newest event" in body

    def test_it_shows_the_operation_and_its_steps(self):
        operation = make_operation(self.east, "update_version", actor="ada-admin", params={"version": "abc"})
        OperationStep.objects.create(
            operation=operation, name="patch", label="Update the account's key version", status="succeeded"
        )
        event = make_event(actor=actor_for(self.cast["admin"]), operation=operation, target=self.east.arm_id)
        body = self.client.get(reverse("encryption:audit-detail", args=[event.seq])).content.decode()
        assert "Update the account&#x27;s key version" in body
        assert str(operation) in body

    def test_the_first_event_has_no_previous(self):
        body = self.client.get(reverse("encryption:audit-detail", args=[1])).content.decode()
        assert "None: this is the first event" in body
        assert "Links to the event before it" in body

    def test_it_answers_404_for_an_unknown_event(self):
        assert self.client.get(reverse("encryption:audit-detail", args=[99999])).status_code == 404


class AuditPermissionTests(AuditTestCase):
    def urls(self):
        return [
            reverse("encryption:audit-list"),
            reverse("encryption:audit-detail", args=[self.e1.seq]),
            reverse("encryption:audit-verify"),
            reverse("encryption:audit-public-key"),
            reverse("encryption:audit-export"),
        ]

    def test_admins_and_reviewers_can_open_every_audit_page(self):
        for who in ("admin", "reviewer"):
            self.client.force_login(self.cast[who])
            for url in self.urls():
                assert self.client.get(url).status_code == 200, (who, url)

    def test_help_desk_and_outsiders_cannot_and_the_refusal_is_recorded(self):
        for who in ("helpdesk", "outsider"):
            self.client.force_login(self.cast[who])
            for url in self.urls():
                before = AuditEvent.objects.count()
                assert self.client.get(url).status_code == 403, (who, url)
                refusal = AuditEvent.objects.order_by("-seq").first()
                assert AuditEvent.objects.count() == before + 1
                assert (refusal.action, refusal.actor, refusal.target) == (
                    "access.refused",
                    self.cast[who].username,
                    url,
                )

    def test_help_desk_cannot_post_a_verification_or_an_export(self):
        self.client.force_login(self.cast["helpdesk"])
        assert self.client.post(reverse("encryption:audit-verify")).status_code == 403
        assert self.client.post(reverse("encryption:audit-export"), {"format": "csv"}).status_code == 403
        assert not AuditEvent.objects.filter(
            action__in=["audit.verified", "audit.exported"], actor=self.cast["helpdesk"].username
        ).exists()

    def test_anonymous_visitors_are_sent_to_sign_in(self):
        response = self.client.get(reverse("encryption:audit-list"))
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]

    def test_the_nav_shows_audit_only_to_those_who_may_open_it(self):
        self.client.force_login(self.cast["reviewer"])
        assert 'href="/audit/"' in self.client.get(reverse("encryption:helpdesk")).content.decode()
        self.client.force_login(self.cast["helpdesk"])
        body = self.client.get(reverse("encryption:helpdesk")).content.decode()
        assert 'href="/audit/"' not in body and 'href="/keys/"' not in body


class NoPageChangesEventsTests(AuditTestCase):
    def test_no_audit_url_accepts_a_change_or_a_delete(self):
        self.client.force_login(self.cast["admin"])
        url = reverse("encryption:audit-detail", args=[self.e1.seq])
        for method in ("post", "put", "patch", "delete"):
            assert getattr(self.client, method)(url).status_code == 405, method
        self.e1.refresh_from_db()
        assert AuditEvent.objects.filter(pk=self.e1.pk, hash=self.e1.hash).exists()

    def test_even_a_superuser_cannot_change_or_delete_an_event_in_the_admin(self):
        superuser = make_cast("su-")["admin"]
        superuser.is_superuser = superuser.is_staff = True
        superuser.save()
        self.client.force_login(superuser)
        change = reverse("admin:encryption_auditevent_change", args=[self.e1.pk])
        delete = reverse("admin:encryption_auditevent_delete", args=[self.e1.pk])
        assert self.client.post(change, {"message": "rewritten"}).status_code == 403
        assert self.client.post(delete, {"post": "yes"}).status_code == 403
        self.e1.refresh_from_db()
        assert self.e1.message == "Enable CMK requested"


class AuditVerifyTests(AuditTestCase):
    url = reverse("encryption:audit-verify")

    def setUp(self):
        self.client.force_login(self.cast["reviewer"])

    def test_it_says_when_the_trail_was_never_verified(self):
        assert "has not been verified yet" in self.client.get(self.url).content.decode()

    def test_it_verifies_the_chain_and_remembers_the_result(self):
        count = AuditEvent.objects.count()
        body = self.client.post(self.url).content.decode()
        assert "Intact." in body and f"All {count} events check out" in body
        recorded = AuditEvent.objects.get(
            action="audit.verified", outcome="succeeded", actor=self.cast["reviewer"].username
        )
        assert recorded.after["ok"] is True and recorded.after["count"] == count
        # Later visitors see when it was last verified, and by whom.
        self.client.force_login(self.cast["admin"])
        later = self.client.get(self.url).content.decode()
        assert "Last verified" in later and self.cast["reviewer"].username in later
        assert f'href="/audit/{recorded.seq}/"' in later

    def test_htmx_gets_the_result_fragment(self):
        body = self.client.post(self.url, headers={"HX-Request": "true"}).content.decode()
        assert 'id="verify-result"' in body and "<html" not in body and "Intact." in body

    def test_the_public_key_downloads_as_pem_without_private_material(self):
        response = self.client.get(reverse("encryption:audit-public-key"))
        assert response["Content-Type"] == "application/x-pem-file"
        assert "attachment" in response["Content-Disposition"]
        assert response.content.decode() == audit.public_key_pem()
        assert b"PRIVATE" not in response.content


class AuditTamperTests(CrossProcessTestCase):
    # Committed rows: on PostgreSQL the tampering goes through a privileged connection of its own.

    def test_a_tampered_row_makes_the_verify_page_show_the_first_bad_event(self):
        reviewer = make_cast()["reviewer"]
        for i in range(5):
            make_event(message=f"event {i}")
        victim = AuditEvent.objects.order_by("seq")[2]
        privileged_execute("UPDATE encryption_auditevent SET message = %s WHERE seq = %s", ["rewritten", victim.seq])
        self.client.force_login(reviewer)
        body = self.client.post(reverse("encryption:audit-verify")).content.decode()
        assert "Broken." in body
        assert f'The first bad event is <a href="/audit/{victim.seq}/">#{victim.seq}</a>' in body
        assert "was edited" in body
        detail = self.client.get(reverse("encryption:audit-detail", args=[victim.seq])).content.decode()
        assert "Content does not match its hash" in detail
        assert AuditEvent.objects.filter(action="audit.verified", outcome="failed").exists()


class AuditIndexTests(TestCase):
    """On PostgreSQL each filter reads an index made for it (the plan, not a timing, so it cannot flake)."""

    @classmethod
    def setUpTestData(cls):
        for i in range(20):
            make_event(message=f"Rotate key requested for face-{i}", target=f"/subscriptions/s/accounts/face-{i}")

    def plan(self, queryset, *, bitmap_only=False, ordered_scan=False):
        sql, params = queryset.query.sql_with_params()
        with connection.cursor() as cursor:
            # A table this small would be read whole; forbid that to see which index the planner picks.
            cursor.execute("SET LOCAL enable_seqscan = off")
            if bitmap_only:
                # Left only bitmap scans, which need an index able to answer the condition itself.
                cursor.execute("SET LOCAL enable_indexscan = off")
            if ordered_scan:
                # On 20 rows a bitmap scan plus a sort costs the same as walking the index; forbid the bitmap
                # to see whether an index can give the order by itself (as it must at millions of rows).
                cursor.execute("SET LOCAL enable_bitmapscan = off")
            cursor.execute(f"EXPLAIN {sql}", params)
            return "\n".join(row[0] for row in cursor.fetchall())

    def test_message_search_reads_the_trigram_index(self):
        require_postgresql()
        qs = audit_query.filtered_events(audit_query.AuditFilters(text="rotate")).order_by().values("id")
        plan = self.plan(qs, bitmap_only=True)
        assert "audit_message_trgm_idx" in plan, plan

    def test_a_filter_and_the_keyset_order_read_one_composite_index(self):
        require_postgresql()
        qs = audit_query.filtered_events(audit_query.AuditFilters(account="/subscriptions/s/accounts/face-3"))
        plan = self.plan(qs.filter(seq__lt=10**9).order_by("-seq")[:51], ordered_scan=True)
        assert "audit_target_seq_idx" in plan and "Sort" not in plan, plan

    def test_a_time_range_walks_the_seq_range_newest_first_without_sorting(self):
        require_postgresql()
        now = timezone.now()
        qs = audit_query.filtered_events(audit_query.AuditFilters(start=now - timedelta(hours=1), end=now))
        plan = self.plan(qs.order_by("-seq")[:51], ordered_scan=True)
        assert "encryption_auditevent_seq_key" in plan and "Sort" not in plan, plan
