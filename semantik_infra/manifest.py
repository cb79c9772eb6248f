"""Backup manifests: the JSON file `<archive>.json` beside every archive, saying what it holds and
how to check it (size, sha256, encryption, versions, per-table row estimates). This module owns
the manifest's fields, its validation (a manifest that exists but is not valid is an error, never
"no manifest"), and its authentication: an HMAC-SHA256 over the canonical JSON of every field but
the MAC itself, under a key derived (HKDF) from BACKUP_ENCRYPTION_KEY, with the key's fingerprint
recorded so a changed key is named rather than mistaken for tampering. Without a key a manifest is
written unauthenticated (`mac: null`), as version-1 manifests always were."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from semantik_infra.errors import BackupError

MANIFEST_SUFFIX = ".json"
MANIFEST_VERSION = 2
FORMATS = ("custom", "directory")
# How a manifest's origin was established.
AUTHENTICATED = "authenticated"  # its MAC verifies under BACKUP_ENCRYPTION_KEY
UNAUTHENTICATED = "unauthenticated"  # written without a key (or before manifests had a MAC)
UNCHECKED = "unchecked"  # it has a MAC, but no key is set to check it with


@dataclass(frozen=True)
class BackupManifest:
    """What a backup holds and how to check it; never holds a secret (only the key's fingerprint)."""

    archive: str
    database: str
    format: str
    sha256: str
    size: int
    # "zstd:3", "gzip:6" or "none" (archive.Compression); an int (pg_dump's gzip level) before zstd.
    compression: int | str
    encrypted: bool
    key_fingerprint: str | None
    server_version: str
    pg_dump_version: str
    created: str
    duration_s: float
    toc_entries: int
    tables: dict[str, int | None]  # qualified, quoted as PostgreSQL would ("my.schema"."t") -> estimate
    backend: str
    verified: bool = True
    globals_file: str | None = None
    version: int = MANIFEST_VERSION
    mac: str | None = None

    def to_json(self) -> str:
        """The manifest as pretty JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "manifest") -> BackupManifest:
        """Parse and validate a manifest; BackupError names the file and the problem."""
        return cls._from_data(_load(text, source), source)

    @classmethod
    def _from_data(cls, data: dict[str, Any], source: str) -> BackupManifest:
        problem = validation_problem(data)
        if problem:
            raise BackupError(f"{source}: {problem}")
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def _load(text: str, source: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise BackupError(f"{source}: not valid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(data, dict):
        raise BackupError(f"{source}: expected a JSON object")
    return data


_KINDS: dict[str, tuple[type, ...]] = {
    "archive": (str,),
    "database": (str,),
    "size": (int,),
    "compression": (int, str),
    "encrypted": (bool,),
    "key_fingerprint": (str, type(None)),
    "server_version": (str,),
    "pg_dump_version": (str,),
    "created": (str,),
    "duration_s": (int, float),
    "toc_entries": (int,),
    "tables": (dict,),
    "backend": (str,),
    "verified": (bool,),
    "globals_file": (str, type(None)),
    "version": (int,),
    "mac": (str, type(None)),
}


def validation_problem(data: dict[str, Any]) -> str:
    """What is wrong with a parsed manifest, or "" if nothing is."""
    required = {f.name for f in fields(BackupManifest) if f.default is MISSING}
    missing = sorted(name for name in required if name not in data)
    if missing:
        return f"missing {', '.join(missing)}"
    if data.get("format") not in FORMATS:
        return f"unknown format {data.get('format')!r}"
    if not re.fullmatch(r"[0-9a-f]{64}", str(data.get("sha256", ""))):
        return "sha256 is not a hex digest"
    for name, kinds in _KINDS.items():
        value = data.get(name)
        # bool is an int in Python: a count must not be `true`.
        if name in data and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
            return f"{name} has the wrong type ({type(value).__name__})"
    if not data["database"]:
        return "database is empty"
    if data["size"] < 0:
        return "size is negative"
    if not all(isinstance(rows, int | None) and not isinstance(rows, bool) for rows in data["tables"].values()):
        return "tables must map names to row counts"
    if data.get("version", 1) > MANIFEST_VERSION:
        return f"version {data['version']} was written by a newer semantik-infra: upgrade it to read this backup"
    from semantik_infra.archive import compression_of_manifest

    try:
        compression_of_manifest(data["compression"])
    except ValueError:
        return f"compression {data['compression']!r} is not one this tool knows"
    if data.get("mac") is not None and not re.fullmatch(r"[0-9a-f]{64}", data["mac"]):
        return "mac is not a hex digest"
    return ""


def manifest_mac(data: dict[str, Any], key: bytes) -> str:
    """HMAC-SHA256 of the canonical JSON of every field but `mac`, under a key derived from `key`."""
    from semantik_infra.encryption import manifest_key

    payload = {name: value for name, value in data.items() if name != "mac"}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    return hmac.new(manifest_key(key), canonical, hashlib.sha256).hexdigest()


def sign_manifest(manifest: BackupManifest, key: bytes) -> BackupManifest:
    """The manifest with the key's fingerprint and its MAC filled in."""
    from semantik_infra.encryption import key_fingerprint

    unsigned = replace(manifest, key_fingerprint=key_fingerprint(key), mac=None, version=MANIFEST_VERSION)
    return replace(unsigned, mac=manifest_mac(asdict(unsigned), key))


def check_manifest(text: str, source: str, key: bytes | None) -> tuple[BackupManifest, str]:
    """Parse, validate and authenticate a manifest: (manifest, AUTHENTICATED/UNAUTHENTICATED/UNCHECKED).

    A MAC that does not verify, or a MAC made with another key, is a BackupError naming the file.
    """
    data = _load(text, source)
    manifest = BackupManifest._from_data(data, source)
    if manifest.mac is None:
        return manifest, UNAUTHENTICATED
    if key is None:
        return manifest, UNCHECKED
    from semantik_infra.encryption import key_fingerprint

    if manifest.key_fingerprint and manifest.key_fingerprint != key_fingerprint(key):
        what = "encrypted" if manifest.encrypted else "authenticated"
        raise BackupError(
            f"{source}: the backup was {what} with another key (fingerprint {manifest.key_fingerprint}):"
            " set BACKUP_ENCRYPTION_KEY to that key (`inv env.init --force` keeps the old .env as a .bak file)"
        )
    if not hmac.compare_digest(manifest.mac, manifest_mac(data, key)):
        raise BackupError(
            f"{source}: the manifest does not authenticate: it or its archive was changed after the backup"
        )
    return manifest, AUTHENTICATED


def manifest_path(archive: Path) -> Path:
    """The manifest beside an archive, whatever the archive is called: `<archive>.json`."""
    return archive.with_name(archive.name + MANIFEST_SUFFIX)


def describe_authenticity(authenticity: str) -> str:
    """How a listing says where a manifest comes from."""
    return {
        AUTHENTICATED: "authenticated",
        UNAUTHENTICATED: "unauthenticated (no MAC)",
        UNCHECKED: "not authenticated here (BACKUP_ENCRYPTION_KEY is not set)",
    }[authenticity]
