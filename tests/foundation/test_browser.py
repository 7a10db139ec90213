from __future__ import annotations

from django.contrib.auth.models import Group, User

from encryption.roles import HELP_DESK
from tests.harness import BrowserTestCase

PASSWORD = "correct-horse-battery-9421"


class SignInBrowserTestCase(BrowserTestCase):
    def setUp(self):
        user = User.objects.create_user("hank", password=PASSWORD)
        user.groups.add(Group.objects.get(name=HELP_DESK))

    def test_a_person_signs_in_and_out_in_chromium(self):
        page = self.new_page()
        errors: list[str] = []
        # A strict Content-Security-Policy must not break the page: the browser reports any violation.
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.goto(self.live_server_url + "/")
        assert page.url.startswith(self.live_server_url + "/accounts/login/")

        self.sign_in(page, "hank", PASSWORD)
        assert page.url == self.live_server_url + "/"
        assert page.get_by_role("heading", name="Accounts").is_visible()
        assert page.get_by_text("Help-desk").first.is_visible()

        page.get_by_role("button", name="Sign out").click()
        page.wait_for_load_state()
        page.goto(self.live_server_url + "/")
        assert page.url.startswith(self.live_server_url + "/accounts/login/")
        assert not [e for e in errors if "Content Security Policy" in e], errors

    def test_a_wrong_password_keeps_the_person_out(self):
        page = self.new_page()
        self.sign_in(page, "hank", "not-the-password-123")
        assert page.url.startswith(self.live_server_url + "/accounts/login/")
        assert page.get_by_role("alert").is_visible()
