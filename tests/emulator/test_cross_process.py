"""One emulated Azure for every process: a separate OS process (a worker, say) sees what this process
wrote to the emulator, this process sees what it wrote, and it can resume this process's LRO."""

from __future__ import annotations

import json
import subprocess
import sys

from azure.keyvault.keys._shared import http_challenge_cache
from django.conf import settings

from emulator import keystore
from emulator.models import ArmOperation, CognitiveAccount
from tests.emulator.arm_builders import (
    CMK_PERMISSIONS,
    RESOURCE_GROUP,
    SUBSCRIPTION_ID,
    StartOnly,
    cmk_update,
    cs_client,
    grant,
    make_account,
    make_estate,
    make_key,
    make_vault,
    versions_of,
)
from tests.harness import CrossProcessTestCase, worker_environment


def other_process(action: str, name: str, *args: str) -> dict:
    """Run the child script in a new interpreter against this test's emulator database file."""
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.emulator.cross_process_child",
            action,
            SUBSCRIPTION_ID,
            RESOURCE_GROUP,
            name,
            *args,
        ],
        cwd=settings.BASE_DIR,
        env=worker_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


class CrossProcessTests(CrossProcessTestCase):
    def setUp(self):
        http_challenge_cache.clear()
        self.addCleanup(http_challenge_cache.clear)
        make_estate()
        self.vault = make_vault()
        self.key = make_key(self.vault, "cmk")
        self.account = make_account("face-shared-db")
        grant(self.vault, self.account.principal_id)

    def test_another_process_sees_what_this_one_wrote_and_vice_versa(self):
        seen = other_process("get", "face-shared-db")
        tagged = other_process("tag", "face-shared-db", "written-by=child")

        assert seen["principalId"] == self.account.principal_id
        assert seen["provisioningState"] == "Succeeded"
        assert tagged["tags"] == {"written-by": "child"}
        # The child's PATCH and its operation are in the shared emulator database.
        assert cs_client().accounts.get(RESOURCE_GROUP, "face-shared-db").tags == {"written-by": "child"}
        assert ArmOperation.objects.get(action="update").status == "Succeeded"

    def test_another_process_resumes_an_operation_and_probes_the_data(self):
        version = versions_of(self.key)[-1]
        started = cs_client().accounts.begin_update(
            RESOURCE_GROUP, "face-shared-db", cmk_update(self.vault, "cmk", version), polling=StartOnly()
        )
        assert CognitiveAccount.objects.get(name="face-shared-db").provisioning_state == "Accepted"

        resumed = other_process("resume", "face-shared-db", started.continuation_token())
        readable = other_process("probe", "face-shared-db")
        keystore.set_access_policy(self.vault, self.account.principal_id, CMK_PERMISSIONS, mode="remove")
        revoked = other_process("probe", "face-shared-db")

        assert resumed["provisioningState"] == "Succeeded" and resumed["keyVersion"] == version
        assert CognitiveAccount.objects.get(name="face-shared-db").key_vault_properties["keyVersion"] == version
        assert readable["readable"] is True
        # The revocation made here is what the other process's unwrap ran into.
        assert (revoked["readable"], revoked["code"]) == (False, "KeyVaultAccessDenied")
