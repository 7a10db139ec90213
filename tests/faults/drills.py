"""Fault drills: each one breaks something real while operations run, then checks that nothing was lost.

The same functions serve the tests (tests/faults/, small counts) and `python benchmarks/faults.py` (larger
counts, figures written to docs/reliability.md). Each drill works on committed rows (a
TransactionTestCase, or the benchmark's own databases) with the seeded emulator, breaks one thing with a
real mechanism (SIGKILL, a Redis server shut down, PostgreSQL backends terminated, the emulator's fault
knobs, racing threads and processes, an audit store that refuses writes), and returns a `DrillResult`:
operations asked for, completed (succeeded, or failed with a reason a person can act on), lost (still
queued or running at the end, or ended without a reason), PATCHes Azure applied beyond those the
operations recorded (duplicated), and whether the audit chain still verifies.

Everything listens on 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.test import Client, override_settings
from django.utils import timezone

from emulator import accounts as emulator_accounts
from emulator import keystore
from emulator.models import ArmOperation
from emulator.models import KeyVersion as EmulatorKeyVersion
from emulator.seed import seed, subscription_id, system_principal_id
from emulator.testing import clear_faults, inject_faults, request_count, reset_clock, set_throttle_limit
from encryption import audit, operations, services, sync
from encryption.models import Account, AuditEvent, Operation, OperationStep
from encryption.roles import ADMINS
from encryption.tasks import run_operation
from tests import harness
from tests.builders import make_user

KEY_URI = "https://kv-prod-eastus.vault.azure.net/keys/face-cmk"
DRILL_PREFIX = "face-drill-"
WAIT = 120  # the longest any single wait in a drill may take, in seconds


# What a drill reports


@dataclass
class DrillResult:
    name: str
    runs: int = 0
    operation_ids: list[int] = field(default_factory=list)
    completed: int = 0
    lost: int = 0
    duplicated: int = 0
    chain_intact: bool = True
    seconds: float = 0.0
    description: str = ""  # what the drill breaks (its docstring)
    problems: list[str] = field(default_factory=list)  # what went wrong; empty when the drill held
    facts: list[str] = field(default_factory=list)  # what happened, for the record

    @property
    def operations(self) -> int:
        return len(self.operation_ids)

    def as_row(self) -> dict[str, Any]:
        return {
            "drill": self.name,
            "runs": self.runs,
            "operations": self.operations,
            "completed": self.completed,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "chain": "intact" if self.chain_intact else "broken",
            "seconds": round(self.seconds, 1),
        }


def tally(result: DrillResult, started: float) -> DrillResult:
    """Count what became of the drill's operations, the PATCHes Azure applied, and verify the chain."""
    ops = list(Operation.objects.filter(pk__in=result.operation_ids).select_related("account"))
    for op in ops:
        if op.is_finished and (op.status == Operation.Status.SUCCEEDED or op.reason.strip()):
            result.completed += 1
        else:
            result.lost += 1
            result.problems.append(
                f"#{op.pk} {op.kind} ended {op.status} without a reason"
                if op.is_finished
                else f"#{op.pk} {op.kind} still {op.status}"
            )
    for name in {op.account.name for op in ops if op.account is not None}:
        recorded = sum(o.patch_attempts for o in Operation.objects.filter(account__name=name))
        extra = applied_patches(name) - recorded
        if extra > 0:
            result.duplicated += extra
            result.problems.append(f"{name}: Azure applied {extra} PATCH(es) more than the operations recorded")
    report = audit.verify_chain()
    result.chain_intact = report.ok
    if not report.ok:
        result.problems.append(f"audit chain broken at #{report.first_bad_seq}: {report.reason}")
    result.seconds = time.monotonic() - started
    return result


