"""Moving one table's rows: SQLite batches → converted COPY text → PostgreSQL, and proving they
arrived. Batches are sized to a byte budget (memory stays flat whatever the table or row size);
each batch is converted by the converters' fast column paths and, if any value needs it, again
value by value, so a bad value names its row and column. A second thread sends each batch with
COPY while the next one is converted, so PostgreSQL and Python work at the same time. Every line
sent is hashed (64-bit SipHash, keyed per process, summed as a multiset, with the count); after the
table is loaded it is read back with COPY TO in the same transaction and hashed the same way:
equal sums mean every value PostgreSQL stored prints exactly as the converted value it was sent.
Rejected rows go to a 0600 JSON-lines file published only when the import commits."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import math
import os
import queue
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semantik_infra.errors import ConfigError, DataImportError
from semantik_infra.sqlite_convert import ConversionError, storage_class
from semantik_infra.sqlite_plan import ColumnPlan, TablePlan, ident
from semantik_infra.sqlite_source import SQLiteSource

_COPY_CONTEXT = re.compile(r"COPY [^,]*, line (\d+)(?:, column ([^:]+))?")
SHOWN_CHARACTERS = 40


class LineDigest:
    """An order-independent fingerprint of a set of lines: their count and the sum of their hashes.

    Python's hash of bytes is SipHash with a key drawn when the process starts: both sides of a
    comparison are hashed in this process, and a changed line changes the sum with odds of 2**-64.
    """

    def __init__(self) -> None:
        self.count = 0
        self.total = 0

    def add(self, lines: Sequence[bytes]) -> None:
        """Add lines (without their newline)."""
        self.count += len(lines)
        self.total += sum(map(hash, lines))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LineDigest) and (self.count, self.total) == (other.count, other.total)

    __hash__ = None  # type: ignore[assignment]


class _DigestSink:
    """A file-like for COPY TO: feeds the lines it is written into a LineDigest (and optional columns)."""

    def __init__(self, columns: int = 0) -> None:
        self.digest = LineDigest()
        self.columns = [LineDigest() for _ in range(columns)]
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        self._pending.append(data)
        self._size += len(data)
        if self._size >= 1 << 22:
            self.flush()

    def flush(self) -> None:
        lines = b"".join(self._pending).split(b"\n")
        tail = lines.pop()
        self._pending, self._size = ([tail], len(tail)) if tail else ([], 0)
        self.digest.add(lines)
        if self.columns:
            add_columns(self.columns, lines)


def add_columns(digests: Sequence[LineDigest], lines: Sequence[bytes]) -> None:
    """Add each tab-separated field of `lines` to its column's digest."""
    if lines:
        for digest, fields in zip(digests, zip(*(line.split(b"\t") for line in lines), strict=True), strict=True):
            digest.add(fields)


