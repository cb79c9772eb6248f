"""Restore drills: proof that a backup restores. A drill verifies an archive, counts the rows each
table holds in the archive's own data stream (not the manifest's planner estimates), restores it
into a throwaway database beside the live one (which it never touches), compares every table's
exact row count and every sequence with the archive, and drops the throwaway database, also when
interrupted. The outcome is recorded beside the archive (`<archive>.drill.json`), so listings and
the doctor can say when each backup was last proven and warn about stale or unproven ones."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from semantik_infra.backends.base import Reporter, quiet
from semantik_infra.errors import BackupError

DRILL_SUFFIX = ".drill.json"
_SETVAL = re.compile(r"setval\('((?:[^']|'')+)',\s*(-?\d+),\s*(true|false)\)")


@dataclass(frozen=True)
class DrillRecord:
    """The outcome of one drill, as recorded beside the archive."""

    archive: str
    drilled: str
    seconds: float
    ok: bool
    tables: int
    rows: int
    problems: list[str] = field(default_factory=list)

    @property
    def when(self) -> datetime:
        """When the drill ran."""
        return datetime.fromisoformat(self.drilled)

    def to_json(self) -> str:
        """The record as JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


# --- pure ----------------------------------------------------------------------------------


def drill_path(archive: Path) -> Path:
    """Where an archive's drill record lives."""
    return archive.with_name(archive.name + DRILL_SUFFIX)


def parse_record(text: str) -> DrillRecord | None:
    """A drill record, or None when the file is not one (a damaged record proves nothing)."""
    try:
        data = json.loads(text)
        record = DrillRecord(**{key: data[key] for key in DrillRecord.__dataclass_fields__ if key in data})
        record.when  # noqa: B018 - validates the timestamp
    except (ValueError, TypeError, KeyError):
        return None
    return record


def read_record(archive: Path) -> DrillRecord | None:
    """The archive's last drill, or None if it was never drilled (or the record is unreadable)."""
    try:
        return parse_record(drill_path(archive).read_text(encoding="utf-8"))
    except OSError:
        return None


def expected_sequences(entries: list[Any]) -> dict[tuple[str, str], tuple[int, bool]]:
    """(schema, sequence) -> (value, is_called) from the archive's SEQUENCE SET entries."""
    found = {}
    for entry in entries:
        if entry.desc != "SEQUENCE SET":
            continue
        match = _SETVAL.search(entry.defn or "")
        if match:
            found[(entry.namespace or "", entry.tag)] = (int(match.group(2)), match.group(3) == "true")
    return found


def compare(
    archive_rows: dict[tuple[str, str], int],
    restored_rows: dict[tuple[str, str], int],
    archive_sequences: dict[tuple[str, str], tuple[int, bool]],
    restored_sequences: dict[tuple[str, str], tuple[int, bool]],
) -> list[str]:
    """Every difference between what the archive holds and what the restore produced, one line each."""
    from semantik_infra.dumpfile import quote_identifier

    def name(key: tuple[str, str]) -> str:
        return f"{quote_identifier(key[0])}.{quote_identifier(key[1])}"

    problems = []
    for key, rows in sorted(archive_rows.items()):
        got = restored_rows.get(key)
        if got is None:
            problems.append(f"table {name(key)}: {rows} rows in the archive, missing after the restore")
        elif got != rows:
            problems.append(f"table {name(key)}: {rows} rows in the archive, {got} after the restore")
    for key, (value, called) in sorted(archive_sequences.items()):
        got_seq = restored_sequences.get(key)
        if got_seq is None:
            problems.append(f"sequence {name(key)}: missing after the restore")
        elif got_seq != (value, called):
            problems.append(f"sequence {name(key)}: {value} in the archive, {got_seq[0]} after the restore")
    return problems


def staleness(
    newest_created: datetime | None, last_drill: DrillRecord | None, *, now: datetime, max_age_days: float
) -> list[str]:
    """Warnings about the newest backup: too old, never drilled, or its last drill failed."""
    if newest_created is None:
        return []
    warnings = []
    age = now - newest_created
    if age > timedelta(days=max_age_days):
        warnings.append(f"the newest backup is {age.days} days old (BACKUP_MAX_AGE_DAYS={max_age_days:g})")
    if last_drill is None:
        warnings.append("the newest backup was never drilled: run `inv postgres.drill latest`")
    elif not last_drill.ok:
        warnings.append(f"the newest backup's last drill failed ({last_drill.drilled}): run `inv postgres.drill`")
    return warnings


def write_record(archive: Path, record: DrillRecord) -> None:
    """Record a drill beside the archive, atomically."""
    from semantik_infra.envfile import atomic_writer

    with atomic_writer(drill_path(archive), mode=0o644) as stream:
        stream.write(record.to_json().encode())


def now_utc() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC)


# --- the server half -------------------------------------------------------------------------


