"""Azure misbehaving, through the emulator's fault knobs: throttling storms, 500/503 bursts, slow
responses, an LRO that ends Failed, and failures past every retry. Retries stay within their limits,
failures past them are clear, and nothing is half-applied without a record."""

from __future__ import annotations

import pytest
from django.conf import settings

from encryption.models import Operation
from tests.faults.common import DrillTestCase
from tests.faults.drills import (
    drill_error_bursts,
    drill_lro_fails,
    drill_past_the_limits,
    drill_slow_responses,
    drill_throttling_storm,
)

pytestmark = pytest.mark.faults


class AzureFaultTests(DrillTestCase):
    accounts = 4

    def test_a_throttling_storm_is_waited_out(self):
        result = drill_throttling_storm(self.lab, operations_count=2)
        self.assert_nothing_lost(result)  # problems include "the storm did not happen"
        assert any("Azure answered 429" in fact for fact in result.facts), result.facts

    def test_bursts_of_500_and_503_are_retried(self):
        self.assert_nothing_lost(drill_error_bursts(self.lab, operations_count=2))

    def test_slow_responses_and_a_long_lro_are_followed_not_resent(self):
        result = drill_slow_responses(self.lab, operations_count=1)
        for op in self.assert_nothing_lost(result):
            assert op.patch_attempts == 1 and op.deliveries >= 1

    def test_failures_past_the_retries_fail_clearly_and_change_nothing(self):
        # Started as the task's last retry but one (the benchmark spends every retry): the same code path.
        result = drill_past_the_limits(self.lab, retries_spent=settings.OPERATION_MAX_RETRIES - 1)
        (op,) = self.assert_nothing_lost(result, succeeded=False)
        assert op.status == Operation.Status.FAILED
        assert "Azure" in op.reason and op.error_code
        assert op.account is not None and not op.account.uses_cmk

    def test_an_lro_that_ends_failed_fails_the_operation_with_the_reason(self):
        result = drill_lro_fails(self.lab)
        (op,) = self.assert_nothing_lost(result, succeeded=False)
        assert "disabled" in op.reason.lower(), op.reason
        assert op.patch_attempts == 1
