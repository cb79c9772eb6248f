"""Reading an SQLite file for an import: safely, read-only, and from one consistent snapshot. The
file is opened with `mode=ro` (SQLite never writes to it, not even to roll back a journal) and
everything — schema, row counts, every row — is read inside one read transaction, so a running
application's later writes are not half-seen; in WAL mode the application keeps writing
undisturbed (the WAL is read as SQLite always does), in rollback-journal mode its writes wait until
the import has read the file. Text comes back with invalid UTF-8 bytes kept (as surrogate escapes)
so the converters decide what to do with them and no error message ever quotes a value. Bad files
(missing, not SQLite, encrypted, corrupt, locked, empty) become one `DataImportError` line."""

from __future__ import annotations

import contextlib
import functools
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from semantik_infra.errors import DataImportError

HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 10.0
_ROWID_ALIASES = ("rowid", "_rowid_", "oid")


@dataclass(frozen=True)
class SourceColumn:
    """A column as `PRAGMA table_xinfo` describes it."""

    name: str
    declared: str
    not_null: bool
    default: str | None
    pk: int  # position in the primary key, 0 if not part of it
    generated: bool = False


@dataclass(frozen=True)
class SourceIndex:
    """An index or UNIQUE constraint; `columns` is empty when it is on an expression."""

    name: str
    unique: bool
    origin: str  # 'c' CREATE INDEX, 'u' UNIQUE constraint, 'pk' primary key
    columns: tuple[tuple[str, bool], ...]  # (column, descending)
    partial: bool
    expression: bool


@dataclass(frozen=True)
class SourceForeignKey:
    """A FOREIGN KEY clause; `parent_columns` is empty when it names the parent's primary key."""

    columns: tuple[str, ...]
    parent: str
    parent_columns: tuple[str, ...]
    on_update: str
    on_delete: str


@dataclass(frozen=True)
class SourceTable:
    """A table to import: its columns, keys, indexes and how to address its rows."""

    name: str
    columns: tuple[SourceColumn, ...]
    rowid: str | None  # the name that selects the rowid, None for WITHOUT ROWID tables
    integer_pk: str | None  # the INTEGER PRIMARY KEY column (an alias of the rowid)
    autoincrement: int | None  # sqlite_sequence's value for AUTOINCREMENT tables
    indexes: tuple[SourceIndex, ...] = ()
    foreign_keys: tuple[SourceForeignKey, ...] = ()
    has_check: bool = False

    @property
    def primary_key(self) -> tuple[str, ...]:
        """The primary key's columns in key order."""
        return tuple(column.name for column in sorted(self.columns, key=lambda c: c.pk) if column.pk)


@dataclass
class SourceSchema:
    """Every importable table, and what the file holds that is not imported."""

    tables: list[SourceTable] = field(default_factory=list)
    not_imported: list[str] = field(default_factory=list)  # views, triggers, virtual tables


