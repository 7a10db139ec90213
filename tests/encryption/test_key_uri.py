from __future__ import annotations

from unittest import TestCase
from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from urllib3.util import parse_url

from encryption.key_uri import HOST_SUFFIXES, InvalidKeyUri, KeyUri, parse_key_uri

VERSION = "0123456789abcdef0123456789abcdef"

vault_names = st.from_regex(r"\A[a-z][a-z0-9-]{1,22}[a-z0-9]\Z").filter(lambda s: "--" not in s)
key_names = st.from_regex(r"\A[A-Za-z0-9-]{1,127}\Z")
versions = st.one_of(st.just(""), st.from_regex(r"\A[0-9a-fA-F]{32}\Z"))
suffixes = st.sampled_from(sorted(HOST_SUFFIXES))


def _mixed_case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if flip else c for c, flip in zip(text, flips, strict=True))


@st.composite
def valid_uris(draw: st.DrawFn) -> tuple[str, str, str, str, str]:
    vault, suffix, name, version = draw(vault_names), draw(suffixes), draw(key_names), draw(versions)
    host = _mixed_case(draw, f"{vault}.{suffix}")  # hosts are case-insensitive; admins paste upper case
    path = f"/keys/{name}" + (f"/{version}" if version else "") + "/" * draw(st.integers(0, 3))
    space = draw(st.sampled_from(["", " ", "\t", "\n", "  \r\n"]))
    return f"{space}https://{host}{path}{space}", vault, suffix, name, version


def assert_safe(text: str, key: KeyUri) -> None:
    """What every accepted URI must satisfy: an allowed host that every URL library reads the same."""
    assert any(key.host.endswith("." + suffix) for suffix in HOST_SUFFIXES)
    assert urlsplit(text.strip()).hostname == key.host
    assert parse_url(text.strip()).host == key.host
    assert urlsplit(key.id).hostname == key.host
    assert parse_url(key.id).host == key.host
    assert parse_key_uri(key.id) == key


class ParseKeyUriPropertyTests(TestCase):
    @given(valid_uris())
    @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
    def test_it_accepts_and_round_trips_valid_uris(self, case: tuple[str, str, str, str, str]) -> None:
        text, vault, suffix, name, version = case
        key = parse_key_uri(text)
        assert key.vault_name == vault
        assert key.host == f"{vault}.{suffix}"
        assert key.vault_uri == f"https://{vault}.{suffix}/"
        assert key.name == name
        assert key.version == version.lower()
        assert key.cloud == HOST_SUFFIXES[suffix]
        assert key.versionless == (not version)
        assert_safe(text, key)

    @given(st.text(max_size=120))
    @settings(max_examples=500)
    @example("https://vault.azure.net@evil.example/keys/k")
    @example("https://evil.example#@kv1.vault.azure.net/keys/k")
    @example("https://evil.example\\@kv1.vault.azure.net/keys/k")
    def test_it_accepts_nothing_unsafe_from_arbitrary_text(self, text: str) -> None:
        try:
            key = parse_key_uri(text)
        except InvalidKeyUri as exc:
            assert str(exc)  # every refusal says something
            return
        assert_safe(text, key)

    @given(
        valid_uris(),
        st.lists(
            st.tuples(
                st.sampled_from(["insert", "replace", "delete"]),
                st.integers(min_value=0, max_value=200),
                st.sampled_from(
                    list("@:./\\%#?[]-_ \t\x00Aé\u0130\uff0e\u3002\u2024x1") + ["..", "//", ":443", "@evil"]
                ),
            ),
            min_size=1,
            max_size=4,
        ),
    )
    @settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
    def test_mutated_uris_are_refused_or_still_safe(
        self, case: tuple[str, ...], edits: list[tuple[str, int, str]]
    ) -> None:
        text = case[0]
        for op, position, piece in edits:
            at = position % (len(text) + 1)
            if op == "insert":
                text = text[:at] + piece + text[at:]
            elif op == "replace":
                text = text[:at] + piece + text[at + 1 :]
            else:
                text = text[:at] + text[at + 1 :]
        try:
            key = parse_key_uri(text)
        except InvalidKeyUri:
            return
        assert_safe(text, key)

    @given(valid_uris(), st.from_regex(r"\A[0-9a-f]{32}\Z"))
    def test_with_version_pins_a_version(self, case: tuple[str, ...], version: str) -> None:
        key = parse_key_uri(case[0]).with_version(version)
        assert key.version == version
        assert key.id.endswith(f"/{version}")
        assert parse_key_uri(key.id) == key


