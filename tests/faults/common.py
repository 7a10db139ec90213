"""The test side of the drills: a lab per test on committed rows, and what every drill must show."""

from __future__ import annotations

from encryption.models import Operation
from tests.faults.drills import DrillResult, Lab, applied_patches, prepare_lab
from tests.harness import CrossProcessTestCase


class DrillTestCase(CrossProcessTestCase):
    """Committed rows (workers and threads see them), the seeded emulator and `accounts` fresh accounts."""

    accounts = 8

    def setUp(self):
        self.lab: Lab = prepare_lab(self.accounts)
        self.addCleanup(self.lab.close)

    def assert_nothing_lost(self, result: DrillResult, *, succeeded: bool = True) -> list[Operation]:
        """Every operation ended (succeeded, or failed with a reason), Azure applied no PATCH the
        operations did not record, the audit chain verifies, and the drill noted nothing wrong."""
        assert result.operations > 0, result
        assert result.problems == [], result.problems
        assert result.lost == 0, result.problems
        assert result.completed == result.operations, result.problems
        assert result.duplicated == 0, result.problems
        assert result.chain_intact, result.problems
        ops = list(Operation.objects.filter(pk__in=result.operation_ids).select_related("account"))
        for op in ops:
            if succeeded:
                assert op.status == Operation.Status.SUCCEEDED, (op.pk, op.reason, result.problems)
            if op.account is not None and op.kind == "enable_cmk":
                # Azure saw no more PATCHes than the operation recorded attempts.
                assert applied_patches(op.account.name) <= op.patch_attempts, (op.pk, result.problems)
            # Exactly one outcome event per operation: nothing finished twice.
            assert op.events.filter(action__in=("operation.succeeded", "operation.failed")).count() == 1
        return ops
