"""Real cryptography for the emulated Key Vault: key generation (with a per-process pool of RSA keys),
public JWKs, wrap/unwrap/encrypt/decrypt, sign/verify, and the sealing of backup blobs.

Pool: RSA generation costs 0.05-2 s per key, so keys generated in this process are kept and handed out
again, but only when no key version in the emulator database currently holds them (checked by public-key
fingerprint). Two live keys therefore never share private material, in one vault or across vaults, and
a test run that rolls its database back between tests reuses them freely.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

RSA_SIZES = (2048, 3072, 4096)
EC_CURVES = {"P-256": ec.SECP256R1}
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


class CryptoError(ValueError):
    """The operation's input is wrong (bad algorithm, bad ciphertext); Key Vault answers 400."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise CryptoError("The value is not valid base64url.") from None


def _int_bytes(value: int, length: int | None = None) -> bytes:
    return value.to_bytes(length or (value.bit_length() + 7) // 8, "big")


# Generation


@dataclass(frozen=True)
class GeneratedKey:
    private_pem: bytes
    public_jwk: dict[str, str]
    fingerprint: str


def _pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _describe(key: PrivateKey) -> GeneratedKey:
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.public_key().public_numbers()
        jwk = {"n": b64url(_int_bytes(numbers.n)), "e": b64url(_int_bytes(numbers.e))}
    else:
        point = key.public_key().public_numbers()
        jwk = {"crv": "P-256", "x": b64url(_int_bytes(point.x, 32)), "y": b64url(_int_bytes(point.y, 32))}
    digest = hashlib.sha256(json.dumps(jwk, sort_keys=True).encode()).hexdigest()
    return GeneratedKey(_pem(key), jwk, digest)


_pool: dict[int, list[GeneratedKey]] = {}
_pool_lock = threading.Lock()


def new_rsa_key(size: int, in_use: Callable[[list[str]], set[str]]) -> GeneratedKey:
    """An RSA key of `size` bits that no live key version holds (`in_use` maps fingerprints to those taken)."""
    with _pool_lock:
        pooled = _pool.setdefault(size, [])
        taken = in_use([k.fingerprint for k in pooled]) if pooled else set()
        for candidate in pooled:
            if candidate.fingerprint not in taken:
                return candidate
        fresh = _describe(rsa.generate_private_key(public_exponent=65537, key_size=size))
        pooled.append(fresh)
        return fresh


def new_ec_key(curve: str) -> GeneratedKey:
    return _describe(ec.generate_private_key(EC_CURVES[curve]()))


def load_private(pem: bytes) -> PrivateKey:
    # The emulator generated this key itself; skipping the RSA consistency check makes loading ~100x faster
    # (0.15 s -> 1 ms per unwrap), which the seed and every data access probe depend on.
    key = serialization.load_pem_private_key(bytes(pem), password=None, unsafe_skip_rsa_key_validation=True)
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise CryptoError("Unsupported key material.")
    return key


# Encryption and key wrapping (RSA)

_RSA_PADDINGS: dict[str, Callable[[], padding.AsymmetricPadding]] = {
    "RSA-OAEP": lambda: padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
    "RSA-OAEP-256": lambda: padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    "RSA1_5": padding.PKCS1v15,
}


def _rsa(key: PrivateKey, alg: str) -> rsa.RSAPrivateKey:
    if alg not in _RSA_PADDINGS:
        raise CryptoError(f"Invalid algorithm: '{alg}'. Expected one of {', '.join(_RSA_PADDINGS)}.")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CryptoError(f"Algorithm '{alg}' is not supported by this key type.")
    return key


def encrypt(key: PrivateKey, alg: str, plaintext: bytes) -> bytes:
    try:
        return _rsa(key, alg).public_key().encrypt(plaintext, _RSA_PADDINGS[alg]())
    except ValueError as exc:
        raise CryptoError(f"The value cannot be encrypted with {alg}: {exc}") from None


def decrypt(key: PrivateKey, alg: str, ciphertext: bytes) -> bytes:
    try:
        return _rsa(key, alg).decrypt(ciphertext, _RSA_PADDINGS[alg]())
    except ValueError:
        # One message whatever failed, as a real HSM gives no padding oracle.
        raise CryptoError("The ciphertext could not be decrypted with this key and algorithm.") from None


# Signatures

_SIGN_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "RS256": hashes.SHA256, "RS384": hashes.SHA384, "RS512": hashes.SHA512,
    "PS256": hashes.SHA256, "PS384": hashes.SHA384, "PS512": hashes.SHA512,
    "ES256": hashes.SHA256,
}  # fmt: skip


