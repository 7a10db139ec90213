"""Every URL pattern of the project x every role x every method, against one explicit table.

The table below says, for each URL (by its name; unnamed patterns by their route), which roles may GET it
(HEAD follows GET where the view answers HEAD) and which may POST to it. The test walks `get_resolver()`,
so a view added without a row here fails `test_every_url_pattern_has_a_row`, and it fills each path
converter with the id of a real seeded row, so a refusal is a refusal and not a 404.

What each cell must show:
- anonymous visitors are sent to the sign-in page (only the sign-in pages are public);
- a signed-in user whose role does not allow it gets 403, and the refusal is in the audit trail;
- a method the view does not answer gets 405; the Django admin sends everyone who is not staff (none of
  the portal's roles is) to its own sign-in page;
- nothing changes on a refused request: no operation, export, user or account changes, and no audit event
  but the refusal itself (each POST carries a body that *would* make a change if it were allowed);
- htmx requests (fragments, `HX-Request: true` and each fragment's `HX-Target`) obey the same table.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.apps import apps
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.db import connection
from django.http import HttpResponse
from django.test import Client, TestCase
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse

from encryption import audit, audit_export
from encryption.actors import Actor
from encryption.audit_query import AuditFilters
from encryption.models import Account, AuditEvent, AuditExport, Key, Operation
from tests.builders import (
    make_account,
    make_cast,
    make_event,
    make_key,
    make_operation,
    make_subscription,
    make_vault,
    version_names,
)

ANONYMOUS, OUTSIDER, HELP_DESK, REVIEWER, ADMIN = "anonymous", "outsider", "helpdesk", "reviewer", "admin"
ROLES = (ANONYMOUS, OUTSIDER, HELP_DESK, REVIEWER, ADMIN)
SIGNED_IN = frozenset({OUTSIDER, HELP_DESK, REVIEWER, ADMIN})
READERS = frozenset({HELP_DESK, REVIEWER, ADMIN})  # encryption.view_account / view_diagnosis
REVIEWERS = frozenset({REVIEWER, ADMIN})  # audit, export, key inventory, operations
ADMINS = frozenset({ADMIN})  # encryption.change_encryption
EVERYONE = frozenset(ROLES)
NOBODY: frozenset[str] = frozenset()

GET_HEAD_POST = ("GET", "HEAD", "POST")
GET_POST = ("GET", "POST")
GET_ONLY = ("GET",)
POST_ONLY = ("POST",)


@dataclass(frozen=True)
class Access:
    get: frozenset[str] = NOBODY  # roles that may GET (and HEAD, when the view answers HEAD)
    post: frozenset[str] = NOBODY  # roles that may POST
    methods: tuple[str, ...] = GET_ONLY  # what the view answers at all; anything else is 405
    staff: bool = False  # the Django admin: staff only, everyone else goes to its sign-in page
    # htmx fragments (HX-Target values) whose readers differ from the page's: target -> roles that may GET
    fragments: dict[str, frozenset[str]] = field(default_factory=dict)
    post_data: str = ""  # a name in post_bodies(): a body that would change something if allowed
    signs_out: bool = False  # success ends the session, so it answers with the sign-in redirect


STAFF = Access(staff=True, methods=GET_HEAD_POST)

# THE TABLE: url name (or the route of an unnamed pattern) -> who may do what.
ACCESS: dict[str, Access] = {
    # Sign-in (django.contrib.auth, sign-in and password change only)
    "login": Access(get=EVERYONE, post=EVERYONE, methods=GET_HEAD_POST, post_data="login"),
    "logout": Access(post=SIGNED_IN, methods=POST_ONLY, signs_out=True),
    "password_change": Access(get=SIGNED_IN, post=SIGNED_IN, methods=GET_HEAD_POST, post_data="password"),
    "password_change_done": Access(get=SIGNED_IN, methods=("GET", "HEAD")),
    # Accounts and the Encryption blade
    "encryption:account-list": Access(get=READERS),
    "encryption:account-encryption": Access(
        get=READERS,
        post=ADMINS,
        methods=GET_HEAD_POST,
        fragments={"current-state": READERS, "key-picker": ADMINS, "key-uri": ADMINS},
        post_data="save",
    ),
    "encryption:account-encryption-by-name": Access(get=READERS),
    "encryption:account-preflight": Access(get=READERS, post=ADMINS, methods=GET_HEAD_POST, post_data="preflight"),
    "encryption:account-sync-vaults": Access(post=READERS, methods=POST_ONLY),
    "encryption:account-refresh": Access(post=READERS, methods=POST_ONLY),
    "encryption:account-update-version": Access(post=ADMINS, methods=POST_ONLY),
    "encryption:account-rotate": Access(get=ADMINS, post=ADMINS, methods=GET_HEAD_POST, post_data="rotate"),
    "encryption:account-revoke": Access(get=ADMINS, post=ADMINS, methods=GET_HEAD_POST, post_data="revoke"),
    "encryption:account-restore": Access(post=ADMINS, methods=POST_ONLY),
    "encryption:operation-detail": Access(get=REVIEWERS),
    # Security reviewers
    "encryption:audit-list": Access(get=REVIEWERS),
    "encryption:audit-detail": Access(get=REVIEWERS),
    "encryption:audit-verify": Access(get=REVIEWERS, post=REVIEWERS, methods=GET_POST),
    "encryption:audit-public-key": Access(get=REVIEWERS),
    "encryption:audit-export": Access(get=REVIEWERS, post=REVIEWERS, methods=GET_POST, post_data="export"),
    "encryption:audit-export-detail": Access(get=REVIEWERS),
    "encryption:audit-export-data": Access(get=REVIEWERS),
    "encryption:audit-export-manifest": Access(get=REVIEWERS),
    "encryption:key-list": Access(get=REVIEWERS),
    "encryption:key-detail": Access(get=REVIEWERS),
    # Help-desk
    "encryption:helpdesk": Access(get=READERS),
    "encryption:helpdesk-diagnose": Access(post=READERS, methods=POST_ONLY),
    "encryption:helpdesk-diagnosis": Access(get=READERS),
    # The Django admin: staff only (no portal role is staff); its own sign-in page is public.
    "admin:login": Access(get=EVERYONE, post=EVERYONE, methods=GET_HEAD_POST, post_data="login"),
    "admin:index": STAFF,
    "admin:logout": STAFF,
    "admin:password_change": STAFF,
    "admin:password_change_done": STAFF,
    "admin:autocomplete": STAFF,
    "admin:jsi18n": STAFF,
    "admin:view_on_site": STAFF,
    "admin:app_list": STAFF,
    "admin/(?P<url>.*)$": STAFF,
    "admin:auth_group_changelist": STAFF,
    "admin:auth_group_add": STAFF,
    "admin:auth_group_history": STAFF,
    "admin:auth_group_delete": STAFF,
    "admin:auth_group_change": STAFF,
    "admin/auth/group/<path:object_id>/": STAFF,
    "admin:auth_user_password_change": STAFF,
    "admin:auth_user_changelist": STAFF,
    "admin:auth_user_add": STAFF,
    "admin:auth_user_history": STAFF,
    "admin:auth_user_delete": STAFF,
    "admin:auth_user_change": STAFF,
    "admin/auth/user/<path:object_id>/": STAFF,
    "admin:axes_accessattempt_changelist": STAFF,
    "admin:axes_accessattempt_add": STAFF,
    "admin:axes_accessattempt_history": STAFF,
    "admin:axes_accessattempt_delete": STAFF,
    "admin:axes_accessattempt_change": STAFF,
    "admin/axes/accessattempt/<path:object_id>/": STAFF,
    "admin:axes_accesslog_changelist": STAFF,
    "admin:axes_accesslog_add": STAFF,
    "admin:axes_accesslog_history": STAFF,
    "admin:axes_accesslog_delete": STAFF,
    "admin:axes_accesslog_change": STAFF,
    "admin/axes/accesslog/<path:object_id>/": STAFF,
    "admin:axes_accessfailurelog_changelist": STAFF,
    "admin:axes_accessfailurelog_add": STAFF,
    "admin:axes_accessfailurelog_history": STAFF,
    "admin:axes_accessfailurelog_delete": STAFF,
    "admin:axes_accessfailurelog_change": STAFF,
    "admin/axes/accessfailurelog/<path:object_id>/": STAFF,
    "admin:encryption_auditevent_changelist": STAFF,
    "admin:encryption_auditevent_add": STAFF,
    "admin:encryption_auditevent_history": STAFF,
    "admin:encryption_auditevent_delete": STAFF,
    "admin:encryption_auditevent_change": STAFF,
    "admin/encryption/auditevent/<path:object_id>/": STAFF,
    "admin:encryption_auditcheckpoint_changelist": STAFF,
    "admin:encryption_auditcheckpoint_add": STAFF,
    "admin:encryption_auditcheckpoint_history": STAFF,
    "admin:encryption_auditcheckpoint_delete": STAFF,
    "admin:encryption_auditcheckpoint_change": STAFF,
    "admin/encryption/auditcheckpoint/<path:object_id>/": STAFF,
    "admin:encryption_operation_changelist": STAFF,
    "admin:encryption_operation_add": STAFF,
    "admin:encryption_operation_history": STAFF,
    "admin:encryption_operation_delete": STAFF,
    "admin:encryption_operation_change": STAFF,
    "admin/encryption/operation/<path:object_id>/": STAFF,
}

# What an allowed request may answer: a page, a redirect after a post, htmx's stop-polling 286, a form
# sent back with its errors (400), a conflict with a running change (409), an export already streamed (410).
ALLOWED_STATUSES = frozenset({200, 286, 302, 400, 409, 410})


# The seeded estate every URL is filled from


@dataclass
class Estate:
    users: dict[str, User]
    cmk: Account  # on an older version of face-cmk, so every blade action has something to do
    mmk: Account
    key: Key
    latest: str
    operation: Operation
    event: AuditEvent
    exports: dict[str, AuditExport]  # each reviewer-or-admin's own finished export


def finished_export(user: User) -> AuditExport:
    """An export `user` asked for and downloaded in full, so its manifest is signed and stored."""
    actor = Actor.from_cli(user)
    export = audit_export.start_export(actor=actor, fmt="csv", filters=AuditFilters())
    assert audit_export.claim_stream(export)
    b"".join(audit_export.stream(export, actor=actor))
    export.refresh_from_db()
    return export


def seed_estate(prefix: str = "m-") -> Estate:
    cast = make_cast(prefix)
    make_subscription()
    vault = make_vault("kv-prod-eastus")
    key = make_key(vault, "face-cmk", versions=2)
    older, latest = version_names(key)
    cmk = make_account("face-cmk-eastus", key=key, version=older, data_readable=True)
    mmk = make_account("face-prod-eastus", data_readable=True)
    operation = make_operation(cmk, Operation.Kind.UPDATE_VERSION, status="succeeded", params={"version": latest})
    event = make_event("operation.requested", target=cmk.arm_id, operation=operation, message="seeded")
    audit.write_checkpoint()
    exports = {role: finished_export(cast[role]) for role in (REVIEWER, ADMIN)}
    # A row behind each of the admin's django-axes pages (what a failed sign-in leaves).
    seen = {"user_agent": "test", "ip_address": "192.0.2.1", "username": "someone", "http_accept": "*/*"}
    AccessAttempt.objects.create(**seen, path_info="/", get_data="", post_data="", failures_since_start=1)
    AccessLog.objects.create(**seen, path_info="/")
    AccessFailureLog.objects.create(**seen, path_info="/")
    return Estate(cast, cmk, mmk, key, latest, operation, event, exports)


def post_bodies(estate: Estate) -> dict[str, dict[str, str]]:
    """For each change, a body that is valid: refused, it must still change nothing."""
    return {
        "login": {"username": estate.users[ADMIN].username, "password": "not-the-password-0000"},
        "password": {"old_password": "wrong-old-0000", "new_password1": "n3w-Passw0rd-xyz", "new_password2": "x"},
        "save": {
            "encryption_type": "cmk",
            "use_own_key": "on",
            "key_source": "uri",
            "key_uri": f"https://kv-prod-eastus.vault.azure.net/keys/face-cmk/{estate.latest}",
            "uri_subscription": estate.cmk.subscription.subscription_id,
            "intent": "check",
        },
        "preflight": {
            "encryption_type": "cmk",
            "use_own_key": "on",
            "key_source": "uri",
            "key_uri": "https://kv-prod-eastus.vault.azure.net/keys/face-cmk",
            "uri_subscription": estate.cmk.subscription.subscription_id,
        },
        "rotate": {"update_accounts": "on"},
        "revoke": {"method": "access_policy", "confirm": "on"},
        "export": {"format": "csv"},
    }


# Walking the URL patterns

# A path converter (<int:pk>) or a named regex group ((?P<app_label>...)).
PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>[^)]*\)")


@dataclass(frozen=True)
class Url:
    key: str  # the table's key: "namespace:name", or the route of an unnamed pattern
    route: str  # the full route, prefixes included
    pattern: URLPattern

    @property
    def params(self) -> list[str]:
        return [a or b for a, b in PARAMETER.findall(self.route)]


def url_patterns(resolver: URLResolver | None = None, prefix: str = "", namespace: str = "") -> Iterator[Url]:
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        route = prefix + str(entry.pattern).lstrip("^")
        if isinstance(entry, URLResolver):
            inner = f"{namespace}:{entry.namespace}".strip(":") if entry.namespace else namespace
            yield from url_patterns(entry, route, inner)
        elif entry.name:
            yield Url(f"{namespace}:{entry.name}".strip(":"), route, entry)
        else:
            yield Url(route, route, entry)


def fill(url: Url, estate: Estate, role: str) -> str:
    """The URL's path with each converter filled from a real row (the role's own export, for exports)."""
    values: dict[str, Any] = {}
    for name in url.params:
        values[name] = _value(url, name, estate, role)

    def substitute(match: re.Match[str]) -> str:
        return str(values[match.group(1) or match.group(2)])

    path = "/" + PARAMETER.sub(substitute, url.route).rstrip("$")
    assert resolve(path).func is url.pattern.callback, f"{path} does not resolve to {url.key}"
    return path


def _value(url: Url, name: str, estate: Estate, role: str) -> Any:
    if name == "pk":
        by_view = {"encryption:operation-detail": estate.operation.pk, "encryption:key-detail": estate.key.pk}
        return by_view.get(url.key, estate.cmk.pk)
    if name == "seq":
        return estate.event.seq
    if name == "name":
        return estate.cmk.name
    if name == "export_id":
        return estate.exports.get(role, estate.exports[ADMIN]).export_id
    if name == "app_label":
        return "encryption"
    if name == "url":
        return "no-such-admin-page/"
    if name == "content_type_id":
        return ContentType.objects.get_for_model(Account).pk
    if name == "object_id" and url.key == "admin:view_on_site":
        return estate.cmk.pk
    if name in ("object_id", "id"):
        app_label, model_name = re.match(r"admin/(\w+)/(\w+)/", url.route).groups()  # type: ignore[union-attr]
        row = apps.get_model(app_label, model_name).objects.order_by("pk").first()
        assert row is not None, f"seed a {app_label}.{model_name} row for {url.key}"
        return row.pk
    raise AssertionError(f"no seeded value for <{name}> in {url.route}")


# Expectations


LOGIN, ADMIN_LOGIN, OK = "sign-in redirect", "admin sign-in redirect", "allowed"


def expected(access: Access, role: str, method: str, fragment: str = "") -> str | int:
    if access.staff:
        return ADMIN_LOGIN
    if role == ANONYMOUS and role not in (access.get | access.post):
        return LOGIN  # LoginRequiredMiddleware answers before any view (or method check) runs
    if method not in access.methods:
        return 405
    readers = access.fragments.get(fragment, access.get) if fragment else access.get
    allowed = access.post if method == "POST" else readers
    return OK if role in allowed else 403


def outcome_of(response: HttpResponse, access: Access, *, signed_in: bool) -> str | int:
    if response.status_code in (301, 302):
        path = urlsplit(response["Location"]).path
        if access.staff and (path.startswith("/admin/") or path == reverse("login")):
            # The admin sends visitors to its own sign-in page; LoginRequiredMiddleware sends anonymous
            # visitors of some admin pages to the portal's. Either way nobody but staff gets in.
            return ADMIN_LOGIN
        if path == reverse("login"):
            signed_out = signed_in and "_auth_user_id" not in response.wsgi_request.session
            return OK if access.signs_out and signed_out else LOGIN
    if response.status_code in (403, 405):
        return response.status_code
    return OK if response.status_code in ALLOWED_STATUSES else response.status_code


# Everything a request could change, read in one statement (the matrix makes ~1,800 requests): rows
# added, and the state columns a change would flip. The last column counts recorded refusals.
STATE_SQL = """
SELECT
    (SELECT COUNT(*) FROM encryption_operation),
    (SELECT COUNT(*) FROM encryption_operation WHERE status IN ('queued', 'running')),
    (SELECT COUNT(*) FROM encryption_operationstep),
    (SELECT COUNT(*) FROM encryption_auditexport),
    (SELECT COUNT(*) FROM encryption_auditexport WHERE started_at IS NOT NULL),
    (SELECT COUNT(*) FROM encryption_auditexport WHERE finished_at IS NOT NULL),
    (SELECT COUNT(*) FROM encryption_auditevent WHERE action <> 'access.refused'),
    (SELECT COUNT(*) FROM auth_user),
    (SELECT COUNT(*) FROM auth_user WHERE is_active AND NOT is_staff AND NOT is_superuser),
    (SELECT COUNT(*) FROM auth_user_groups),
    (SELECT COUNT(*) FROM auth_group),
    (SELECT COUNT(*) FROM encryption_account WHERE key_source = 'Microsoft.KeyVault'),
    (SELECT COUNT(DISTINCT key_version) FROM encryption_account),
    (SELECT COUNT(*) FROM encryption_auditevent WHERE action = 'access.refused')
