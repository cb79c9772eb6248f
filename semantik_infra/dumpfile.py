"""Reading pg_dump's custom archive format ourselves, from a stream: the header, the table of
contents (with exact schema and table names, whatever characters they hold), and the data blocks,
whose rows are counted without restoring anything. This is what lets a restore drill compare the
rows a restored table has with the rows the archive really holds, rather than the planner's
estimates. It reads archive versions 1.12 to 1.16 (PostgreSQL 11 to 18), uncompressed or gzip
data (pg_dump's own compression; ours wraps the whole archive and is undone before this reads).
Format facts: integers are a sign byte then `int_size` little-endian bytes; strings an integer
length (-1 for NULL) then the bytes; data blocks are a type byte, the TOC entry's dump id, then
length-prefixed chunks ending with a zero length."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import IO

from semantik_infra.errors import BackupError

MAGIC = b"PGDMP"
CUSTOM_FORMAT = 1
BLK_DATA, BLK_BLOBS = 1, 3
_MIN_VERSION, _MAX_VERSION = (1, 12), (1, 16)
# pg_dump ends each table's COPY data with this line and two empty ones.
_COPY_END = b"\\.\n"
_GZIP, _NONE = "gzip", "none"
_ALGORITHMS = {0: _NONE, 1: _GZIP, 2: "lz4", 3: "zstd"}


@dataclass(frozen=True)
class TocEntry:
    """One table-of-contents entry: its id, kind (`desc`, e.g. TABLE DATA), schema and name (`tag`)."""

    dump_id: int
    had_dumper: bool
    desc: str
    namespace: str | None
    tag: str
    defn: str | None
    owner: str | None
    section: int


@dataclass
class DumpFile:
    """What the header and table of contents say, and (after `count_rows`) rows per data entry."""

    version: tuple[int, int, int]
    compression: str
    database: str
    server_version: str
    pg_dump_version: str
    entries: list[TocEntry] = field(default_factory=list)

    def table_data(self) -> dict[int, TocEntry]:
        """TABLE DATA entries by dump id."""
        return {entry.dump_id: entry for entry in self.entries if entry.desc == "TABLE DATA"}

    def entry(self, desc: str) -> TocEntry | None:
        """The first entry of kind `desc` (e.g. DATABASE), or None."""
        return next((entry for entry in self.entries if entry.desc == desc), None)


class _Reader:
    def __init__(self, stream: IO[bytes], int_size: int = 4) -> None:
        self.stream = stream
        self.int_size = int_size
        self.offset_size = 8

    def exact(self, count: int) -> bytes:
        data = self.stream.read(count)
        while 0 < len(data) < count:  # a pipe or a decompressor may hand out less than asked
            more = self.stream.read(count - len(data))
            if not more:
                break
            data += more
        if len(data) != count:
            raise BackupError("the archive ends early: it is truncated or not a pg_dump custom archive")
        return data

    def byte(self) -> int:
        return self.exact(1)[0]

    def integer(self) -> int:
        raw = self.exact(1 + self.int_size)
        value = int.from_bytes(raw[1:], "little")
        return -value if raw[0] else value

    def string(self) -> str | None:
        length = self.integer()
        if length < 0:
            return None
        if length > 1 << 30:
            raise BackupError("the archive's table of contents is corrupted (impossible string length)")
        return self.exact(length).decode("utf-8", "replace")


def read_header(stream: IO[bytes]) -> tuple[DumpFile, _Reader]:
    """Parse the header; BackupError when the stream is not a custom archive we can read."""
    reader = _Reader(stream)
    if stream.read(5) != MAGIC:
        raise BackupError("not a pg_dump archive (no PGDMP header)")
    version = (reader.byte(), reader.byte(), reader.byte())
    if not _MIN_VERSION <= version[:2] <= _MAX_VERSION:
        raise BackupError(f"pg_dump archive version {version[0]}.{version[1]} is not one this tool reads")
    reader.int_size = reader.byte()
    reader.offset_size = reader.byte()
    if reader.byte() != CUSTOM_FORMAT:
        raise BackupError("not a custom-format pg_dump archive")
    if not 1 <= reader.int_size <= 8 or not 1 <= reader.offset_size <= 16:
        raise BackupError("the archive header is corrupted (impossible integer sizes)")
    if version[:2] >= (1, 15):
        compression = _ALGORITHMS.get(reader.byte(), "unknown")
    else:
        compression = _GZIP if reader.integer() != 0 else _NONE
    for _ in range(7):  # creation time: sec, min, hour, mday, mon, year, isdst
        reader.integer()
    database = reader.string() or ""
    server_version = reader.string() or ""
    pg_dump_version = reader.string() or ""
    return DumpFile(version, compression, database, server_version, pg_dump_version), reader


def read_toc(stream: IO[bytes]) -> tuple[DumpFile, _Reader]:
    """Parse the header and the table of contents (the stream is left at the first data block)."""
    dump, reader = read_header(stream)
    count = reader.integer()
    if not 0 <= count <= 10_000_000:
        raise BackupError("the archive's table of contents is corrupted (impossible entry count)")
    for _ in range(count):
        dump_id = reader.integer()
        had_dumper = reader.integer() != 0
        reader.string()  # table oid
        reader.string()  # oid
        tag = reader.string() or ""
        desc = reader.string() or ""
        section = reader.integer()
        defn = reader.string()
        reader.string()  # drop statement
        reader.string()  # copy statement
        namespace = reader.string()
        reader.string()  # tablespace
        reader.string()  # table access method (1.14+; every version we read has it)
        if dump.version[:2] >= (1, 16):
            reader.integer()  # relkind
        owner = reader.string()
        reader.string()  # "false": the long-gone WITH OIDS flag
        while reader.string() is not None:  # dependencies
            pass
        reader.exact(1 + reader.offset_size)  # where the data is (unset when written to a pipe)
        dump.entries.append(TocEntry(dump_id, had_dumper, desc, namespace, tag, defn, owner, section))
    return dump, reader


class _Recording:
    """Passes reads through, keeping a copy of every byte."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.data = bytearray()

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.data += data
        return data


