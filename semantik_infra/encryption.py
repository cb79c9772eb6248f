"""Streaming authenticated encryption for backup archives at rest. Format: a 32-byte header
(magic b"SMKBAK1\\0", a 4-byte chunk size, a 20-byte random salt) then chunks, each
`4-byte ciphertext length || AES-256-GCM(ciphertext + 16-byte tag)`. The file key is
HKDF-SHA256(master key, salt), so no two files share a key and the 96-bit nonce can simply be the
chunk index (plus a final-chunk flag); every chunk's associated data binds the header, so header
tampering, reordering (index in the nonce), truncation (a final chunk must be seen last) and
appending are all detected. Memory stays at one chunk whatever the archive size."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from typing import BinaryIO

from semantik_infra.errors import BackupError, ConfigError

MAGIC = b"SMKBAK1\0"
HEADER = struct.Struct(">8sI20s")
LENGTH = struct.Struct(">I")
TAG_SIZE = 16
DEFAULT_CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 64 << 20
KEY_SIZE = 32


def parse_key(text: str, *, variable: str = "BACKUP_ENCRYPTION_KEY") -> bytes:
    """Decode a URL-safe base64 256-bit key; the error never repeats the key text."""
    if not text:
        raise ConfigError(f"{variable} is empty: run `inv env.init` to generate a key")
    try:
        key = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    except (ValueError, TypeError):
        raise ConfigError(f"{variable} is not URL-safe base64 text: generate one with `inv env.init`") from None
    if len(key) != KEY_SIZE:
        raise ConfigError(f"{variable} decodes to {len(key)} bytes, not {KEY_SIZE}: generate one with `inv env.init`")
    return key


def key_fingerprint(key: bytes) -> str:
    """A short, non-reversible id of a key, so a manifest can say which key without holding it."""
    return hashlib.sha256(b"semantik-backup-key-id\0" + key).hexdigest()[:16]


def hkdf_sha256(key: bytes, *, salt: bytes, info: bytes) -> bytes:
    """A 32-byte key for one purpose (`info`) derived from `key`: HKDF-SHA256 (RFC 5869), one block."""
    prk = hmac.new(salt or bytes(hashlib.sha256().digest_size), key, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def _file_key(key: bytes, salt: bytes) -> bytes:
    return hkdf_sha256(key, salt=salt, info=b"semantik-backup-chunks")


def manifest_key(key: bytes) -> bytes:
    """The key manifests are authenticated with: never the encryption key itself."""
    return hkdf_sha256(key, salt=b"", info=b"semantik-backup-manifest-mac")


def _nonce(index: int, final: bool) -> bytes:
    return struct.pack(">?xxxQ", final, index)


class EncryptingWriter:
    """A write-only binary stream that encrypts into `raw`, one chunk in memory at a time."""

    def __init__(self, raw: BinaryIO, key: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size {chunk_size} out of range")
        self._raw = raw
        self._chunk_size = chunk_size
        self._header = HEADER.pack(MAGIC, chunk_size, os.urandom(20))
        self._aead = AESGCM(_file_key(key, self._header[-20:]))
        self._buffer = bytearray()
        self._index = 0
        self._closed = False
        raw.write(self._header)
        self.bytes_in = 0
        self.bytes_out = len(self._header)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Buffer and encrypt every full chunk; return len(data)."""
        if self._closed:
            raise ValueError("write to a closed EncryptingWriter")
        self._buffer += data
        self.bytes_in += len(data)
        while len(self._buffer) > self._chunk_size:
            # Keep at least one byte back: the last chunk must be written with the final flag.
            self._emit(bytes(self._buffer[: self._chunk_size]), final=False)
            del self._buffer[: self._chunk_size]
        return len(data)

    def _emit(self, plaintext: bytes, *, final: bool) -> None:
        sealed = self._aead.encrypt(_nonce(self._index, final), plaintext, self._header)
        self._raw.write(LENGTH.pack(len(sealed)))
        self._raw.write(sealed)
        self.bytes_out += LENGTH.size + len(sealed)
        self._index += 1

    def close(self) -> None:
        """Write the final chunk (possibly empty); `raw` stays open."""
        if not self._closed:
            self._emit(bytes(self._buffer), final=True)
            self._buffer.clear()
            self._closed = True

    def __enter__(self) -> EncryptingWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        # On an error the archive is abandoned anyway: no final chunk marks it incomplete.
        if exc_type is None:
            self.close()