def quote(name: str) -> str:
    """An SQLite identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


class SQLiteSource:
    """A read-only snapshot of one SQLite file; close() ends it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        check_file(path)
        uri = path.resolve().as_uri() + "?mode=ro"
        try:
            self.connection = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as error:
            raise source_error(path, error) from None
        # Text as str with undecodable bytes kept as surrogates: no decode error can quote a value.
        self.connection.text_factory = functools.partial(str, encoding="utf-8", errors="surrogateescape")
        with self.errors():
            self.connection.execute("BEGIN")
            # The first read takes the snapshot every later read sees.
            self.connection.execute("SELECT count(*) FROM sqlite_master").fetchone()

    def close(self) -> None:
        """End the read transaction and close the file."""
        with contextlib.suppress(sqlite3.Error):
            self.connection.close()

    def errors(self, doing: str = "") -> _ErrorContext:
        """A context turning sqlite3 errors into one DataImportError line."""
        return _ErrorContext(self.path, doing)

    def schema(self) -> SourceSchema:
        """Every ordinary table (not sqlite_*, virtual or shadow tables) and the objects not imported."""
        schema = SourceSchema()
        with self.errors("reading the schema"):
            entries = self.connection.execute(
                "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master ORDER BY rowid"
            ).fetchall()
            shadow = self._shadow_tables()
            for kind, name, _table, sql in entries:
                if name.startswith("sqlite_"):
                    continue
                if kind == "table" and not sql.upper().startswith("CREATE VIRTUAL") and name not in shadow:
                    schema.tables.append(self._table(name, sql))
                elif kind in ("view", "trigger") or (kind == "table" and name not in shadow):
                    schema.not_imported.append(f"{'virtual table' if kind == 'table' else kind} {name}")
        return schema

    def _shadow_tables(self) -> set[str]:
        try:
            return {
                row[0] for row in self.connection.execute("SELECT name FROM pragma_table_list WHERE type = 'shadow'")
            }
        except sqlite3.OperationalError:  # SQLite before 3.37 has no table_list
            return set()

    def _table(self, name: str, sql: str) -> SourceTable:
        execute = self.connection.execute
        columns = tuple(
            SourceColumn(cname, ctype or "", bool(notnull), default, pk, hidden in (2, 3))
            for _cid, cname, ctype, notnull, default, pk, hidden in execute(
                f"PRAGMA table_xinfo({quote(name)})"
            ).fetchall()
            if hidden != 1
        )
        names = {column.name.lower() for column in columns}
        rowid = None
        for alias in _ROWID_ALIASES:
            if alias in names:
                continue
            try:
                execute(f"SELECT {alias} FROM {quote(name)} LIMIT 0")
                rowid = alias
                break
            except sqlite3.OperationalError:  # WITHOUT ROWID
                break
        pk = [column for column in columns if column.pk]
        integer_pk = pk[0].name if rowid and len(pk) == 1 and pk[0].declared.upper() == "INTEGER" else None
        autoincrement = None
        if re.search(r"\bAUTOINCREMENT\b", sql, re.IGNORECASE):
            row = execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (name,)).fetchone()
            autoincrement = int(row[0]) if row else 0
        return SourceTable(
            name=name,
            columns=columns,
            rowid=rowid,
            integer_pk=integer_pk,
            autoincrement=autoincrement,
            indexes=self._indexes(name),
            foreign_keys=self._foreign_keys(name),
            has_check=re.search(r"\bCHECK\s*\(", sql, re.IGNORECASE) is not None,
        )

    def _indexes(self, table: str) -> tuple[SourceIndex, ...]:
        execute = self.connection.execute
        indexes = []
        for _seq, name, unique, origin, partial in execute(f"PRAGMA index_list({quote(table)})").fetchall():
            columns, expression = [], False
            for _seqno, cid, cname, desc, _coll, key in execute(f"PRAGMA index_xinfo({quote(name)})").fetchall():
                if not key:
                    continue
                if cid == -2:
                    expression = True
                elif cname is not None:
                    columns.append((cname, bool(desc)))
            indexes.append(SourceIndex(name, bool(unique), origin, tuple(columns), bool(partial), expression))
        return tuple(sorted(indexes, key=lambda index: index.name))

    def _foreign_keys(self, table: str) -> tuple[SourceForeignKey, ...]:
        grouped: dict[int, list[tuple]] = {}
        for row in self.connection.execute(f"PRAGMA foreign_key_list({quote(table)})").fetchall():
            grouped.setdefault(row[0], []).append(row)
        keys = []
        for _id, rows in sorted(grouped.items()):
            rows.sort(key=lambda row: row[1])
            parent_columns = tuple(row[4] for row in rows if row[4] is not None)
            keys.append(
                SourceForeignKey(
                    columns=tuple(row[3] for row in rows),
                    parent=rows[0][2],
                    parent_columns=parent_columns if len(parent_columns) == len(rows) else (),
                    on_update=rows[0][5],
                    on_delete=rows[0][6],
                )
            )
        return tuple(keys)

    def count(self, table: SourceTable) -> int:
        """The number of rows in a table."""
        with self.errors(f"counting the rows of {table.name}"):
            return int(self.connection.execute(f"SELECT count(*) FROM {quote(table.name)}").fetchone()[0])

    def storage_classes(self, table: SourceTable) -> dict[str, dict[str, int]]:
        """Per column, how many values of each storage class it holds (one pass over the table)."""
        parts = []
        for column in table.columns:
            for kind in ("integer", "real", "text", "blob", "null"):
                parts.append(f"sum(typeof({quote(column.name)}) = '{kind}')")
        if not parts:
            return {}
        with self.errors(f"reading {table.name}"):
            sums = self.connection.execute(f"SELECT {', '.join(parts)} FROM {quote(table.name)}").fetchone()
        counts: dict[str, dict[str, int]] = {}
        values = iter(sums)
        for column in table.columns:
            counts[column.name] = {kind: int(next(values) or 0) for kind in ("integer", "real", "text", "blob", "null")}
        return counts

    def rows(self, table: SourceTable, columns: list[str], batch: Iterator[int]) -> Iterator[list[tuple]]:
        """Batches of rows: (row id, *columns), in rowid (or primary key) order.

        `batch` yields how many rows to fetch next, so the caller can keep batches to a byte budget.
        The row id is the rowid, or for a WITHOUT ROWID table the primary key as a tuple.
        """
        key = quote(table.rowid) if table.rowid else _key_expression(table)
        selected = ", ".join(quote(name) for name in columns) or "NULL"
        with self.errors(f"reading {table.name}"):
            cursor = self.connection.execute(f"SELECT {key}, {selected} FROM {quote(table.name)}")
            while rows := cursor.fetchmany(next(batch)):
                yield rows


