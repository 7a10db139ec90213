from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from encryption.models import AuditCheckpoint, AuditEvent, Operation, OperationStep

# The audit trail


class ReadOnlyAuditAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Nobody, superusers included, adds, changes or deletes audit rows through the admin."""

    actions = None

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAuditAdmin):
    list_display = ["seq", "created_at", "actor", "actor_role", "source", "action", "outcome", "target"]
    list_filter = ["outcome", "source", "actor_role"]
    search_fields = ["=actor", "=action", "=target", "=key_id"]
    show_full_result_count = False  # a COUNT(*) over millions of rows on every page is what makes it slow
    ordering = ["-seq"]


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnlyAuditAdmin):
    list_display = ["seq", "signed_at", "event_hash", "public_key_fingerprint"]
    ordering = ["-seq"]


# Operations: read-only, because a row edited by hand would no longer say what Azure was asked to do.


class OperationStepInline(admin.TabularInline):  # type: ignore[type-arg]
    model = OperationStep
    extra = 0
    can_delete = False
    fields = ("name", "label", "status", "detail", "error_code", "duration_ms", "started_at", "request_ids")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Operation)
class OperationAdmin(ReadOnlyAuditAdmin):
    list_display = ["id", "kind", "status", "account", "actor", "source", "created_at", "finished_at"]
    list_filter = ["status", "kind", "source"]
    search_fields = ["=actor", "account__name", "account__arm_id"]
    list_select_related = ["account"]
    inlines = [OperationStepInline]
    ordering = ["-created_at"]