class ParseKeyUriExamplesTests(TestCase):
    def test_it_accepts_a_versioned_uri_with_trailing_slash_and_upper_case_host(self) -> None:
        key = parse_key_uri(f"  https://KV-Shared-EastUS.VAULT.AZURE.NET/keys/cmk-Prod/{VERSION.upper()}/  ")
        assert key == KeyUri(
            vault_name="kv-shared-eastus",
            vault_uri="https://kv-shared-eastus.vault.azure.net/",
            host="kv-shared-eastus.vault.azure.net",
            name="cmk-Prod",
            version=VERSION,
            cloud="public",
        )
        assert key.id == f"https://kv-shared-eastus.vault.azure.net/keys/cmk-Prod/{VERSION}"

    def test_it_accepts_a_versionless_uri(self) -> None:
        key = parse_key_uri("https://kv1.vault.azure.net/keys/cmk")
        assert key.versionless
        assert key.version == ""
        assert key.id == "https://kv1.vault.azure.net/keys/cmk"

    def test_it_accepts_managed_hsm_and_sovereign_clouds(self) -> None:
        assert parse_key_uri("https://hsm1.managedhsm.azure.net/keys/k").cloud == "public"
        assert parse_key_uri("https://kv1.vault.azure.cn/keys/k").cloud == "china"
        assert parse_key_uri("https://hsm1.managedhsm.azure.cn/keys/k").cloud == "china"
        assert parse_key_uri("https://kv1.vault.usgovcloudapi.net/keys/k").cloud == "usgov"
        assert parse_key_uri("https://hsm1.managedhsm.usgovcloudapi.net/keys/k").cloud == "usgov"

    def test_with_version_refuses_a_bad_version(self) -> None:
        with pytest.raises(InvalidKeyUri, match="32 hexadecimal"):
            parse_key_uri("https://kv1.vault.azure.net/keys/cmk").with_version("v2")


