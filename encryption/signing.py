"""The audit trail's Ed25519 key: signs chain checkpoints and export manifests.

The key lives in settings.AUDIT_SIGNING_KEY_FILE (PKCS#8 PEM, unencrypted: the file's permissions and
the secret mount protect it). With the embedded default the file does not exist yet; the first process
that needs it generates it with mode 0600, and a process racing it reads the winner's file instead of
writing its own (the file appears atomically, by a hard link from a finished temporary file).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import tempfile
from functools import lru_cache
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def sign(data: bytes) -> str:
    """The base64 Ed25519 signature of `data` by the server's audit key."""
    return base64.b64encode(_private_key(_key_path()).sign(data)).decode("ascii")


def public_key_pem() -> str:
    """The audit key's public half (SubjectPublicKeyInfo PEM), for offline verification."""
    return _public_pem(_private_key(_key_path()).public_key())


def public_key_fingerprint(public_pem: str | None = None) -> str:
    """SHA-256 (hex) of the raw 32-byte public key; of the server's key when no PEM is given."""
    key = _private_key(_key_path()).public_key() if public_pem is None else _load_public(public_pem)
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def verify_signature(public_pem: str, data: bytes, signature: str) -> bool:
    """Whether `signature` (base64) is a valid Ed25519 signature of `data` by `public_pem`'s key."""
    try:
        key = _load_public(public_pem)
        key.verify(base64.b64decode(signature, validate=True), data)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def _key_path() -> Path:
    return Path(settings.AUDIT_SIGNING_KEY_FILE)


def _public_pem(key: Ed25519PublicKey) -> str:
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode("ascii")


def _load_public(public_pem: str) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(public_pem.encode("ascii"))
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


@lru_cache(maxsize=4)
def _private_key(path: Path) -> Ed25519PrivateKey:
    if not path.exists():
        _generate(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        # The message names the file, never its content.
        raise ImproperlyConfigured(f"AUDIT_SIGNING_KEY_FILE {path} is not a readable Ed25519 PEM key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ImproperlyConfigured(f"AUDIT_SIGNING_KEY_FILE {path} holds a key that is not Ed25519")
    return key


def _generate(path: Path) -> None:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".audit-key-")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another process generated it first: use theirs
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
