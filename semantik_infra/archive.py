"""The archive pipeline: how pg_dump's bytes become a backup file and back, as small streaming
stages that wrap each other. Writing: dump bytes → compress (zstd, multi-threaded) → encrypt
(AES-256-GCM) → hash and count → file; reading is the same chain reversed: file → hash and count →
decrypt → decompress. Backup and restore both build their streams here, so the on-disk format has
one definition, memory stays at one chunk per stage whatever the archive size, and the file is
read once per use. It also owns the compression setting (`BACKUP_COMPRESSION`: `zstd:N`,
`gzip:N`, `none`) and the file-name suffix that tells a user with only standard tools how to read
an archive (`.dump`, `.dump.zst`, and `.enc` when encrypted)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol

ZSTD, GZIP, NONE = "zstd", "gzip", "none"
DEFAULT_COMPRESSION = "zstd:3"
_LEVELS = {ZSTD: (1, 19), GZIP: (0, 9)}
_DEFAULT_LEVEL = {ZSTD: 3, GZIP: 6, NONE: 0}
CHUNK_SIZE = 1 << 20


class Sink(Protocol):
    """Anything bytes can be written to."""

    def write(self, data: bytes) -> int:
        """Consume `data`."""
        ...  # pragma: no cover


@dataclass(frozen=True)
class Compression:
    """How an archive is compressed: by our zstd stage, by pg_dump's own gzip, or not at all."""

    method: str
    level: int

    def __str__(self) -> str:
        return NONE if self.method == NONE else f"{self.method}:{self.level}"

    @property
    def pg_dump_level(self) -> int:
        """pg_dump's --compress: its own gzip level, or 0 when our stage compresses (or nothing does)."""
        return self.level if self.method == GZIP else 0

    @property
    def suffix(self) -> str:
        """What the file name adds after `.dump` so standard tools know how to read it."""
        return ".zst" if self.method == ZSTD else ""


def parse_compression(text: str) -> Compression:
    """`zstd:3`, `zstd` (level 3), `gzip:6`, `gzip`, `none`, or a bare 0-9 (pg_dump's gzip level, as
    BACKUP_COMPRESSION meant before zstd). ValueError names the accepted forms."""
    value = text.strip().lower()
    if value.isdigit():
        method, level_text = GZIP, value
    else:
        method, _, level_text = value.partition(":")
    if method == NONE and not level_text:
        return Compression(NONE, 0)
    if method not in _LEVELS:
        raise ValueError("use zstd:1-19, gzip:0-9 or none (e.g. zstd:3)")
    low, high = _LEVELS[method]
    if not level_text:
        return Compression(method, _DEFAULT_LEVEL[method])
    if not level_text.isdigit() or not low <= int(level_text) <= high:
        raise ValueError(f"{method} levels are {low}-{high} (e.g. {method}:{_DEFAULT_LEVEL[method]})")
    return Compression(method, int(level_text))


def compression_of_manifest(value: object) -> Compression:
    """The compression a manifest records: a string from now on, an int (pg_dump's gzip level) before."""
    if isinstance(value, int) and not isinstance(value, bool):
        return Compression(GZIP, value)
    if isinstance(value, str):
        return parse_compression(value)
    raise ValueError(f"unknown compression {value!r}")


def archive_suffix(compression: Compression, *, encrypted: bool) -> str:
    """`.dump`, `.dump.zst`, `.dump.enc` or `.dump.zst.enc`."""
    return ".dump" + compression.suffix + (".enc" if encrypted else "")


# --- writing -------------------------------------------------------------------------------


class HashingWriter:
    """Writes through to `raw` while hashing and counting exactly the bytes that reach it."""

    def __init__(self, raw: Sink) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        """Write, hash and count `data`."""
        self.raw.write(data)
        self.digest.update(data)
        self.count += len(data)
        return len(data)


class _ZstdWriter:
    """Multi-threaded zstd (every core the process may use), with a frame checksum so any damage to
    the compressed bytes is caught when they are read back."""

    def __init__(self, sink: Sink, level: int) -> None:
        import zstandard

        # Jobs of 2 MiB keep memory flat (the default, 4x the window, costs ~20 MiB more) at the same speed.
        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=usable_cores(), job_size=2 << 20, write_checksum=1
        )
        compressor = zstandard.ZstdCompressor(compression_params=params)
        self._stream = compressor.stream_writer(sink, closefd=False, write_return_read=True)  # type: ignore[arg-type]

    def write(self, data: bytes) -> int:
        return int(self._stream.write(data))

    def close(self) -> None:
        self._stream.close()  # ends the frame; closefd=False leaves the sink open