# One explicit case per refused class, with a fragment of the sentence the admin reads. Each class has
# its own sentence (checked below), so the admin knows what to fix.
REFUSED = {
    "empty": ("   ", "Enter a key URI"),
    "another host": ("https://evil.example/keys/k", "is not an Azure Key Vault or Managed HSM host"),
    "http": ("http://kv1.vault.azure.net/keys/k", "http:// is refused"),
    "no scheme": ("kv1.vault.azure.net/keys/k", "starts with https://"),
    "other scheme": ("ftp://kv1.vault.azure.net/keys/k", "not ftp://"),
    "ip address": ("https://10.0.0.1/keys/k", "names an IP address"),
    "ipv6 address": ("https://[::1]/keys/k", "names an IP address"),
    "ip shorthand": ("https://127.1/keys/k", "names an IP address"),
    "userinfo": ("https://vault.azure.net@evil.example/keys/k", "user name part"),
    "lookalike suffix": ("https://kv1.vault.azure.net.evil.example/keys/k", "only looks like a Key Vault host"),
    "lookalike bare": ("https://vault.azure.net.evil.example/keys/k", "only looks like a Key Vault host"),
    "trailing dot": ("https://kv1.vault.azure.net./keys/k", "dot at the end of the host"),
    "port": ("https://kv1.vault.azure.net:8443/keys/k", "Remove the port"),
    "port 443": ("https://kv1.vault.azure.net:443/keys/k", "Remove the port"),
    "backslash": ("https://evil.example\\.vault.azure.net/keys/k", "backslash"),
    "backslash in path": ("https://kv1.vault.azure.net/keys\\k", "backslash"),
    "percent in host": ("https://kv1%2Evault.azure.net/keys/k", "percent-encoded"),
    "percent in key": ("https://kv1.vault.azure.net/keys/k%2D1", "percent-encoded"),
    "secrets path": ("https://kv1.vault.azure.net/secrets/k", "URI of a secret, not a key"),
    "certificates path": ("https://kv1.vault.azure.net/certificates/k", "URI of a certificate, not a key"),
    "other path": ("https://kv1.vault.azure.net/deletedkeys/k", "The path must be /keys/"),
    "no key": ("https://kv1.vault.azure.net/", "has no key:"),
    "no key name": ("https://kv1.vault.azure.net/keys/", "no key name after /keys/"),
    "vault name too short": ("https://kv.vault.azure.net/keys/k", "3 to 24 characters"),
    "vault name too long": ("https://a234567890123456789012345.vault.azure.net/keys/k", "3 to 24 characters"),
    "vault name starts with digit": ("https://1kv.vault.azure.net/keys/k", "must start with a letter"),
    "vault name double hyphen": ("https://kv--1.vault.azure.net/keys/k", "two hyphens in a row"),
    "vault name ends with hyphen": ("https://kv1-.vault.azure.net/keys/k", "cannot end with a hyphen"),
    "vault name bad character": ("https://kv_1.vault.azure.net/keys/k", "only letters, digits and hyphens"),
    "subdomain": ("https://a.kv1.vault.azure.net/keys/k", "more than a vault name"),
    "no vault": ("https://vault.azure.net/keys/k", "has no vault name"),
    "key name bad character": ("https://kv1.vault.azure.net/keys/k_1", "1 to 127 letters, digits or hyphens"),
    "key name too long": ("https://kv1.vault.azure.net/keys/" + "k" * 128, "1 to 127 letters, digits or hyphens"),
    "bad version": ("https://kv1.vault.azure.net/keys/k/123", "is not a key version"),
    "query": ("https://kv1.vault.azure.net/keys/k?api-version=7.4", "query string"),
    "fragment": ("https://kv1.vault.azure.net/keys/k#v", "fragment"),
    "extra segments": (f"https://kv1.vault.azure.net/keys/k/{VERSION}/extra", "extra path segments"),
    "empty segment": ("https://kv1.vault.azure.net/keys//k", "empty path segment"),
    "non-ascii host": ("https://kv1.vaült.azure.net/keys/k", "not plain ASCII"),
    "fullwidth dot": ("https://kv1\uff0evault.azure.net/keys/k", "not plain ASCII"),
    "idna host": ("https://xn--kv1-9ja.vault.azure.net/keys/k", "IDNA"),
    "inner space": ("https://kv1.vault.azure.net/keys/my key", "spaces or control characters"),
    "control character": ("https://kv1.vault.azure.net/keys/k\x00", "spaces or control characters"),
}


class ParseKeyUriRefusalTests(TestCase):
    def test_it_refuses_each_class_with_its_sentence(self) -> None:
        for label, (text, fragment) in REFUSED.items():
            with self.subTest(label), pytest.raises(InvalidKeyUri) as caught:
                parse_key_uri(text)
            assert fragment in str(caught.value), (label, str(caught.value))

    def test_refusals_are_plain_value_errors(self) -> None:
        # Forms and services catch ValueError; InvalidKeyUri must be one.
        with pytest.raises(ValueError):
            parse_key_uri("https://evil.example/keys/k")

    def test_each_class_has_a_distinct_sentence(self) -> None:
        # Variants of one cause (:443 and :8443) share a sentence; no sentence serves two causes.
        cause_of: dict[str, str] = {}
        for text, fragment in REFUSED.values():
            with pytest.raises(InvalidKeyUri) as caught:
                parse_key_uri(text)
            assert cause_of.setdefault(str(caught.value), fragment) == fragment
