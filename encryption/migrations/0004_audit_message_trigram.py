"""A trigram index for the audit page's free-text search on the message (PostgreSQL only).

Django's `icontains` on PostgreSQL is `UPPER(message::text) LIKE UPPER('%term%')`, so the index is built on
that same expression with pg_trgm's GIN operator class: the search then reads the index instead of every row.
SQLite has no such index; there the search stays a plain `icontains` scan, fine at development sizes.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

CREATE = (
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX IF NOT EXISTS audit_message_trgm_idx ON encryption_auditevent "
    "USING gin (UPPER(message) gin_trgm_ops)",
)
DROP = ("DROP INDEX IF EXISTS audit_message_trgm_idx",)


def _run(statements: tuple[str, ...]) -> Any:
    def run(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return
        for sql in statements:
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [
        ("encryption", "0003_audit_review_indexes"),
    ]

    operations = [migrations.RunPython(_run(CREATE), _run(DROP), elidable=False)]
