"""A separate OS process for test_cross_process: `python -m tests.emulator.cross_process_child ACTION ...`.

It reaches the emulator database it is handed (EMULATOR_DATABASE_URL) through the real SDK clients and
prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import django


def _client(subscription_id: str) -> Any:
    from azure.mgmt.cognitiveservices import CognitiveServicesManagementClient

    from emulator import sdk_options

    options = {**sdk_options(), "retry_total": 0}
    return CognitiveServicesManagementClient(options.pop("credential"), subscription_id, **options)


def _describe(account: Any) -> dict[str, Any]:
    encryption = account.properties.encryption
    return {
        "provisioningState": account.properties.provisioning_state,
        "principalId": account.identity.principal_id,
        "tags": account.tags,
        "keyVersion": encryption.key_vault_properties.key_version
        if encryption and encryption.key_vault_properties
        else None,
        "pid": os.getpid(),
    }


def main(action: str, subscription_id: str, resource_group: str, name: str, *rest: str) -> dict[str, Any]:
    from azure.core.rest import HttpRequest
    from azure.mgmt.cognitiveservices.models import Account

    client = _client(subscription_id)
    if action == "get":
        return _describe(client.accounts.get(resource_group, name))
    if action == "tag":
        key, _, value = rest[0].partition("=")
        return _describe(client.accounts.begin_update(resource_group, name, Account(tags={key: value})).result())
    if action == "resume":
        return _describe(client.accounts.begin_update(resource_group, name, None, continuation_token=rest[0]).result())
    if action == "probe":
        account = client.accounts.get(resource_group, name)
        url = f"https://management.azure.com{account.id}/probeDataAccess?api-version=2025-09-01"
        from azure.mgmt.resource.subscriptions import SubscriptionClient

        from emulator import sdk_options

        options = sdk_options()
        arm = SubscriptionClient(options.pop("credential"), **options)
        return dict(arm.send_request(HttpRequest("POST", url)).json())
    raise SystemExit(f"unknown action {action}")


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    django.setup()
    print(json.dumps(main(*sys.argv[1:])))