def drill(name: str) -> Callable[[Callable[..., None]], Callable[..., DrillResult]]:
    """Make `fn(lab, result, **options)` a drill: it fills `result`; the decorator times it and tallies it.
    If the drill breaks off, the tally so far is attached to the exception as `drill_result`."""

    def wrap(fn: Callable[..., None]) -> Callable[..., DrillResult]:
        @functools.wraps(fn)
        def run(lab: Lab, **options: Any) -> DrillResult:
            started, result = time.monotonic(), DrillResult(name, description=fn.__doc__ or "")
            try:
                fn(lab, result, **options)
            except BaseException as exc:
                if lab.worker is not None:
                    exc.add_note(f"--- worker log ({lab.worker.log_path}) ---\n{lab.worker.log()[-6000:]}")
                elif lab.last_worker_log:
                    exc.add_note(lab.last_worker_log)
                with contextlib.suppress(Exception):
                    clear_faults()
                    result.problems.append(f"broke off: {type(exc).__name__}: {str(exc)[:300]}")
                    exc.drill_result = tally(result, started)  # type: ignore[attr-defined]
                raise
            return tally(result, started)

        return run

    return wrap


def applied_patches(account_name: str) -> int:
    """PATCHes of the account that Azure accepted (an injected 5xx or a 429 is refused before it applies)."""
    path = f"/accounts/{account_name}"
    return sum(request_count("PATCH", path, status=status) for status in (200, 202))


# The estate


@dataclass
class Lab:
    """The seeded estate, its admin, the accounts the drills may use, and the worker currently running."""

    admin: Any
    free_accounts: list[str]
    worker: harness.Worker | None = None
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    worker_env: dict[str, str] = field(default_factory=dict)
    broker_url: str = ""
    last_worker_log: str = ""  # the tail of the last worker's log, kept when it is stopped

    def take_account(self) -> Account:
        """A Microsoft-managed account, identity on, that no drill has used yet."""
        if not self.free_accounts:
            raise RuntimeError("the lab ran out of drill accounts: prepare it with more")
        return Account.objects.get(name=self.free_accounts.pop(0))

    def ensure_worker(self) -> harness.Worker:
        if self.worker is None or self.worker.process.poll() is not None:
            self.worker = self.stack.enter_context(
                harness.start_worker(env=self.worker_env, broker_url=self.broker_url)
            )
        return self.worker

    def close(self) -> None:
        if self.worker is not None:
            self.last_worker_log = f"--- worker log ({self.worker.log_path}) ---\n{self.worker.log()[-6000:]}"
        self.stack.close()
        self.worker = None


def prepare_lab(drill_accounts: int) -> Lab:
    """Seed the emulator (plus `drill_accounts` fresh Microsoft-managed Face accounts), mirror it, make an admin."""
    clear_faults()
    reset_clock()
    seed()
    contoso = subscription_id("contoso-prod")
    names = [f"{DRILL_PREFIX}{n:03d}" for n in range(1, drill_accounts + 1)]
    for name in names:
        emulator_accounts.create_account(
            subscription_id=contoso,
            resource_group="rg-face-eastus",
            name=name,
            location="eastus",
            sku="S0",
            custom_subdomain=name,
            identity={"type": "SystemAssigned"},
            principal_id=system_principal_id("contoso-prod", name),
            created_by="fault drills",
        )
    sync.sync_estate()
    admin = make_user(f"drill-admin-{time.monotonic_ns()}", ADMINS)
    return Lab(admin=admin, free_accounts=names)


def ask(lab: Lab, account: Account, kind: str = "enable_cmk", **params: Any) -> Operation:
    """An admin's request, as a view makes it: the row and its event in one transaction, sent on commit."""
    if kind == "enable_cmk" and not params:
        params = {"key_uri": KEY_URI}
    with transaction.atomic():
        return services.request_change(
            actor=services.Actor.from_cli(lab.admin), account=account, kind=kind, params=params
        )


def wait_finished(op_ids: list[int], timeout: float = WAIT) -> None:
    harness.wait_until(
        lambda: not Operation.objects.filter(pk__in=op_ids, status__in=Operation.ACTIVE_STATUSES).exists(),
        timeout=timeout,
        interval=0.1,
        message=f"operations {op_ids} to end",
    )


