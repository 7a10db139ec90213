"""The command lines of Keyward's long-running processes.

Command one (`manage.py runportal`) and the test harness (`tests/harness.py`) both build their worker
from `worker_argv`, so a test's worker is started the way the real one is.
"""

from __future__ import annotations

import sys

from django.conf import settings


def worker_argv(
    *,
    concurrency: int = 2,
    beat: bool = True,
    pool: str = "prefork",
    queue: str = "",
    nodename: str = "",
    loglevel: str = "info",
) -> list[str]:
    """`celery -A portal worker` consuming Keyward's queue, with embedded beat unless `beat` is False."""
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "portal",
        "worker",
        "-l",
        loglevel,
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "-Q",
        queue or settings.CELERY_TASK_DEFAULT_QUEUE,
        # One worker per machine here: gossip and mingle would only add a second of start-up talk.
        "--without-gossip",
        "--without-mingle",
    ]
    if nodename:
        argv += ["-n", nodename]
    if beat:
        argv += ["-B", "-s", settings.CELERY_BEAT_SCHEDULE_FILENAME]
    return argv


def web_argv(port: int) -> list[str]:
    """Django's server on loopback only; --noreload so that stopping it stops exactly one process."""
    return [sys.executable, str(settings.BASE_DIR / "manage.py"), "runserver", "--noreload", f"127.0.0.1:{port}"]
