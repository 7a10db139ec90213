"""The Celery app, configured from Django settings with the CELERY_ prefix."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def ensure_broker_folders() -> None:
    """The filesystem broker needs its folders to exist before anyone publishes or consumes."""
    from django.conf import settings

    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        if key in options:
            os.makedirs(options[key], exist_ok=True)


@app.on_after_configure.connect
def _broker_folders_on_configure(sender: Celery, **kwargs: object) -> None:
    # Every process that publishes or consumes configures the app first (web, CLI, worker, beat), so a
    # fresh var/ folder never makes the first task fail with "No such file or directory".
    ensure_broker_folders()
