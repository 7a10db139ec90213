"""Fault drills with figures: what survives a killed worker, a dead broker, a restarted database, Azure
throttling and 5xx storms, a failing long-running operation, racing admins and a refusing audit store.

    python benchmarks/faults.py [--scale N] [--output docs/reliability.md]

It runs the drills of tests/faults/drills.py (the same functions the tests run, with larger counts:
--scale multiplies them) against databases of its own, created for the run and dropped after it, in the
way the test suite makes them (tests/settings.py: a temporary folder, SQLite files, or PostgreSQL test
databases when DATABASE_URL names a server; CELERY_BROKER_URL picks the broker, the filesystem one by
default). Workers are real `celery -A portal worker` processes; the broker drill runs a Redis server of its
own on a free loopback port (when redis-server is installed); the database drill needs PostgreSQL.

For each drill it prints runs, operations, completed, lost, duplicated PATCHes and whether the audit chain
still verifies, writes the same figures to docs/reliability.md (generated: date and machine included, never
edited by hand), and ends with the line
`faults drills=N operations=M lost=L duplicated=D chain=intact|broken`. It exits non-zero if anything was
lost or duplicated, or the chain broke.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = BASE_DIR / "docs" / "reliability.md"


def setup() -> Any:
    """Django with the test suite's settings (a run folder of its own), and fresh databases for the run."""
    sys.path.insert(0, str(BASE_DIR))
    os.chdir(BASE_DIR)
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    os.environ.setdefault("LOG_LEVEL", "ERROR")
    import django

    django.setup()
    from django.test.utils import setup_databases, setup_test_environment

    setup_test_environment()
    return setup_databases(verbosity=0, interactive=False, aliases=None)


def teardown(old_config: Any) -> None:
    from django.db import connections
    from django.test.utils import teardown_databases, teardown_test_environment

    from tests.audit_helpers import reset_audit_tables

    if connections["default"].vendor == "postgresql":
        reset_audit_tables()  # the append-only trigger: empty the trail through a privileged connection
    connections.close_all()
    teardown_databases(old_config, verbosity=0)
    teardown_test_environment()


def run_drills(scale: int) -> list[Any]:
    from django.db import connections

    from tests.faults import drills

    postgresql = connections["default"].vendor == "postgresql"
    redis = drills.RedisServer.available()
    lab = drills.prepare_lab(drills.accounts_needed(scale))
    plan = [
        (drills.drill_worker_killed, {"runs": scale}),
        (drills.drill_broker_down if redis else drills.drill_broker_unreachable, {"runs": scale}),
        *([(drills.drill_database_restart, {"runs": scale})] if postgresql else []),
        (drills.drill_throttling_storm, {"operations_count": 3 * scale}),
        (drills.drill_error_bursts, {"operations_count": 3 * scale}),
        (drills.drill_past_the_limits, {}),
        (drills.drill_slow_responses, {"operations_count": 2 * scale}),
        (drills.drill_lro_fails, {}),
        (drills.drill_concurrent_changes, {"rounds": scale}),
        (drills.drill_audit_store_down, {"requests": 2 * scale}),
    ]
    results = []
    try:
        for function, options in plan:
            print(f"... {function.__name__} {options}", flush=True)
            try:
                results.append(function(lab, **options))
            except BaseException as exc:  # a drill that broke off still reports what it had
                result = getattr(exc, "drill_result", None)
                if result is None:
                    raise
                results.append(result)
            row = results[-1].as_row()
            print(f"    {row}", flush=True)
    finally:
        lab.close()
    skipped = []
    if not redis:
        skipped.append(
            "Redis shut down and restarted (redis-server is not installed: the broker drill used a dead address)"
        )
    if not postgresql:
        skipped.append("database restarted (needs PostgreSQL: set DATABASE_URL)")
    return [results, skipped]


def machine() -> dict[str, str]:
    from django.conf import settings
    from django.db import connections

    database = connections["default"]
    version = ""
    if database.vendor == "postgresql":
        with database.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = f" {cursor.fetchone()[0]}"
    broker = str(settings.CELERY_BROKER_URL).split("://")[0]
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "database": f"{database.vendor}{version}",
        "broker": f"{broker} (the broker drill uses a Redis server of its own)",
    }