"""


def state() -> tuple[Any, ...]:
    with connection.cursor() as cursor:
        cursor.execute(STATE_SQL)
        return tuple(cursor.fetchone())


class AccessMatrixTests(TestCase):
    @classmethod
    def setUpTestData(cls):
        cls.estate = seed_estate()

    @property
    def urls(self) -> list[Url]:
        return list(url_patterns())

    def setUp(self):
        self.clients: dict[str, Client] = {}

    def client_for(self, role: str) -> Client:
        """One signed-in client per role, signed in again after a request that signed it out."""
        client = self.clients.get(role)
        if client is None or (role != ANONYMOUS and "_auth_user_id" not in client.session):
            client = self.clients[role] = Client()
            if role != ANONYMOUS:
                client.force_login(self.estate.users[role])
        return client

    def test_every_url_pattern_has_a_row(self):
        keys = [url.key for url in self.urls]
        missing = sorted(set(keys) - set(ACCESS))
        assert not missing, f"URL patterns without a row in ACCESS (say who may use them): {missing}"
        stale = sorted(set(ACCESS) - set(keys))
        assert not stale, f"rows in ACCESS for URL patterns that no longer exist: {stale}"
        assert len(keys) == len(set(keys)), "two URL patterns share a table key"

    def test_every_role_gets_what_the_table_says(self):
        bodies = post_bodies(self.estate)
        problems: list[str] = []
        checked = 0
        for url in self.urls:
            access = ACCESS[url.key]
            for role in ROLES:
                path = fill(url, self.estate, role)
                for method in ("GET", "HEAD", "POST"):
                    # Every htmx fragment of the page, and the plain request, under the same rules.
                    variants = [""] if access.staff else ["", "htmx", *access.fragments]
                    for fragment in variants:
                        problems += self._check(url, access, role, method, fragment, path, bodies)
                        checked += 1
        assert checked > 1000
        assert not problems, f"{len(problems)} of {checked} requests broke the table:\n" + "\n".join(problems)

    def _check(
        self, url: Url, access: Access, role: str, method: str, fragment: str, path: str, bodies: dict[str, Any]
    ) -> list[str]:
        client = self.client_for(role)
        headers = {}
        if fragment:
            headers["HX-Request"] = "true"
            if fragment != "htmx":
                headers["HX-Target"] = fragment
        if access.post_data == "login":
            # The matrix signs in wrongly again and again; lock-outs are tested on their own (test_sign_in_throttle).
            AccessAttempt.objects.exclude(username="someone").delete()
        before = state()
        if method == "POST":
            response = client.post(path, bodies.get(access.post_data, {}), headers=headers)
        else:
            response = client.generic(method, path, headers=headers)
        want = expected(access, role, method, fragment if fragment != "htmx" else "")
        got = outcome_of(response, access, signed_in=role != ANONYMOUS)
        where = f"{method} {path} as {role}" + (f" (htmx {fragment})" if fragment else "")
        if got != want:
            return [f"{where}: expected {want}, got {got} ({response.status_code})"]
        if want == OK:
            return []
        problems = []
        after = state()
        if after[:-1] != before[:-1]:
            problems.append(f"{where}: refused ({got}) but something changed: {before} -> {after}")
        new_refusals = after[-1] - before[-1]
        if new_refusals != (1 if want == 403 else 0):
            problems.append(f"{where}: {new_refusals} access.refused events for a {want}")
        return problems
