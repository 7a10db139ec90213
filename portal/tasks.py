"""A diagnostic task: proves that a worker is consuming and sees the same database as the web side.

Registered through `CELERY_IMPORTS` (portal/ is not an installed app, so autodiscovery skips it).
"""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

from celery import shared_task
from django.conf import settings
from django.db import connection

_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def receipt_path(token: str) -> Path:
    """Where `ping(token)` leaves its receipt; the token names a file, so only safe characters pass."""
    if not _TOKEN.fullmatch(token):
        raise ValueError("a ping token is 1 to 64 letters, digits, '-' or '_'")
    return Path(settings.VAR_DIR) / "health" / f"ping-{token}.json"


@shared_task(name="portal.ping", ignore_result=True)
def ping(token: str) -> None:
    from django.contrib.auth import get_user_model

    path = receipt_path(token)
    path.parent.mkdir(parents=True, exist_ok=True)
    receipt = {
        "token": token,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        # The database's name only: never the URL, which may carry a password.
        "database": str(connection.settings_dict["NAME"]),
        "vendor": connection.vendor,
        "users": get_user_model().objects.count(),
    }
    # Written whole then renamed, so a reader never sees half a receipt.
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(receipt))
    partial.replace(path)
