from __future__ import annotations

from django.apps import AppConfig


class EncryptionConfig(AppConfig):
    name = "encryption"
    verbose_name = "Encryption"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from encryption import audit_signals

        audit_signals.connect()
