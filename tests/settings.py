"""Settings for the test suite: Keyward's own, with every test run in a folder of its own.

pytest-django loads the settings before any conftest.py is imported, so the run's folders must be
chosen here, before `portal.settings` reads the environment. The variables are exported, so worker
processes and commands that tests start inherit the same folders, queue and database names.
"""

from __future__ import annotations

import os
import tempfile
import uuid

# Removed after a run that passed (tests/plugins.py), unless the folder was given from outside.
KEYWARD_TEST_DIR_CREATED = "KEYWARD_TEST_DIR" not in os.environ
_run_id = os.environ.setdefault("KEYWARD_TEST_RUN_ID", uuid.uuid4().hex[:8])
_run_dir = os.environ.setdefault("KEYWARD_TEST_DIR", tempfile.mkdtemp(prefix=f"keyward-test-{_run_id}-"))
os.environ.setdefault("KEYWARD_TEST_DB_DIR", os.path.join(_run_dir, "db"))
os.environ.setdefault("KEYWARD_VAR_DIR", os.path.join(_run_dir, "var"))
# A queue of this run's own: concurrent runs on one Redis never take each other's tasks.
os.environ.setdefault("CELERY_TASK_DEFAULT_QUEUE", f"keyward-test-{_run_id}")
os.makedirs(os.environ["KEYWARD_TEST_DB_DIR"], exist_ok=True)
os.makedirs(os.environ["KEYWARD_VAR_DIR"], exist_ok=True)

from portal.settings import *  # noqa: E402, F403

# Hashing passwords at production strength costs about a third of a second each; tests create many users.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