def expire_leases_and_sweep(op_ids: list[int]) -> services.SweepReport:
    """What the sweeper does once a dead worker's lease runs out (shortened here rather than waited for)."""
    past = timezone.now() - timedelta(seconds=1)
    Operation.objects.filter(pk__in=op_ids, status=Operation.Status.RUNNING).update(lease_expires_at=past)
    Operation.objects.filter(pk__in=op_ids, status=Operation.Status.QUEUED).update(
        created_at=timezone.now() - timedelta(seconds=services.PUBLISH_GRACE_SECONDS + 1), enqueued_at=None
    )
    return services.sweep_operations()


def run_in_process(op: Operation, *, retries_spent: int = 0) -> Operation:
    """Run the real task, with its real retry policy, in this process (retries run at once, not later);
    `retries_spent` starts it as a delivery that has already been retried that many times.

    The request also went to the broker on commit; with no worker running (the in-process drills stop it)
    that message finds the operation finished whenever a worker later takes it, and does nothing."""
    run_operation.apply(args=(op.pk,), retries=retries_spent)
    wait_finished([op.pk])
    op.refresh_from_db()
    return op


# Processes


def pool_children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (a prefork worker's pool processes)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    children.append(int(entry.name))
    return children


def kill(lab: Lab, what: str) -> None:
    """SIGKILL the worker's pool child (`child`: the worker survives and replaces it) or the whole worker."""
    worker = lab.ensure_worker()
    if what == "child":
        children = pool_children(worker.pid)
        if not children:
            raise RuntimeError("the worker has no pool process to kill")
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        return
    worker.stop()  # SIGKILL to the worker's whole process group: no goodbye, no ack
    lab.worker = None


# Drill: worker killed at each step of enable CMK

# Where to hold the operation (an emulator fault that makes one request slow) and how to know it is there.
KILL_POINTS: dict[str, tuple[dict[str, Any], Callable[[Operation], bool]]] = {
    # Granting access is the step before the PATCH: nothing has been sent to the account yet.
    "before the PATCH": (
        {"latency_ms": 4000, "method": "PUT", "path_contains": "accesspolicies"},
        lambda op: op.steps.filter(name="grant_access", status=OperationStep.Status.RUNNING).exists(),
    ),
    # The PATCH was accepted and its continuation token saved: the worker is following the LRO.
    "during the LRO": ({}, lambda op: bool(op.lro_token) and not op.steps.filter(name="verify").exists()),
    # Azure applied the key; the worker is probing data access.
    "after the PATCH": (
        {"latency_ms": 4000, "method": "POST", "path_contains": "probedataaccess"},
        lambda op: op.steps.filter(name="probe", status=OperationStep.Status.RUNNING).exists(),
    ),
}
# Long enough (four status polls a second apart) to find the operation inside its LRO.
SLOW_LRO = {"EMULATOR_LRO_POLLS": "4"}


@drill("worker killed (SIGKILL) before, during and after the PATCH")
def drill_worker_killed(
    lab: Lab, result: DrillResult, *, runs: int = 1, modes: tuple[str, ...] = ("child", "worker")
) -> None:
    """Enable CMK on a real worker and SIGKILL it (its pool process, or the whole worker) before the PATCH,
    while Azure applies it, and after it; then a worker is (re)started and the sweeper run."""
    lab.worker_env.update(SLOW_LRO)
    for _ in range(runs):
        for mode in modes:
            for point, (fault, is_there) in KILL_POINTS.items():
                lab.ensure_worker()
                account = lab.take_account()
                if fault:
                    inject_faults(0, **fault)
                op = ask(lab, account)
                result.operation_ids.append(op.pk)
                harness.wait_until(
                    lambda op=op, is_there=is_there: is_there(Operation.objects.get(pk=op.pk)),  # type: ignore[misc]
                    timeout=WAIT,
                    interval=0.05,
                    message=f"operation #{op.pk} to reach '{point}'",
                )
                kill(lab, mode)
                killed_at = time.monotonic()
                clear_faults()
                lab.ensure_worker()  # a new worker (after a whole-worker kill), as an operator would start
                expire_leases_and_sweep([op.pk])
                wait_finished([op.pk])
                op.refresh_from_db()
                result.facts.append(
                    f"{mode} killed {point}: #{op.pk} {op.status} {time.monotonic() - killed_at:.1f} s after the "
                    f"kill, {op.deliveries} deliveries, {op.patch_attempts} PATCH recorded, "
                    f"{applied_patches(account.name)} applied by Azure"
                )
        result.runs += 1


# Drill: the broker goes down while admins keep saving


class RedisServer:
    """A Redis of the drill's own on a free loopback port, started with the CI command (ci-services.md) and
    stopped with `redis-cli shutdown nosave`: the suite's own Redis, which other runs may share, stays up."""

    def __init__(self) -> None:
        self.port = harness.free_port()
        self.dir = Path(settings.VAR_DIR) / f"redis-{self.port}"
        self.url = f"redis://127.0.0.1:{self.port}/0"

    @staticmethod
    def available() -> bool:
        return bool(shutil.which("redis-server") and shutil.which("redis-cli"))

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")],
            check=True, timeout=30, capture_output=True,
        )  # fmt: skip
        harness.wait_until(lambda: harness.redis_answers(self.url), timeout=30, message="the drill's Redis")

    def stop(self) -> None:
        subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "shutdown", "nosave"],
            timeout=30,
            capture_output=True,
        )
        harness.wait_until(lambda: not harness.redis_answers(self.url), timeout=30, message="the drill's Redis to stop")


