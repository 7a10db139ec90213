"""The audit trail as reviewers query it: filters from the query string, keyset pages by seq, export batches.

Every query here is shaped for one of the (field, seq) indexes on AuditEvent: an equality on one column,
a seq range, and ORDER BY seq. Nothing uses OFFSET, so the thousandth page costs what the first does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django import forms
from django.db.models import DateTimeField, ExpressionWrapper, F, Q, QuerySet, TextField
from django.db.models.functions import Cast

from encryption.key_uri import InvalidKeyUri, parse_key_uri
from encryption.models import Account, AuditEvent

PAGE_SIZE = 50
EXPORT_BATCH = 2000


@dataclass(frozen=True)
class AuditFilters:
    """What a reviewer asked for; empty strings and None mean "any"."""

    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive
    actor: str = ""
    role: str = ""
    account: str = ""  # an account's ARM id (the event's target) or its name
    key: str = ""  # a key URI; a versionless one matches every version
    action: str = ""
    outcome: str = ""
    text: str = ""

    @property
    def is_empty(self) -> bool:
        return not any(getattr(self, f.name) for f in fields(self))

    def as_dict(self) -> dict[str, str]:
        """The filter as plain strings (for links, the export manifest and its audit event)."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, datetime):
                out[f.name] = value.isoformat()
            elif value:
                out[f.name] = str(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuditFilters:
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = data.get(f.name)
            if raw in (None, ""):
                continue
            values[f.name] = datetime.fromisoformat(raw) if f.name in ("start", "end") else str(raw)
        return cls(**values)


# The filter form (GET parameters of the audit page and the export)


class AuditFilterForm(forms.Form):
    day = forms.DateField(required=False, label="Day", widget=forms.DateInput(attrs={"type": "date"}))
    actor = forms.CharField(required=False, max_length=150, label="Actor")
    role = forms.CharField(required=False, max_length=40, label="Role")
    account = forms.CharField(required=False, max_length=400, label="Account")
    key = forms.CharField(required=False, max_length=300, label="Key")
    action = forms.CharField(required=False, max_length=60, label="Action")
    outcome = forms.ChoiceField(
        required=False, label="Outcome", choices=[("", "Any outcome"), *AuditEvent.Outcome.choices]
    )
    q = forms.CharField(required=False, max_length=200, label="Message contains")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # "from" and "to" are Python keywords, so these two are added by name rather than declared.
        widget = forms.DateTimeInput(attrs={"type": "datetime-local"})
        self.fields["from"] = forms.DateTimeField(required=False, label="From", widget=widget)
        self.fields["to"] = forms.DateTimeField(required=False, label="To", widget=widget)
        self.order_fields(["from", "to", "day"])

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("from"), data.get("to")
        if start and end and end <= start:
            raise forms.ValidationError("“To” must be after “From”.")
        return data

    def filters(self) -> AuditFilters:
        """The validated filter; call after is_valid()."""
        data = self.cleaned_data
        start: datetime | None = data.get("from")
        end: datetime | None = data.get("to")
        day: date | None = data.get("day")
        if day is not None:
            # A day is a shortcut for [00:00, next 00:00) in UTC, narrowed further by from/to if given.
            day_start = datetime.combine(day, time.min, tzinfo=UTC)
            start = max(start, day_start) if start else day_start
            end = min(end, day_start + timedelta(days=1)) if end else day_start + timedelta(days=1)
        return AuditFilters(
            start=start,
            end=end,
            actor=data.get("actor", "").strip(),
            role=data.get("role", "").strip(),
            account=data.get("account", "").strip(),
            key=data.get("key", "").strip(),
            action=data.get("action", "").strip(),
            outcome=data.get("outcome", ""),
            text=data.get("q", "").strip(),
        )


# Building the queryset


def _account_targets(account: str) -> list[str]:
    if account.startswith("/"):
        return [account]
    arm_ids = list(Account.objects.filter(name__iexact=account).values_list("arm_id", flat=True))
    return arm_ids or [account]


def _key_condition(key: str) -> Q:
    try:
        uri = parse_key_uri(key)
    except InvalidKeyUri:
        return Q(key_id=key)
    if uri.version:
        return Q(key_id=uri.id)
    # A versionless key stands for every version of it; the prefix keeps the trailing slash so that
    # key "k" does not also match key "k2".
    return Q(key_id=uri.id) | Q(key_id__startswith=uri.id + "/")


# audit.record stamps `created_at` just before it waits for the chain lock, so seq order is time order up
# to the longest wait for that lock (a transaction's length). The seq range is widened by this much; the
# exact created_at condition is still applied, so the margin costs a few index entries, never correctness.
SEQ_ORDER_MARGIN = timedelta(hours=1)


def _seq_bounds(start: datetime | None, end: datetime | None) -> tuple[int | None, int | None] | None:
    """A seq range holding every event of a time range, or None when no event falls in it.

    Turning the time range into a seq range lets each (field, seq) index serve a filter combined with a
    time range, instead of reading every event of that field and sorting them.
    """
    by_time = AuditEvent.objects.values_list("seq", flat=True)
    lo = hi = None
    # Each bound is one step down the (created_at, seq) index; an empty answer means an empty range.
    if start is not None:
        lo = by_time.filter(created_at__gte=start - SEQ_ORDER_MARGIN).order_by("created_at", "seq").first()
        if lo is None:
            return None
    if end is not None:
        hi = by_time.filter(created_at__lt=end + SEQ_ORDER_MARGIN).order_by("-created_at", "-seq").first()
        if hi is None:
            return None
    return lo, hi


def filtered_events(f: AuditFilters) -> QuerySet[AuditEvent]:
    qs = AuditEvent.objects.all()
    if f.start is not None or f.end is not None:
        bounds = _seq_bounds(f.start, f.end)
        if bounds is None:
            return qs.none()
        lo, hi = bounds
        # The exact time test is made on `created_at + 0`, which no index matches: the planner then walks
        # the seq range backwards (newest first, stopping after one page) instead of reading the whole
        # range through the created_at index and sorting it, which it would otherwise misjudge as cheaper.
        qs = qs.annotate(_at=ExpressionWrapper(F("created_at") + timedelta(0), output_field=DateTimeField()))
        if lo is not None:
            qs = qs.filter(seq__gte=lo, _at__gte=f.start)
        if hi is not None:
            qs = qs.filter(seq__lte=hi, _at__lt=f.end)
    if f.actor:
        qs = qs.filter(actor=f.actor)
    if f.role:
        qs = qs.filter(actor_role=f.role)
    if f.account:
        targets = _account_targets(f.account)
        qs = qs.filter(target=targets[0]) if len(targets) == 1 else qs.filter(target__in=targets)
    if f.key:
        qs = qs.filter(_key_condition(f.key))
    if f.action:
        qs = qs.filter(action=f.action)
    if f.outcome:
        qs = qs.filter(outcome=f.outcome)
    if f.text:
        # On PostgreSQL this is UPPER(message) LIKE UPPER('%text%'), which the trigram index serves.
        qs = qs.filter(message__icontains=f.text)
    return qs


# Keyset pages


@dataclass(frozen=True)
class AuditPage:
    events: list[AuditEvent]
    older: int | None  # the cursor for the next older page (`before`), when there is one
    newer: int | None  # the cursor for the next newer page (`after`), when there is one


def page(f: AuditFilters, *, before: int | None = None, after: int | None = None, size: int = PAGE_SIZE) -> AuditPage:
    """One page, newest first: the newest events, or those older than `before`, or newer than `after`."""
    qs = filtered_events(f)
    if after is not None:
        # Walk up from the cursor, then show the page newest first like every other page.
        rows = list(qs.filter(seq__gt=after).order_by("seq")[: size + 1])
        has_more_newer = len(rows) > size
        events = rows[:size][::-1]
        has_older = bool(events) and qs.filter(seq__lt=events[-1].seq).exists()
        has_newer = has_more_newer
    else:
        qs_page = qs.filter(seq__lt=before) if before is not None else qs
        rows = list(qs_page.order_by("-seq")[: size + 1])
        has_older = len(rows) > size
        events = rows[:size]
        has_newer = before is not None and bool(events) and qs.filter(seq__gt=events[0].seq).exists()
    return AuditPage(
        events=events,
        older=events[-1].seq if has_older and events else None,
        newer=events[0].seq if has_newer and events else None,
    )


# The export's columns, in file order. JSON columns are read as the text the database holds (jsonb's own
# text on PostgreSQL): decoding and re-encoding them in Python would cost more than all the rest, and any JSON
# reader gets the same values back, which is what verify_export checks each event's hash against.
EXPORT_COLUMNS = (
    "seq",
    "created_at",
    "actor",
    "actor_role",
    "source",
    "source_ip",
    "source_detail",
    "action",
    "outcome",
    "target",
    "key_id",
    "operation_id",
    "before",
    "after",
    "request_ids",
    "message",
    "prev_hash",
    "hash",
)
JSON_COLUMNS = frozenset({"before", "after", "request_ids"})


def iter_for_export(f: AuditFilters, *, upto_seq: int, batch: int = EXPORT_BATCH) -> Iterator[list[tuple[Any, ...]]]:
    """The filtered events up to `upto_seq` as EXPORT_COLUMNS tuples, oldest first, in keyset batches."""
    as_text = {f"{c}_text": Cast(c, TextField()) for c in JSON_COLUMNS}
    names = [f"{c}_text" if c in JSON_COLUMNS else c for c in EXPORT_COLUMNS]
    qs = filtered_events(f).filter(seq__lte=upto_seq).annotate(**as_text).order_by("seq").values_list(*names)
    last = None
    while True:
        rows = list((qs if last is None else qs.filter(seq__gt=last))[:batch])
        if not rows:
            return
        yield rows
        last = rows[-1][0]
        if len(rows) < batch:
            return
