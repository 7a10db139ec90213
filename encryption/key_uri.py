"""The one parser for the key identifiers admins paste.

A pasted URI decides where the server later sends a bearer token, so it is parsed strictly and refused,
before any request, unless it names a key on a Key Vault or Managed HSM host of a known Azure cloud.
The parser works on the raw text itself, not on urllib's reading of it: what is accepted is so narrow
(`https://{name}.{suffix}/keys/{key}[/{version}]`, plain ASCII, nothing else) that every URL library
must read the same host from it, which the property tests check against the standard library and urllib3.
Each refusal is a sentence an admin can act on.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

# Key Vault and Managed HSM DNS suffixes per cloud. The emulator answers for the same names.
HOST_SUFFIXES: dict[str, str] = {
    "vault.azure.net": "public",
    "managedhsm.azure.net": "public",
    "vault.azure.cn": "china",
    "managedhsm.azure.cn": "china",
    "vault.usgovcloudapi.net": "usgov",
    "managedhsm.usgovcloudapi.net": "usgov",
}

EXAMPLE = "https://my-vault.vault.azure.net/keys/my-key"

_VAULT_NAME = re.compile(r"[a-z][a-z0-9-]{1,22}[a-z0-9]")
_KEY_NAME = re.compile(r"[A-Za-z0-9-]{1,127}")
_VERSION = re.compile(r"[0-9a-fA-F]{32}")
_IPV4_LIKE = re.compile(r"[0-9.]+|0x[0-9a-f.x]+", re.IGNORECASE)


class InvalidKeyUri(ValueError):
    """A pasted key identifier that Keyward will not use; the message says what to fix."""


@dataclass(frozen=True)
class KeyUri:
    vault_name: str
    vault_uri: str  # https://{host}/, lower case, with the trailing slash ARM expects in keyVaultUri
    host: str
    name: str
    version: str  # "" when versionless
    cloud: str  # public, china or usgov

    @property
    def versionless(self) -> bool:
        return not self.version

    @property
    def id(self) -> str:
        base = f"https://{self.host}/keys/{self.name}"
        return f"{base}/{self.version}" if self.version else base

    def with_version(self, version: str) -> KeyUri:
        if not _VERSION.fullmatch(version):
            raise InvalidKeyUri(f"{version!r} is not a key version: a version is 32 hexadecimal characters.")
        return KeyUri(self.vault_name, self.vault_uri, self.host, self.name, version.lower(), self.cloud)


def parse_key_uri(text: str) -> KeyUri:
    """Parse what an admin pasted into a KeyUri, or raise InvalidKeyUri with what to fix."""
    uri = _check_characters(text.strip())
    rest = _strip_scheme(uri)
    authority, _, path = rest.partition("/")
    host = _check_authority(authority)
    vault_name, cloud = _split_host(host)
    name, version = _split_path(path)
    return KeyUri(vault_name, f"https://{host}/", host, name, version, cloud)


def _check_characters(uri: str) -> str:
    if not uri:
        raise InvalidKeyUri(f"Enter a key URI, such as {EXAMPLE}.")
    if not uri.isascii():
        raise InvalidKeyUri(
            "The key URI contains characters that are not plain ASCII (international or look-alike letters); "
            "copy the key identifier from the Azure portal instead of typing it."
        )
    if "\\" in uri:
        raise InvalidKeyUri("The key URI contains a backslash (\\); Key Vault URIs use forward slashes only.")
    if "%" in uri:
        raise InvalidKeyUri(
            "The key URI contains percent-encoded characters (%); vault and key names never need them, "
            "so paste the identifier without encoding."
        )
    if any(c.isspace() or not c.isprintable() for c in uri):
        raise InvalidKeyUri("The key URI contains spaces or control characters; paste it as one unbroken line.")
    if "#" in uri:
        raise InvalidKeyUri("Remove the fragment (the part from #): a key URI ends with the key name or version.")
    if "?" in uri:
        raise InvalidKeyUri("Remove the query string (the part from ?): a key URI ends with the key name or version.")
    return uri


def _strip_scheme(uri: str) -> str:
    scheme, sep, rest = uri.partition("://")
    if not sep:
        raise InvalidKeyUri(f"A key URI starts with https://, like {EXAMPLE}.")
    if scheme.lower() == "http":
        raise InvalidKeyUri("Use https:// - Key Vault accepts only encrypted connections, so http:// is refused.")
    if scheme.lower() != "https":
        raise InvalidKeyUri(f"A key URI starts with https://, not {scheme}://; for example {EXAMPLE}.")
    return rest


def _check_authority(authority: str) -> str:
    if "@" in authority:
        raise InvalidKeyUri(
            "The key URI has a user name part (something@ before the host), which can hide the real host; "
            "paste the key identifier exactly as Key Vault shows it."
        )
    if authority.startswith("["):
        raise InvalidKeyUri(
            "The key URI names an IP address; use the vault's DNS name, such as my-vault.vault.azure.net."
        )
    if ":" in authority:
        raise InvalidKeyUri("Remove the port (the :number after the host); Key Vault URIs never carry one.")
    if not authority:
        raise InvalidKeyUri(f"The key URI has no host; it should look like {EXAMPLE}.")
    host = authority.lower()
    if host.endswith("."):
        raise InvalidKeyUri("Remove the dot at the end of the host name; Key Vault hosts do not end with a dot.")
    if _is_ip_address(host):
        raise InvalidKeyUri(
            "The key URI names an IP address; use the vault's DNS name, such as my-vault.vault.azure.net."
        )
    if host.startswith("xn--") or ".xn--" in host:
        raise InvalidKeyUri("International (IDNA, xn--) host names are not Azure Key Vault hosts.")
    return host


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(_IPV4_LIKE.fullmatch(host))  # shorthand forms such as 127.1 or 0x7f.1 that resolvers accept
    return True


def _split_host(host: str) -> tuple[str, str]:
    for suffix, cloud in HOST_SUFFIXES.items():
        if host == suffix:
            raise InvalidKeyUri(f"The host {host} has no vault name; it should be {{vault}}.{suffix}.")
        if host.endswith("." + suffix):
            vault_name = host[: -len(suffix) - 1]
            if "." in vault_name:
                raise InvalidKeyUri(
                    f"The host {host} has more than a vault name before .{suffix}; "
                    f"Key Vault hosts are {{vault}}.{suffix}."
                )
            _check_vault_name(vault_name)
            return vault_name, cloud
    for suffix in HOST_SUFFIXES:
        if f"{suffix}." in host or host.startswith(suffix.split(".")[0] + "."):
            raise InvalidKeyUri(
                f"The host {host} only looks like a Key Vault host; a vault's host ends with .{suffix} exactly."
            )
    raise InvalidKeyUri(
        f"{host} is not an Azure Key Vault or Managed HSM host; key URIs look like {EXAMPLE} "
        "(or .vault.azure.cn, .vault.usgovcloudapi.net, .managedhsm.azure.net)."
    )


def _check_vault_name(name: str) -> None:
    if not 3 <= len(name) <= 24:
        raise InvalidKeyUri(f"The vault name {name!r} must be 3 to 24 characters long.")
    if not name[0].isalpha():
        raise InvalidKeyUri(f"The vault name {name!r} must start with a letter.")
    if "--" in name:
        raise InvalidKeyUri(f"The vault name {name!r} cannot contain two hyphens in a row.")
    if name.endswith("-"):
        raise InvalidKeyUri(f"The vault name {name!r} cannot end with a hyphen.")
    if not _VAULT_NAME.fullmatch(name):
        raise InvalidKeyUri(f"The vault name {name!r} may contain only letters, digits and hyphens.")


def _split_path(path: str) -> tuple[str, str]:
    segments = path.rstrip("/").split("/")
    if segments == [""]:
        raise InvalidKeyUri(f"The key URI has no key: add /keys/{{key name}} after the host, as in {EXAMPLE}.")
    collection = segments[0].lower()
    if collection in {"secrets", "certificates"}:
        kind = collection[:-1]
        raise InvalidKeyUri(
            f"This is the URI of a {kind}, not a key: customer-managed keys need a key (…/keys/{{name}}); "
            f"pick the key in the vault, not the {kind}."
        )
    if collection != "keys":
        raise InvalidKeyUri(f"The path must be /keys/{{key name}}[/{{version}}], as in {EXAMPLE}.")
    if "" in segments:
        raise InvalidKeyUri("The key URI has an empty path segment (//); it should read /keys/{key name}/{version}.")
    if len(segments) < 2:
        raise InvalidKeyUri("The key URI has no key name after /keys/.")
    if len(segments) > 3:
        raise InvalidKeyUri("The key URI has extra path segments; it must end with the key name or its version.")
    name = segments[1]
    if not _KEY_NAME.fullmatch(name):
        raise InvalidKeyUri(f"The key name {name!r} must be 1 to 127 letters, digits or hyphens.")
    version = segments[2] if len(segments) == 3 else ""
    if version and not _VERSION.fullmatch(version):
        raise InvalidKeyUri(
            f"{version!r} is not a key version: a version is 32 hexadecimal characters, "
            "as in the key identifier Key Vault shows."
        )
    return name, version.lower()
