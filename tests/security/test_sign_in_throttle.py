"""Sign-in is throttled by django-axes, keyed on the username and IP address together.

Five failures lock that username from that address (even the right password is then refused) for the
cool-off period; another user at the same address, or the same user elsewhere, still signs in, so one
attacker cannot lock colleagues out. Every failure is in the audit trail, without the password typed.
"""

from __future__ import annotations

from datetime import timedelta

import time_machine
from django.conf import settings
from django.test import TestCase
from django.urls import reverse
from django.utils import timezone

from encryption.models import AuditEvent
from encryption.roles import ADMINS, REVIEWERS
from tests.builders import PASSWORD, make_user
from tests.security.test_headers_and_csp import assert_strict_csp, inline_code

WRONG = "Wr0ng-password-typed-4411"
ATTACKER = "198.51.100.7"


class SignInThrottleTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.alice = make_user("t-alice", ADMINS)
        cls.bob = make_user("t-bob", REVIEWERS)

    def sign_in(self, username: str, password: str, ip: str = ATTACKER):
        self.client.logout()
        return self.client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=ip)

    def fail_until_locked(self, username: str = "t-alice", ip: str = ATTACKER) -> None:
        for attempt in range(1, settings.AXES_FAILURE_LIMIT + 1):
            status = self.sign_in(username, WRONG, ip).status_code
            # The form comes back with an error until the last allowed failure, which locks.
            assert status == (429 if attempt == settings.AXES_FAILURE_LIMIT else 200), attempt

    def test_five_failures_lock_that_username_at_that_address(self):
        assert settings.AXES_FAILURE_LIMIT == 5
        self.fail_until_locked()
        locked = self.sign_in("t-alice", PASSWORD)
        assert locked.status_code == 429  # the right password too, while the lock holds
        assert "_auth_user_id" not in self.client.session
        assert_strict_csp(locked, "the lock-out page")
        assert inline_code(locked.content.decode()) == []

    def test_another_user_at_the_same_address_still_signs_in(self):
        self.fail_until_locked()
        response = self.sign_in("t-bob", PASSWORD)
        assert response.status_code == 302
        assert self.client.session["_auth_user_id"] == str(self.bob.pk)

    def test_the_same_user_from_another_address_still_signs_in(self):
        self.fail_until_locked()
        assert self.sign_in("t-alice", PASSWORD, ip="203.0.113.9").status_code == 302

    def test_the_lock_lifts_after_the_cool_off(self):
        self.fail_until_locked()
        cooloff = timedelta(hours=settings.AXES_COOLOFF_TIME)
        start = timezone.now()
        with time_machine.travel(start + cooloff - timedelta(minutes=1)):
            assert self.sign_in("t-alice", PASSWORD).status_code == 429
        # That attempt, made during the lock, started the cool-off again (a patient attacker gains nothing);
        # once a whole cool-off has passed since, the right password works again.
        with time_machine.travel(start + 2 * cooloff):
            assert self.sign_in("t-alice", PASSWORD).status_code == 302

    def test_an_unknown_username_is_throttled_the_same_way(self):
        # Guessing names must not be cheaper than guessing passwords.
        self.fail_until_locked("t-nobody")
        assert self.sign_in("t-nobody", WRONG).status_code == 429

    def test_every_failure_is_audited_without_the_password(self):
        self.fail_until_locked()
        failures = AuditEvent.objects.filter(action="auth.login_failed")
        assert failures.count() >= settings.AXES_FAILURE_LIMIT - 1
        for event in failures:
            stored = " ".join(str(v) for v in event.__dict__.values())
            assert WRONG not in stored
            assert event.source_ip == ATTACKER