class DecryptingReader:
    """A readable binary stream of the plaintext; raises BackupError at the first bad chunk."""

    def __init__(self, raw: BinaryIO, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        header = raw.read(HEADER.size)
        if len(header) < HEADER.size or not header.startswith(MAGIC[:6]):
            raise BackupError("not an encrypted semantik backup (no SMKBAK header)")
        magic, chunk_size, salt = HEADER.unpack(header)
        if magic != MAGIC:
            raise BackupError(f"unsupported encrypted backup format {magic[:7].decode('ascii', 'replace')}")
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise BackupError("the encrypted archive's header is corrupted (impossible chunk size)")
        self._raw = raw
        self._header = header
        self._chunk_size = chunk_size
        self._aead = AESGCM(_file_key(key, salt))
        self._index = 0
        self._pending = b""
        self._done = False

    def _next_chunk(self) -> bytes:
        from cryptography.exceptions import InvalidTag

        length_bytes = self._raw.read(LENGTH.size)
        if len(length_bytes) < LENGTH.size:
            raise BackupError("the archive ends before its final chunk: the file is truncated")
        (length,) = LENGTH.unpack(length_bytes)
        if not TAG_SIZE <= length <= self._chunk_size + TAG_SIZE:
            raise BackupError(f"chunk {self._index} has an impossible length: the archive is corrupted")
        sealed = self._raw.read(length)
        if len(sealed) < length:
            raise BackupError("the archive ends inside a chunk: the file is truncated")
        for final in (False, True):
            try:
                plaintext = self._aead.decrypt(_nonce(self._index, final), sealed, self._header)
            except InvalidTag:
                continue
            self._index += 1
            if final:
                if self._raw.read(1):
                    raise BackupError("data follows the final chunk: the archive was tampered with")
                self._done = True
            return plaintext
        raise BackupError(
            f"authentication failed at chunk {self._index}: the archive is corrupted"
            " or BACKUP_ENCRYPTION_KEY is not the key it was encrypted with"
        )

    def read(self, size: int = -1) -> bytes:
        """Up to `size` plaintext bytes (all remaining if negative); b"" at the verified end."""
        parts = [self._pending]
        have = len(self._pending)
        while (size < 0 or have < size) and not self._done:
            chunk = self._next_chunk()
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        if size < 0:
            self._pending = b""
            return data
        self._pending = data[size:]
        return data[:size]

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Fill `buffer` from the plaintext; return the count."""
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def encrypt_stream(src: BinaryIO, dst: BinaryIO, key: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Encrypt all of `src` into `dst`; return the bytes written."""
    with EncryptingWriter(dst, key, chunk_size) as writer:
        while block := src.read(chunk_size):
            writer.write(block)
    return writer.bytes_out


def decrypt_stream(src: BinaryIO, dst: BinaryIO, key: bytes) -> int:
    """Decrypt and verify all of `src` into `dst`; return the plaintext bytes written."""
    reader = DecryptingReader(src, key)
    written = 0
    while block := reader.read(DEFAULT_CHUNK_SIZE):
        dst.write(block)
        written += len(block)
    return written


def is_encrypted(path: os.PathLike[str] | str) -> bool:
    """True if the file starts with our encryption header."""
    with open(path, "rb") as stream:
        return stream.read(len(MAGIC)) == MAGIC
