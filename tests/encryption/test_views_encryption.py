from __future__ import annotations

import re

from django.urls import reverse

from encryption.models import Operation
from tests.builders import make_operation
from tests.encryption.blade_helpers import DEV, INLINE_SCRIPT, PROD, BladeTestCase


def page_url(account, query: str = "") -> str:
    return reverse("encryption:account-encryption", args=[account.pk]) + query


def selected(body: str, name: str) -> str:
    """The value of the selected option of select `name` ('' when none is)."""
    select = re.search(rf'<select name="{name}".*?</select>', body, re.S)
    assert select, f"no select {name}"
    option = re.search(r'<option value="([^"]*)" selected', select.group(0))
    return option.group(1) if option else ""


def options(body: str, name: str) -> list[str]:
    select = re.search(rf'<select name="{name}".*?</select>', body, re.S)
    assert select, f"no select {name}"
    return re.findall(r"<option [^>]*>([^<]+)</option>", select.group(0))


class EncryptionPageTests(BladeTestCase):
    def test_it_mirrors_the_azure_blade_for_an_admin(self):
        self.login()
        response = self.client.get(page_url(self.mmk))
        body = response.content.decode()
        assert response.status_code == 200
        for label in (
            "Encryption type",
            "Microsoft Managed Keys",
            "Customer Managed Keys",
            "Use your own key",
            "Encryption key",
            "Enter key URI",
            "Select from Key Vault",
            ">Key URI<",
            ">Subscription<",
            ">Key vault<",
            ">Key<",
            ">Version<",
            ">Save<",
            ">Discard<",
            "Refresh from Azure",
        ):
            assert label in body, label
        assert 'value="mmk" id="id_encryption_type_0" class="blade-field" checked' in body
        assert 'name="csrfmiddlewaretoken"' in body

    def test_it_has_no_inline_script_or_style(self):
        # The Content-Security-Policy forbids them; a page that relied on one would break in the browser.
        self.login()
        body = self.client.get(page_url(self.cmk)).content.decode()
        assert INLINE_SCRIPT not in body
        assert " style=" not in body
        assert "hx-on" not in body

    def test_it_shows_the_current_state(self):
        self.login()
        body = self.client.get(page_url(self.cmk)).content.decode()
        for label in ("Current state", "Key URI", "Identity", "Data access", "Double encryption", "Last synced"):
            assert label in body
        assert self.cmk.key_uri in body
        assert self.cmk.principal_id in body
        assert ">latest<" in body
        assert 'id="data-access">Readable' in body

    def test_it_prefills_the_picker_with_the_current_key(self):
        self.login()
        body = self.client.get(page_url(self.stale)).content.decode()
        assert selected(body, "subscription") == PROD
        assert selected(body, "vault") == str(self.vault.pk)
        assert selected(body, "key") == str(self.key.pk)
        assert selected(body, "version") == self.v1
        assert 'value="cmk" id="id_encryption_type_1" class="blade-field" checked' in body

    def test_it_shows_vaults_it_cannot_use_disabled_with_the_reason(self):
        self.login()
        body = self.client.get(page_url(self.cmk)).content.decode()
        assert re.search(rf'<option value="{self.westeurope.pk}" disabled>kv-prod-westeurope \(in westeurope', body)
        assert re.search(rf'<option value="{self.fabrikam.pk}" disabled>kv-fabrikam-eastus \(in another tenant', body)
        assert "kv-prod-westeurope</strong> cannot be used: in westeurope, not the account&#x27;s region" in body

    def test_it_shows_unsupported_keys_disabled(self):
        self.login()
        body = self.client.get(page_url(self.cmk)).content.decode()
        assert re.search(
            rf'<option value="{self.ec_key.pk}" disabled>face-ec \(EC 256\) \(EC keys are not supported', body
        )

    def test_it_offers_update_key_version_only_when_a_newer_one_exists(self):
        self.login()
        body = self.client.get(page_url(self.stale)).content.decode()
        assert "Update key version" in body
        assert "newer version available" in body
        assert "Update key version" not in self.client.get(page_url(self.cmk)).content.decode()

    def test_it_offers_restore_access_only_when_the_data_is_unreadable(self):
        self.login()
        assert "Restore access" in self.client.get(page_url(self.broken)).content.decode()
        assert "Restore access" not in self.client.get(page_url(self.cmk)).content.decode()

    def test_it_shows_the_blades_warnings_where_they_apply(self):
        self.login()
        body = self.client.get(page_url(self.cmk)).content.decode()
        assert "Disabling the identity later makes the data encrypted with your key inaccessible" in body
        assert "soft delete and purge protection" in body
        assert "another tenant (directory) breaks customer-managed keys" in body
        assert "does not re-encrypt data" in body
        # Microsoft-managed accounts have no key to rotate and no tenant-move risk to warn about.
        body = self.client.get(page_url(self.mmk)).content.decode()
        assert "breaks customer-managed keys" not in body
        assert "Rotate key" not in body

    def test_it_warns_when_the_tenant_changed_since_cmk_was_set(self):
        self.cmk.cmk_tenant_id = "77777777-7777-4777-8777-777777777777"
        self.cmk.save()
        self.login()
        assert "The tenant changed." in self.client.get(page_url(self.cmk)).content.decode()

    def test_it_shows_an_operation_in_progress_and_polls_it(self):
        running = make_operation(self.cmk, Operation.Kind.ROTATE_KEY, status=Operation.Status.RUNNING)
        self.login()
        body = self.client.get(page_url(self.cmk)).content.decode()
        assert "Operation in progress" in body
        url = reverse("encryption:operation-detail", args=[running.pk])
        assert f'hx-get="{url}?compact=1" hx-trigger="every 1s"' in body

    def test_it_is_read_only_for_reviewers_and_help_desk(self):
        for role in ("reviewer", "helpdesk"):
            self.login(role)
            response = self.client.get(page_url(self.stale))
            body = response.content.decode()
            assert response.status_code == 200, role
            assert 'id="encryption-form"' not in body
            for control in (
                ">Save<",
                "Discard",
                "Update key version",
                "Rotate key",
                "Revoke access",
                "Use your own key",
            ):
                assert control not in body, (role, control)
            assert "Current state" in body and self.stale.key_uri in body

    def test_help_desk_sees_the_last_operation_without_a_link_it_cannot_open(self):
        make_operation(
            self.cmk, Operation.Kind.ENABLE_CMK, status=Operation.Status.FAILED, reason="Purge protection is off."
        )
        self.login("helpdesk")
        body = self.client.get(page_url(self.cmk)).content.decode()
        assert "Purge protection is off." in body
        assert "/operations/" not in body

    def test_it_refuses_a_user_without_a_role(self):
        self.login("outsider")
        assert self.client.get(page_url(self.cmk)).status_code == 403

    def test_it_is_404_for_an_unknown_account(self):
        self.login()
        assert self.client.get(reverse("encryption:account-encryption", args=[999999])).status_code == 404

    def test_it_resolves_an_account_by_name(self):
        self.login("helpdesk")
        response = self.client.get(reverse("encryption:account-encryption-by-name", args=["FACE-CMK-EASTUS"]))
        assert response.status_code == 302
        assert response["Location"] == page_url(self.cmk)

    def test_an_unknown_name_goes_to_the_search(self):
        self.login()
        response = self.client.get(reverse("encryption:account-encryption-by-name", args=["nope"]))
        assert response["Location"] == reverse("encryption:account-list") + "?q=nope"


