"""Chain verification split over worker processes gives exactly the one-process verdict.

The side-by-side walk runs on PostgreSQL (CI=true runs it); the tampering is committed through a privileged
connection, so these are TransactionTestCases: the worker processes have connections of their own.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import SimpleTestCase, override_settings

from encryption import audit
from encryption.audit_walk import seq_ranges
from tests.audit_helpers import privileged_execute
from tests.encryption.test_audit import _insert_forged, _rewrite, record
from tests.harness import ReloadingTransactionTestCase


class SeqRangeTests(SimpleTestCase):
    def test_ranges_cover_every_seq_once_in_order(self) -> None:
        for low, high, parts in [(1, 10, 3), (1, 1_000_000, 2), (5, 6, 4), (0, 0, 2), (1, 7, 7)]:
            ranges = seq_ranges(low, high, parts)
            covered = [seq for after, until in ranges for seq in range(after + 1, until + 1)]
            assert covered == list(range(low, high + 1))
            assert len(ranges) == min(parts, high - low + 1)
            sizes = [until - after for after, until in ranges]
            assert max(sizes) - min(sizes) <= 1


def _fields(report: audit.ChainReport) -> tuple[object, ...]:
    return report.ok, report.count, report.first_bad_seq, report.reason, report.head_seq, report.head_hash


@override_settings(AUDIT_CHECKPOINT_EVERY=10, AUDIT_VERIFY_PARALLEL_FROM=0)
class SideBySideTests(ReloadingTransactionTestCase):
    def setUp(self) -> None:
        if connection.vendor != "postgresql":
            pytest.skip("worker processes walk PostgreSQL trails only (CI=true runs this on PostgreSQL)")

    def verdicts(self) -> tuple[audit.ChainReport, audit.ChainReport]:
        """The same trail verified by three processes side by side, then by this one alone."""
        with override_settings(AUDIT_VERIFY_PROCESSES=3):
            side_by_side = audit.verify_chain(batch_size=4)
        with override_settings(AUDIT_VERIFY_PROCESSES=1):
            alone = audit.verify_chain(batch_size=4)
        assert (side_by_side.processes, alone.processes) == (3, 1)
        return side_by_side, alone

    def test_an_intact_trail_verifies_the_same(self) -> None:
        events = record(40)
        side_by_side, alone = self.verdicts()
        assert side_by_side.ok and _fields(side_by_side) == _fields(alone)
        assert (side_by_side.count, side_by_side.head_hash) == (40, events[-1].hash)

    def test_an_edit_in_a_later_range_is_named_the_same(self) -> None:
        record(40)
        privileged_execute("UPDATE encryption_auditevent SET message = %s WHERE seq = 33", ["nothing happened"])
        side_by_side, alone = self.verdicts()
        assert (side_by_side.first_bad_seq, side_by_side.count) == (33, 32)
        assert _fields(side_by_side) == _fields(alone)

    def test_a_deletion_at_a_range_boundary_is_named_the_same(self) -> None:
        record(40)
        privileged_execute("DELETE FROM encryption_auditevent WHERE seq = 15")  # ranges: 1-14, 15-27, 28-40
        side_by_side, alone = self.verdicts()
        assert side_by_side.first_bad_seq == 15 and "missing" in side_by_side.reason
        assert _fields(side_by_side) == _fields(alone)

    def test_a_careful_rewrite_is_caught_by_the_checkpoint_in_its_range(self) -> None:
        record(40)
        _rewrite(32, message="history rewritten", cascade=True)  # every hash valid again from 32 on
        side_by_side, alone = self.verdicts()
        assert side_by_side.first_bad_seq == 40 and "checkpoint #40" in side_by_side.reason
        assert _fields(side_by_side) == _fields(alone)

    def test_a_rewrite_that_breaks_the_join_between_ranges_is_named_the_same(self) -> None:
        record(40)
        # 14 ends the first range, sound on its own; 15, the next range's first, no longer chains to it.
        _rewrite(14, message="last of the first range")
        side_by_side, alone = self.verdicts()
        assert side_by_side.first_bad_seq == 15 and "does not chain to event #14" in side_by_side.reason
        assert _fields(side_by_side) == _fields(alone)

    def test_a_forged_event_before_the_first_is_named_the_same(self) -> None:
        record(40)
        _insert_forged(seq=0, prev_hash=audit.GENESIS_HASH)
        side_by_side, alone = self.verdicts()
        assert (side_by_side.first_bad_seq, side_by_side.count) == (0, 0)
        assert _fields(side_by_side) == _fields(alone)
