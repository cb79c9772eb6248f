"""Manifests: validation, and authentication with an HMAC under a key derived from
BACKUP_ENCRYPTION_KEY (tampering, another key, a stripped MAC, old version-1 manifests)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pytest

from semantik_infra.errors import BackupError
from semantik_infra.manifest import (
    AUTHENTICATED,
    UNAUTHENTICATED,
    UNCHECKED,
    BackupManifest,
    check_manifest,
    manifest_mac,
    sign_manifest,
)
from tests.conftest import sample_manifest

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
KEY = bytes(range(32))


def test_a_signed_manifest_authenticates_with_its_key():
    signed = sign_manifest(sample_manifest(), KEY)
    assert signed.mac and signed.key_fingerprint and signed.version == 2
    assert check_manifest(signed.to_json(), "m.json", KEY) == (signed, AUTHENTICATED)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda data: data.update(size=2),
        lambda data: data.update(sha256="b" * 64),
        lambda data: data["tables"].update({"public.t": 1}),
        lambda data: data.update(extra="a field added later is covered too"),
    ],
)
def test_any_change_to_a_signed_manifest_is_refused(tamper):
    data = json.loads(sign_manifest(sample_manifest(), KEY).to_json())
    tamper(data)
    with pytest.raises(BackupError, match=r"^m\.json: the manifest does not authenticate"):
        check_manifest(json.dumps(data), "m.json", KEY)


def test_another_key_is_named_by_its_fingerprint():
    signed = sign_manifest(sample_manifest(), KEY)
    expected = rf"another key \(fingerprint {signed.key_fingerprint}\).*BACKUP_ENCRYPTION_KEY"
    with pytest.raises(BackupError, match=expected):
        check_manifest(signed.to_json(), "m.json", os.urandom(32))
    encrypted = sign_manifest(sample_manifest(encrypted=True), KEY)
    with pytest.raises(BackupError, match="encrypted with another key"):
        check_manifest(encrypted.to_json(), "m.json", os.urandom(32))


def test_without_a_key_a_manifest_reads_but_is_not_authenticated():
    signed = sign_manifest(sample_manifest(), KEY)
    assert check_manifest(signed.to_json(), "m.json", None) == (signed, UNCHECKED)
    assert check_manifest(sample_manifest().to_json(), "m.json", KEY)[1] == UNAUTHENTICATED
    assert check_manifest(sample_manifest().to_json(), "m.json", None)[1] == UNAUTHENTICATED


def test_version_1_manifests_still_read_as_unauthenticated():
    data = json.loads(sample_manifest().to_json())
    del data["mac"]
    data["version"] = 1
    parsed, authenticity = check_manifest(json.dumps(data), "m.json", KEY)
    assert authenticity == UNAUTHENTICATED and parsed.version == 1 and parsed.mac is None


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"size": "12"}, "size"),
        ({"encrypted": "yes"}, "encrypted"),
        ({"tables": ["public.t"]}, "tables"),
        ({"database": ""}, "database"),
        ({"version": 3}, "newer"),
        ({"mac": "zz"}, "mac"),
    ],
)
def test_fields_of_the_wrong_kind_are_refused(change, problem):
    data = {**json.loads(sample_manifest().to_json()), **change}
    with pytest.raises(BackupError, match=problem):
        check_manifest(json.dumps(data), "m.json", None)


def test_the_mac_covers_a_canonical_form():
    data = json.loads(sample_manifest().to_json())
    shuffled = dict(reversed(list(data.items())))
    assert manifest_mac(data, KEY) == manifest_mac(shuffled, KEY)
    assert manifest_mac(data, KEY) != manifest_mac(data, os.urandom(32))


def test_manifest_round_trip_and_validation():
    original = sample_manifest()
    assert BackupManifest.from_json(original.to_json()) == original
    with pytest.raises(BackupError, match="not valid JSON"):
        BackupManifest.from_json("{", source="m.json")
    with pytest.raises(BackupError, match=r"m\.json: missing backend, compression"):
        BackupManifest.from_json('{"archive": "x", "format": "custom"}', source="m.json")
    with pytest.raises(BackupError, match="sha256 is not a hex digest"):
        BackupManifest.from_json(sample_manifest(sha256="nope").to_json())
    with pytest.raises(BackupError, match="unknown format"):
        BackupManifest.from_json(sample_manifest(format="tar").to_json())
