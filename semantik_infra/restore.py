"""Restoring a backup without risking the live database. The archive is verified (checksum,
decryptability, table of contents) before any database is touched; pg_restore then fills a new
scratch database, and only when it finished without error is the scratch database swapped in
(live connections terminated, live renamed to `<db>_before_restore_<time>`, scratch renamed to
`<db>`). A failed or interrupted restore drops the scratch database and leaves the live one as it
was. `in_place` (clean + restore into the live database) exists for users who ask for it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from semantik_infra import proc
from semantik_infra.backends.base import Backend
from semantik_infra.backup import (
    BackupEntry,
    archive_reader,
    list_backups,
    parse_archive_name,
    verify_archive,
)
from semantik_infra.config import Settings
from semantik_infra.console import Timer
from semantik_infra.errors import BackupError, ConfigError

RENAME_ATTEMPTS = 10


@dataclass
class RestoreResult:
    """What a restore did: the archive, the database, the kept old copy, and per-table rows."""

    archive: Path
    database: str
    previous: str | None
    dropped_previous: bool
    seconds: float
    tables: dict[str, tuple[int, int | None]] = field(default_factory=dict)  # name -> (rows now, manifest estimate)
    verification: str = ""


def resolve_archive(settings: Settings, which: str) -> BackupEntry:
    """`latest` (the newest archive of the configured database) or a path, as a BackupEntry."""
    directory = settings.backup.directory
    database = settings.database.database or "postgres"
    if which == "latest":
        ours = [entry for entry in list_backups(directory) if entry.database == database]
        if not ours:
            raise BackupError(f"no backups of {database} in {directory}: run `inv postgres.backup` first")
        return ours[-1]
    path = Path(which).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, directory / path]
    found = next((candidate for candidate in candidates if candidate.exists()), None)
    if found is None:
        raise ConfigError(f"{which}: no such archive (looked in {' and '.join(str(c.parent) for c in candidates)})")
    for entry in list_backups(found.parent):
        if entry.path.resolve() == found.resolve():
            return entry
    parsed = parse_archive_name(found.name)
    created = parsed[1] if parsed else datetime.fromtimestamp(found.stat().st_mtime, UTC)
    return BackupEntry(found, parsed[0] if parsed else database, created, None, "no manifest")


def _admin(settings: Settings) -> Any:
    import psycopg2

    connection = psycopg2.connect(
        **settings.database.with_database("postgres").libpq_params(), connect_timeout=str(settings.connect_timeout)
    )
    connection.autocommit = True
    return connection


def _exists(cursor: Any, name: str) -> bool:
    cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
    return cursor.fetchone() is not None


def _terminate(cursor: Any, name: str) -> None:
    cursor.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )


def drop_database(settings: Settings, name: str) -> None:
    """Terminate a database's sessions and drop it (used for scratch and old copies)."""
    from psycopg2 import sql

    connection = _admin(settings)
    try:
        with connection.cursor() as cursor:
            _when_idle(cursor, name, sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    finally:
        connection.close()


def restore_backup(
    settings: Settings,
    backend: Backend,
    entry: BackupEntry,
    *,
    jobs: int = 1,
    in_place: bool = False,
    drop_old: bool = False,
    report: Callable[[str, float | None], None] = lambda _t, _s=None: None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RestoreResult:
    """Verify `entry`, restore it into a scratch database, then swap it in (or clean-restore in place)."""
    started = time.monotonic()
    manifest = entry.manifest
    key = None
    if manifest is not None and manifest.encrypted:
        from semantik_infra.encryption import parse_key

        key = parse_key(settings.backup.encryption_key.reveal())
    if manifest is not None:
        verification = verify_archive(backend, entry, key)
    else:
        from semantik_infra.backup import count_toc_entries, read_toc

        count = count_toc_entries(read_toc(backend, entry.path, None))
        verification = f"no manifest: checksum not checked; {count} TOC entries readable"
    report(f"verified {entry.path.name}: {verification}", time.monotonic() - started)

    live = settings.database.database or "postgres"
    stamp = clock().strftime("%Y%m%d%H%M%S")
    target = live if in_place else f"{live}_restore_{stamp}"
    previous = None if in_place else f"{live}_before_restore_{stamp}"
    if not in_place:
        _create_scratch(settings, target)
    try:
        with Timer() as timer:
            _run_pg_restore(backend, entry.path, key, target, jobs=jobs, clean=in_place)
        report(f"pg_restore into {target} finished", timer.seconds)
        tables = _row_counts(settings, target, entry)
    except BaseException:
        if not in_place:
            # Report the restore's own failure; a scratch database left behind is harmless and named.
            with contextlib.suppress(Exception):
                drop_database(settings, target)
        raise
    if not in_place:
        assert previous is not None
        previous = _swap(settings, live, target, previous)
        if previous:
            report(f"swapped in: {live} is the restored database; the old one is kept as {previous}", None)
        else:
            report(f"created {live} from the archive (there was no live database)", None)
    dropped = False
    if drop_old and previous:
        drop_database(settings, previous)
        dropped = True
        report(f"dropped {previous}", None)
    return RestoreResult(entry.path, live, previous, dropped, time.monotonic() - started, tables, verification)


def _create_scratch(settings: Settings, name: str) -> None:
    from psycopg2 import sql

    connection = _admin(settings)
    try:
        with connection.cursor() as cursor:
            if _exists(cursor, name):
                raise BackupError(f"database {name} already exists: another restore is running, or drop it")
            cursor.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name))
            )
    except Exception as error:
        if isinstance(error, BackupError):
            raise
        raise BackupError(
            f"cannot create the scratch database {name} ({str(error).strip().splitlines()[0]}):"
            " the configured user needs CREATEDB, or use --in-place"
        ) from None
    finally:
        connection.close()


