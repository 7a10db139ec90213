"""Privileged access to the audit tables for tests: tampering on purpose, and emptying them at teardown.

On PostgreSQL the audit tables refuse UPDATE, DELETE and TRUNCATE (migration 0005), which is what the app's
role must live with. Tests that tamper with rows, and the flush that ends every TransactionTestCase, go
through a separate connection that switches triggers off for its session
(`SET session_replication_role = replica`, which only a superuser may do). That connection uses
KEYWARD_TEST_PRIVILEGED_DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres; its database name
is replaced by the test database's) when the tests run as a non-superuser, and the test role's own
settings otherwise. On SQLite there are no such triggers and the test's own connection is used.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

from django.db import connections
from django.test import TransactionTestCase

AUDIT_TABLES = ("encryption_auditevent", "encryption_auditcheckpoint", "encryption_auditchainhead")


def privileged_execute(sql: str, params: Sequence[Any] = (), *, using: str = "default") -> None:
    """Run one statement with the audit triggers off, committed at once (it must be seen by others)."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
        return
    import psycopg

    with psycopg.connect(**_privileged_params(connection.settings_dict), autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(sql, params)


def reset_audit_tables(using: str = "default") -> None:
    for table in AUDIT_TABLES:
        privileged_execute(f"DELETE FROM {table}", using=using)


def _privileged_params(settings_dict: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {
        "dbname": settings_dict["NAME"],
        "user": settings_dict.get("USER") or None,
        "password": settings_dict.get("PASSWORD") or None,
        "host": settings_dict.get("HOST") or None,
        "port": settings_dict.get("PORT") or None,
    }
    url = os.environ.get("KEYWARD_TEST_PRIVILEGED_DATABASE_URL")
    if url:
        parts = urlsplit(url)
        params.update(
            user=unquote(parts.username or "") or None,
            password=unquote(parts.password or "") or None,
            host=parts.hostname or None,
            port=parts.port or None,
        )
    return {k: v for k, v in params.items() if v is not None}


def install_flush_reset() -> None:
    """Make every TransactionTestCase empty the audit tables, privileged, before Django's flush truncates.

    Called once from tests/conftest.py; without it the append-only trigger makes the flush fail on
    PostgreSQL as soon as a test has recorded an audit event.
    """
    original = TransactionTestCase._fixture_teardown  # type: ignore[attr-defined]
    if getattr(original, "_keyward_resets_audit", False):
        return

    def _fixture_teardown(self: TransactionTestCase) -> None:
        for alias in self._databases_names(include_mirrors=False):  # type: ignore[attr-defined]
            if connections[alias].vendor == "postgresql" and _has_audit_tables(alias):
                reset_audit_tables(alias)
        original(self)

    _fixture_teardown._keyward_resets_audit = True  # type: ignore[attr-defined]
    TransactionTestCase._fixture_teardown = _fixture_teardown  # type: ignore[attr-defined]


def _has_audit_tables(alias: str) -> bool:
    with connections[alias].cursor() as cursor:
        return AUDIT_TABLES[0] in connections[alias].introspection.table_names(cursor)


@contextmanager
def failing_audit_inserts(using: str = "default") -> Iterator[None]:
    """Within the block, the database refuses to store audit events (a full disk, a broken constraint)."""
    connection = connections[using]
    if connection.vendor == "postgresql":
        create = [
            "CREATE FUNCTION keyward_test_refuse_audit() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'audit store unavailable (test)'; END $$",
            "CREATE TRIGGER keyward_test_refuse_audit BEFORE INSERT ON encryption_auditevent "
            "FOR EACH ROW EXECUTE FUNCTION keyward_test_refuse_audit()",
        ]
        drop = [
            "DROP TRIGGER IF EXISTS keyward_test_refuse_audit ON encryption_auditevent",
            "DROP FUNCTION IF EXISTS keyward_test_refuse_audit()",
        ]
    else:
        create = [
            "CREATE TRIGGER keyward_test_refuse_audit BEFORE INSERT ON encryption_auditevent "
            "BEGIN SELECT RAISE(ABORT, 'audit store unavailable (test)'); END"
        ]
        drop = ["DROP TRIGGER IF EXISTS keyward_test_refuse_audit"]
    with connection.cursor() as cursor:
        for sql in create:
            cursor.execute(sql)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            for sql in drop:
                cursor.execute(sql)
