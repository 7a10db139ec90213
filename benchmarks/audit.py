"""Audit trail at scale: page latency per filter, export and verification rates, and Django admin for comparison.

    python benchmarks/audit.py [--events N] [--repeat R] [--reuse]

DATABASE_URL picks the database server (default: PostgreSQL on 127.0.0.1 as `postgres`); the benchmark always
works in a database of its own, `keyward_bench` (dropped, created and migrated here; never the dev database).
It fills the trail with N events (default 1,000,000) spread over six months: many actors, accounts, keys and
actions, each event chained by its real hash and a signed checkpoint every AUDIT_CHECKPOINT_EVERY events, bulk
loaded with COPY. Then it measures, through the Django test client (server time: middleware, view, queries,
template), the audit page with each single filter (p95 over --repeat requests with varied values), the same
filters on Django's admin changelist for AuditEvent, the CSV export stream (events/s, and Python's peak heap
while streaming) and chain verification (events/s, the median of three walks, with worker processes as
AUDIT_VERIFY_PROCESSES sets them). The last line reads
`audit events=N p95_ms=X export_eps=Y verify_eps=Z admin_ratio=R`, where p95_ms is the worst filter's p95
and admin_ratio is the admin's p95 over ours, on the filters both offer.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode, urlsplit, urlunsplit

BASE_DIR = Path(__file__).resolve().parent.parent
BENCH_DB = "keyward_bench"
DEFAULT_SERVER = "postgres://postgres@127.0.0.1:5432/postgres"
SPAN = timedelta(days=180)
LOAD_CHUNK = 50_000


# The bench database (before Django is set up: settings read DATABASE_URL once)


def bench_url(server_url: str) -> str:
    parts = urlsplit(server_url)
    if parts.scheme.startswith("sqlite"):
        path = BASE_DIR / "var" / "bench" / f"{BENCH_DB}.sqlite3"
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"
    return urlunsplit((parts.scheme, parts.netloc, f"/{BENCH_DB}", parts.query, ""))


def recreate_database(server_url: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme.startswith("sqlite"):
        for suffix in ("", "-wal", "-shm"):
            Path(parts.path + suffix).unlink(missing_ok=True)
        return
    import psycopg

    admin = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")


def configure(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    # The trail needs neither the emulator nor the dev signing key: a bench key of its own, under var/bench.
    os.environ["AZURE_BACKEND"] = "azure"
    os.environ["AUDIT_SIGNING_KEY_FILE"] = str(BASE_DIR / "var" / "bench" / "audit-signing-key.pem")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()


# A realistic trail


class Estate:
    """Who and what the generated events are about."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        subs = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(6)]
        regions = ["eastus", "westus", "westeurope", "northeurope", "southeastasia", "uksouth"]
        self.accounts = [
            f"/subscriptions/{rng.choice(subs)}/resourceGroups/rg-ai-{i % 40}/providers/"
            f"Microsoft.CognitiveServices/accounts/face-{rng.choice(['prod', 'dev', 'test', 'ml'])}-{i}-{rng.choice(regions)}"
            for i in range(400)
        ]
        self.keys = []
        for i in range(80):
            base = f"https://kv-{rng.choice(['prod', 'dev', 'sec'])}-{i}.vault.azure.net/keys/cmk-{i}"
            self.keys.append((base, [uuid.UUID(int=rng.getrandbits(128)).hex for _ in range(rng.randint(1, 5))]))
        roles = [("encryption-admins", 8), ("security-reviewers", 10), ("help-desk", 12)]
        self.users = [(f"{role.split('-')[0][:6]}-{n}", role) for role, count in roles for n in range(count)]
        self.ips = [f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}" for _ in range(60)]

    ACTIONS = [
        ("operation.requested", 20),
        ("operation.step", 35),
        ("operation.succeeded", 14),
        ("operation.failed", 3),
        ("access.refused", 4),
        ("auth.login", 10),
        ("auth.logout", 6),
        ("auth.login_failed", 1),
        ("sync.external_change", 3),
        ("role.changed", 1),
        ("audit.exported", 1),
        ("audit.verified", 2),
    ]
    KINDS = ["Enable CMK", "Update key version", "Rotate key", "Revoke access", "Restore access", "Refresh", "Diagnose"]
    STEPS = ["Enable the identity", "Grant key access", "Update the encryption", "Probe data access", "Read back"]

    def event(self, seq: int, at: datetime) -> dict[str, Any]:
        rng = self.rng
        action = rng.choices([a for a, _ in self.ACTIONS], [w for _, w in self.ACTIONS])[0]
        user, role = rng.choice(self.users)
        source, ip, detail = "web", rng.choice(self.ips), ""
        target = key_id = message = ""
        before = after = None
        outcome = "info"
        account = rng.choice(self.accounts)
        name = account.rsplit("/", 1)[-1]
        key, versions = rng.choice(self.keys)
        version = rng.choice(versions)
        kind = rng.choice(self.KINDS)
        if action.startswith("operation."):
            if rng.random() < 0.3:
                user, role, source, ip, detail = "system", "", "system", "", "worker@keyward-1"
            target, key_id = account, f"{key}/{version}"
            outcome = {"requested": "requested", "step": "succeeded", "succeeded": "succeeded", "failed": "failed"}[
                action.split(".")[1]
            ]
            before = {"keySource": "Microsoft.KeyVault", "keyVersion": rng.choice(versions)}
            after = {"keySource": "Microsoft.KeyVault", "keyVersion": version}
            message = {
                "requested": f"{kind} requested for {name}.",
                "step": f"{rng.choice(self.STEPS)} for {name}: done in {rng.randint(40, 4000)} ms.",
                "succeeded": f"{kind} succeeded for {name}.",
                "failed": f"{kind} failed for {name}: the vault refused the request (Forbidden).",
            }[action.split(".")[1]]
        elif action == "access.refused":
            outcome, target = "refused", rng.choice(["/audit/", "/keys/", "/audit/export/"])
            message = f"GET {target} refused: the role lacks the permission encryption.view_audit."
        elif action.startswith("auth."):
            outcome = "failed" if action == "auth.login_failed" else "succeeded"
            message = {
                "auth.login": "Signed in.",
                "auth.logout": "Signed out.",
                "auth.login_failed": "Sign-in failed.",
            }[action]
        elif action == "sync.external_change":
            user, role, source, ip, detail = "system", "", "system", "", "beat@keyward-1"
            target, key_id = account, f"{key}/{version}"
            message = f"Sync found a change made outside Keyward on {name}: key version changed."
        elif action == "role.changed":
            target, message = f"user:{rng.choice(self.users)[0]}", "Role changed to security-reviewers."
            outcome = "succeeded"
        elif action == "audit.exported":
            outcome, message = "succeeded", f"Audit trail exported: {rng.randint(10, 90000)} events as CSV"
        else:
            outcome, message = "succeeded", f"Audit chain verified: intact, {seq} events"
        return {
            "seq": seq,
            "created_at": at,
            "actor": user,
            "actor_role": role,
            "source": source,
            "source_ip": ip,
            "source_detail": detail,
            "action": action,
            "target": target,
            "key_id": key_id,
            "operation_id": None,
            "outcome": outcome,
            "before": before,
            "after": after,
            "request_ids": [str(uuid.UUID(int=rng.getrandbits(128), version=4))] if target else [],
            "message": message,
        }


