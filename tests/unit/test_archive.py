"""The archive pipeline's stages, pure and in memory: every compression with and without
encryption round-trips, the digest is the file's, damage is caught, settings parse strictly."""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semantik_infra.archive import (
    GZIP,
    NONE,
    ZSTD,
    ArchiveReader,
    ArchiveWriter,
    Compression,
    archive_suffix,
    compression_of_manifest,
    file_sha256,
    parse_compression,
)
from semantik_infra.errors import BackupError

KEY = bytes(range(32))
COMPRESSIONS = [Compression(ZSTD, 3), Compression(ZSTD, 19), Compression(GZIP, 6), Compression(NONE, 0)]


def _write(payload: bytes, compression: Compression, key: bytes | None) -> tuple[bytes, ArchiveWriter]:
    raw = io.BytesIO()
    writer = ArchiveWriter(raw, compression=compression, key=key)
    for start in range(0, len(payload), 70_000):
        writer.write(payload[start : start + 70_000])
    writer.finish()
    return raw.getvalue(), writer


@pytest.mark.parametrize("compression", COMPRESSIONS, ids=str)
@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
def test_round_trip_and_digest_of_the_file(compression: Compression, key: bytes | None, tmp_path):
    payload = b"".join(f"row {i} some natural words repeat often\n".encode() for i in range(60_000))
    payload += os.urandom(300_000)
    data, writer = _write(payload, compression, key)
    assert writer.size == len(data)
    target = tmp_path / "archive"
    target.write_bytes(data)
    assert writer.sha256 == file_sha256(target)
    if compression.method == ZSTD:
        assert writer.size < len(payload)
    reader = ArchiveReader(io.BytesIO(data), key=key)
    out = bytearray()
    while block := reader.read(1 << 16):
        out += block
    reader.finish()
    assert bytes(out) == payload
    assert reader.sha256 == writer.sha256 and reader.size == len(data)


def test_reader_finish_hashes_the_rest_when_a_consumer_stops_early():
    payload = os.urandom(3_000_000)
    data, writer = _write(payload, Compression(ZSTD, 1), None)
    reader = ArchiveReader(io.BytesIO(data))
    reader.read(1000)  # e.g. pg_restore --list reads only the table of contents
    reader.finish()
    assert reader.sha256 == writer.sha256


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "encrypted"])
def test_a_flipped_byte_in_zstd_data_is_caught(key: bytes | None):
    payload = b"abc" * 500_000
    data = bytearray(_write(payload, Compression(ZSTD, 3), key)[0])
    data[len(data) // 2] ^= 0x40
    reader = ArchiveReader(io.BytesIO(bytes(data)), key=key)
    with pytest.raises(BackupError):
        while reader.read(1 << 16):
            pass


@settings(max_examples=30, deadline=None)
@given(payload=st.binary(max_size=5000), chunk=st.integers(min_value=1, max_value=4096))
def test_small_payloads_round_trip_through_every_stage(payload: bytes, chunk: int):
    data, _ = _write(payload, Compression(ZSTD, 3), KEY)
    reader = ArchiveReader(io.BytesIO(data), key=KEY)
    out = bytearray()
    while block := reader.read(chunk):
        out += block
    assert bytes(out) == payload


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("zstd:3", Compression(ZSTD, 3)),
        ("zstd", Compression(ZSTD, 3)),
        ("ZSTD:19", Compression(ZSTD, 19)),
        ("gzip:0", Compression(GZIP, 0)),
        ("gzip", Compression(GZIP, 6)),
        ("none", Compression(NONE, 0)),
        ("6", Compression(GZIP, 6)),
        ("0", Compression(GZIP, 0)),
    ],
)
def test_compression_setting_parses(text: str, expected: Compression):
    assert parse_compression(text) == expected
    assert parse_compression(str(expected)) == expected


@pytest.mark.parametrize("text", ["zstd:0", "zstd:20", "gzip:10", "lz4", "zstd:x", "none:3", "", "10", "-1"])
def test_bad_compression_settings_are_refused(text: str):
    with pytest.raises(ValueError):
        parse_compression(text)


def test_manifests_before_zstd_recorded_a_gzip_level():
    assert compression_of_manifest(6) == Compression(GZIP, 6)
    assert compression_of_manifest("zstd:3") == Compression(ZSTD, 3)
    with pytest.raises(ValueError):
        compression_of_manifest(True)


def test_suffix_tells_standard_tools_how_to_read_it():
    assert archive_suffix(Compression(ZSTD, 3), encrypted=False) == ".dump.zst"
    assert archive_suffix(Compression(GZIP, 6), encrypted=False) == ".dump"
    assert archive_suffix(Compression(NONE, 0), encrypted=True) == ".dump.enc"
    assert archive_suffix(Compression(ZSTD, 3), encrypted=True) == ".dump.zst.enc"
    assert Compression(GZIP, 6).pg_dump_level == 6 and Compression(ZSTD, 3).pg_dump_level == 0
