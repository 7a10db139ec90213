"""Test-wide setup. Each run's own folders are chosen in tests/settings.py (pytest-django loads the
settings before this file is imported, too late to choose them here)."""

from __future__ import annotations

# On PostgreSQL the audit tables are append-only (a trigger): every TransactionTestCase's flush empties
# them through a privileged connection first (tests/audit_helpers.py).
from tests.audit_helpers import install_flush_reset  # noqa: E402

install_flush_reset()

# The cross-process harness's fixtures (worker, chromium, page); the harness itself is tests/harness.py.
pytest_plugins = ["tests.plugins"]
