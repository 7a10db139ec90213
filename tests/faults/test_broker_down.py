"""The broker goes down (a real Redis shut down with `redis-cli shutdown nosave`, then started again) while
admins keep saving on the Encryption page: no request is lost, each page says the change is queued, and
everything runs once Redis is back."""

from __future__ import annotations

import pytest

from encryption.models import Operation
from tests.faults.common import DrillTestCase
from tests.faults.drills import RedisServer, drill_broker_down, drill_broker_unreachable
from tests.harness import require

pytestmark = [pytest.mark.worker, pytest.mark.faults, pytest.mark.services]


class BrokerDownTests(DrillTestCase):
    accounts = 3

    def test_saves_while_redis_is_down_stay_queued_and_run_when_it_returns(self):
        require(RedisServer.available(), "redis-server and redis-cli")
        result = drill_broker_down(self.lab, saves_while_down=2)
        ops = self.assert_nothing_lost(result)
        assert len(ops) == 3
        for op in ops[1:]:
            # Recorded while the broker was down: the sweeper sent it once Redis was back.
            assert op.status == Operation.Status.SUCCEEDED and op.enqueued_at is not None
            assert op.events.filter(action="operation.requested").count() == 1

    def test_saves_while_the_broker_is_unreachable_stay_queued_and_run_when_it_returns(self):
        # Whatever the suite's broker (the filesystem one included): the web side publishes to a closed port.
        result = drill_broker_unreachable(self.lab, saves_while_down=2)
        ops = self.assert_nothing_lost(result)
        assert len(ops) == 3 and all(op.enqueued_at is not None for op in ops)
