"""A worker killed with SIGKILL (its pool process, or the whole worker) before the PATCH, during the LRO
and after it: every operation still ends once a worker is back and the sweeper has run, Azure applied no
more PATCHes than recorded, and the audit chain verifies."""

from __future__ import annotations

import pytest

from emulator.testing import request_count
from encryption.models import Operation, OperationStep
from tests.faults.common import DrillTestCase
from tests.faults.drills import drill_worker_killed

pytestmark = [pytest.mark.worker, pytest.mark.faults]


def assert_no_extra_patch(op: Operation) -> None:
    # No fault touched the PATCHes here, so every PATCH Azure saw counts: no more than the row recorded.
    assert op.account is not None
    assert request_count("PATCH", f"/accounts/{op.account.name}") <= op.patch_attempts, op.pk


class WorkerKilledTests(DrillTestCase):
    accounts = 4

    def test_a_killed_pool_process_at_each_step_leaves_every_operation_finished(self):
        result = drill_worker_killed(self.lab, modes=("child",))
        for op in self.assert_nothing_lost(result):
            assert_no_extra_patch(op)
            # Delivered again after the kill, and the interrupted step said so.
            assert op.deliveries >= 2, (op.pk, op.deliveries)
            assert op.steps.filter(status=OperationStep.Status.FAILED, detail__startswith="Interrupted").count() == 1

    def test_a_killed_worker_at_each_step_leaves_every_operation_finished(self):
        result = drill_worker_killed(self.lab, modes=("worker",))
        ops = self.assert_nothing_lost(result)
        assert len(ops) == 3
        for op in ops:
            assert_no_extra_patch(op)
        before, during, after = sorted(ops, key=lambda op: op.pk)  # asked for in KILL_POINTS order
        # Killed while Azure was applying the PATCH: the next worker resumed the LRO from its token.
        assert during.patch_attempts == 1
        # Killed before anything was sent, or after Azure had applied it: one PATCH either way.
        assert before.patch_attempts == after.patch_attempts == 1