class RejectFile:
    """Rows set aside, as JSON lines in a 0600 temp file beside the target; `publish` names it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if path.exists() or path.is_symlink():
            raise ConfigError(f"--reject-file {path}: exists already (move it away or choose another name)")
        if not path.parent.is_dir():
            raise ConfigError(f"--reject-file {path}: no such directory {path.parent}")
        self.count = 0
        self._temp = path.with_name(f".{path.name}.{os.getpid()}.partial")
        self._stream: io.TextIOWrapper | None = None

    def write(self, table: str, row_id: object, column: str | None, reason: str, values: dict[str, object]) -> None:
        """Record one rejected row."""
        if self._stream is None:
            try:
                fd = os.open(self._temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except OSError as error:
                raise DataImportError(f"--reject-file {self.path}: cannot be written ({error.strerror})") from None
            self._stream = open(fd, "w", encoding="utf-8")  # noqa: SIM115 -- closed in publish/discard
        record = {"table": table, "row": json_value(row_id), "column": column, "reason": reason}
        record["values"] = {name: json_value(value) for name, value in values.items()}
        try:
            self._stream.write(json.dumps(record, ensure_ascii=False) + "\n")
        except OSError as error:
            raise DataImportError(f"--reject-file {self.path}: cannot be written ({error.strerror})") from None
        self.count += 1

    def publish(self) -> None:
        """Give the file its name (never over an existing file); nothing happens without rejects."""
        if self._stream is None:
            return
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._stream.close()
        try:
            os.link(self._temp, self.path)
        except FileExistsError:
            raise DataImportError(
                f"the import was committed, but --reject-file {self.path} appeared meanwhile:"
                f" the rejected rows are in {self._temp}"
            ) from None
        os.unlink(self._temp)

    def discard(self) -> None:
        """Remove the temp file (the import did not commit)."""
        if self._stream is not None:
            self._stream.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._temp)


def json_value(value: object) -> object:
    """An SQLite value as JSON: blobs, non-UTF-8 text and non-finite reals as tagged objects."""
    if isinstance(value, bytes):
        return {"blob_base64": base64.b64encode(value).decode()}
    if isinstance(value, float) and not math.isfinite(value):
        return {"real": repr(value)}
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return {"text_base64": base64.b64encode(value.encode("utf-8", "surrogateescape")).decode()}
    return value


@dataclass
class LoadResult:
    """What loading one table did."""

    rows: int
    rejected: int
    sent: LineDigest


class TableLoader:
    """Loads one table's rows over a psycopg2 cursor inside the import's transaction."""

    def __init__(
        self,
        source: SQLiteSource,
        table: TablePlan,
        rejects: RejectFile | None,
        *,
        batch_bytes: int,
        progress: Callable[[int], None] = lambda _rows: None,
    ) -> None:
        self.source = source
        self.table = table
        self.rejects = rejects
        self.batch_bytes = batch_bytes
        self.progress = progress
        self.converters = [column.converter for column in table.columns]
        self.names = [column.source.name for column in table.columns]
        targets = ", ".join(ident(column.target.name) for column in table.columns)
        self.copy_in = f"COPY {table.target.sql_name} ({targets}) FROM STDIN"
        self.copy_out = f"COPY {table.target.sql_name} ({targets}) TO STDOUT"
        self.rejected = 0
        self._reject_lock = threading.Lock()

    # -- converting ----------------------------------------------------------------------------

    def batches(self, *, record: bool = True) -> Iterator[tuple[list[bytes], list[tuple]]]:
        """(COPY lines, their source rows) per batch; bad rows are rejected (or stop the import)."""
        sizes = _BatchSizes(self.batch_bytes)
        for rows in self.source.rows(self.table.source, self.names, sizes):
            lines, kept = self.convert(rows, record)
            sizes.observe(sum(map(len, lines)), len(rows))
            yield lines, kept

    def convert(self, rows: list[tuple], record: bool = True) -> tuple[list[bytes], list[tuple]]:
        """COPY lines for a batch and the rows they came from (bad rows rejected, or raised)."""
        try:
            return self._fast(rows), rows
        except Exception:  # any surprise in the fast path: redo the batch value by value
            return self._careful(rows, record)

    def _fast(self, rows: list[tuple]) -> list[bytes]:
        columns = list(zip(*rows, strict=True))[1:]
        fields = [converter.column(values) for converter, values in zip(self.converters, columns, strict=True)]
        return list(map(str.encode, map("\t".join, zip(*fields, strict=True))))

    def _careful(self, rows: list[tuple], record: bool) -> tuple[list[bytes], list[tuple]]:
        lines, kept = [], []
        for row in rows:
            fields = []
            for index, (converter, value) in enumerate(zip(self.converters, row[1:], strict=True)):
                try:
                    fields.append(converter.one(value))
                except ConversionError as error:
                    self.reject(row, index, str(error), record=record)
                    break
            else:
                lines.append("\t".join(fields).encode())
                kept.append(row)
        return lines, kept

    def reject(self, row: tuple, index: int | None, reason: str, *, record: bool = True) -> None:
        """Set a row aside in the reject file, or stop the import with one line naming it."""
        column = self.table.columns[index] if index is not None else None
        if self.rejects is None:
            raise DataImportError(self.describe_bad_value(row, column, reason))
        if record:
            values = dict(zip(self.names, row[1:], strict=True))
            with self._reject_lock:  # the converting and the sending thread both reject rows
                self.rejects.write(
                    self.table.source.name, row[0], column.source.name if column else None, reason, values
                )
                self.rejected += 1

    def row_label(self, row: tuple) -> str:
        """'rowid 17', or the primary key of a WITHOUT ROWID table (unless it looks secret)."""
        if self.table.source.rowid:
            return f"rowid {row[0]}"
        key = self.table.source.primary_key
        if any(column.secret for column in self.table.columns if column.source.name in key):
            return "a row (its primary key is not shown: the column name suggests a secret)"
        return f"primary key {row[0]!r}"

    def describe_bad_value(self, row: tuple, column: ColumnPlan | None, reason: str) -> str:
        """The one line for a value that cannot be imported: table, row, column, types, why."""
        where = f"{self.table.source.name} {self.row_label(row)}"
        hint = " (fix it in the SQLite file, or pass --reject-file FILE to set such rows aside)"
        if column is None:
            return f"{where}: {reason}{hint}"
        value = row[1 + self.table.columns.index(column)]
        kind = storage_class(value)
        text = f"{where}, column {column.source.name} ({kind} → {column.target.type.display}): {reason}"
        if column.secret:
            text += "; value not shown (the column name suggests a secret)"
        elif value is not None:
            text += f"; value {shown(value)}"
        return text + hint

    # -- loading -------------------------------------------------------------------------------

    def load(self, cursor: Any) -> LoadResult:
        """Convert and COPY every row; return the count, rejects and the digest of what was sent."""
        sent = LineDigest()

        def send(lines: list[bytes], rows: list[tuple]) -> None:
            self._send(cursor, lines, rows)
            sent.add(lines)

        converted = 0
        with _Sender(send) as sender:
            for lines, rows in self.batches():
                converted += len(rows)
                if lines:
                    sender.put(lines, rows)
                self.progress(converted + self.rejected)
        return LoadResult(sent.count, self.rejected, sent)

    def _send(self, cursor: Any, lines: list[bytes], rows: list[tuple]) -> None:
        import psycopg2

        # Only errors about the data name a row; others (a lost connection) go up as they are.
        refused = (psycopg2.DataError, psycopg2.IntegrityError)
        if self.rejects is None:
            try:
                _copy(cursor, self.copy_in, lines)
            except refused as error:
                raise self._copy_error(error, rows) from None
            return
        while lines:
            cursor.execute("SAVEPOINT semantik_batch")
            try:
                _copy(cursor, self.copy_in, lines)
            except refused as error:
                cursor.execute("ROLLBACK TO SAVEPOINT semantik_batch")
                line, column = copy_error_position(error)
                if line is None or not 1 <= line <= len(lines):
                    raise self._copy_error(error, rows) from None
                index = self._column_index(column)
                visible = index is not None and not self.table.columns[index].secret
                self.reject(rows[line - 1], index, postgres_reason(error, visible))
                del rows[line - 1]
                converter = self.converters[index] if index is not None else None
                if getattr(converter, "validate", True) is False:
                    # A column left to PostgreSQL to check had a bad value: check it here from now
                    # on, so the rest are set aside in one pass instead of one retry each.
                    converter.validate = True  # type: ignore[union-attr]
                    lines[:], rows[:] = self.convert(rows)
                else:
                    del lines[line - 1]
                continue
            cursor.execute("RELEASE SAVEPOINT semantik_batch")
            return

    def _column_index(self, name: str | None) -> int | None:
        for index, column in enumerate(self.table.columns):
            if column.target.name == name:
                return index
        return None

    def _copy_error(self, error: Any, rows: list[tuple]) -> DataImportError:
        line, column_name = copy_error_position(error)
        index = self._column_index(column_name)
        column = self.table.columns[index] if index is not None else None
        secret = column is None or column.secret
        reason = postgres_reason(error, not secret)
        if line is not None and 1 <= line <= len(rows):
            return DataImportError(self.describe_bad_value(rows[line - 1], column, reason))
        return DataImportError(f"loading {self.table.target.label}: {reason}; nothing was imported")

    # -- verifying -----------------------------------------------------------------------------

    def read_back(self, cursor: Any, columns: bool = False) -> _DigestSink:
        """The digest of the table's rows as PostgreSQL prints them (per column too, if asked)."""
        sink = _DigestSink(len(self.table.columns) if columns else 0)
        cursor.copy_expert(self.copy_out, sink, size=1 << 20)
        sink.flush()
        return sink

    def differing_columns(self, cursor: Any) -> list[str]:
        """Which columns differ between the source (converted again) and the table read back."""
        source = [LineDigest() for _ in self.table.columns]
        for lines, _rows in self.batches(record=False):
            add_columns(source, lines)
        target = self.read_back(cursor, columns=True).columns
        return [column.target.name for column, a, b in zip(self.table.columns, source, target, strict=True) if a != b]


