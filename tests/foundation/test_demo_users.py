from __future__ import annotations

import re
from io import StringIO

from django.contrib.auth import authenticate
from django.contrib.auth.models import Group, User
from django.contrib.auth.password_validation import validate_password
from django.core.management import call_command
from django.test import RequestFactory, TestCase

from encryption.roles import ADMINS, HELP_DESK, REVIEWERS, role_of

_ROW = re.compile(r"^\s+(admin|reviewer|helpdesk)\s+.+?\s{2,}(\S+)\s*$", re.MULTILINE)


def _run(*args: str) -> tuple[str, dict[str, str]]:
    out = StringIO()
    call_command("demo_users", *args, stdout=out)
    text = out.getvalue()
    return text, dict(_ROW.findall(text))


def _signs_in(username: str, password: str) -> bool:
    # django-axes needs the request, as the login view passes it.
    request = RequestFactory().post("/accounts/login/")
    return authenticate(request, username=username, password=password) is not None


class DemoUsersTestCase(TestCase):
    def test_it_creates_one_user_per_role_with_printed_passwords(self):
        text, passwords = _run()
        assert set(passwords) == {"admin", "reviewer", "helpdesk"}
        expected_roles = {"admin": ADMINS, "reviewer": REVIEWERS, "helpdesk": HELP_DESK}
        for username, role in expected_roles.items():
            user = User.objects.get(username=username)
            assert role_of(user) == role
            assert list(user.groups.values_list("name", flat=True)) == [role]
            # The printed password is the real one, and passes the validators.
            validate_password(passwords[username], user)
            assert _signs_in(username, passwords[username])
        assert "shown once" in text

    def test_it_gives_each_user_a_different_password(self):
        _, passwords = _run()
        assert len(set(passwords.values())) == 3

    def test_a_second_run_keeps_users_and_passwords(self):
        _, first = _run()
        hashes = dict(User.objects.values_list("username", "password"))
        text, second = _run()
        assert User.objects.count() == 3
        assert dict(User.objects.values_list("username", "password")) == hashes
        assert set(second.values()) == {"(unchanged)"}
        assert "bin/run --reset-passwords" in text
        assert _signs_in("admin", first["admin"])

    def test_it_resets_passwords_when_asked(self):
        _, first = _run()
        _, second = _run("--reset-passwords")
        for username in ("admin", "reviewer", "helpdesk"):
            assert second[username] != first[username]
            assert not _signs_in(username, first[username])
            assert _signs_in(username, second[username])

    def test_it_puts_a_demo_user_back_in_its_role(self):
        _run()
        helpdesk = User.objects.get(username="helpdesk")
        helpdesk.groups.set([Group.objects.get(name=ADMINS)])
        _run()
        assert role_of(helpdesk) == HELP_DESK
