"""`python manage.py verify_audit [--checkpoint] [--no-record]`: check the audit hash chain.

Exit status 0 and the count on an intact chain; 1 and the first bad event (seq and what is wrong)
otherwise. The result is itself recorded as an `audit.verified` event (the Verify page reads the latest
one), unless --no-record is given, e.g. on a read-only replica.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from encryption import audit
from encryption.actors import Actor
from encryption.models import AuditEvent


class Command(BaseCommand):
    help = "Verify the audit trail's hash chain and its signed checkpoints."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--checkpoint", action="store_true", help="sign a checkpoint of the chain head first")
        parser.add_argument("--no-record", action="store_true", help="do not record the result in the trail")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["checkpoint"]:
            checkpoint = audit.write_checkpoint()
            if checkpoint is not None:
                self.stdout.write(f"checkpoint written at #{checkpoint.seq}")
        report = audit.verify_chain()
        if not options["no_record"]:
            self._record(report)
        if not report.ok:
            self.stderr.write(f"audit chain BROKEN at event #{report.first_bad_seq}: {report.reason}")
            raise SystemExit(1)
        checked = (
            f"checkpoint #{report.checkpoint_seq} signature valid" if report.checkpoint_seq else "no checkpoint yet"
        )
        self.stdout.write(
            f"audit chain intact: {report.count} events; {checked}; "
            f"{report.seconds:.2f} s ({report.events_per_second:,.0f} events/s"
            + (f", {report.processes} processes)" if report.processes > 1 else ")")
        )

    def _record(self, report: audit.ChainReport) -> None:
        ok = AuditEvent.Outcome.SUCCEEDED if report.ok else AuditEvent.Outcome.FAILED
        message = (
            f"Audit chain verified: intact, {report.count} events"
            if report.ok
            else f"Audit chain verification failed at #{report.first_bad_seq}: {report.reason}"
        )
        audit.record(
            actor=Actor.from_cli(),
            action="audit.verified",
            outcome=ok,
            after={
                "ok": report.ok,
                "count": report.count,
                "first_bad_seq": report.first_bad_seq,
                "reason": report.reason,
                "checkpoint_seq": report.checkpoint_seq,
            },
            message=message,
        )