def count_archive_rows(entry: Any, key: bytes | None) -> tuple[Any, dict[tuple[str, str], int]]:
    """Read the archive once: check its checksum against the manifest (when it has one) and count the
    COPY rows of every table in its data stream; (DumpFile, (schema, table) -> rows)."""
    from semantik_infra.backup import checked_reader
    from semantik_infra.dumpfile import count_rows

    if entry.path.is_dir():
        raise BackupError(f"{entry.path.name}: drills read custom-format archives, not directory ones")
    with checked_reader(entry, key) as reader:
        dump, rows = count_rows(reader)
    tables = dump.table_data()
    return dump, {(tables[dump_id].namespace or "", tables[dump_id].tag): count for dump_id, count in rows.items()}


def _restored_facts(
    settings: Any, database: str, tables: list[tuple[str, str]], sequences: list[tuple[str, str]]
) -> tuple[dict[tuple[str, str], int], dict[tuple[str, str], tuple[int, bool]]]:
    import psycopg2
    from psycopg2 import sql

    from semantik_infra.restore import database_errors

    action = f"cannot count the rows restored into {database}"
    with database_errors(action):
        connection = psycopg2.connect(
            **settings.database.with_database(database).libpq_params(), connect_timeout=str(settings.connect_timeout)
        )
    rows: dict[tuple[str, str], int] = {}
    values: dict[tuple[str, str], tuple[int, bool]] = {}
    try:
        with database_errors(action), connection.cursor() as cursor:
            for schema, table in tables:
                try:
                    cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table)))
                    rows[(schema, table)] = int(cursor.fetchone()[0])
                except psycopg2.errors.UndefinedTable:
                    connection.rollback()
            for schema, sequence in sequences:
                try:
                    cursor.execute(
                        sql.SQL("SELECT last_value, is_called FROM {}").format(sql.Identifier(schema, sequence))
                    )
                    value, called = cursor.fetchone()
                    values[(schema, sequence)] = (int(value), bool(called))
                except psycopg2.errors.UndefinedTable:
                    connection.rollback()
    finally:
        connection.close()
    return rows, values


def drill_backup(
    settings: Any,
    backend: Any,
    entry: Any,
    *,
    report: Reporter = quiet,
    clock: Callable[[], datetime] = now_utc,
) -> DrillRecord:
    """Prove `entry` restores: verify and count it, restore it into a throwaway database, compare
    every table and sequence, drop the throwaway database (also when interrupted), record the outcome."""
    import time

    from semantik_infra.backup import manifest_key_source, precheck
    from semantik_infra.dbprops import create_scratch_database, read_database_properties
    from semantik_infra.encryption import is_encrypted
    from semantik_infra.leftovers import RestoreLock
    from semantik_infra.restore import (
        admin_connection,
        database_errors,
        drop_database,
        restore_names,
        run_pg_restore,
    )

    started = time.monotonic()
    key = manifest_key_source(settings)
    if entry.manifest is not None or entry.manifest_error:
        precheck(entry, key)
    encrypted = entry.manifest.encrypted if entry.manifest else entry.path.is_file() and is_encrypted(entry.path)
    if encrypted and key is None:
        raise BackupError(f"{entry.path.name} is encrypted: set BACKUP_ENCRYPTION_KEY to its key")
    stream_key = key if encrypted else None
    dump, archive_rows = count_archive_rows(entry, stream_key)
    archive_sequences = expected_sequences(dump.entries)
    checked = "checksum ok" if entry.manifest is not None else "no manifest: checksum not checked"
    report(f"read {entry.path.name}: {checked}, {len(archive_rows)} tables, {sum(archive_rows.values())} rows", None)

    live = settings.database.database or "postgres"
    holder = admin_connection(settings, live)
    throwaway = ""
    try:
        cursor = holder.cursor()
        with database_errors("cannot list databases"):
            cursor.execute("SELECT datname FROM pg_database")
            taken = {row[0] for row in cursor.fetchall()}
        throwaway = restore_names(live, clock(), taken)[0]
        RestoreLock(cursor).claim_scratch(throwaway)  # `postgres.leftovers` never drops it while we run
        properties = read_database_properties(backend, entry.path, stream_key)
        create_scratch_database(settings, throwaway, properties)
        restore_started = time.monotonic()
        run_pg_restore(
            backend,
            entry,
            stream_key,
            throwaway,
            jobs=1,
            clean=False,
            privileges=False,
            tag="",
            progress=None,
            check=False,
            report=report,
        )
        report(f"restored into the throwaway database {throwaway}", time.monotonic() - restore_started)
        restored_rows, restored_sequences = _restored_facts(
            settings, throwaway, sorted(archive_rows), sorted(archive_sequences)
        )
    finally:
        if throwaway:
            try:
                drop_database(settings, throwaway)
            except BackupError as error:
                report(
                    f"the throwaway database {throwaway} is left behind ({error}): `inv postgres.leftovers --drop`",
                    None,
                )
        holder.close()
    problems = compare(archive_rows, restored_rows, archive_sequences, restored_sequences)
    record = DrillRecord(
        archive=entry.path.name,
        drilled=clock().isoformat(),
        seconds=round(time.monotonic() - started, 3),
        ok=not problems,
        tables=len(archive_rows),
        rows=sum(archive_rows.values()),
        problems=problems,
    )
    write_record(entry.path, record)
    return record