@contextlib.contextmanager
def publishing_to(url: str) -> Iterator[None]:
    """Point this process's Celery app (the web side) at another broker, forgetting pooled connections."""
    from portal.celery import app

    def forget() -> None:
        # What Celery itself does after a fork: drop the pooled connections and producers.
        app._pool = None  # type: ignore[attr-defined]
        if "amqp" in app.__dict__:
            app.__dict__["amqp"]._producer_pool = None

    saved = {"broker_url": app.conf.broker_url, "broker_transport_options": app.conf.broker_transport_options}
    forget()
    app.conf.update(broker_url=url, broker_transport_options={"visibility_timeout": settings.CELERY_VISIBILITY_TIMEOUT})
    try:
        # Celery reads CELERY_BROKER_URL from the environment before its own configuration (CI sets it).
        with harness.environ(CELERY_BROKER_URL=url):
            yield
    finally:
        forget()
        app.conf.update(saved)


def checks_passed(user: Any, account: Account) -> Operation:
    """The prerequisite checks the Encryption page runs before Save (carried out here, as a worker would)."""
    job = services.request_job(
        actor=services.Actor.from_cli(user),
        account=account,
        kind="preflight",
        params={"key_uri": KEY_URI, "vault_subscription_id": account.subscription.subscription_id},
    )
    operations.run_operation(job.pk)
    return job


def save(client: Client, account: Account, checks: Operation) -> tuple[Operation | None, str]:
    """Save on the Encryption page; the operation it recorded (if any) and the text of the page shown."""
    form = {
        "encryption_type": "cmk",
        "use_own_key": "on",
        "key_source": "uri",
        "key_uri": KEY_URI,
        "uri_subscription": account.subscription.subscription_id,
        "preflight": str(checks.pk),
        "intent": "save",
    }
    response = client.post(f"/accounts/{account.pk}/encryption/", form, follow=True)
    recorded = bool(response.redirect_chain) and "/operations/" in response.redirect_chain[-1][0]
    op = Operation.objects.get(pk=int(response.redirect_chain[-1][0].split("/")[-2])) if recorded else None
    return op, response.content.decode()