def celery_settings() -> list[tuple[str, str, str]]:
    from django.conf import settings

    return [
        ("CELERY_TASK_ACKS_LATE", str(settings.CELERY_TASK_ACKS_LATE), "a task is acknowledged once it ran, so a killed worker's task is delivered again"),
        ("CELERY_TASK_REJECT_ON_WORKER_LOST", str(settings.CELERY_TASK_REJECT_ON_WORKER_LOST), "a pool process killed mid-task puts the task back"),
        ("CELERY_WORKER_PREFETCH_MULTIPLIER", str(settings.CELERY_WORKER_PREFETCH_MULTIPLIER), "a worker holds one task at a time; a dead one strands no others"),
        ("CELERY_TASK_TIME_LIMIT", f"{settings.CELERY_TASK_TIME_LIMIT} s", "hard limit of one task"),
        ("visibility_timeout", f"{settings.CELERY_VISIBILITY_TIMEOUT} s", "one value for broker and results, longer than the hard limit: Redis never re-delivers a task still running"),
        ("OPERATION_LEASE_SECONDS", f"{settings.OPERATION_LEASE_SECONDS} s", "after this a running row whose worker died is taken back by the sweeper"),
        ("OPERATION_MAX_DELIVERIES", str(settings.OPERATION_MAX_DELIVERIES), "deliveries counted on the row; past it the operation fails with a reason"),
        ("AZURE_RETRY_BUDGET_SECONDS", f"{settings.AZURE_RETRY_BUDGET_SECONDS} s", "the SDK's retries and Retry-After waits within one task, bounded"),
        ("OPERATION_MAX_RETRIES", str(settings.OPERATION_MAX_RETRIES), "task retries after transient Azure errors, then a clear failure"),
    ]  # fmt: skip


def report(results: list[Any], skipped: list[str], seconds: float, scale: int) -> tuple[str, str]:
    drills = len(results)
    operations = sum(r.operations for r in results)
    lost = sum(r.lost for r in results)
    duplicated = sum(r.duplicated for r in results)
    chain = "intact" if all(r.chain_intact for r in results) else "broken"
    last = f"faults drills={drills} operations={operations} lost={lost} duplicated={duplicated} chain={chain}"
    info = machine()
    lines = [
        "# Reliability: fault drills",
        "",
        "Generated by `python benchmarks/faults.py` (do not edit by hand; run it again to refresh).",
        "",
        *(f"- {name}: {value}" for name, value in info.items()),
        f"- scale: {scale} (the tests run the same drills at scale 1 or less); took {seconds:.0f} s",
        "",
        "Each drill breaks one thing for real while operations run (a SIGKILL, a Redis shut down, PostgreSQL",
        "backends terminated, the emulator's fault knobs, racing threads and processes, an audit store that",
        "refuses writes). *Completed* counts operations that ended succeeded, or failed with a reason a person",
        "can act on; *lost* those still queued or running at the end, or ended without a reason; *duplicated*",
        "the PATCHes Azure applied beyond those the operations recorded; *chain* whether `verify_chain()` still",
        "holds afterwards.",
        "",
        "| drill | runs | operations | completed | lost | duplicated PATCHes | audit chain | seconds |",
        "|---|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in results:
        row = r.as_row()
        lines.append(
            f"| {row['drill']} | {row['runs']} | {row['operations']} | {row['completed']} | {row['lost']} | "
            f"{row['duplicated']} | {row['chain']} | {row['seconds']} |"
        )
    lines += ["", f"Totals: {last}", ""]
    if skipped:
        lines += ["Not run here:", "", *(f"- {s}" for s in skipped), ""]
    problems = [(r.name, n) for r in results for n in r.problems]
    lines += ["## Problems found", ""]
    lines += [f"- {name}: {note}" for name, note in problems] if problems else ["- none"]
    lines += ["", "## What each drill does", ""]
    lines += [f"- **{r.name}**: {' '.join(r.description.split())}" for r in results if r.description]
    facts = [(r.name, n) for r in results for n in r.facts]
    if facts:
        lines += ["", "## What the drills observed", "", *(f"- {name}: {fact}" for name, fact in facts)]
    lines.append("")
    lines += [
        "## The settings that make this hold",
        "",
        "| setting | value | why |",
        "|---|---|---|",
        *(f"| `{n}` | {v} | {w} |" for n, v, w in celery_settings()),
        "",
    ]
    return "\n".join(lines), last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=3, help="multiplies every drill's count (default 3)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="where to write the figures")
    args = parser.parse_args()
    started = time.monotonic()
    old_config = setup()
    try:
        results, skipped = run_drills(max(1, args.scale))
        text, last = report(results, skipped, time.monotonic() - started, args.scale)
    finally:
        teardown(old_config)
    print()
    print(f"{'drill':62} {'runs':>4} {'ops':>4} {'done':>4} {'lost':>4} {'dup':>4} chain")
    for r in results:
        row = r.as_row()
        print(
            f"{row['drill'][:62]:62} {row['runs']:>4} {row['operations']:>4} {row['completed']:>4} "
            f"{row['lost']:>4} {row['duplicated']:>4} {row['chain']}"
        )
    for r in results:
        for problem in r.problems:
            print(f"  PROBLEM: {r.name}: {problem}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"figures written to {args.output}")
    print(last)
    clean = " lost=0 duplicated=0 chain=intact" in last and not any(r.problems for r in results)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
