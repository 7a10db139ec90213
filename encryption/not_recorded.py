"""A request Keyward could not write down answers 503 and says so, instead of a server error.

services raise NotRecorded when the database refuses a request's operation row or its audit event (the
audit store is down or refusing writes). Nothing was changed and nothing reached Azure, and that is what
the person is told: on a page of its own, or, for an htmx request, on the page they were on (htmx does not
swap a 503, so it is sent back there with the message).
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.http import url_has_allowed_host_and_scheme

from encryption.services import NotRecorded

RETRY_AFTER_SECONDS = 30


class NotRecordedMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, NotRecorded):
            return None
        back = _page_on_this_site(request, request.headers.get("HX-Current-URL") or request.headers.get("Referer"))
        if request.headers.get("HX-Request") == "true":
            messages.error(request, str(exception))
            response = HttpResponse(str(exception), status=503, content_type="text/plain; charset=utf-8")
            response["HX-Redirect"] = back
        else:
            response = render(request, "not_recorded.html", {"message": str(exception), "back": back}, status=503)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response


def _page_on_this_site(request: HttpRequest, url: str | None) -> str:
    """The path (and query) of `url` if it is a page of this site, else the home page."""
    if url and url_has_allowed_host_and_scheme(url, allowed_hosts={request.get_host()}):
        parts = urlsplit(url)
        return parts.path + (f"?{parts.query}" if parts.query else "")
    return "/"
