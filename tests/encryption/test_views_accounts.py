from __future__ import annotations

import re

from django.db import connection
from django.test import TestCase
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from encryption.models import Account, Operation
from tests.builders import (
    make_account,
    make_cast,
    make_key,
    make_operation,
    make_subscription,
    make_vault,
    version_names,
)

URL = reverse("encryption:account-list")
OTHER_SUBSCRIPTION = "44444444-4444-4444-8444-444444444444"


def rows(response) -> list[str]:
    """The account names in the table, in order."""
    return re.findall(r'<th scope="row"><a href="[^"]+">([^<]+)</a></th>', response.content.decode())


class AccountListTestCase(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.cast = make_cast()
        cls.vault = make_vault("kv-list-eastus")
        cls.key = make_key(cls.vault, "face-cmk", versions=3)
        cls.old, _, cls.latest = version_names(cls.key)
        cls.mmk = make_account("face-mmk-eastus", data_readable=True)
        cls.cmk = make_account("face-cmk-eastus", key=cls.key, data_readable=True)
        cls.stale = make_account("face-stale-eastus", key=cls.key, version=cls.old, data_readable=True)
        cls.broken = make_account("face-broken-eastus", key=cls.key, data_readable=False)
        dev = make_subscription(OTHER_SUBSCRIPTION, name="Contoso Dev")
        cls.dev = make_account("face-dev-westeurope", subscription=dev, location="westeurope")

    def get(self, user="admin", query="", **headers):
        self.client.force_login(self.cast[user])
        return self.client.get(URL + query, headers=headers)


class AccountListPageTests(AccountListTestCase):
    def test_it_shows_every_account_with_its_encryption(self):
        response = self.get()
        assert response.status_code == 200
        assert rows(response) == [
            "face-broken-eastus",
            "face-cmk-eastus",
            "face-dev-westeurope",
            "face-mmk-eastus",
            "face-stale-eastus",
        ]
        body = response.content.decode()
        assert "Customer Managed Keys" in body and "Microsoft Managed Keys" in body
        assert "kv-list-eastus" in body  # the vault's name, read from the key vault URI
        assert "Contoso Dev" in body and "westeurope" in body

    def test_it_tells_the_latest_version_from_an_older_one(self):
        body = self.get(query="?q=face-stale").content.decode()
        assert self.old[:8] in body
        assert "newer version available" in body
        body = self.get(query="?q=face-cmk-eastus").content.decode()
        assert ">latest<" in body
        assert "newer version available" not in body

    def test_it_shows_data_readable_or_not(self):
        body = self.get(query="?q=face-broken").content.decode()
        assert "Unreadable" in body
        body = self.get(query="?q=face-dev").content.decode()
        assert "Unknown" in body  # never probed

    def test_it_shows_the_last_change_not_jobs(self):
        make_operation(self.cmk, Operation.Kind.ENABLE_CMK, status=Operation.Status.SUCCEEDED)
        failed = make_operation(self.cmk, Operation.Kind.UPDATE_VERSION, status=Operation.Status.FAILED)
        # A preflight is a read-only job: it is not what "last operation" means on this page.
        make_operation(self.cmk, Operation.Kind.PREFLIGHT, status=Operation.Status.RUNNING)
        body = self.get(query="?q=face-cmk-eastus").content.decode()
        assert "Update key version" in body and "Failed" in body
        assert reverse("encryption:operation-detail", args=[failed.pk]) in body
        assert "Preflight" not in body

    def test_it_links_each_account_to_its_encryption_page(self):
        body = self.get().content.decode()
        assert reverse("encryption:account-encryption", args=[self.cmk.pk]) in body

    def test_it_is_the_landing_page_for_every_role(self):
        for user in ("admin", "reviewer", "helpdesk"):
            response = self.get(user)
            assert response.status_code == 200, user
            assert len(rows(response)) == 5

    def test_it_refuses_a_user_without_a_role(self):
        assert self.get("outsider").status_code == 403

    def test_it_sends_anonymous_visitors_to_sign_in(self):
        response = self.client.get(URL)
        assert response.status_code == 302
        assert "/accounts/login/" in response["Location"]

    def test_it_refuses_post(self):
        self.client.force_login(self.cast["admin"])
        assert self.client.post(URL).status_code == 405


class AccountListFragmentTests(AccountListTestCase):
    def test_it_renders_only_the_table_for_htmx(self):
        response = self.get(query="?type=cmk", HX_Request="true", HX_Target="account-table")
        body = response.content.decode()
        assert response.status_code == 200
        assert '<section id="account-table"' in body
        assert "<html" not in body
        assert len(rows(response)) == 3

    def test_the_fragment_is_read_only_for_every_role(self):
        for user in ("reviewer", "helpdesk"):
            response = self.get(user, HX_Request="true")
            assert response.status_code == 200
            assert "<form" not in response.content.decode()  # no change control in the table

    def test_the_fragment_refuses_a_user_without_a_role(self):
        assert self.get("outsider", HX_Request="true").status_code == 403


class AccountListFilterTests(AccountListTestCase):
    def test_it_filters_by_subscription(self):
        assert rows(self.get(query=f"?subscription={OTHER_SUBSCRIPTION}")) == ["face-dev-westeurope"]

    def test_it_filters_by_encryption_type(self):
        assert rows(self.get(query="?type=mmk")) == ["face-dev-westeurope", "face-mmk-eastus"]
        assert rows(self.get(query="?type=cmk")) == ["face-broken-eastus", "face-cmk-eastus", "face-stale-eastus"]

    def test_it_filters_by_health(self):
        assert rows(self.get(query="?health=outdated")) == ["face-stale-eastus"]
        assert rows(self.get(query="?health=unreadable")) == ["face-broken-eastus"]
        assert rows(self.get(query="?health=unknown")) == ["face-dev-westeurope"]
        # Healthy: readable and, under CMK, on the latest version.
        assert rows(self.get(query="?health=healthy")) == ["face-cmk-eastus", "face-mmk-eastus"]

    def test_it_filters_on_the_last_operation_failing(self):
        make_operation(self.mmk, Operation.Kind.ENABLE_CMK, status=Operation.Status.FAILED)
        assert rows(self.get(query="?health=failed")) == ["face-mmk-eastus"]

    def test_it_matches_a_vault_uri_written_without_its_slash(self):
        # ARM may echo keyVaultUri without the trailing slash; the latest-version check must not care.
        Account.objects.filter(pk=self.stale.pk).update(key_vault_uri="https://KV-LIST-EASTUS.vault.azure.net")
        assert rows(self.get(query="?health=outdated")) == ["face-stale-eastus"]

    def test_it_searches_name_resource_id_and_key(self):
        assert rows(self.get(query="?q=stale")) == ["face-stale-eastus"]
        assert rows(self.get(query="?q=face-cmk")) == ["face-broken-eastus", "face-cmk-eastus", "face-stale-eastus"]
        assert rows(self.get(query=f"?q={OTHER_SUBSCRIPTION}")) == ["face-dev-westeurope"]

    def test_it_says_when_nothing_matches(self):
        body = self.get(query="?q=nothing-like-this").content.decode()
        assert "No account matches these filters." in body

    def test_it_ignores_values_it_does_not_know(self):
        response = self.get(query="?type=bogus&health=bogus&sort=password&per_page=7&page=x")
        assert response.status_code == 200
        assert len(rows(response)) == 5


class AccountListOrderTests(AccountListTestCase):
    def test_it_sorts_by_a_column_both_ways(self):
        assert rows(self.get(query="?sort=region"))[-1] == "face-dev-westeurope"
        assert rows(self.get(query="?sort=-region"))[0] == "face-dev-westeurope"

    def test_it_sorts_by_data_access(self):
        names = rows(self.get(query="?sort=data"))
        assert names[0] == "face-broken-eastus"  # False sorts before True; never probed comes last
        assert names[-1] == "face-dev-westeurope"

    def test_the_header_link_reverses_the_current_sort(self):
        body = self.get(query="?sort=sku").content.decode()
        assert 'aria-sort="ascending"' in body
        assert "?sort=-sku" in body

    def test_it_pages_through_accounts(self):
        for i in range(30):
            make_account(f"face-bulk-{i:02d}")
        first = self.get(query="?per_page=25")
        assert len(rows(first)) == 25
        assert "Page 1 of 2" in first.content.decode()
        second = self.get(query="?per_page=25&page=2")
        assert len(rows(second)) == 10


class AccountListQueryCountTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.cast = make_cast()
        vault = make_vault("kv-many-eastus")
        cls.key = make_key(vault, "face-cmk", versions=2)

    def fill(self, count: int) -> None:
        existing = Account.objects.count()
        for i in range(existing, count):
            key = self.key if i % 2 else None
            account = make_account(f"face-{i:04d}", key=key, data_readable=bool(i % 3))
            if i % 5 == 0:
                make_operation(account, Operation.Kind.ENABLE_CMK, status=Operation.Status.SUCCEEDED)

    def queries_for(self, query: str) -> int:
        self.client.force_login(self.cast["admin"])
        self.client.get(URL + query)  # warm the session and permission caches of the test client
        with CaptureQueriesContext(connection) as queries:
            response = self.client.get(URL + query)
        assert response.status_code == 200
        return len(queries)

    def test_it_renders_1000_accounts_with_as_many_queries_as_10(self):
        self.fill(10)
        at_10 = self.queries_for("?per_page=200")
        self.fill(1000)
        with self.assertNumQueries(at_10):
            self.client.get(URL + "?per_page=200")
        with self.assertNumQueries(at_10):
            self.client.get(URL + "?per_page=200&page=3&sort=-operation&type=cmk&q=face")
        # session, user, groups, permissions, subscriptions, count, page: a handful, never one per row
        assert at_10 <= 10