def _sign_params(alg: str) -> tuple[hashes.HashAlgorithm, padding.AsymmetricPadding | None]:
    if alg not in _SIGN_HASHES:
        raise CryptoError(f"Invalid algorithm: '{alg}'.")
    digest = _SIGN_HASHES[alg]()
    if alg.startswith("PS"):
        return digest, padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
    if alg.startswith("RS"):
        return digest, padding.PKCS1v15()
    return digest, None


def sign(key: PrivateKey, alg: str, digest_value: bytes) -> bytes:
    digest, pad = _sign_params(alg)
    if len(digest_value) != digest.digest_size:
        raise CryptoError(f"The digest must be {digest.digest_size} bytes for {alg}.")
    if isinstance(key, rsa.RSAPrivateKey) and pad is not None:
        return key.sign(digest_value, pad, utils.Prehashed(digest))
    if isinstance(key, ec.EllipticCurvePrivateKey) and pad is None:
        der = key.sign(digest_value, ec.ECDSA(utils.Prehashed(digest)))
        r, s = utils.decode_dss_signature(der)
        return _int_bytes(r, 32) + _int_bytes(s, 32)  # JWS form: r || s
    raise CryptoError(f"Algorithm '{alg}' is not supported by this key type.")


def verify(key: PrivateKey, alg: str, digest_value: bytes, signature: bytes) -> bool:
    digest, pad = _sign_params(alg)
    try:
        if isinstance(key, rsa.RSAPrivateKey) and pad is not None:
            key.public_key().verify(signature, digest_value, pad, utils.Prehashed(digest))
            return True
        if isinstance(key, ec.EllipticCurvePrivateKey) and pad is None and len(signature) == 64:
            der = utils.encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            key.public_key().verify(der, digest_value, ec.ECDSA(utils.Prehashed(digest)))
            return True
    except InvalidSignature:
        return False
    raise CryptoError(f"Algorithm '{alg}' is not supported by this key type.")


# Backup blobs: sealed under a key derived from SECRET_KEY, so a blob never shows private material in clear.

_BACKUP_MAGIC = b"KWKB1"


def _backup_key() -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"keyward-emulator", info=b"key-backup-v1")
    return hkdf.derive(settings.SECRET_KEY.encode())


def seal_backup(document: dict[str, Any]) -> bytes:
    nonce = os.urandom(12)
    sealed = AESGCM(_backup_key()).encrypt(nonce, json.dumps(document).encode(), _BACKUP_MAGIC)
    return _BACKUP_MAGIC + nonce + sealed


def open_backup(blob: bytes) -> dict[str, Any]:
    if not blob.startswith(_BACKUP_MAGIC) or len(blob) < len(_BACKUP_MAGIC) + 28:
        raise CryptoError("Backup blob is invalid or corrupted.")
    nonce, sealed = blob[len(_BACKUP_MAGIC) : len(_BACKUP_MAGIC) + 12], blob[len(_BACKUP_MAGIC) + 12 :]
    try:
        document: dict[str, Any] = json.loads(AESGCM(_backup_key()).decrypt(nonce, sealed, _BACKUP_MAGIC))
    except (InvalidTag, ValueError):
        raise CryptoError("Backup blob is invalid or corrupted.") from None
    return document
