"""Make the audit tables append-only on PostgreSQL: a trigger refuses UPDATE, DELETE and TRUNCATE.

So the application's database role can only insert and read audit events and checkpoints; a row changed
by someone with more rights (who disabled the trigger) is still caught by `verify_audit`. Emptying a table
that is already empty is let through because it destroys nothing (Django's test flush truncates every
table; the tests empty the audit tables first through a privileged connection, tests/audit_helpers.py).

Production should run migrations as a role that owns the tables and serve the portal as another role
holding only INSERT and SELECT on them: a table's owner may disable its triggers. SQLite has no such
triggers here; there the trail relies on the hash chain and the signed checkpoints alone.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

TABLES = ("encryption_auditevent", "encryption_auditcheckpoint")

FUNCTION = """
CREATE OR REPLACE FUNCTION keyward_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    has_rows boolean;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.%I)', TG_TABLE_SCHEMA, TG_TABLE_NAME) INTO has_rows;
        IF NOT has_rows THEN
            RETURN NULL;
        END IF;
    END IF;
    RAISE EXCEPTION 'the audit trail is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$
"""


def _create_sql() -> list[str]:
    statements = [FUNCTION]
    for table in TABLES:
        statements += [
            f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION keyward_audit_append_only()",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION keyward_audit_append_only()",
        ]
    return statements


def _drop_sql() -> list[str]:
    statements = []
    for table in TABLES:
        statements += [
            f"DROP TRIGGER IF EXISTS {table}_no_change ON {table}",
            f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        ]
    return [*statements, "DROP FUNCTION IF EXISTS keyward_audit_append_only()"]


def _run(statements: list[str]) -> Any:
    def run(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return
        for sql in statements:
            schema_editor.execute(sql, params=None)  # None: the SQL holds literal % signs

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("encryption", "0004_audit_message_trigram"),
    ]

    operations = [migrations.RunPython(_run(_create_sql()), _run(_drop_sql()), elidable=False)]
