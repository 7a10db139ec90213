from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import tempfile
import threading
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from django.conf import settings
from django.test import SimpleTestCase

from tests.harness import free_port, kill_session, processes_in_session, wait_until

BIN_RUN = Path(settings.BASE_DIR) / "bin" / "run"
_URL = re.compile(r"Keyward is running at (http://127\.0\.0\.1:\d+/)")
_USER_ROW = re.compile(r"^\s+(admin|reviewer|helpdesk)\s+.+?\s{2,}(\S+)\s*$", re.MULTILINE)
# What a developer's shell would not have: this test's own databases, queue and settings.
_NOT_INHERITED = ("DATABASE_URL", "EMULATOR_DATABASE_URL", "CELERY_BROKER_URL", "CELERY_TASK_DEFAULT_QUEUE")


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class RunningPortal:
    """`bin/run` in a session of its own, with its output collected line by line."""

    def __init__(self, var_dir: str, port: int, *args: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED and not k.startswith("KEYWARD_TEST")}
        env.update({"KEYWARD_VAR_DIR": var_dir, "PORT": str(port), "PYTHONUNBUFFERED": "1"})
        env.pop("DJANGO_SETTINGS_MODULE", None)
        self.process = subprocess.Popen(
            [str(BIN_RUN), *args],
            cwd=settings.BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its session id is its pid: every descendant can be found
            # As from a terminal: a suite started in the background (`... &`) has SIGINT ignored, and a
            # shell cannot trap a signal ignored when it started, so Ctrl-C would never reach its trap.
            preexec_fn=_default_sigint,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.append(raw.decode(errors="replace"))

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_url(self) -> str:
        def url() -> str | None:
            if self.process.poll() is not None:
                pytest.fail(f"bin/run exited with {self.process.returncode}:\n{self.output[-6000:]}")
            match = _URL.search(self.output)
            return match.group(1) if match else None

        return str(wait_until(url, timeout=240, interval=0.2, message="bin/run to print its URL"))

    def interrupt(self) -> int:
        """Ctrl-C, as a terminal sends it to the script; the exit code once it has stopped."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=60)

    def kill(self) -> None:
        kill_session(self.process.pid)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


class Browser:
    """Just enough of a browser: cookies, and a form POST with Django's CSRF token."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.cookies: SimpleCookie = SimpleCookie()

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str, str]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        headers = {"Cookie": "; ".join(f"{k}={m.value}" for k, m in self.cookies.items())}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Referer"] = f"http://{self.host}:{self.port}{path}"
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        for header in response.headers.get_all("Set-Cookie") or []:
            self.cookies.load(header)
        text = response.read().decode(errors="replace")
        connection.close()
        return response.status, response.headers.get("Location", ""), text

    def sign_in(self, username: str, password: str) -> tuple[int, str]:
        status, _, page = self.request("GET", "/accounts/login/")
        assert status == 200
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, page[:500]
        form = {"csrfmiddlewaretoken": token.group(1), "username": username, "password": password, "next": ""}
        status, location, _ = self.request("POST", "/accounts/login/", form)
        return status, location


class CommandOneTestCase(SimpleTestCase):
    """bin/run end to end: set up, serve, sign in, and stop everything on Ctrl-C."""

    def setUp(self):
        folder = tempfile.TemporaryDirectory(prefix="keyward-bin-run-")
        self.addCleanup(folder.cleanup)
        self.var_dir = folder.name

    def _start(self, *args: str) -> tuple[RunningPortal, str]:
        portal = RunningPortal(self.var_dir, free_port(), *args)
        self.addCleanup(portal.kill)
        return portal, portal.wait_for_url()

    def _assert_stops_everything(self, portal: RunningPortal) -> None:
        running = processes_in_session(portal.process.pid)
        # The worker (with its pool and beat) and the web server were really running.
        assert any("celery" in cmd and " worker" in cmd and " -B" in cmd for cmd in running.values()), running
        assert any("runserver" in cmd for cmd in running.values()), running
        try:
            status = portal.interrupt()
        except subprocess.TimeoutExpired:
            left = processes_in_session(portal.process.pid)
            pytest.fail(f"bin/run did not stop within 60 s of Ctrl-C; still running: {left}\n{portal.output[-6000:]}")
        assert status == 0, portal.output[-3000:]
        # Nothing it started is left behind, not even the worker's pool processes.
        assert wait_until(lambda: not processes_in_session(portal.process.pid), timeout=10, message="no leftovers")
        assert "Keyward stopped." in portal.output

    def test_it_serves_the_portal_signs_in_the_printed_users_and_stops_on_ctrl_c(self):
        portal, url = self._start()
        users = dict(_USER_ROW.findall(portal.output))
        assert set(users) == {"admin", "reviewer", "helpdesk"}, portal.output[-3000:]

        status, location, _ = Browser(url).request("GET", "/")
        assert status == 302
        assert urlsplit(location).path == "/accounts/login/"
        for username, password in users.items():
            browser = Browser(url)
            assert browser.sign_in(username, password) == (302, "/")
            status, _, page = browser.request("GET", "/")
            assert status == 200
            assert username in page
        # A wrong password is refused.
        assert Browser(url).sign_in("admin", "not-the-password-123")[0] == 200
        if "First sync" in portal.output and "Seeding the local Azure emulator" in portal.output:
            # The worker took the first sync that bin/run queued: the seeded estate is on the Accounts page.
            admin = Browser(url)
            admin.sign_in("admin", users["admin"])
            wait_until(
                lambda: "face-prod-eastus" in admin.request("GET", "/")[2],
                timeout=90,
                interval=1,
                message="the first sync to bring the seeded accounts",
            )

        self._assert_stops_everything(portal)

        # A second run keeps the users and their passwords, and says how to get new ones.
        again, url = self._start()
        assert "(unchanged)" in again.output
        assert "bin/run --reset-passwords" in again.output
        assert Browser(url).sign_in("admin", users["admin"]) == (302, "/")
        self._assert_stops_everything(again)
