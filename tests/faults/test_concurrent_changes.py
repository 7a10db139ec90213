"""Two admins change the same account at once (two threads calling the service, two Saves on the page,
two command-line processes): exactly one operation is recorded and runs; the other admin is told why."""

from __future__ import annotations

import pytest

from tests.faults.common import DrillTestCase
from tests.faults.drills import drill_concurrent_changes

pytestmark = [pytest.mark.worker, pytest.mark.faults]


class ConcurrentChangeTests(DrillTestCase):
    accounts = 4

    def test_exactly_one_of_two_racing_changes_is_recorded(self):
        result = drill_concurrent_changes(self.lab)
        # Notes name any race where both or neither got through, or the loser was not told why.
        assert result.problems == [], result.problems
        ops = self.assert_nothing_lost(result)
        assert len(ops) == 3
        for op in ops:
            # The one that ran re-read the account right before its PATCH and read it back after.
            steps = list(op.steps.values_list("name", flat=True))
            assert steps.index("set_key") < steps.index("verify"), steps
