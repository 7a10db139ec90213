from __future__ import annotations

import uuid
from datetime import timedelta
from urllib.parse import urlsplit

import time_machine
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.test import TestCase, override_settings
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.urls.resolvers import RegexPattern
from django.utils import timezone

from encryption.models import AuditEvent
from encryption.roles import ADMINS, HELP_DESK, REVIEWERS

PASSWORD = "correct-horse-battery-9421"

# Pages anyone may open: signing in and out. Everything else must send an anonymous visitor to sign in.
PUBLIC = {"login", "logout", "admin:login", "admin:logout"}
SAMPLE_ARGUMENTS = {"int": "1", "str": "x", "slug": "x", "path": "x", "uuid": str(uuid.UUID(int=1))}


def _make_user(username: str, role: str) -> User:
    user = User.objects.create_user(username, password=PASSWORD)
    user.groups.add(Group.objects.get(name=role))
    return user


def _every_route(resolver: URLResolver | None = None, prefix: str = "", namespace: str = "") -> list[tuple[str, str]]:
    """(url name, a path that reaches it) for every route of the URLconf, with sample arguments."""
    routes = []
    for entry in (resolver or get_resolver()).url_patterns:
        route = _route_text(entry)
        if route is None:
            continue  # a regular expression with groups (Django admin's app index): the admin covers it
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            routes += _every_route(entry, prefix + route, inner)
        elif isinstance(entry, URLPattern):
            routes.append((f"{namespace}{entry.name or ''}", "/" + prefix + route))
    return routes


def _route_text(entry: URLPattern | URLResolver) -> str | None:
    pattern = entry.pattern
    if not isinstance(pattern, RegexPattern):
        text = str(pattern)
        for converter, sample in SAMPLE_ARGUMENTS.items():
            while f"<{converter}:" in text:
                start = text.index(f"<{converter}:")
                text = text[:start] + sample + text[text.index(">", start) + 1 :]
        return text if "<" not in text else text.split("<")[0] + "x"
    regex = str(pattern)
    if "(" in regex:
        return None
    return regex.lstrip("^").rstrip("$").replace("\\", "")


class SignInTestCase(TestCase):
    admin: User
    helpdesk: User

    @classmethod
    def setUpTestData(cls):
        cls.admin = _make_user("alice", ADMINS)
        cls.helpdesk = _make_user("hank", HELP_DESK)

    def test_it_renders_the_login_page(self):
        response = self.client.get(reverse("login"))
        assert response.status_code == 200
        assert b'name="username"' in response.content
        assert b'name="password"' in response.content
        assert b"csrfmiddlewaretoken" in response.content

    def test_it_signs_a_user_in_and_lands_on_accounts(self):
        response = self.client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
        assert response.status_code == 302
        assert response["Location"] == reverse("encryption:account-list")
        page = self.client.get(reverse("encryption:account-list"))
        assert page.status_code == 200
        # The layout shows who is signed in, their role and a way out.
        assert b"alice" in page.content
        assert b"Encryption admin" in page.content
        assert b"Sign out" in page.content

    def test_it_refuses_a_wrong_password(self):
        response = self.client.post(reverse("login"), {"username": "alice", "password": "wrong-password-123"})
        assert response.status_code == 200
        assert b"didn&#x27;t match" in response.content or b"didn't match" in response.content
        assert "_auth_user_id" not in self.client.session

    def test_it_sends_anonymous_visitors_to_sign_in_from_every_page(self):
        login = reverse("login")
        routes = [(name, path) for name, path in _every_route() if name not in PUBLIC]
        # The walk must really cover the portal's pages, or this test proves nothing.
        assert any(name == "encryption:account-list" for name, _ in routes)
        for name, path in routes:
            response = self.client.get(path)
            assert response.status_code == 302, f"{name} ({path}) answered {response.status_code}"
            target = urlsplit(response["Location"]).path
            assert target in (login, reverse("admin:login")), f"{name} ({path}) redirected to {target}"

    def test_it_signs_out_with_a_post(self):
        self.client.force_login(self.admin)
        # Signing out by GET is refused: a link or an image on another site must not sign anyone out.
        assert self.client.get(reverse("logout")).status_code == 405
        response = self.client.post(reverse("logout"))
        assert response.status_code == 302
        assert response["Location"] == reverse("login")
        after = self.client.get(reverse("encryption:account-list"))
        assert after.status_code == 302
        assert urlsplit(after["Location"]).path == reverse("login")

    def test_it_expires_sessions_after_session_cookie_age(self):
        self.client.force_login(self.admin)
        now = timezone.now()
        with time_machine.travel(now + timedelta(seconds=settings.SESSION_COOKIE_AGE - 60)):
            assert self.client.get(reverse("encryption:account-list")).status_code == 200
        with time_machine.travel(now + timedelta(seconds=settings.SESSION_COOKIE_AGE + 60)):
            response = self.client.get(reverse("encryption:account-list"))
        assert response.status_code == 302
        assert urlsplit(response["Location"]).path == reverse("login")


