"""CSRF is enforced on every change, plain form posts and htmx requests alike.

Generated from the access table: every URL that takes a POST is posted to by a role allowed to, with a
client that enforces CSRF as browsers meet it. Without a token the post is refused (403) and changes
nothing; htmx requests are no exception; the token in the form field or in htmx's `x-csrftoken` header
(what base.html puts on <body>) lets the same post through.
"""

from __future__ import annotations

from django.conf import settings
from django.test import Client, TestCase

from tests.security.test_access_matrix import (
    ACCESS,
    ADMIN,
    ANONYMOUS,
    OK,
    Estate,
    expected,
    fill,
    outcome_of,
    post_bodies,
    seed_estate,
    state,
    url_patterns,
)


class CsrfTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.estate: Estate = seed_estate("c-")

    def _client(self, role: str) -> tuple[Client, str]:
        """A client that enforces CSRF, signed in as `role`, and the token a page gave it."""
        client = Client(enforce_csrf_checks=True)
        if role != ANONYMOUS:
            client.force_login(self.estate.users[role])
        assert client.get("/accounts/login/").status_code == 200  # a page with a form sets the CSRF cookie
        return client, client.cookies[settings.CSRF_COOKIE_NAME].value

    def _posts(self):
        for url in url_patterns():
            access = ACCESS[url.key]
            if access.staff or "POST" not in access.methods or not access.post:
                continue
            role = ADMIN if ADMIN in access.post else sorted(access.post)[0]
            yield url, access, role

    def test_every_post_without_a_token_is_refused_and_changes_nothing(self):
        bodies = post_bodies(self.estate)
        checked = 0
        for url, access, role in self._posts():
            path = fill(url, self.estate, role)
            body = bodies.get(access.post_data, {})
            for headers in ({}, {"HX-Request": "true"}, {"HX-Request": "true", "X-CSRFToken": "not-the-token"}):
                client, _ = self._client(role)
                before = state()
                response = client.post(path, body, headers=headers)
                assert response.status_code == 403, f"POST {path} {headers} as {role}: {response.status_code}"
                assert b"CSRF" in response.content
                assert state()[:-1] == before[:-1], f"POST {path} {headers} changed something"
                checked += 1
        assert checked >= 3 * 15  # every change the portal offers

    def test_the_token_in_the_form_or_the_htmx_header_lets_the_post_through(self):
        bodies = post_bodies(self.estate)
        for url, access, role in self._posts():
            path = fill(url, self.estate, role)
            body = bodies.get(access.post_data, {})
            want = expected(access, role, "POST")
            client, token = self._client(role)
            as_form = client.post(path, {**body, "csrfmiddlewaretoken": token})
            assert outcome_of(as_form, access, signed_in=role != ANONYMOUS) == want == OK, f"form POST {path}"
            client, token = self._client(role)
            as_htmx = client.post(path, body, headers={"HX-Request": "true", "X-CSRFToken": token})
            assert outcome_of(as_htmx, access, signed_in=role != ANONYMOUS) == OK, f"htmx POST {path}"

    def test_every_page_gives_htmx_the_token_on_body(self):
        # base.html puts the token on <body> for htmx; a page that did not would leave htmx posts refused.
        client, _ = self._client(ADMIN)
        page = client.get("/").content.decode()
        assert '<body hx-headers=\'{"x-csrftoken": "' in page
