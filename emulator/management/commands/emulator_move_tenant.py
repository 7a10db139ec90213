"""`python manage.py emulator_move_tenant SUBSCRIPTION TENANT`: move a subscription to another tenant."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from emulator import estate


class Command(BaseCommand):
    help = (
        "Move a subscription (display name or id) to another tenant (name or id), as Azure's 'Change directory' "
        "does: the accounts' identities follow, the vaults keep their old tenant, and CMK data becomes unreadable."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("subscription")
        parser.add_argument("tenant")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            subscription = estate.resolve_subscription(options["subscription"])
            move = estate.move_subscription(subscription, estate.resolve_tenant(options["tenant"]))
        except estate.EstateError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"Moved subscription {subscription.display_name} ({subscription.subscription_id}) from tenant "
                f"{move.old_tenant_id} to {move.new_tenant_id}: {move.identities_moved} managed identities now in "
                f"the new tenant; {move.vaults_left_behind} vaults of the subscription keep the old tenant id, so "
                "customer-managed keys in them (or any vault of the old tenant) can no longer be used."
            )
        )