@drill("broker down (Redis shut down, then started) while admins save")
def drill_broker_down(lab: Lab, result: DrillResult, *, saves_while_down: int = 3, runs: int = 1) -> None:
    """Admins Save on the Encryption page while Redis is shut down (`redis-cli shutdown nosave`), then Redis
    is started again and the sweeper runs."""
    redis = RedisServer()
    redis.start()
    lab.close()  # the drill's worker consumes from the drill's Redis
    lab.broker_url = redis.url
    try:
        with publishing_to(redis.url):
            for _ in range(runs):
                _saves_through_an_outage(lab, result, saves_while_down, down=redis.stop, up=redis.start)
    finally:
        lab.close()
        lab.broker_url = ""
        with contextlib.suppress(Exception):
            redis.stop()


@drill("broker unreachable (the web side pointed at a dead address) while admins save")
def drill_broker_unreachable(lab: Lab, result: DrillResult, *, saves_while_down: int = 2, runs: int = 1) -> None:
    """Where no Redis can be stopped (the filesystem broker), the web side publishes to a closed port:
    for the web process the broker is down, while the worker keeps consuming the real one."""
    dead = f"redis://127.0.0.1:{harness.free_port()}/0"  # nothing listens there
    outage = contextlib.ExitStack()
    for _ in range(runs):
        _saves_through_an_outage(
            lab,
            result,
            saves_while_down,
            down=lambda: outage.enter_context(publishing_to(dead)),
            up=outage.close,
        )


def _saves_through_an_outage(
    lab: Lab, result: DrillResult, saves_while_down: int, *, down: Callable[[], object], up: Callable[[], object]
) -> None:
    """One Save with the broker up, `saves_while_down` more while it is down (each page must say the change
    is queued, and each row stay queued), then the broker back and the sweeper run: everything ends."""
    client = Client()
    client.force_login(lab.admin)
    lab.ensure_worker()
    account = lab.take_account()
    before, page = save(client, account, checks_passed(lab.admin, account))
    if before is None:
        raise AssertionError(f"Save with the broker up recorded nothing: {page[:300]}")
    result.operation_ids.append(before.pk)
    wait_finished([before.pk])
    down()
    queued = []
    for _ in range(saves_while_down):
        account = lab.take_account()
        op, page = save(client, account, checks_passed(lab.admin, account))
        if op is None:
            result.problems.append(f"{account.name}: Save with the broker down recorded nothing")
            continue
        result.operation_ids.append(op.pk)
        queued.append(op.pk)
        if "Queued" not in page or services.is_published(op):
            result.problems.append(f"#{op.pk}: the page did not say queued, or the row claims it was sent")
    if Operation.objects.filter(pk__in=queued, status=Operation.Status.QUEUED).count() != len(queued):
        result.problems.append("a request saved while the broker was down did not stay queued")
    up()
    # The worker reconnects on its own; the sweeper (beat runs it every SWEEP_INTERVAL_SECONDS) sends what
    # the broker never took.
    report = expire_leases_and_sweep(queued)
    if sorted(report.resent) != sorted(queued):
        result.problems.append(f"the sweeper re-sent {report.resent}, not {queued}")
    wait_finished(queued)
    result.facts.append(f"{len(queued)} saves while the broker was down stayed queued, then ran")
    result.runs += 1


# Drill: the database restarts mid-operation (PostgreSQL)


def terminate_database_backends() -> int:
    """What a PostgreSQL restart does to Keyward's connections: every backend of its database is killed."""
    import psycopg

    from tests.audit_helpers import _privileged_params

    params = _privileged_params(connections["default"].settings_dict)
    params["dbname"] = "postgres"
    with psycopg.connect(**params, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [connections["default"].settings_dict["NAME"]],
        ).fetchall()
    connections.close_all()  # ours died too; Django opens new ones on the next query
    return len(rows)