def generate(count: int, estate: Estate) -> Iterator[list[dict[str, Any]]]:
    """Chained events, oldest first, in chunks; time advances with seq (as audit.record appends)."""
    from encryption import audit

    start = datetime.now(UTC) - SPAN
    step = SPAN / max(count, 1)
    prev = audit.GENESIS_HASH
    chunk: list[dict[str, Any]] = []
    for seq in range(1, count + 1):
        event = estate.event(seq, (start + step * seq).replace(microsecond=(seq * 7919) % 1_000_000))
        event["prev_hash"] = prev
        event["hash"] = prev = audit.event_hash(tuple(event[f] for f in audit.HASHED_FIELDS))
        chunk.append(event)
        if len(chunk) == LOAD_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _secondary_indexes(cursor: Any) -> list[tuple[str, str]]:
    cursor.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'encryption_auditevent' "
        "AND indexname NOT LIKE '%%pkey' AND indexdef NOT LIKE 'CREATE UNIQUE%%'"
    )
    return list(cursor.fetchall())


def load(count: int, seed: int) -> float:
    """Fill the trail; returns the seconds it took. PostgreSQL: COPY with secondary indexes built after."""
    from django.conf import settings
    from django.db import connection

    from encryption import audit
    from encryption.models import AuditCheckpoint, AuditEvent

    started = time.perf_counter()
    estate = Estate(random.Random(seed))
    every = settings.AUDIT_CHECKPOINT_EVERY
    checkpoints = []
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            indexes = _secondary_indexes(cursor)
            for name, _ in indexes:
                cursor.execute(f'DROP INDEX "{name}"')
        raw = connection.connection
        columns = [*audit.HASHED_FIELDS, "hash"]  # the chain's own field list: one place names them
        for chunk in generate(count, estate):
            with raw.cursor() as cur, cur.copy(f"COPY encryption_auditevent ({', '.join(columns)}) FROM STDIN") as copy:
                for e in chunk:
                    copy.write_row([_pg_value(c, e[c]) for c in columns])
            raw.commit()
            checkpoints += [(e["seq"], e["hash"]) for e in chunk if e["seq"] % every == 0]
            print(f"  loaded {chunk[-1]['seq']:>9} events", file=sys.stderr, flush=True)
        with connection.cursor() as cursor:
            for name, definition in indexes:
                print(f"  building {name}", file=sys.stderr, flush=True)
                cursor.execute(definition)
            cursor.execute("ANALYZE encryption_auditevent")
    else:
        for chunk in generate(count, estate):
            AuditEvent.objects.bulk_create([AuditEvent(**e) for e in chunk], batch_size=2000)
            checkpoints += [(e["seq"], e["hash"]) for e in chunk if e["seq"] % every == 0]
    AuditCheckpoint.objects.bulk_create(
        [
            AuditCheckpoint(
                seq=s,
                event_hash=h,
                signature=audit.sign(audit.checkpoint_payload(s, h)),
                public_key_fingerprint=audit.public_key_fingerprint(),
            )
            for s, h in checkpoints
        ],
        batch_size=2000,
    )
    return time.perf_counter() - started


