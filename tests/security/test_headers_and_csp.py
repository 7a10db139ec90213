"""Security headers, a strict Content-Security-Policy, and pages that need nothing it forbids.

Every page and fragment each role may open (from the access table, plus the pages' other states: a
preflight shown, a search, an error page) is rendered and checked: the CSP header is there and strict, and
the HTML holds no inline script, no <style> block or style= attribute, no on*= or hx-on handler and no
javascript: URL, so the policy never has to be loosened for our own pages. `manage.py check --deploy
--fail-level WARNING` is clean for production settings.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from html.parser import HTMLParser

from django.conf import settings
from django.test import Client, SimpleTestCase, TestCase

from encryption.models import Operation, OperationStep
from tests.builders import make_operation
from tests.security.test_access_matrix import (
    ACCESS,
    ANONYMOUS,
    OK,
    ROLES,
    Estate,
    expected,
    fill,
    seed_estate,
    url_patterns,
)

SCRIPT_SOURCES = ("'self'",)


class InlineCode(HTMLParser):
    """Collects whatever a strict CSP would block: inline script and style, handlers, javascript: URLs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in_script_without_src = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {name.lower(): (value or "") for name, value in attrs}
        if tag == "script" and "src" not in names:
            self.found.append("<script> without src")
        if tag == "style":
            self.found.append("<style> block")
        for name, value in names.items():
            if name == "style":
                self.found.append(f"style= on <{tag}>")
            if name.startswith("on") or name.startswith(("hx-on", "data-hx-on")):
                self.found.append(f"{name}= handler on <{tag}>")
            if name in ("href", "src", "action", "formaction") and value.strip().lower().startswith("javascript:"):
                self.found.append(f"javascript: URL in {name}= on <{tag}>")


def inline_code(html: str) -> list[str]:
    parser = InlineCode()
    parser.feed(html)
    parser.close()
    return parser.found


class InlineCodeParserTests(SimpleTestCase):
    def test_it_finds_each_kind_of_inline_code(self):
        html = (
            '<script>alert(1)</script><script src="/static/x.js"></script><style>p{}</style>'
            '<p style="color:red" onclick="x()" hx-on:click="y()"><a href="JavaScript:z()">a</a></p>'
        )
        assert inline_code(html) == [
            "<script> without src",
            "<style> block",
            "style= on <p>",
            "onclick= handler on <p>",
            "hx-on:click= handler on <p>",
            "javascript: URL in href= on <a>",
        ]

    def test_it_finds_nothing_in_clean_html(self):
        assert inline_code('<script src="/s.js" defer></script><p class="x" hx-get="/y">ok</p>') == []


def assert_strict_csp(response, where: str) -> None:
    policy = response.headers.get("Content-Security-Policy", "")
    assert policy, f"{where}: no Content-Security-Policy header"
    directives = {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}
    assert directives.get("default-src") == ["'self'"], f"{where}: {policy}"
    assert directives.get("script-src") == list(SCRIPT_SOURCES), f"{where}: {policy}"
    assert directives.get("style-src") == ["'self'"], f"{where}: {policy}"
    assert directives.get("object-src") == ["'none'"], f"{where}: {policy}"
    assert directives.get("frame-ancestors") == ["'none'"], f"{where}: {policy}"
    assert directives.get("base-uri") == ["'none'"], f"{where}: {policy}"
    assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy, f"{where}: {policy}"


class PagesTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.estate: Estate = seed_estate("p-")
        cmk = cls.estate.cmk
        # More of the pages' states: a finished preflight with a blocking check, a failed change with steps.
        cls.preflight = make_operation(
            cmk,
            Operation.Kind.PREFLIGHT,
            status="succeeded",
            params={"key_uri": cmk.key_uri, "vault_subscription_id": cmk.subscription.subscription_id},
            result={
                "checks": [
                    {"id": "identity", "label": "Identity", "state": "will_be_done", "detail": "On.", "action": ""},
                    {"id": "purge", "label": "Purge", "state": "blocks", "detail": "Off.", "action": "Turn it on."},
                ]
            },
        )
        cls.failed = make_operation(
            cls.estate.mmk, Operation.Kind.ENABLE_CMK, status="failed", reason="A prerequisite is not met."
        )
        OperationStep.objects.create(operation=cls.failed, name="preflight", label="Check", status="failed")

    def _pages(self):
        """(role, path, headers) of every page and fragment a role may open, and the other states."""
        for url in url_patterns():
            access = ACCESS[url.key]
            for role in ROLES:
                path = fill(url, self.estate, role)
                for fragment in ["", "htmx", *access.fragments]:
                    if expected(access, role, "GET", fragment if fragment != "htmx" else "") != OK:
                        continue
                    headers = {"HX-Request": "true"} if fragment else {}
                    if fragment not in ("", "htmx"):
                        headers["HX-Target"] = fragment
                    yield role, path, headers
        cmk, mmk = self.estate.cmk, self.estate.mmk
        for role, path in [
            ("admin", f"/accounts/{cmk.pk}/encryption/?preflight={self.preflight.pk}"),
            ("admin", f"/accounts/{mmk.pk}/encryption/?encryption_type=cmk&use_own_key=on&key_source=vault"),
            ("admin", f"/accounts/{mmk.pk}/encryption/?encryption_type=cmk&use_own_key=on&key_source=uri&key_uri=x"),
            ("admin", f"/operations/{self.failed.pk}/"),
            ("admin", "/?q=face&type=cmk&health=unreadable&sort=-name"),
            ("admin", "/audit/?action=operation.requested&outcome=requested"),
            ("helpdesk", "/helpdesk/?q=face"),
            ("helpdesk", f"/helpdesk/?account={cmk.pk}"),
            ("helpdesk", "/audit/"),  # the 403 page
            ("admin", "/no-such-page/"),  # the 404 page
            (ANONYMOUS, "/accounts/login/?next=/audit/"),
        ]:
            yield role, path, {}

    def test_every_page_has_a_strict_csp_and_no_inline_code(self):
        problems, rendered = [], 0
        clients: dict[str, Client] = {}
        for role, path, headers in self._pages():
            if role not in clients:
                clients[role] = Client()
                if role != ANONYMOUS:
                    clients[role].force_login(self.estate.users[role])
            response = clients[role].get(path, headers=headers)
            if "text/html" not in response.get("Content-Type", ""):
                continue  # the public key, exports and manifests are downloads, not pages
            where = f"GET {path} as {role}" + (f" {headers}" if headers else "")
            assert_strict_csp(response, where)
            problems += [f"{where}: {found}" for found in inline_code(response.content.decode())]
            rendered += 1
        assert rendered > 50
        assert not problems, "\n".join(problems)

    def test_every_page_sends_the_security_headers(self):
        self.client.force_login(self.estate.users["admin"])
        for path in ("/", f"/accounts/{self.estate.cmk.pk}/encryption/", "/audit/", "/accounts/login/"):
            response = self.client.get(path)
            assert response["X-Frame-Options"] == "DENY"
            assert response["X-Content-Type-Options"] == "nosniff"
            assert response["Referrer-Policy"] == "same-origin"
            assert response["Cross-Origin-Opener-Policy"] == "same-origin"
            assert_strict_csp(response, path)

    def test_the_session_and_csrf_cookies_are_kept_from_scripts(self):
        response = self.client.get("/accounts/login/")
        assert response.cookies[settings.CSRF_COOKIE_NAME]["samesite"] == "Lax"
        assert settings.SESSION_COOKIE_HTTPONLY


# Production settings


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """manage.py in a clean environment: only what a production deployment would set."""
    keep = ("PATH", "HOME", "LANG", "PYTHONPATH", "VIRTUAL_ENV")
    clean = {k: v for k, v in os.environ.items() if k in keep}
    clean.update(env, DJANGO_SETTINGS_MODULE="portal.settings")
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=settings.BASE_DIR, env=clean, capture_output=True, text=True
    )


PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": secrets.token_urlsafe(50),
    "ALLOWED_HOSTS": "keyward.example.com",
    "AZURE_BACKEND": "azure",  # production never loads the emulator
    "DATABASE_URL": "postgres://keyward_app@db.example.com:5432/keyward",
    "CELERY_BROKER_URL": "redis://cache.example.com:6379/0",
}


class DeployCheckTests(SimpleTestCase):
    def test_the_deploy_check_is_clean_for_production_settings(self):
        result = _manage("check", "--deploy", "--fail-level", "WARNING", **PRODUCTION)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "System check identified no issues (0 silenced)." in result.stdout

    def test_the_deploy_check_would_catch_an_insecure_setting(self):
        # The same command fails on what it should catch, so the test above can fail.
        result = _manage("check", "--deploy", "--fail-level", "WARNING", **{**PRODUCTION, "SECURE_HSTS_SECONDS": "0"})
        assert result.returncode != 0
        assert "security.W004" in result.stdout + result.stderr