class _Sender:
    """A thread that sends batches (in order) while the caller converts the next one.

    The queue holds one batch, so at most three are in memory. A failure in the thread is raised in
    the caller at its next `put` or on leaving the block; leaving early (an error, Ctrl-C) stops the
    thread after the batch it is sending, so the connection is idle again before it is rolled back.
    """

    def __init__(self, send: Callable[[list[bytes], list[tuple]], None]) -> None:
        self._send = send
        self._queue: queue.Queue[tuple[list[bytes], list[tuple]] | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="copy-sender", daemon=True)

    def __enter__(self) -> _Sender:
        self._thread.start()
        return self

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None and not self._stopping:
                try:
                    self._send(*item)
                except BaseException as error:  # handed to the caller, who decides
                    self._error = error

    def put(self, lines: list[bytes], rows: list[tuple]) -> None:
        """Queue a batch (waits while the previous one is still queued)."""
        if self._error is not None:
            raise self._error
        self._queue.put((lines, rows))

    def __exit__(self, kind: type | None, *_rest: object) -> None:
        self._stopping = kind is not None
        self._queue.put(None)
        self._thread.join()
        if self._error is not None and kind is None:
            raise self._error


def _copy(cursor: Any, statement: str, lines: list[bytes]) -> None:
    data = b"\n".join(lines) + b"\n"
    cursor.copy_expert(statement, io.BytesIO(data), size=len(data))