def _key_expression(table: SourceTable) -> str:
    # WITHOUT ROWID tables have a primary key; it names the row in messages.
    key = table.primary_key
    if len(key) == 1:
        return quote(key[0])
    return "json_array(" + ", ".join(quote(name) for name in key) + ")"


class _ErrorContext:
    def __init__(self, path: Path, doing: str) -> None:
        self.path, self.doing = path, doing

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, _tb: object) -> None:
        if isinstance(error, sqlite3.Error):
            raise source_error(self.path, error, self.doing) from None


def check_file(path: Path) -> None:
    """Refuse, in one line, a path that is not a readable SQLite database file."""
    try:
        with path.open("rb") as stream:
            header = stream.read(len(HEADER))
    except FileNotFoundError:
        raise DataImportError(f"{path}: no such file (pass the SQLite file's path, or set SQLITE_PATH)") from None
    except IsADirectoryError:
        raise DataImportError(f"{path}: is a directory, not an SQLite file") from None
    except PermissionError:
        raise DataImportError(f"{path}: not readable by this user (check its owner and mode)") from None
    except OSError as error:
        raise DataImportError(f"{path}: cannot be read ({error.strerror})") from None
    if not header:
        raise DataImportError(f"{path}: is empty (0 bytes): there is nothing to import")
    if header != HEADER:
        raise DataImportError(
            f"{path}: not an SQLite database (no SQLite header; if it is encrypted, e.g. with SQLCipher, decrypt it"
            " first)"
        )


_CAUSES = {
    "SQLITE_NOTADB": "not an SQLite database, or an encrypted one (decrypt it first)",
    "SQLITE_CORRUPT": "the file is corrupt (try `sqlite3 FILE .recover`, or restore it from a backup)",
    "SQLITE_BUSY": "locked by another process (stop the application, or retry when it is idle)",
    "SQLITE_LOCKED": "locked by another process (stop the application, or retry when it is idle)",
    "SQLITE_CANTOPEN": "cannot be opened read-only (its directory must be readable, and writable if it is in WAL"
    " mode without a -shm file)",
    "SQLITE_READONLY_RECOVERY": "needs recovery after a crash: open it once with the application or sqlite3",
    "SQLITE_READONLY_ROLLBACK": "has a journal left by a crashed writer: open it once with the application or sqlite3",
    "SQLITE_IOERR": "an I/O error while reading it",
}


def source_error(path: Path, error: sqlite3.Error, doing: str = "") -> DataImportError:
    """The one-line error for an sqlite3 exception (SQLite's messages never hold values here)."""
    name = getattr(error, "sqlite_errorname", "") or ""
    parts = name.split("_")
    # The most specific known name: SQLITE_IOERR_SHORT_READ is an SQLITE_IOERR.
    cause = next((_CAUSES[key] for n in range(len(parts), 1, -1) if (key := "_".join(parts[:n])) in _CAUSES), None)
    if cause is None:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        cause = f"SQLite says: {text}"
    where = f" while {doing}" if doing else ""
    return DataImportError(f"{path}: {cause}{where}")
