"""The emulator's clock: wall time plus an offset kept in the emulator database, so every process on the
machine (web, workers, tests) agrees when keys expire and rotation policies fire."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from emulator.models import ClockOffset
from emulator.router import EMULATOR_ALIAS


def offset() -> float:
    row = ClockOffset.objects.filter(pk=1).values_list("offset_seconds", flat=True).first()
    return float(row or 0.0)


def now() -> datetime:
    return timezone.now() + timedelta(seconds=offset())


def shift(seconds: float) -> datetime:
    """Move the clock forward (or back) by `seconds`; returns the new now()."""
    with transaction.atomic(using=EMULATOR_ALIAS):
        ClockOffset.objects.get_or_create(pk=1)
        # An F() update so two processes shifting at once both count.
        ClockOffset.objects.filter(pk=1).update(offset_seconds=F("offset_seconds") + seconds)
    return now()


def reset() -> None:
    with transaction.atomic(using=EMULATOR_ALIAS):
        ClockOffset.objects.filter(pk=1).delete()
