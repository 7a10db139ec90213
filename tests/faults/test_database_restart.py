"""PostgreSQL restarted mid-operation (every backend of the database terminated while a worker follows
the LRO): the worker's task ends with the error, and the operation resumes once its lease runs out;
nothing is sent twice and the audit chain verifies."""

from __future__ import annotations

import pytest

from tests.faults.common import DrillTestCase
from tests.faults.drills import drill_database_restart
from tests.harness import require_postgresql

pytestmark = [pytest.mark.worker, pytest.mark.faults, pytest.mark.services]


class DatabaseRestartTests(DrillTestCase):
    accounts = 2

    def test_an_operation_survives_its_database_connections_being_killed(self):
        require_postgresql()
        result = drill_database_restart(self.lab)
        (op,) = self.assert_nothing_lost(result)
        assert op.patch_attempts == 1  # resumed from the LRO's token, not sent again
        assert op.deliveries >= 2  # the first worker's task died with its connection; another one resumed it
        assert any("connections terminated" in fact for fact in result.facts), result.facts