def read_head(stream: IO[bytes]) -> tuple[DumpFile, bytes]:
    """Parse the header and table of contents, and return their exact bytes too: on their own they
    are an archive without data, from which pg_restore can run every step that needs none (indexes,
    constraints, ...) and, having a file, run them in parallel. The stream is left at the first data
    block."""
    recording = _Recording(stream)
    dump, _ = read_toc(recording)  # type: ignore[arg-type]
    return dump, bytes(recording.data)


def count_rows(stream: IO[bytes]) -> tuple[DumpFile, dict[int, int]]:
    """Read a whole custom archive; return its description and the COPY rows of each data entry."""
    dump, reader = read_toc(stream)
    if dump.compression not in (_NONE, _GZIP):
        raise BackupError(f"cannot count rows in {dump.compression}-compressed pg_dump data")
    rows: dict[int, int] = {}
    while True:
        kind = stream.read(1)
        if not kind:
            return dump, rows
        dump_id = reader.integer()
        if kind[0] == BLK_DATA:
            rows[dump_id] = _count_block(reader, dump.compression == _GZIP)
        elif kind[0] == BLK_BLOBS:
            _skip_blobs(reader)
        else:
            raise BackupError(f"the archive's data is corrupted (unknown block type {kind[0]})")


def _chunks(reader: _Reader) -> list[bytes] | None:
    length = reader.integer()
    if length == 0:
        return None
    if not 0 < length <= 1 << 30:
        raise BackupError("the archive's data is corrupted (impossible chunk length)")
    return [reader.exact(length)]


def _count_block(reader: _Reader, compressed: bool) -> int:
    # Raw COPY text: every row ends in a newline, and newlines inside values are escaped, so the
    # rows are the newlines before the end marker.
    inflater = zlib.decompressobj() if compressed else None
    newlines = 0
    tail = b""
    while (chunk := _chunks(reader)) is not None:
        data = chunk[0]
        if inflater is not None:
            try:
                data = inflater.decompress(data)
            except zlib.error as error:
                raise BackupError(f"the archive's compressed data is damaged ({error})") from None
        newlines += data.count(b"\n")
        tail = (tail + data)[-64:]
    if inflater is not None:
        data = inflater.flush()
        newlines += data.count(b"\n")
        tail = (tail + data)[-64:]
    body = tail.rstrip(b"\n")
    if body.rsplit(b"\n", 1)[-1] != _COPY_END.rstrip(b"\n"):
        raise BackupError("a table's data in the archive does not end with COPY's end marker: it is damaged")
    # The marker's line and the empty lines after it are not rows.
    return newlines - (len(tail) - len(body))


def _skip_blobs(reader: _Reader) -> None:
    while reader.integer() != 0:  # each large object: its oid, then chunks
        while _chunks(reader) is not None:
            pass


def qualified_name(entry: TocEntry) -> str:
    """`schema.table` with each part quoted as SQL would need it (so dots and quotes stay unambiguous)."""
    return f"{quote_identifier(entry.namespace or '')}.{quote_identifier(entry.tag)}"


def quote_identifier(name: str) -> str:
    """An identifier as PostgreSQL prints it: bare when it is lowercase-safe, else double-quoted."""
    import re

    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'
