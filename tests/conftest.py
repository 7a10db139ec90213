"""Test-wide setup: every test run gets its own folder for databases and the broker.

Set before Django loads settings, so concurrent runs on one machine never share a SQLite file, a
PostgreSQL test database or a filesystem-broker queue.
"""

from __future__ import annotations

import os
import tempfile
import uuid

_run_id = os.environ.setdefault("KEYWARD_TEST_RUN_ID", uuid.uuid4().hex[:8])
_run_dir = os.environ.setdefault("KEYWARD_TEST_DIR", tempfile.mkdtemp(prefix=f"keyward-test-{_run_id}-"))
os.environ.setdefault("KEYWARD_TEST_DB_DIR", os.path.join(_run_dir, "db"))
os.environ.setdefault("KEYWARD_VAR_DIR", os.path.join(_run_dir, "var"))
os.environ.setdefault("CELERY_TASK_DEFAULT_QUEUE", f"keyward-test-{_run_id}")
os.makedirs(os.environ["KEYWARD_TEST_DB_DIR"], exist_ok=True)
os.makedirs(os.environ["KEYWARD_VAR_DIR"], exist_ok=True)