def copy_error_position(error: Any) -> tuple[int | None, str | None]:
    """(line, column) of the row COPY FROM rejected, from the error's context, if it says."""
    context = getattr(getattr(error, "diag", None), "context", None) or ""
    match = _COPY_CONTEXT.search(context)
    if match is None:
        return None, getattr(getattr(error, "diag", None), "column_name", None)
    return int(match.group(1)), (match.group(2) or "").strip() or None


def postgres_reason(error: Any, show_message: bool) -> str:
    """Why PostgreSQL refused a row, without the value (unless `show_message`: its primary message)."""
    diag = getattr(error, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    code = getattr(error, "pgcode", None) or ""
    if code == "23505":
        return f"PostgreSQL refused it: duplicate key for unique constraint {constraint}"
    if code == "23514":
        return f"PostgreSQL refused it: violates check constraint {constraint}"
    if code == "23502":
        return "PostgreSQL refused it: NULL in a NOT NULL column"
    if code == "23503":
        return f"PostgreSQL refused it: violates foreign key {constraint}"
    message = (getattr(diag, "message_primary", None) or "").strip()
    if show_message and message:
        return f"PostgreSQL refused it: {message[:200]}"
    return f"PostgreSQL refused it (SQLSTATE {code or 'unknown'})"


def shown(value: object) -> str:
    """A short, safe rendering of a value for an error line."""
    if isinstance(value, bytes):
        head = value[: SHOWN_CHARACTERS // 2].hex()
        return f"x'{head}'" + ("…" if len(value) > SHOWN_CHARACTERS // 2 else "") + f" ({len(value)} bytes)"
    if isinstance(value, str):
        try:
            value.encode()
            text = value
        except UnicodeEncodeError:
            text = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return repr(text[:SHOWN_CHARACTERS]) + ("…" if len(text) > SHOWN_CHARACTERS else "")
    return repr(value)


class _BatchSizes:
    """How many rows to fetch next so a batch stays near `budget` bytes of COPY text."""

    def __init__(self, budget: int, first: int = 256, most: int = 50_000) -> None:
        self.budget, self.most, self.next = budget, most, first

    def __iter__(self) -> _BatchSizes:
        return self

    def __next__(self) -> int:
        return self.next

    def observe(self, size: int, rows: int) -> None:
        """Adjust after a batch of `rows` rows came to `size` bytes."""
        if rows:
            per_row = max(size / rows, 1.0)
            self.next = max(1, min(self.most, int(self.budget / per_row)))