class KeyPickerFragmentTests(BladeTestCase):
    def fragment(self, query: str, target: str = "key-picker", role: str = "admin"):
        self.login(role)
        return self.client.get(page_url(self.mmk, query), headers={"HX-Request": "true", "HX-Target": target})

    def test_it_lists_the_vaults_of_the_chosen_subscription(self):
        response = self.fragment(f"?subscription={DEV}")
        body = response.content.decode()
        assert response.status_code == 200
        assert body.lstrip().startswith('<div id="key-picker"')
        assert "<html" not in body
        assert options(body, "vault") == ["Select a key vault", "kv-shared-eastus"]

    def test_it_lists_keys_then_versions_and_defaults_to_the_latest(self):
        body = self.fragment(f"?subscription={PROD}&vault={self.vault.pk}").content.decode()
        assert "face-cmk (RSA 2048)" in options(body, "key")
        body = self.fragment(f"?subscription={PROD}&vault={self.vault.pk}&key={self.key.pk}").content.decode()
        assert selected(body, "version") == self.v3
        assert f"{self.v3} (latest)" in options(body, "version")
        assert f"https://kv-prod-eastus.vault.azure.net/keys/face-cmk/{self.v3}" in body

    def test_a_vault_of_another_subscription_clears_the_levels_below(self):
        body = self.fragment(f"?subscription={DEV}&vault={self.vault.pk}&key={self.key.pk}").content.decode()
        assert selected(body, "vault") == ""
        assert options(body, "key") == ["Select a key"]

    def test_a_disabled_vault_cannot_be_chosen_by_forging_the_query(self):
        body = self.fragment(f"?subscription={PROD}&vault={self.westeurope.pk}").content.decode()
        assert selected(body, "vault") == ""

    def test_the_key_uri_fragment_prefills_the_vaults_subscription(self):
        uri = "https://kv-shared-eastus.vault.azure.net/keys/shared-cmk"
        response = self.fragment(f"?key_uri={uri}&uri_subscription={PROD}", target="key-uri")
        body = response.content.decode()
        assert body.lstrip().startswith('<div id="key-uri"')
        assert selected(body, "uri_subscription") == DEV

    def test_the_key_uri_fragment_says_what_is_wrong_with_a_uri_only_on_save(self):
        # Typing is not an error; the fragment keeps what was typed and leaves the subscription chosen.
        body = self.fragment(
            f"?key_uri=https://evil.example/keys/x&uri_subscription={PROD}", target="key-uri"
        ).content.decode()
        assert "https://evil.example/keys/x" in body
        assert selected(body, "uri_subscription") == PROD

    def test_form_fragments_are_refused_to_read_only_roles(self):
        for role in ("reviewer", "helpdesk", "outsider"):
            for target in ("key-picker", "key-uri"):
                assert self.fragment(f"?subscription={PROD}", target=target, role=role).status_code == 403

    def test_the_current_state_fragment_is_for_every_role(self):
        for role in ("admin", "reviewer", "helpdesk"):
            response = self.fragment("", target="current-state", role=role)
            body = response.content.decode()
            assert response.status_code == 200
            assert body.lstrip().startswith('<section id="current-state"')
            assert "<html" not in body
        assert self.fragment("", target="current-state", role="outsider").status_code == 403

    def test_the_current_state_fragment_polls_a_refresh_until_it_ends(self):
        job = make_operation(self.mmk, Operation.Kind.REFRESH, status=Operation.Status.RUNNING)
        body = self.fragment(f"?refresh={job.pk}", target="current-state").content.decode()
        assert 'hx-trigger="every 1s"' in body
        Operation.objects.filter(pk=job.pk).update(status=Operation.Status.SUCCEEDED)
        body = self.fragment(f"?refresh={job.pk}", target="current-state").content.decode()
        assert "hx-trigger" not in body.split(">", 1)[0]
        assert "Refreshed" in body

    def test_a_refresh_of_another_account_is_not_shown(self):
        job = make_operation(self.cmk, Operation.Kind.REFRESH, status=Operation.Status.RUNNING)
        body = self.fragment(f"?refresh={job.pk}", target="current-state").content.decode()
        assert "every 1s" not in body

    def test_the_key_uri_fragment_says_when_the_vault_is_not_known_yet(self):
        uri = "https://kv-elsewhere.vault.azure.net/keys/k"
        body = self.fragment(f"?key_uri={uri}&uri_subscription={DEV}", target="key-uri").content.decode()
        assert "Keyward has not seen this key vault yet" in body
        assert selected(body, "uri_subscription") == DEV
        known = self.fragment("?key_uri=https://kv-shared-eastus.vault.azure.net/keys/k", target="key-uri")
        assert "has not seen this key vault" not in known.content.decode()
