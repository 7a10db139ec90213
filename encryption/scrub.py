"""Keep tokens, secrets and key material out of the audit trail.

Audit rows are kept forever, exported, and read by people who must not see credentials, so anything
that looks like one is replaced by a marker naming what was removed, before the row is written
(and before it is hashed: the chain covers what was stored). What counts:

- a value under a key whose name says it is a credential (`password`, `token`, `secret`, `authorization`,
  `private_key`, `client_secret`, ...): the whole value;
- `Bearer <token>` anywhere in text;
- a JWT (three base64url parts, the first starting `eyJ`, which is `{"` encoded);
- a PEM private key block (`-----BEGIN ... PRIVATE KEY-----` to its END line, or to the end of the text);
- a base64 or base64url blob of at least BLOB_MIN_CHARS characters mixing upper case, lower case and
  digits (RSA moduli and private parts in a JWK, wrapped data keys, storage keys), except a run that is
  part of a path or URL (it starts with `/` or follows `.` or `:`), which is how ARM ids and key ids look.

Hex strings (key versions, hashes, request ids) are never touched: they have no upper case letters.
"""

from __future__ import annotations

import re
from typing import Any

BLOB_MIN_CHARS = 80
REDACTED = "[redacted]"

# Key names of credentials; d, p, q, dp, dq, qi (RSA) and k (symmetric) are a JWK's private parts.
_SENSITIVE_KEY = re.compile(
    r"^(pass|passwd)$|password|passphrase|secret|token|authorization|private[_-]?key|credential|api[_-]?key|"
    r"signature$|^sig$|cookie|^(d|p|q|dp|dq|qi|k)$",
    re.IGNORECASE,
)
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.DOTALL)
_BEARER = re.compile(r"\b(Bearer|Basic|SharedAccessSignature)\s+[A-Za-z0-9\-._~+/=%&:]+", re.IGNORECASE)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BLOB = re.compile(r"[A-Za-z0-9+/_-]{" + str(BLOB_MIN_CHARS) + r",}={0,2}")


def scrub_text(text: str) -> str:
    """`text` with every token, private key and long base64 blob replaced by a marker."""
    text = _PEM.sub("[redacted private key]", text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} [redacted token]", text)
    text = _JWT.sub("[redacted token]", text)
    return _BLOB.sub(lambda m: "[redacted blob]" if _is_blob(text, m) else m.group(0), text)


def _is_blob(text: str, match: re.Match[str]) -> bool:
    run = match.group(0)
    if run.startswith("/") or (match.start() > 0 and text[match.start() - 1] in ".:"):
        return False  # a path, an ARM id or the path of a URL
    return any(c.isupper() for c in run) and any(c.islower() for c in run) and any(c.isdigit() for c in run)


def scrub(value: Any, *, key: str = "") -> Any:
    """A copy of a JSON-like value with credentials removed (dict keys named like secrets lose their value)."""
    if key and _SENSITIVE_KEY.search(key) and value not in (None, "", [], {}):
        return REDACTED
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {str(k): scrub(v, key=str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return value
