from __future__ import annotations

import subprocess
import sys
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import override_settings

from encryption import audit
from encryption.actors import Actor
from encryption.models import AuditCheckpoint, AuditEvent
from tests.audit_helpers import privileged_execute
from tests.harness import ReloadingTransactionTestCase, worker_environment


def record(n: int) -> list[AuditEvent]:
    return [
        audit.record(actor=Actor.system(), action="operation.step", outcome="succeeded", message=f"step {i}")
        for i in range(n)
    ]


def verify_audit(*args: str) -> tuple[int, str, str]:
    """Run the command as a script would: its exit status, stdout and stderr."""
    out, err = StringIO(), StringIO()
    try:
        call_command("verify_audit", *args, stdout=out, stderr=err)
    except SystemExit as exit_:
        return int(exit_.code or 0), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


# TransactionTestCase: on PostgreSQL the tampering goes through a privileged connection (committed rows).


class VerifyAuditCommandTests(ReloadingTransactionTestCase):
    def test_it_exits_0_with_the_count_on_an_intact_chain(self) -> None:
        record(7)
        status, out, _ = verify_audit()
        assert status == 0
        assert "audit chain intact: 7 events" in out
        # The verification itself is recorded, and chains on.
        event = AuditEvent.objects.get(seq=8)
        assert (event.action, event.outcome, event.source) == ("audit.verified", "succeeded", "cli")
        assert isinstance(event.after, dict) and event.after["count"] == 7
        assert audit.verify_chain().ok

    def test_it_names_the_checkpoint_it_checked(self) -> None:
        record(3)
        status, out, _ = verify_audit("--checkpoint", "--no-record")
        assert status == 0
        assert "checkpoint written at #3" in out
        assert "checkpoint #3 signature valid" in out
        assert AuditEvent.objects.count() == 3  # --no-record left the trail as it was
        assert AuditCheckpoint.objects.get().seq == 3

    def test_it_exits_1_naming_an_edited_event(self) -> None:
        record(6)
        privileged_execute("UPDATE encryption_auditevent SET actor = 'someone-else' WHERE seq = 2")
        status, _, err = verify_audit()
        assert status == 1
        assert "BROKEN at event #2" in err
        assert "edited" in err
        failed = AuditEvent.objects.order_by("-seq").first()
        assert failed is not None and (failed.action, failed.outcome) == ("audit.verified", "failed")

    def test_it_exits_1_naming_a_deleted_event(self) -> None:
        record(6)
        privileged_execute("DELETE FROM encryption_auditevent WHERE seq = 3")
        status, _, err = verify_audit("--no-record")
        assert status == 1
        assert "BROKEN at event #3" in err
        assert "missing (deleted)" in err

    def test_it_exits_1_naming_an_event_inserted_out_of_order(self) -> None:
        events = record(4)
        forged = AuditEvent(
            seq=5,
            created_at=events[-1].created_at,
            actor="mallory",
            source="web",
            action="operation.succeeded",
            outcome="succeeded",
            request_ids=[],
            prev_hash=events[1].hash,  # chained to #2, placed after #4
        )
        forged.hash = audit.event_hash(tuple(getattr(forged, f) for f in audit.HASHED_FIELDS))
        forged.save(force_insert=True)
        status, _, err = verify_audit("--no-record")
        assert status == 1
        assert "BROKEN at event #5" in err
        assert "inserted out of order" in err

    @override_settings(AUDIT_CHECKPOINT_EVERY=4)
    def test_it_exits_1_when_the_trail_was_cut_below_its_checkpoint(self) -> None:
        record(9)
        privileged_execute("DELETE FROM encryption_auditevent WHERE seq >= 7")
        status, _, err = verify_audit("--no-record")
        assert status == 1
        assert "BROKEN at event #7" in err
        assert "the trail was cut: checkpoint #8" in err

    @pytest.mark.timeout(60)
    def test_it_verifies_an_empty_trail(self) -> None:
        status, out, _ = verify_audit("--no-record")
        assert status == 0
        assert "0 events; no checkpoint yet" in out


class VerifyAuditProcessTests(ReloadingTransactionTestCase):
    def run_command(self) -> subprocess.CompletedProcess[str]:
        # A real `python manage.py verify_audit` on this run's test database, as an operator runs it.
        return subprocess.run(
            [sys.executable, "manage.py", "verify_audit", "--no-record"],
            cwd=settings.BASE_DIR,
            env=worker_environment(),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def test_its_exit_status_tells_intact_from_tampered(self) -> None:
        record(5)
        intact = self.run_command()
        assert intact.returncode == 0, intact.stderr
        assert "audit chain intact: 5 events" in intact.stdout
        privileged_execute("UPDATE encryption_auditevent SET outcome = 'failed' WHERE seq = 3")
        tampered = self.run_command()
        assert tampered.returncode == 1
        assert "BROKEN at event #3" in tampered.stderr