class ArchiveWriter:
    """The write side of the pipeline: write pg_dump's bytes, then `finish()`; `sha256` and `size`
    describe the bytes that reached `raw` (the file on disk)."""

    def __init__(self, raw: Sink, *, compression: Compression, key: bytes | None = None) -> None:
        self._hashing = HashingWriter(raw)
        sink: Any = self._hashing
        self._stages: list[Any] = []
        if key is not None:
            from semantik_infra.encryption import EncryptingWriter

            sink = EncryptingWriter(sink, key)
            self._stages.append(sink)
        if compression.method == ZSTD:
            sink = _ZstdWriter(sink, compression.level)
            self._stages.append(sink)
        self._head = sink
        self.bytes_in = 0

    def write(self, data: bytes) -> int:
        """Push `data` (pg_dump output) through every stage."""
        self._head.write(data)
        self.bytes_in += len(data)
        return len(data)

    def finish(self) -> None:
        """Flush every stage, outermost first (the compressor's last frame, then the final encrypted chunk)."""
        for stage in reversed(self._stages):
            stage.close()

    @property
    def sha256(self) -> str:
        """Hex sha256 of the bytes written to `raw`."""
        return self._hashing.digest.hexdigest()

    @property
    def size(self) -> int:
        """Bytes written to `raw`."""
        return self._hashing.count


# --- reading -------------------------------------------------------------------------------


class HashingReader:
    """Reads from `raw` while hashing and counting every byte that passes; `drain()` reads the rest,
    so the digest covers the whole file even when a later stage stopped early."""

    def __init__(self, raw: IO[bytes], progress: Any = None) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.count = 0
        self.progress = progress

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes, hashed."""
        data = self.raw.read(size)
        self.digest.update(data)
        self.count += len(data)
        if self.progress is not None:
            self.progress(self.count)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Fill `buffer`, hashing what was read."""
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read (and hash) whatever is left."""
        while self.read(CHUNK_SIZE):
            pass

    @property
    def sha256(self) -> str:
        """Hex sha256 of the bytes read so far."""
        return self.digest.hexdigest()


class Prefixed:
    """A reader that first returns `prefix`, then reads on from `source` (to sniff a stream's start)."""

    def __init__(self, prefix: bytes, source: Any) -> None:
        self._prefix = prefix
        self._source = source

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            if size < 0 or size >= len(self._prefix):
                head, self._prefix = self._prefix, b""
                rest = self._source.read(-1 if size < 0 else size - len(head))
                return head + rest
            head, self._prefix = self._prefix[:size], self._prefix[size:]
            return head
        return bytes(self._source.read(size))

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class ArchiveReader:
    """The read side: pg_dump's bytes out of an archive file, decrypted with `key` when given and
    decompressed when the (decrypted) bytes are a zstd stream, which is recognised by its magic
    number, so an archive reads the same whatever it is called. After `finish()` (which reads any
    rest of the file) `sha256` and `size` describe the whole file as it is on disk."""

    def __init__(self, raw: IO[bytes], *, key: bytes | None = None, progress: Any = None) -> None:
        self._hashing = HashingReader(raw, progress)
        source: Any = self._hashing
        if key is not None:
            from semantik_infra.encryption import DecryptingReader

            source = DecryptingReader(source, key)
        self._source = source
        self._head: Any = None
        self.compressed = False

    def _start(self) -> Any:
        if self._head is None:
            magic = self._source.read(len(ZSTD_MAGIC))
            source = Prefixed(magic, self._source)
            if magic == ZSTD_MAGIC:
                import zstandard

                self.compressed = True
                source = zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True, closefd=False)
            self._head = source
        return self._head

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes of pg_dump output; BackupError when decryption or decompression finds damage."""
        try:
            return bytes(self._start().read(size))
        except Exception as error:
            from semantik_infra.errors import BackupError

            if isinstance(error, BackupError):
                raise
            if type(error).__name__ == "ZstdError":
                raise BackupError(f"the archive's compressed data is damaged ({error})") from None
            raise

    def readinto(self, buffer: bytearray | memoryview) -> int:
        """Fill `buffer` with pg_dump output."""
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def finish(self) -> None:
        """Consume what the stages left unread, so the hash covers the whole file."""
        while self.read(CHUNK_SIZE):
            pass
        self._hashing.drain()

    def finish_raw(self) -> None:
        """Hash the rest of the file without decoding it (after a decoding error, to tell damage
        from a changed file)."""
        self._hashing.drain()

    @property
    def sha256(self) -> str:
        """Hex sha256 of the file bytes read so far (all of them after `finish()`)."""
        return self._hashing.sha256

    @property
    def size(self) -> int:
        """File bytes read so far."""
        return self._hashing.count


@contextlib.contextmanager
def open_archive(path: Path, *, key: bytes | None = None, progress: Any = None) -> Iterator[ArchiveReader]:
    """An ArchiveReader over the file at `path`; `progress` hears how many file bytes were read."""
    with path.open("rb") as raw:
        yield ArchiveReader(raw, key=key, progress=progress)


def file_sha256(path: Path, chunk_size: int = CHUNK_SIZE) -> str:
    """sha256 of a file (or, for a directory archive, of its sorted per-file digests), streamed."""
    if path.is_dir():
        lines = "".join(
            f"{child.relative_to(path)} {file_sha256(child)}\n" for child in sorted(path.rglob("*")) if child.is_file()
        )
        return hashlib.sha256(lines.encode()).hexdigest()
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


def copy_stream(source: Any, sink: BinaryIO | Sink, chunk_size: int = CHUNK_SIZE) -> int:
    """Copy all of `source` into `sink`; return the byte count."""
    total = 0
    while block := source.read(chunk_size):
        sink.write(block)
        total += len(block)
    return total


def usable_cores() -> int:
    """Cores this process may run on (for zstd threads and restore jobs)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
