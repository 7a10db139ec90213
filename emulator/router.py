"""Send the emulator's models to their own database alias, and nothing else there."""

from __future__ import annotations

from typing import Any

EMULATOR_ALIAS = "emulator"


class EmulatorRouter:
    def db_for_read(self, model: type[Any], **hints: Any) -> str | None:
        return EMULATOR_ALIAS if model._meta.app_label == "emulator" else None

    def db_for_write(self, model: type[Any], **hints: Any) -> str | None:
        return EMULATOR_ALIAS if model._meta.app_label == "emulator" else None

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        same = (obj1._meta.app_label == "emulator") == (obj2._meta.app_label == "emulator")
        return None if same else False

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool:
        return (db == EMULATOR_ALIAS) == (app_label == "emulator")