@drill("database restarted mid-operation (backends terminated)")
def drill_database_restart(lab: Lab, result: DrillResult, *, runs: int = 1) -> None:
    """Every PostgreSQL backend of Keyward's database is terminated while a worker follows an LRO."""
    lab.worker_env.update(SLOW_LRO)
    for _ in range(runs):
        lab.ensure_worker()
        op = ask(lab, lab.take_account())
        result.operation_ids.append(op.pk)
        harness.wait_until(lambda op=op: Operation.objects.get(pk=op.pk).lro_token, timeout=WAIT, message="the LRO")  # type: ignore[misc]
        killed = terminate_database_backends()
        result.facts.append(f"#{op.pk}: {killed} database connections terminated during the LRO")
        # The worker's next write fails and its task ends with the error; the operation stays running until
        # its lease runs out, then the sweeper sends it again and a worker resumes it.
        worker = lab.ensure_worker()
        _wait_quietly(
            lambda worker=worker, op=op: (
                "raised unexpected" in worker.log()  # type: ignore[misc]
                or Operation.objects.get(pk=op.pk).is_finished
            )
        )
        expire_leases_and_sweep([op.pk])
        wait_finished([op.pk])
        result.runs += 1


def _wait_quietly(predicate: Callable[[], bool], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


# Drills: Azure misbehaving (the emulator's fault knobs), run by the real task in this process


@drill("ARM throttling storm (429 with Retry-After)")
def drill_throttling_storm(lab: Lab, result: DrillResult, *, operations_count: int = 3) -> None:
    """ARM's token buckets shrunk to 2 writes and 6 reads (refilled at 1 and 4 a second): most requests
    meet a 429 with Retry-After."""
    lab.close()  # run by the task in this process: no worker may take the operations meanwhile
    # Buckets this small make most writes wait for a token: the SDK honours Retry-After within its budget.
    set_throttle_limit("writes", capacity=2, refill_per_second=1)
    set_throttle_limit("reads", capacity=6, refill_per_second=4)
    throttled_before = request_count(status=429)
    try:
        for _ in range(operations_count):
            op = run_in_process(ask(lab, lab.take_account()))
            result.operation_ids.append(op.pk)
    finally:
        clear_faults()
    throttled = request_count(status=429) - throttled_before
    result.facts.append(f"Azure answered 429 {throttled} times")
    if not throttled:
        result.problems.append("no request was throttled: the storm did not happen")
    result.runs = 1


@drill("500/503 bursts (20% of requests, and on every first PATCH)")
def drill_error_bursts(lab: Lab, result: DrillResult, *, operations_count: int = 3) -> None:
    """A fifth of all requests answered 503, and each account's first PATCH answered 500."""
    lab.close()  # run by the task in this process: no worker may take the operations meanwhile
    inject_faults(503, probability=0.2, retry_after=0)
    try:
        for _ in range(operations_count):
            account = lab.take_account()
            inject_faults(500, count=1, method="PATCH", path_contains=f"/accounts/{account.name}")
            op = run_in_process(ask(lab, account))
            result.operation_ids.append(op.pk)
    finally:
        clear_faults()
    result.runs = 1


@drill("Azure failing past the retry limits (every PATCH 503)")
def drill_past_the_limits(lab: Lab, result: DrillResult, *, retries_spent: int = 0) -> None:
    """Azure refuses every PATCH: the operation fails with a clear reason once its retries are spent, and
    Azure's account is exactly as it was (nothing half-applied without a record)."""
    lab.close()  # run by the task in this process: no worker may take the operations meanwhile
    account = lab.take_account()
    inject_faults(503, method="PATCH", path_contains=f"/accounts/{account.name}", retry_after=0)
    try:
        op = run_in_process(ask(lab, account), retries_spent=retries_spent)
    finally:
        clear_faults()
    result.operation_ids.append(op.pk)
    result.facts.append(f"Azure refused {request_count('PATCH', f'/accounts/{account.name}')} PATCHes")
    from encryption import azure_gateway

    in_azure = azure_gateway.get_account(account.arm_id)
    if op.status != Operation.Status.FAILED or "Azure" not in op.reason:
        result.problems.append(f"#{op.pk} ended {op.status}: {op.reason!r}")
    if in_azure.key_source != account.key_source:
        result.problems.append("Azure's account changed although the operation failed")
    if not AuditEvent.objects.filter(operation=op, action="operation.failed").exists():
        result.problems.append("the failure is not in the audit trail")
    result.runs = 1


@drill("slow responses and an LRO longer than the worker waits")
def drill_slow_responses(lab: Lab, result: DrillResult, *, operations_count: int = 2) -> None:
    """Slow reads, and an LRO longer than the worker waits: the task lets go and resumes from the token."""
    lab.close()  # run by the task in this process: no worker may take the operations meanwhile
    inject_faults(0, latency_ms=300, method="GET", host="management")
    try:
        with override_settings(EMULATOR_LRO_POLLS=3, AZURE_LRO_WAIT_SECONDS=1):
            for _ in range(operations_count):
                op = run_in_process(ask(lab, lab.take_account()))
                result.operation_ids.append(op.pk)
                if op.status == Operation.Status.SUCCEEDED and op.patch_attempts != 1:
                    result.problems.append(f"#{op.pk} sent {op.patch_attempts} PATCHes instead of resuming")
    finally:
        clear_faults()
    result.runs = 1


@drill("an LRO that ends Failed (key disabled mid-update)")
def drill_lro_fails(lab: Lab, result: DrillResult) -> None:
    """The key is disabled while Azure applies it: the LRO ends Failed, the operation fails saying why, and
    the account keeps Microsoft-managed keys."""
    lab.close()  # run by the task in this process: no worker may take the operations meanwhile
    account = lab.take_account()
    versions = EmulatorKeyVersion.objects.filter(key__vault__name="kv-prod-eastus", key__name="face-cmk")
    stop = threading.Event()

    def disable_key_once_the_update_runs() -> None:
        try:
            while not stop.is_set():
                if ArmOperation.objects.filter(
                    account_name=account.name, status=ArmOperation.STATUS_IN_PROGRESS
                ).exists():
                    for version in versions:
                        keystore.update_key_version(version, enabled=False)
                    return
                time.sleep(0.02)
        finally:
            connections.close_all()

    saboteur = threading.Thread(target=disable_key_once_the_update_runs)
    try:
        with override_settings(EMULATOR_LRO_POLLS=3):
            saboteur.start()
            op = run_in_process(ask(lab, account))
    finally:
        stop.set()
        saboteur.join(30)
        for version in versions:
            keystore.update_key_version(version, enabled=True)
    result.operation_ids.append(op.pk)
    account.refresh_from_db()
    if op.status != Operation.Status.FAILED or not op.reason:
        result.problems.append(f"#{op.pk} ended {op.status}: {op.reason!r}")
    if account.uses_cmk:
        result.problems.append("the account shows a customer-managed key although the update failed")
    result.runs = 1


# Drill: two admins change the same account at once


@drill("two admins change the same account at once")
def drill_concurrent_changes(lab: Lab, result: DrillResult, *, rounds: int = 1) -> None:
    """Two admins ask for a change to the same account at the same instant: two threads calling the
    service, two Saves on the page, and two command-line processes. Exactly one operation runs; the other
    admin is told why."""
    second = make_user(f"drill-admin-b-{time.monotonic_ns()}", ADMINS)
    lab.ensure_worker()
    for _ in range(rounds):
        for race in (_race_services, _race_pages, _race_commands):
            account = lab.take_account()
            outcomes = race(lab, second, account)
            ops = list(Operation.objects.filter(account=account, kind__in=Operation.CHANGE_KINDS))
            refusals = [o for o in outcomes if o != "recorded"]
            if len(ops) != 1 or len(refusals) != 1 or "already has a change in progress" not in refusals[0]:
                result.problems.append(f"{race.__name__} on {account.name}: {len(ops)} operations, outcomes {outcomes}")
            result.operation_ids += [op.pk for op in ops]
        result.runs += 1
    wait_finished(result.operation_ids)


def _at_once(*calls: Callable[[], str]) -> list[str]:
    barrier = threading.Barrier(len(calls))
    outcomes: list[str] = []

    def run(call: Callable[[], str]) -> None:
        try:
            barrier.wait(10)
            outcomes.append(call())
        except Exception as exc:  # reported as an outcome: the drill says what went wrong
            outcomes.append(f"error: {exc!r}")
        finally:
            connections.close_all()  # each thread has connections of its own

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    return outcomes


def _race_services(lab: Lab, second: Any, account: Account) -> list[str]:
    def request(user: Any) -> Callable[[], str]:
        def call() -> str:
            try:
                services.request_change(
                    actor=services.Actor.from_cli(user), account=account, kind="enable_cmk", params={"key_uri": KEY_URI}
                )
            except services.OperationConflict as exc:
                return str(exc)
            return "recorded"

        return call

    return _at_once(request(lab.admin), request(second))


def _race_pages(lab: Lab, second: Any, account: Account) -> list[str]:
    checks = checks_passed(lab.admin, account)  # both admins saw the same checks pass, then both click Save

    def click_save(user: Any) -> Callable[[], str]:
        def call() -> str:
            client = Client()
            client.force_login(user)
            op, page = save(client, account, checks)
            if op is not None:
                return "recorded"
            return (
                "refused: already has a change in progress"
                if "already has a change in progress" in page
                else page[:300]
            )

        return call

    return _at_once(click_save(lab.admin), click_save(second))


def _race_commands(lab: Lab, second: Any, account: Account) -> list[str]:
    env = harness.worker_environment()
    argv = [sys.executable, "manage.py", "encryption", "enable-cmk", account.name, f"--key-uri={KEY_URI}", "--no-wait"]
    processes = [
        subprocess.Popen(
            [*argv, "--as", user.username],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for user in (lab.admin, second)
    ]
    outcomes = []
    for process in processes:
        out, err = process.communicate(timeout=WAIT)
        outcomes.append("recorded" if process.returncode == 0 else (err or out).strip())
    return outcomes


# Drill: the audit store refuses writes


@drill("audit store refusing writes when a change is asked for")
def drill_audit_store_down(lab: Lab, result: DrillResult, *, requests: int = 2) -> None:
    """If the audit event of a change cannot be written, the change is not made: no operation row, no task,
    no request to Azure; once the store is back the same request goes through and is recorded."""
    from tests.audit_helpers import failing_audit_inserts

    lab.close()  # run by the task in this process: no worker may take the operations meanwhile
    for _ in range(requests):
        account = lab.take_account()
        azure_before, rows_before = request_count(), Operation.objects.count()
        with failing_audit_inserts():
            try:
                ask(lab, account)
                result.problems.append(f"{account.name}: a change was recorded although its audit event failed")
            except Exception:  # the database's refusal, whatever its driver calls it
                pass
        if Operation.objects.count() != rows_before or request_count() != azure_before:
            result.problems.append(f"{account.name}: something changed although the audit store was down")
        op = run_in_process(ask(lab, account))
        result.operation_ids.append(op.pk)
        if not AuditEvent.objects.filter(operation=op, action="operation.requested").exists():
            result.problems.append(f"#{op.pk}: no operation.requested event")
    result.runs = requests


# Every drill, for the benchmark (the tests call them one by one)


def accounts_needed(scale: int) -> int:
    """Fresh accounts for all_drills at `scale`: 6 killed, 4 broker, 1 database, 3 throttled, 3 bursts, 2 slow,
    3 races, 2 audit per unit of scale; 1 past the limits and 1 failed LRO; and a few spare."""
    return 24 * scale + 2 + 4


def all_drills(lab: Lab, *, scale: int = 1, postgresql: bool, redis: bool) -> list[DrillResult]:
    results = [drill_worker_killed(lab, runs=scale)]
    results.append(drill_broker_down(lab, runs=scale) if redis else drill_broker_unreachable(lab, runs=scale))
    if postgresql:
        results.append(drill_database_restart(lab, runs=scale))
    results += [
        drill_throttling_storm(lab, operations_count=3 * scale),
        drill_error_bursts(lab, operations_count=3 * scale),
        drill_past_the_limits(lab),
        drill_slow_responses(lab, operations_count=2 * scale),
        drill_lro_fails(lab),
        drill_concurrent_changes(lab, rounds=scale),
        drill_audit_store_down(lab, requests=2 * scale),
    ]
    return results
