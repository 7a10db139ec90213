"""Audit events for sign-in, sign-in failure, sign-out and role changes (connected in EncryptionConfig.ready)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import m2m_changed
from django.http import HttpRequest

from encryption import audit
from encryption.actors import Actor, current_actor
from encryption.models import AuditEvent

Outcome = AuditEvent.Outcome


def on_login(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    actor = Actor.from_request(request) if request is not None else Actor.from_cli(user)
    audit.record(actor=actor, action="auth.login", outcome=Outcome.SUCCEEDED, message="Signed in.")


def on_logout(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is None:
        return  # a visitor who was not signed in
    actor = Actor.from_request(request) if request is not None else Actor.from_cli(user)
    if actor.user is None:  # the request's user is already anonymous by now on some paths
        actor = Actor(user=user, username=user.get_username(), role=actor.role, source=actor.source, ip=actor.ip)
    audit.record(actor=actor, action="auth.logout", outcome=Outcome.SUCCEEDED, message="Signed out.")


def on_login_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    # Only the user name is kept: the password (and any other credential) never reaches the trail.
    username = str(credentials.get("username", ""))[:150]
    base = Actor.from_request(request) if request is not None else Actor.from_cli()
    actor = Actor(
        user=None, username=username or "anonymous", role="", source=base.source, ip=base.ip, detail=base.detail
    )
    audit.record(actor=actor, action="auth.login_failed", outcome=Outcome.FAILED, message="Sign-in failed.")


# Role changes: group membership before the change is remembered on the pre_* signal, so the post_* one
# can record before and after. Works from both sides (user.groups.add(...) and group.user_set.add(...)).


def on_groups_changed(
    sender: Any, instance: Any, action: str, reverse: bool, model: Any, pk_set: set[Any] | None, **kwargs: Any
) -> None:
    if action.startswith("pre_"):
        users = _affected_users(instance, reverse, pk_set, action)
        instance._keyward_groups_before = {u.pk: (u, _group_names(u)) for u in users}
        return
    before = getattr(instance, "_keyward_groups_before", None)
    if before is None:
        return
    del instance._keyward_groups_before
    actor = current_actor() or Actor.system()
    for user, names_before in before.values():
        names_after = _group_names(user)
        if names_after == names_before:
            continue
        audit.record(
            actor=actor,
            action="role.changed",
            outcome=Outcome.SUCCEEDED,
            target=f"user:{user.get_username()}",
            before={"groups": names_before},
            after={"groups": names_after},
            message=f"Groups of {user.get_username()} changed.",
        )


def _affected_users(instance: Any, reverse: bool, pk_set: set[Any] | None, action: str) -> list[Any]:
    if not reverse:
        return [instance]
    users = get_user_model().objects.all()
    if action == "pre_clear":
        return list(users.filter(groups=instance))
    return list(users.filter(pk__in=pk_set or ()))


def _group_names(user: Any) -> list[str]:
    return sorted(user.groups.values_list("name", flat=True))


def connect() -> None:
    user_logged_in.connect(on_login, dispatch_uid="keyward-audit-login")
    user_logged_out.connect(on_logout, dispatch_uid="keyward-audit-logout")
    user_login_failed.connect(on_login_failed, dispatch_uid="keyward-audit-login-failed")
    groups_through = get_user_model().groups.through
    m2m_changed.connect(on_groups_changed, sender=groups_through, dispatch_uid="keyward-audit-role-changed")
