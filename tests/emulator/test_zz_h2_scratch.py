from __future__ import annotations
from tests.emulator.arm_builders import *
from emulator.models import CognitiveAccount

class Scratch(ArmTestCase):
    def test_scratch(self):
        make_estate()
        vault = make_vault()
        key = make_key(vault, versions=2)
        acct = make_account()
        grant(vault, acct.principal_id)
        c = cs_client()
        a = c.accounts.get(RESOURCE_GROUP, "face-test")
        print(a.as_dict())
        v = versions_of(key)
        p = c.accounts.begin_update(RESOURCE_GROUP, "face-test", cmk_update(vault, "cmk", v[0]))
        r = p.result()
        print(r.properties.encryption, r.properties.provisioning_state)
        print(c.post if hasattr(c,'post') else '')
        from emulator.data_at_rest import probe_data_access
        print(probe_data_access(CognitiveAccount.objects.get(name="face-test")))
        p = c.accounts.begin_update(RESOURCE_GROUP, "face-test", cmk_update(vault, "cmk", v[1]))
        print(p.result().properties.encryption)
        print(probe_data_access(CognitiveAccount.objects.get(name="face-test")))
        keystore.set_access_policy(vault, acct.principal_id, ["unwrapKey"], mode="remove")
        print(probe_data_access(CognitiveAccount.objects.get(name="face-test")))
        print([s.display_name for s in subscription_client().subscriptions.list()])
        print([l.name for l in subscription_client().subscriptions.list_locations(SUBSCRIPTION_ID)])
