from __future__ import annotations

import io
import json
from unittest import mock

from django.core.management import CommandError, call_command
from django.test import TestCase

from encryption.models import AuditEvent, Operation
from tests.encryption.engine_helpers import (
    PROD,
    SUB,
    EngineTestCase,
    broker,
    broker_ready,
    make_account,
    make_cast,
    run_to_end,
)

KEY_URI = "https://kv-test.vault.azure.net/keys/cmk"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("encryption", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


class CommandWithoutWorkerTests(TestCase):
    """What the command does on its own: lookups, refusals, queueing, and waiting with no worker running."""

    @classmethod
    def setUpTestData(cls):
        cls.cast = make_cast()
        cls.account = make_account("face-cli")
        cls.cmk = make_account("face-cli-cmk", cmk=True)
        make_account("face-twin", subscription_id=SUB)
        make_account("face-twin", subscription_id="44444444-4444-4444-8444-444444444444")

    def setUp(self):
        broker_ready()

    def test_it_lists_and_shows_accounts_from_the_mirror(self):
        listed = run("list")
        assert "face-cli " in listed and "face-cli-cmk" in listed and "CMK" in listed
        rows = json.loads(run("list", "--json"))
        assert {r["name"] for r in rows} >= {"face-cli", "face-cli-cmk"}
        shown = run("show", "face-cli-cmk")
        assert "Customer Managed Keys" in shown and "https://kv-test.vault.azure.net/keys/cmk/" in shown
        by_id = json.loads(run("show", self.cmk.arm_id.upper(), "--json"))
        assert by_id["arm_id"] == self.cmk.arm_id and by_id["operations"] == []

    def test_an_ambiguous_name_lists_the_matches(self):
        with self.assertRaises(CommandError) as refused:
            run("show", "face-twin")
        message = str(refused.exception)
        assert "2 accounts" in message and SUB in message and "44444444-4444-4444-8444-444444444444" in message
        with self.assertRaises(CommandError):
            run("show", "no-such-account")

    def test_changes_need_a_named_user_whose_role_allows_them(self):
        with self.assertRaises(CommandError) as missing:
            run("enable-cmk", "face-cli", "--key-uri", KEY_URI)
        assert "--as" in str(missing.exception)
        with self.assertRaises(CommandError) as refused:
            run("enable-cmk", "face-cli", "--key-uri", KEY_URI, "--as", "hank-helpdesk")
        assert refused.exception.returncode == 1 and "Refused" in str(refused.exception)
        with self.assertRaises(CommandError):
            run("enable-cmk", "face-cli", "--key-uri", KEY_URI, "--as", "nobody")
        assert not Operation.objects.exists()
        refusal = AuditEvent.objects.get(action="access.refused")
        assert refusal.source == "cli" and refusal.actor == "hank-helpdesk" and "@" in refusal.source_detail

    def test_a_bad_key_uri_is_refused_with_the_parsers_message(self):
        with self.assertRaises(CommandError) as refused:
            run("enable-cmk", "face-cli", "--key-uri", "https://evil.example/keys/x", "--as", "alice-admin")
        assert "Refused" in str(refused.exception)
        assert not Operation.objects.exists()

    def test_a_change_is_queued_and_reported(self):
        out = run("enable-cmk", "face-cli", "--key-uri", KEY_URI, "--as", "alice-admin")
        op = Operation.objects.get()
        assert f"Operation #{op.pk}" in out and "queued" in out
        assert (op.kind, op.source, op.actor) == ("enable_cmk", "cli", "alice-admin")
        as_json = json.loads(run("revoke", "face-cli-cmk", "--disable-key", "--as", "alice-admin", "--json"))
        assert as_json["operation"]["params"] == {"method": "disable_key"}
        assert as_json["operation"]["status"] == "queued"

    def test_waiting_without_a_worker_times_out_saying_it_is_queued(self):
        with self.assertRaises(CommandError) as pending:
            run(
                "update-version",
                "face-cli-cmk",
                "--version",
                "a" * 32,
                "--as",
                "alice-admin",
                "--wait",
                "--timeout",
                "0.5",
            )
        assert pending.exception.returncode == 3
        assert "still queued" in str(pending.exception)
        # Jobs wait by default.
        with self.assertRaises(CommandError) as job:
            run("diagnose", "face-cli", "--as", "hank-helpdesk", "--timeout", "0.3")
        assert job.exception.returncode == 3

    def test_a_second_change_is_refused_while_the_first_is_queued(self):
        run("disable-cmk", "face-cli-cmk", "--as", "alice-admin")
        with self.assertRaises(CommandError) as refused:
            run("restore-access", "face-cli-cmk", "--as", "alice-admin")
        assert "already has a change in progress" in str(refused.exception)

    def test_it_says_queued_when_the_broker_is_down(self):
        with broker("redis://127.0.0.1:1/0"):
            out = run("disable-cmk", "face-cli-cmk", "--as", "alice-admin")
        assert "queued" in out and "will be sent when it is back" in out
        assert Operation.objects.get().enqueued_at is None

    def test_rotate_takes_a_vault_uri_and_key_name(self):
        run("rotate", "https://kv-test.vault.azure.net/", "cmk", "--update-accounts", "--as", "alice-admin")
        op = Operation.objects.get()
        assert op.account is None and op.params["update_accounts"] is True and op.params["key_name"] == "cmk"

    def test_json_errors_are_json(self):
        with self.assertRaises(CommandError):
            out = io.StringIO()
            try:
                call_command("encryption", "show", "missing", "--json", stdout=out, stderr=io.StringIO())
            finally:
                assert "error" in json.loads(out.getvalue())


class CommandWithEngineTests(EngineTestCase):
    """The command's outcomes once operations run: here the waiting loop's pause runs what is queued, as a
    worker would (the real worker path is tests/encryption/test_worker_e2e.py)."""

    def run_waiting(self, *args: str) -> tuple[int, str]:
        out = io.StringIO()

        def work(_seconds: float) -> None:
            for pk in Operation.objects.filter(status="queued").values_list("pk", flat=True):
                run_to_end(Operation.objects.get(pk=pk))

        with mock.patch("encryption.management.commands.encryption.time.sleep", side_effect=work):
            try:
                call_command("encryption", *args, stdout=out, stderr=io.StringIO())
            except CommandError as exc:
                return exc.returncode, out.getvalue() + str(exc)
        return 0, out.getvalue()

    def test_a_change_waited_for_prints_its_steps_and_exits_0(self):
        code, out = self.run_waiting(
            "enable-cmk", "face-prod-eastus", "--key-uri", f"{PROD}/face-cmk", "--as", self.admin.username, "--wait"
        )
        assert code == 0, out
        assert "[done] Grant the identity access to the key" in out and ": succeeded" in out

    def test_a_failed_change_exits_1_with_the_reason(self):
        code, out = self.run_waiting(
            "enable-cmk", "face-free-eastus", "--key-uri", f"{PROD}/face-cmk", "--as", self.admin.username, "--wait"
        )
        assert code == 1 and "failed" in out and "pricing tier" in out

    def test_preflight_prints_every_check_and_exits_1_when_one_blocks(self):
        code, out = self.run_waiting(
            "preflight", "face-free-eastus", "--key-uri", f"{PROD}/face-cmk", "--as", self.admin.username
        )
        assert code == 1 and "[blocks] Pricing tier" in out and "[passes] Key vault found" in out
        code, out = self.run_waiting(
            "preflight", "face-prod-eastus", "--key-uri", f"{PROD}/face-cmk", "--as", self.admin.username
        )
        assert code == 0, out

    def test_json_output_of_a_job(self):
        code, out = self.run_waiting("diagnose", "face-broken-eastus", "--as", self.admin.username, "--json")
        assert code == 0
        result = json.loads(out)["operation"]
        assert result["status"] == "succeeded" and result["result"]["readable"] is False
        assert result["steps"][0]["name"] == "diagnose"

    def test_rotate_by_vault_name_and_sync_without_a_user(self):
        code, out = self.run_waiting("rotate", "kv-prod-eastus", "face-cmk", "--as", self.admin.username, "--wait")
        assert code == 0, out
        code, out = self.run_waiting("sync")
        assert code == 0 and "accounts" in out
        op = Operation.objects.get(kind="sync")
        assert op.source == "cli" and op.requested_by is None
