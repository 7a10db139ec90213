from __future__ import annotations

import re
import tempfile

from django.core.management import call_command
from django.test import TestCase, override_settings
from django.urls import reverse

_MANIFEST_STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}


class StaticFilesTestCase(TestCase):
    """With DEBUG off nothing but WhiteNoise serves static files: production gets its CSS and htmx."""

    def setUp(self):
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        # What settings.py chooses when DEBUG=false, with STATIC_ROOT in a folder of this test's own.
        production = override_settings(
            DEBUG=False, STATIC_ROOT=folder.name, STORAGES=_MANIFEST_STORAGES, WHITENOISE_USE_FINDERS=False
        )
        production.enable()
        self.addCleanup(production.disable)
        call_command("collectstatic", interactive=False, verbosity=0)

    def test_it_serves_the_stylesheet_the_pages_link_to(self):
        page = self.client.get(reverse("login"))
        assert page.status_code == 200
        # The page links to the hashed name, which may be cached for ever.
        match = re.search(rb'href="(/static/css/portal\.[0-9a-f]{12}\.css)"', page.content)
        assert match, page.content[:800]
        response = self.client.get(match.group(1).decode())
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/css")
        assert "immutable" in response["Cache-Control"]
        assert response.getvalue()

    def test_it_serves_htmx_from_our_own_origin(self):
        page = self.client.get(reverse("login"))
        match = re.search(rb'<script src="(/static/[^"]*htmx[^"]*\.js)"', page.content)
        assert match, "no local htmx script on the page"
        response = self.client.get(match.group(1).decode())
        assert response.status_code == 200
        assert b"htmx" in response.getvalue()