def _run_pg_restore(
    backend: Backend, archive: Path, key: bytes | None, database: str, *, jobs: int, clean: bool
) -> None:
    args = ["--no-owner", "--exit-on-error", "--dbname", database]
    if clean:
        args += ["--clean", "--if-exists"]
    seekable = key is None and backend.name != "docker"
    if jobs > 1 and seekable:
        args += ["--jobs", str(jobs)]
    else:
        # One transaction: an error or Ctrl-C leaves nothing half-restored in the target.
        args.append("--single-transaction")
    if archive.is_dir() or (seekable and jobs > 1):
        result = proc.run(backend.client_command("pg_restore", [*args, str(archive)], database=database), check=False)
        status, errors = result.returncode, result.stderr
    else:
        with archive_reader(archive, key) as source:
            status, _, errors = proc.feed_from(backend.client_command("pg_restore", args, database=database), source)
    if status != 0:
        raise BackupError(f"pg_restore failed: {proc.last_line(errors) or f'exit status {status}'}")


def _row_counts(settings: Settings, database: str, entry: BackupEntry) -> dict[str, tuple[int, int | None]]:
    import psycopg2
    from psycopg2 import sql

    estimates = entry.manifest.tables if entry.manifest else {}
    names = list(estimates) or []
    connection = psycopg2.connect(
        **settings.database.with_database(database).libpq_params(), connect_timeout=str(settings.connect_timeout)
    )
    try:
        with connection.cursor() as cursor:
            if not names:
                cursor.execute(
                    "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                )
                names = [row[0] for row in cursor.fetchall()]
            counts = {}
            for name in names:
                schema, _, table = name.partition(".")
                cursor.execute(
                    sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table))
                )
                counts[name] = (int(cursor.fetchone()[0]), estimates.get(name))
    finally:
        connection.close()
    return counts


def _swap(settings: Settings, live: str, scratch: str, previous: str) -> str | None:
    from psycopg2 import sql

    def ident(name: str) -> sql.Identifier:
        return sql.Identifier(name)

    connection = _admin(settings)
    try:
        with connection.cursor() as cursor:
            if not _exists(cursor, live):
                cursor.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(scratch), ident(live)))
                return None
            # Block new sessions first, or the app reconnects between terminate and rename.
            cursor.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(ident(live)))
            try:
                _when_idle(cursor, live, sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(live), ident(previous)))
            except BaseException:
                cursor.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(ident(live)))
                raise
            try:
                cursor.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(scratch), ident(live)))
            except BaseException:
                cursor.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(previous), ident(live)))
                cursor.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(ident(live)))
                raise
            cursor.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(ident(previous)))
            return previous
    finally:
        connection.close()


def _when_idle(cursor: Any, name: str, statement: Any) -> None:
    """Run a statement that needs `name` to have no sessions, terminating them first.

    Termination is asynchronous, so a session may linger for a moment: retry briefly.
    """
    import psycopg2

    for attempt in range(RENAME_ATTEMPTS):
        _terminate(cursor, name)
        try:
            cursor.execute(statement)
            return
        except psycopg2.errors.ObjectInUse:
            time.sleep(0.1 * (attempt + 1))
    raise BackupError(f"{name} still has sessions after {RENAME_ATTEMPTS} attempts: stop the app and retry")


def describe_tables(tables: dict[str, tuple[int, int | None]]) -> list[str]:
    """Lines comparing restored row counts with the manifest's estimates."""
    lines = []
    for name, (rows, estimate) in sorted(tables.items()):
        expected = "no estimate" if estimate is None else f"manifest estimate {estimate}"
        lines.append(f"  {name}: {rows} rows ({expected})")
    return lines