class PasswordValidatorsTestCase(TestCase):
    def test_it_rejects_weak_passwords(self):
        user = User(username="alice.smith", email="alice.smith@example.com")
        for weak in ("short1", "password1234", "123456789012", "alice.smith2024"):
            with self.subTest(weak=weak), self.assertRaises(ValidationError):
                validate_password(weak, user)

    def test_it_accepts_a_strong_password(self):
        validate_password(PASSWORD, User(username="alice"))


@override_settings(ROOT_URLCONF="tests.foundation.urls")
class RequirePermTestCase(TestCase):
    admin: User
    reviewer: User
    helpdesk: User

    @classmethod
    def setUpTestData(cls):
        cls.admin = _make_user("alice", ADMINS)
        cls.reviewer = _make_user("rita", REVIEWERS)
        cls.helpdesk = _make_user("hank", HELP_DESK)

    def test_it_lets_an_encryption_admin_in(self):
        self.client.force_login(self.admin)
        response = self.client.get("/test-admin-only/")
        assert response.status_code == 200
        assert response.content == b"only encryption admins get here"

    def test_it_refuses_help_desk_with_403_and_records_it(self):
        self.client.force_login(self.helpdesk)
        response = self.client.get("/test-admin-only/")
        assert response.status_code == 403
        assert b"only encryption admins" not in response.content
        assert b"You can&#x27;t do this" in response.content or b"You can't do this" in response.content
        refusal = AuditEvent.objects.get(action="access.refused")
        assert refusal.actor == "hank"
        assert refusal.target == "/test-admin-only/"

    def test_it_refuses_a_security_reviewer_too(self):
        self.client.force_login(self.reviewer)
        assert self.client.get("/test-admin-only/").status_code == 403

    def test_it_sends_an_anonymous_visitor_to_sign_in_rather_than_403(self):
        response = self.client.get("/test-admin-only/")
        assert response.status_code == 302
        assert urlsplit(response["Location"]).path == reverse("login")


class LockoutTestCase(TestCase):
    admin: User

    @classmethod
    def setUpTestData(cls):
        cls.admin = _make_user("alice", ADMINS)
        _make_user("bob", ADMINS)

    def _sign_in(self, username: str, password: str, ip: str = "192.0.2.10") -> int:
        response = self.client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=ip)
        return response.status_code

    def test_it_locks_a_username_and_ip_after_five_failures(self):
        for _ in range(settings.AXES_FAILURE_LIMIT - 1):
            assert self._sign_in("alice", "wrong-password-123") == 200  # the form again, with an error
        # The fifth failure locks; after it even the right password is refused from that address.
        assert self._sign_in("alice", "wrong-password-123") == 429
        assert self._sign_in("alice", PASSWORD) == 429
        assert "_auth_user_id" not in self.client.session

    def test_it_keeps_the_lock_to_that_username_and_ip(self):
        for _ in range(settings.AXES_FAILURE_LIMIT):
            self._sign_in("alice", "wrong-password-123")
        # Another address can still sign in as alice, and bob from the same address: one attacker
        # cannot lock a colleague out.
        assert self._sign_in("alice", PASSWORD, ip="192.0.2.99") == 302
        self.client.logout()
        assert self._sign_in("bob", PASSWORD) == 302
