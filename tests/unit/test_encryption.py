"""Streaming AES-256-GCM for backups: round trips, and every tampering is detected."""

from __future__ import annotations

import io
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semantik_infra.encryption import (
    HEADER,
    LENGTH,
    TAG_SIZE,
    DecryptingReader,
    EncryptingWriter,
    decrypt_stream,
    encrypt_stream,
    is_encrypted,
    key_fingerprint,
    parse_key,
)
from semantik_infra.errors import BackupError, ConfigError
from semantik_infra.secrets import generate_encryption_key

KEY = parse_key(generate_encryption_key())
CHUNK = 32


def encrypt(data: bytes, key: bytes = KEY, chunk: int = CHUNK) -> bytes:
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(data), out, key, chunk)
    return out.getvalue()


def decrypt(blob: bytes, key: bytes = KEY) -> bytes:
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(blob), out, key)
    return out.getvalue()


def chunk_offsets(blob: bytes) -> list[tuple[int, int]]:
    offsets, position = [], HEADER.size
    while position < len(blob):
        (length,) = LENGTH.unpack_from(blob, position)
        offsets.append((position, position + LENGTH.size + length))
        position += LENGTH.size + length
    return offsets


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 3])
def test_round_trip_sizes(size):
    data = bytes(range(256)) * (size // 256 + 1)
    assert decrypt(encrypt(data[:size])) == data[:size]


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=400), st.integers(min_value=1, max_value=64))
def test_round_trip_property(data, chunk):
    blob = encrypt(data, chunk=chunk)
    assert decrypt(blob) == data
    reader = DecryptingReader(io.BytesIO(blob), KEY)
    pieces = []
    while piece := reader.read(7):
        pieces.append(piece)
    assert b"".join(pieces) == data


def test_wrong_key_fails():
    with pytest.raises(BackupError, match="not the key it was encrypted with"):
        decrypt(encrypt(b"secret data" * 10), parse_key(generate_encryption_key()))


def test_every_flipped_byte_is_detected():
    blob = encrypt(b"x" * (3 * CHUNK + 5))
    for position in range(len(blob)):
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(BackupError):
            decrypt(bytes(tampered))


def test_truncation_at_boundaries_and_mid_chunk_is_detected():
    blob = encrypt(b"y" * (4 * CHUNK + 1))
    cut_points = [end for _, end in chunk_offsets(blob)[:-1]] + [len(blob) - 1, HEADER.size + 3, HEADER.size]
    for cut in cut_points:
        with pytest.raises(BackupError, match="truncated"):
            decrypt(blob[:cut])


def test_reordered_and_appended_chunks_are_detected():
    blob = encrypt(b"z" * (3 * CHUNK + 2))
    chunks = [blob[start:end] for start, end in chunk_offsets(blob)]
    swapped = blob[: HEADER.size] + chunks[1] + chunks[0] + b"".join(chunks[2:])
    with pytest.raises(BackupError):
        decrypt(swapped)
    with pytest.raises(BackupError):
        decrypt(blob + chunks[0])
    with pytest.raises(BackupError):
        decrypt(blob + b"garbage")


def test_not_our_format():
    with pytest.raises(BackupError, match="not an encrypted semantik backup"):
        decrypt(b"PGDMP custom archive")


@pytest.mark.parametrize("text", ["", "!!!not base64!!!", "c2hvcnQ="])
def test_key_errors_name_the_variable_not_the_key(text):
    with pytest.raises(ConfigError) as raised:
        parse_key(text)
    assert "BACKUP_ENCRYPTION_KEY" in str(raised.value)
    if text:
        assert text not in str(raised.value)


def test_fingerprint_identifies_without_revealing(tmp_path):
    other = parse_key(generate_encryption_key())
    assert key_fingerprint(KEY) == key_fingerprint(KEY) != key_fingerprint(other)
    assert len(key_fingerprint(KEY)) == 16
    path = tmp_path / "a.dump"
    path.write_bytes(encrypt(b"data"))
    assert is_encrypted(path)
    path.write_bytes(b"PGDMP")
    assert not is_encrypted(path)


class _Zeros(io.RawIOBase):
    def __init__(self, total: int) -> None:
        self.left = total

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


class _Sink(io.RawIOBase):
    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return len(data)


def test_memory_stays_flat_for_a_large_stream():
    tracemalloc.start()
    try:
        written = encrypt_stream(io.BufferedReader(_Zeros(64 << 20)), _Sink(), KEY, 1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written > 64 << 20
    assert peak < 8 << 20, f"peak {peak} bytes"


def test_writer_counts_bytes():
    out = io.BytesIO()
    with EncryptingWriter(out, KEY, CHUNK) as writer:
        writer.write(b"a" * 100)
    assert writer.bytes_in == 100
    assert writer.bytes_out == len(out.getvalue()) == HEADER.size + 100 + 4 * (LENGTH.size + TAG_SIZE)
