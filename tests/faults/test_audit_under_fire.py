"""The audit trail under fire: the application's own PostgreSQL role may only insert and read audit rows
(UPDATE, DELETE and TRUNCATE are refused, and it cannot switch the trigger off), a row edited by someone
with more rights is caught by `verify_audit`, and a change whose audit event cannot be written is not made.

CI creates the role (`keyward_app`, a login role that is not a superuser and owns nothing: .ci/run); the
test grants it, on its test database only, every privilege on the audit tables, to show that the trigger,
not a missing grant, is what refuses.
"""

from __future__ import annotations

import io
import os

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

from encryption import audit
from encryption.models import AuditCheckpoint, AuditEvent
from tests.audit_helpers import AUDIT_TABLES, _privileged_params, privileged_execute
from tests.builders import make_event
from tests.faults.common import DrillTestCase
from tests.faults.drills import drill_audit_store_down
from tests.harness import CI, CrossProcessTestCase, require, require_postgresql

pytestmark = pytest.mark.faults

APP_ROLE = os.environ.get("KEYWARD_TEST_APP_ROLE", "keyward_app")


def connect_as_app() -> psycopg.Connection:
    params = _privileged_params(connection.settings_dict)
    params.update(user=APP_ROLE)
    params.pop("password", None)
    return psycopg.connect(**params, autocommit=True)


class AppRoleTests(CrossProcessTestCase):
    def setUp(self):
        require_postgresql()
        with connection.cursor() as cursor:
            cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", [APP_ROLE])
            row = cursor.fetchone()
        require(row is not None, f"the PostgreSQL role {APP_ROLE} (.ci/run creates it)")
        assert row is not None and row[0] is False, f"{APP_ROLE} must not be a superuser"
        tables = ", ".join(AUDIT_TABLES)
        self.grants = [
            f'GRANT CONNECT ON DATABASE "{connection.settings_dict["NAME"]}" TO {APP_ROLE}',
            f"GRANT USAGE ON SCHEMA public TO {APP_ROLE}",
            f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON {tables} TO {APP_ROLE}",
            f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}",
        ]
        for sql in self.grants:
            privileged_execute(sql)
        self.addCleanup(self._revoke)

    def _revoke(self):
        for sql in reversed(self.grants):
            privileged_execute(sql.replace("GRANT", "REVOKE", 1).replace(f" TO {APP_ROLE}", f" FROM {APP_ROLE}"))

    def test_the_apps_role_may_only_insert_and_read_audit_rows(self):
        for i in range(3):
            make_event("operation.requested", message=f"event {i}")
        audit.write_checkpoint()  # a row in each table: a statement that touches no row fires no row trigger
        with connect_as_app() as conn:
            assert conn.execute("SELECT count(*) FROM encryption_auditevent").fetchone() == (3,)
            assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
            # It owns none of the tables (an owner could switch the trigger off).
            owned = conn.execute(
                "SELECT count(*) FROM pg_tables WHERE tableowner = current_user AND schemaname = 'public'"
            ).fetchone()
            assert owned == (0,)
            for sql in (
                "UPDATE encryption_auditevent SET message = 'rewritten'",
                "DELETE FROM encryption_auditevent WHERE seq = 2",
                "TRUNCATE encryption_auditevent CASCADE",
                "UPDATE encryption_auditcheckpoint SET signature = 'x'",
                "DELETE FROM encryption_auditcheckpoint",
                "TRUNCATE encryption_auditcheckpoint",
            ):
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                    conn.execute(sql)
            for sql, refusal in (
                ("ALTER TABLE encryption_auditevent DISABLE TRIGGER ALL", "must be owner"),
                ("SET session_replication_role = replica", "permission denied"),
                ("DROP TRIGGER encryption_auditevent_no_change ON encryption_auditevent", "must be owner"),
            ):
                with pytest.raises(psycopg.Error, match=refusal):
                    conn.execute(sql)
        # Appending is what the application does, and still works for it (through the portal's own code).
        make_event("operation.requested", message="after")
        assert AuditEvent.objects.count() == 4
        report = audit.verify_chain()
        assert report.ok and report.count == 4
        assert AuditCheckpoint.objects.count() == 1

    def test_a_row_edited_with_more_rights_is_caught_by_verify_audit(self):
        for i in range(5):
            make_event("operation.requested", message=f"event {i}")
        privileged_execute("UPDATE encryption_auditevent SET message = 'nothing happened here' WHERE seq = 3")
        err = io.StringIO()
        with pytest.raises(SystemExit) as exit_:
            call_command("verify_audit", stdout=io.StringIO(), stderr=err)
        assert exit_.value.code == 1
        assert "BROKEN at event #3" in err.getvalue()


class AuditStoreDownTests(DrillTestCase):
    accounts = 3

    def test_a_change_whose_audit_event_cannot_be_written_is_not_made(self):
        result = drill_audit_store_down(self.lab, requests=2)
        assert result.problems == [], result.problems
        self.assert_nothing_lost(result)


def test_ci_runs_the_audit_role_tests_on_postgresql():
    # Under CI the role tests above must not skip: PostgreSQL and the role are both there.
    if CI:
        assert os.environ.get("DATABASE_URL", "").startswith("postgres")
