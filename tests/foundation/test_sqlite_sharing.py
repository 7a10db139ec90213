from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from django.conf import settings
from django.test import SimpleTestCase

ROWS_PER_WRITER = 400

# Each writer is a separate OS process configured by portal.settings from DATABASE_URL, as the web
# process and a worker are. Every transaction reads before it writes: the pattern that, in SQLite's
# default deferred mode, upgrades a read lock to a write lock and fails at once with "database is locked"
# when another process writes at the same moment.
WRITER = textwrap.dedent(
    """
    import os, sys, time
    import django
    django.setup()
    from django.db import connection, transaction

    name, start_at = sys.argv[1], float(sys.argv[2])
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS rows (writer TEXT, n INTEGER, UNIQUE (writer, n))")
    while time.time() < start_at:  # both writers begin together
        time.sleep(0.001)
    for _ in range({rows}):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT COUNT(*) FROM rows WHERE writer = %s", [name])
            (count,) = cursor.fetchone()
            cursor.execute("INSERT INTO rows (writer, n) VALUES (%s, %s)", [name, count])
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        print(cursor.fetchone()[0])
    """
).format(rows=ROWS_PER_WRITER)


class SQLiteSharingTestCase(SimpleTestCase):
    def test_two_processes_write_to_one_file_at_once(self):
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "shared.sqlite3"
            with sqlite3.connect(path) as db:
                # As `migrate` leaves it before any worker starts: WAL is a property of the file. Two first
                # connections racing to switch a fresh file's journal mode is not what this test is about.
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("CREATE TABLE rows (writer TEXT, n INTEGER, UNIQUE (writer, n))")
            env = {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": "portal.settings",
                "DATABASE_URL": f"sqlite:///{path}",
                "AZURE_BACKEND": "azure",  # only the default database matters here
            }
            start_at = f"{time.time() + 3:.3f}"
            writers = [
                subprocess.Popen(
                    [sys.executable, "-c", WRITER, name, start_at],
                    cwd=settings.BASE_DIR,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for name in ("web", "worker")
            ]
            outputs = [writer.communicate(timeout=120) for writer in writers]

            for writer, (stdout, stderr) in zip(writers, outputs, strict=True):
                assert "database is locked" not in stderr
                assert writer.returncode == 0, stderr
                assert stdout.strip() == "wal"
            with sqlite3.connect(path) as db:
                counts = dict(db.execute("SELECT writer, COUNT(DISTINCT n) FROM rows GROUP BY writer").fetchall())
            # Every row of both writers is there, each written once.
            assert counts == {"web": ROWS_PER_WRITER, "worker": ROWS_PER_WRITER}
