"""Offline check of an audit export against its signed manifest (what `verify_export` runs).

Needs only the two files and the audit public key: no database, no server. Each check names what failed,
so a reviewer can tell a wrong key from an altered file from a truncated one.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from encryption import audit, signing
from encryption.audit_export import canonical


class ExportInvalid(Exception):
    """The export does not match its manifest; the message says which check failed."""


@dataclass(frozen=True)
class ExportCheck:
    count: int
    sha256: str
    first_hash: str
    last_hash: str
    manifest: dict[str, Any]


def _read_manifest(path: Path, public_pem: str) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        manifest, signature = document["manifest"], document["signature"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExportInvalid(f"the manifest cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(signature, str):
        raise ExportInvalid("the manifest is not a signed Keyward export manifest")
    if not signing.verify_signature(public_pem, canonical(manifest), signature):
        raise ExportInvalid("the manifest's signature does not verify with this public key")
    return manifest


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _records(f: Any, fmt: str) -> Iterator[dict[str, Any]]:
    if fmt == "csv":
        for row in csv.DictReader(f):
            yield {k: _from_cell(k, v) for k, v in row.items()}
    elif fmt == "jsonl":
        for line in f:
            if line.strip():
                yield json.loads(line)
    else:
        raise ExportInvalid(f"unknown export format {fmt!r}")


def _from_cell(column: str, value: str) -> Any:
    """A CSV cell back to the value that was hashed (the export writes JSON columns as compact JSON)."""
    if column in ("seq", "operation_id"):
        return int(value) if value else None
    if column in ("before", "after", "request_ids"):
        return json.loads(value) if value else None
    return value


def _recomputed_hash(record: dict[str, Any]) -> str:
    values = {f: record[f] for f in audit.HASHED_FIELDS}
    values["created_at"] = datetime.fromisoformat(str(values["created_at"]).replace("Z", "+00:00"))
    return audit.event_hash(tuple(values[f] for f in audit.HASHED_FIELDS))


def _hashes(path: Path, fmt: str) -> tuple[int, str, str]:
    """Count the events, check each one's content against its own chain hash, read the first and last hash.

    One line at a time, so a file of millions of events is checked in constant memory.
    """
    count, first, last = 0, "", ""
    with path.open("r", encoding="utf-8", newline="") as f:
        try:
            for record in _records(f, fmt):
                count += 1
                if _recomputed_hash(record) != record.get("hash"):
                    raise ExportInvalid(f"event #{record.get('seq')} in the file no longer matches its hash")
                first = first or record["hash"]
                last = record["hash"]
        except (ValueError, KeyError, TypeError, csv.Error) as exc:
            raise ExportInvalid(f"the file is not a valid {fmt} export: {exc}") from None
    return count, first, last


def verify_export(data_path: Path, manifest_path: Path, public_pem: str) -> ExportCheck:
    """Check signature, file digest, event count and first/last hash; raises ExportInvalid on the first failure."""
    manifest = _read_manifest(manifest_path, public_pem)
    try:
        sha256 = _digest(data_path)
    except OSError as exc:
        raise ExportInvalid(f"the export file cannot be read: {exc}") from None
    if sha256 != manifest.get("sha256"):
        raise ExportInvalid(f"the file's SHA-256 {sha256} is not the manifest's {manifest.get('sha256')}")
    count, first, last = _hashes(data_path, str(manifest.get("format", "")))
    if count != manifest.get("count"):
        raise ExportInvalid(f"the file holds {count} events, the manifest says {manifest.get('count')}")
    if (first, last) != (manifest.get("first_hash", ""), manifest.get("last_hash", "")):
        raise ExportInvalid("the file's first or last event hash differs from the manifest's")
    return ExportCheck(count=count, sha256=sha256, first_hash=first, last_hash=last, manifest=manifest)