def _pg_value(column: str, value: Any) -> Any:
    if column in ("before", "after", "request_ids"):
        return None if value is None else json.dumps(value)
    return value


# Measuring


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[max(0, int(round(0.95 * len(ordered))) - 1)]


def timed_get(client: Any, url: str) -> tuple[float, float]:
    """Wall time of one request (what the p95 is of) and the CPU time this process spent on it."""
    started, cpu = time.perf_counter(), time.process_time()
    response = client.get(url)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"{url} answered {response.status_code}")
    return elapsed, (time.process_time() - cpu) * 1000


def measure(client: Any, name: str, urls: Callable[[], str], repeat: int) -> float:
    timed_get(client, urls())  # warm-up: first-use costs (template compilation, plans) are not the page's
    samples = [timed_get(client, urls()) for _ in range(repeat)]
    value = p95([wall for wall, _ in samples])
    # The Django process's CPU time shows what the page costs when the machine is busy with other work
    # (wall time then includes waiting for a core); the database's own time is only in the wall time.
    print(
        f"  {name:<22} p95 {value:7.1f} ms  median {statistics.median(w for w, _ in samples):7.1f} ms"
        f"  (Django CPU median {statistics.median(c for _, c in samples):5.1f} ms)",
        flush=True,
    )
    return value


