from __future__ import annotations

from django.apps import AppConfig


class EmulatorConfig(AppConfig):
    name = "emulator"
    verbose_name = "Local Azure emulator"
    default_auto_field = "django.db.models.BigAutoField"