def filter_cases(estate: Estate, rng: random.Random, head: int) -> dict[str, Callable[[], dict[str, str]]]:
    end = datetime.now(UTC)

    def day() -> dict[str, str]:
        return {"day": (end - timedelta(days=rng.randint(1, 179))).date().isoformat()}

    def time_range() -> dict[str, str]:
        start = end - timedelta(days=rng.randint(2, 179), hours=rng.randint(0, 23))
        return {
            "from": start.strftime("%Y-%m-%dT%H:%M"),
            "to": (start + timedelta(hours=36)).strftime("%Y-%m-%dT%H:%M"),
        }

    return {
        "none": dict,
        "actor": lambda: {"actor": rng.choice(estate.users)[0]},
        "role": lambda: {"role": rng.choice(["encryption-admins", "security-reviewers", "help-desk"])},
        "account": lambda: {"account": rng.choice(estate.accounts)},
        "key (all versions)": lambda: {"key": rng.choice(estate.keys)[0]},
        "action": lambda: {"action": rng.choice([a for a, _ in Estate.ACTIONS])},
        "outcome": lambda: {"outcome": rng.choice(["requested", "succeeded", "failed", "refused", "info"])},
        "day": day,
        "time range": time_range,
        "message text": lambda: {"q": rng.choice(["rotate", "forbidden", "probe data", "face-dev", "sign", "refused"])},
        "older page (keyset)": lambda: {"before": str(rng.randint(head // 10, head))},
    }


ADMIN_CASES = {
    # The admin offers these as list filters or its search box; the rest it cannot do.
    "none": lambda c: {},
    "actor": lambda c: {"q": c["actor"]},
    "role": lambda c: {"actor_role": c["role"]},
    "account": lambda c: {"q": c["account"]},
    "action": lambda c: {"q": c["action"]},
    "outcome": lambda c: {"outcome__exact": c["outcome"]},
}


def bench_pages(estate: Estate, repeat: int, head: int) -> tuple[float, float, float]:
    from django.contrib.auth.models import Group, User
    from django.test import Client

    rng = random.Random(7)
    reviewer = User.objects.create_user("bench-reviewer", password=uuid.uuid4().hex)
    reviewer.groups.add(Group.objects.get(name="security-reviewers"))
    superuser = User.objects.create_superuser("bench-admin", password=uuid.uuid4().hex)
    ours, theirs = Client(HTTP_HOST="localhost"), Client(HTTP_HOST="localhost")
    ours.force_login(reviewer)
    theirs.force_login(superuser)
    cases = filter_cases(estate, rng, head)
    print(f"audit page ({repeat} requests per filter):", flush=True)
    results: dict[str, float] = {}
    for name, params in cases.items():

        def ours_url(p: Callable[[], dict[str, str]] = params) -> str:
            return "/audit/?" + urlencode(p())

        results[name] = measure(ours, name, ours_url, repeat)
    print(f"Django admin changelist ({max(5, repeat // 4)} requests per filter it supports):", flush=True)
    admin: dict[str, float] = {}
    for name, translate in ADMIN_CASES.items():
        params = cases[name]

        def url(
            t: Callable[[dict[str, str]], dict[str, str]] = translate, p: Callable[[], dict[str, str]] = params
        ) -> str:
            wide = {"actor": "", "role": "", "account": "", "action": "", "outcome": ""} | p()
            return "/admin/encryption/auditevent/?" + urlencode(t(wide))

        # The admin is an order of magnitude slower; fewer requests keep the run bounded.
        admin[name] = measure(theirs, name, url, max(5, repeat // 4))
    worst = max(results.values())
    ratio = statistics.fmean(admin.values()) / statistics.fmean(results[n] for n in admin)
    return worst, ratio, results["none"]


def bench_export(count: int) -> tuple[float, float]:
    """Stream the whole trail as CSV through the real view; events/s, then Python's peak heap on a sample."""
    from django.contrib.auth.models import User
    from django.http import StreamingHttpResponse
    from django.test import Client

    from encryption.models import AuditExport

    client = Client(HTTP_HOST="localhost")
    client.force_login(User.objects.get(username="bench-reviewer"))

    def run() -> tuple[int, float]:
        client.post("/audit/export/", {"format": "csv"})
        export = AuditExport.objects.order_by("-created_at").first()
        assert export is not None
        started = time.perf_counter()
        response = client.get(f"/audit/export/{export.export_id}/data")
        size = 0
        for chunk in cast(Iterator[bytes], cast(StreamingHttpResponse, response).streaming_content):
            size += len(chunk)
        return size, time.perf_counter() - started

    size, seconds = run()
    eps = count / seconds
    print(f"export: {count} events, {size / 1e6:.1f} MB of CSV in {seconds:.1f} s = {eps:,.0f} events/s", flush=True)
    tracemalloc.start()
    run()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"export: peak Python heap while streaming {peak / 1e6:.1f} MB (batches of 2,000; never the whole trail)")
    return eps, peak / 1e6


def bench_verify(runs: int = 3) -> float:
    """Chain verification events/s, the median of `runs` walks (shared machines vary from run to run)."""
    import hashlib
    import timeit

    from encryption import audit

    # What this CPU does for one event: every walk hashes ~750 bytes per event, whatever the code around it.
    sample = b"x" * 750
    sha_us = min(timeit.repeat(lambda: hashlib.sha256(sample).hexdigest(), number=20_000, repeat=3)) / 20_000 * 1e6
    print(f"verify: this CPU hashes a 750-byte event in {sha_us:.2f} µs (SHA-256, one core)", flush=True)
    rates = []
    for _ in range(runs):
        report = audit.verify_chain()
        if not report.ok:
            raise SystemExit(f"the generated chain does not verify: {report.reason}")
        rates.append(report.events_per_second)
        print(
            f"verify: {report.count} events in {report.seconds:.1f} s = {report.events_per_second:,.0f} events/s "
            f"({report.processes} processes)",
            flush=True,
        )
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the trail (quick mode: 20000)")
    parser.add_argument("--repeat", type=int, default=40, help="requests per filter for the p95")
    parser.add_argument("--reuse", action="store_true", help="keep an existing keyward_bench holding --events events")
    parser.add_argument("--seed", type=int, default=20261128)
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL") or DEFAULT_SERVER
    url = bench_url(server)
    if urlsplit(server).path.strip("/") not in ("", "postgres", BENCH_DB) and not server.startswith("sqlite"):
        print(f"using the server of DATABASE_URL, database {BENCH_DB} (never {urlsplit(server).path.strip('/')})")
    reuse = args.reuse and _bench_holds(url, args.events)
    if not reuse:
        recreate_database(server, url)
    configure(url)
    from django.core.management import call_command
    from django.db import connection

    from encryption.models import AuditEvent

    if not reuse:
        call_command("migrate", verbosity=0)
        print(f"filling {connection.vendor} database {BENCH_DB} with {args.events:,} events...", flush=True)
        print(f"filled in {load(args.events, args.seed):.1f} s", flush=True)
    else:
        from django.contrib.auth.models import User

        User.objects.filter(username__startswith="bench-").delete()
    print(f"load average before measuring: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    estate = Estate(random.Random(args.seed))
    head = AuditEvent.objects.order_by("-seq").values_list("seq", flat=True).first() or 0
    p95_ms, ratio, _ = bench_pages(estate, args.repeat, head)
    export_eps, _ = bench_export(head)
    verify_eps = bench_verify()
    print(
        f"audit events={args.events} p95_ms={p95_ms:.1f} export_eps={export_eps:.0f} "
        f"verify_eps={verify_eps:.0f} admin_ratio={ratio:.1f}"
    )


def _bench_holds(url: str, count: int) -> bool:
    if url.startswith("sqlite"):
        return Path(urlsplit(url).path).exists()
    import psycopg

    try:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM encryption_auditevent").fetchone()
    except psycopg.Error:
        return False
    return row is not None and row[0] >= count


if __name__ == "__main__":
    main()
