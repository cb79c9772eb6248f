"""Restoring a backup without risking the live database. The archive is verified (checksum,
decryptability, table of contents) before any database is touched; pg_restore then fills a new
scratch database, and only when it finished without error is the scratch database swapped in
(new sessions blocked, live connections terminated, then in one transaction live renamed to
`<db>_before_restore_<time>` and scratch renamed to `<db>`, so there is never a moment without
`<db>`). A failed or interrupted restore drops the scratch database and leaves the live one as it
was. `in_place` (clean + restore into the live database) exists for users who ask for it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from semantik_infra import proc
from semantik_infra.backends.base import Backend, Reporter, quiet
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
# PostgreSQL silently truncates longer identifiers, after which lookups by the full name miss.
MAX_IDENTIFIER_BYTES = 63


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


def restore_names(live: str, when: datetime, taken: Collection[str]) -> tuple[str, str]:
    """(scratch, previous) database names for restoring `live`: `<db>_restore_<time>` and
    `<db>_before_restore_<time>`, unused in `taken`, the `<db>` part shortened to fit 63 bytes."""
    stamp = when.strftime("%Y%m%d%H%M%S")
    for attempt in range(1, 100):
        suffix = stamp if attempt == 1 else f"{stamp}_{attempt}"
        scratch = _fit(live, f"_restore_{suffix}")
        previous = _fit(live, f"_before_restore_{suffix}")
        if scratch not in taken and previous not in taken:
            return scratch, previous
    raise BackupError(f"too many databases named {live}_restore_{stamp}…: drop the leftovers")


def _fit(prefix: str, suffix: str) -> str:
    budget = MAX_IDENTIFIER_BYTES - len(suffix.encode())
    return prefix.encode()[:budget].decode("utf-8", "ignore") + suffix


def maintenance_database(live: str) -> str:
    """The database to connect to while renaming `live` (a session cannot rename its own database)."""
    return "template1" if live == "postgres" else "postgres"


@contextlib.contextmanager
def database_errors(action: str) -> Iterator[None]:
    """Turn a driver error into one BackupError line: what we were doing and why it failed."""
    import psycopg2

    try:
        yield
    except psycopg2.Error as error:
        from semantik_infra.database import classify

        raise BackupError(f"{action}: {classify(error).cause}") from None


def _admin(settings: Settings, live: str) -> Any:
    import psycopg2

    with database_errors(f"cannot connect to {settings.database.redacted()}"):
        connection = psycopg2.connect(
            **settings.database.with_database(maintenance_database(live)).libpq_params(),
            connect_timeout=str(settings.connect_timeout),
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

    connection = _admin(settings, name)
    try:
        with database_errors(f"cannot drop database {name}"), connection.cursor() as cursor:
            _when_idle(cursor, name, sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    finally:
        connection.close()


def _drop_scratch(settings: Settings, name: str, report: Reporter) -> None:
    # Best effort while another error is on its way out: that error is the one to show.
    try:
        drop_database(settings, name)
    except BackupError as error:
        report(f"the scratch database {name} is left behind ({error}): drop it with DROP DATABASE", None, "warn")


def restore_backup(
    settings: Settings,
    backend: Backend,
    entry: BackupEntry,
    *,
    jobs: int = 1,
    in_place: bool = False,
    drop_old: bool = False,
    privileges: bool = True,
    report: Reporter = quiet,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RestoreResult:
    """Verify `entry`, restore it into a scratch database, then swap it in (or clean-restore in place).

    Ownership always goes to the configured user (--no-owner); `privileges=False` also skips GRANTs.
    """
    started = time.monotonic()
    from semantik_infra.encryption import is_encrypted, parse_key

    manifest = entry.manifest
    encrypted = manifest.encrypted if manifest is not None else entry.path.is_file() and is_encrypted(entry.path)
    key = parse_key(settings.backup.encryption_key.reveal()) if encrypted else None
    if manifest is not None:
        verification = verify_archive(backend, entry, key)
    else:
        from semantik_infra.backup import authenticate, count_toc_entries, read_toc

        # No checksum to compare; still, every encrypted chunk must authenticate and the TOC must read.
        if key is not None:
            authenticate(entry.path, key)
        count = count_toc_entries(read_toc(backend, entry.path, key))
        verification = f"no manifest: checksum not checked; {count} TOC entries readable"
    report(f"verified {entry.path.name}: {verification}", time.monotonic() - started)

    live = settings.database.database or "postgres"
    parallel = _parallel_possible(backend, entry.path, key)
    if jobs > 1 and not parallel:
        report("--jobs ignored: this archive streams through pg_restore in one transaction", None, "warn")
    previous: str | None = None
    if in_place:
        target = live
    else:
        existing = _database_names(settings, live)
        leftovers = sorted(name for name in existing if name.startswith(f"{live}_restore_"))
        if leftovers:
            report(f"left by interrupted restores (drop them when none runs): {', '.join(leftovers)}", None, "warn")
        target, previous = restore_names(live, clock(), existing)
        _create_scratch(settings, target)
    try:
        with Timer() as timer:
            _run_pg_restore(
                backend,
                entry.path,
                key,
                target,
                jobs=jobs if parallel else 1,
                clean=in_place,
                privileges=privileges,
            )
        report(f"pg_restore into {target} finished", timer.seconds)
        tables = _row_counts(settings, target, entry)
        if previous is not None:
            previous = _swap(settings, live, target, previous)
    except BaseException:
        if not in_place:
            _drop_scratch(settings, target, report)
        raise
    if previous:
        report(f"swapped in: {live} is the restored database; the old one is kept as {previous}", None)
    elif not in_place:
        report(f"created {live} from the archive (there was no live database)", None)
    dropped = False
    if drop_old and previous:
        try:
            drop_database(settings, previous)
        except BackupError as error:
            raise BackupError(f"{live} was restored, but the old copy {previous} was not dropped: {error}") from None
        dropped = True
        report(f"dropped {previous}", None)
    return RestoreResult(entry.path, live, previous, dropped, time.monotonic() - started, tables, verification)


def _database_names(settings: Settings, live: str) -> set[str]:
    connection = _admin(settings, live)
    try:
        with database_errors("cannot list databases"), connection.cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database")
            return {row[0] for row in cursor.fetchall()}
    finally:
        connection.close()


def _parallel_possible(backend: Backend, archive: Path, key: bytes | None) -> bool:
    # pg_restore --jobs needs a file it can seek in on this machine: not a decrypting stream,
    # not a host file seen from inside a container.
    return archive.is_dir() or (key is None and backend.name != "docker")


def _create_scratch(settings: Settings, name: str) -> None:
    import psycopg2
    from psycopg2 import sql

    connection = _admin(settings, name)
    try:
        with connection.cursor() as cursor:
            if _exists(cursor, name):
                raise BackupError(f"database {name} already exists: another restore is running, or drop it")
            cursor.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(name))
            )
    except psycopg2.Error as error:
        from semantik_infra.database import first_line

        raise BackupError(
            f"cannot create the scratch database {name} ({first_line(str(error))}):"
            " the configured user needs CREATEDB, or use --in-place"
        ) from None
    finally:
        connection.close()


def pg_restore_argv(database: str, *, jobs: int = 1, clean: bool = False, privileges: bool = True) -> list[str]:
    """pg_restore options: objects owned by the configured user, stop at the first error."""
    args = ["--no-owner", "--exit-on-error", "--dbname", database]
    if not privileges:
        args.append("--no-privileges")
    if clean:
        args += ["--clean", "--if-exists"]
    if jobs > 1:
        args += ["--jobs", str(jobs)]
    else:
        # One transaction: an error or Ctrl-C leaves nothing half-restored in the target.
        args.append("--single-transaction")
    return args


def _run_pg_restore(
    backend: Backend, archive: Path, key: bytes | None, database: str, *, jobs: int, clean: bool, privileges: bool
) -> None:
    args = pg_restore_argv(database, jobs=jobs, clean=clean, privileges=privileges)
    if archive.is_dir() or jobs > 1:
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
    with database_errors(f"cannot count the rows restored into {database}"):
        connection = psycopg2.connect(
            **settings.database.with_database(database).libpq_params(), connect_timeout=str(settings.connect_timeout)
        )
    try:
        with database_errors(f"cannot count the rows restored into {database}"), connection.cursor() as cursor:
            if not names:
                cursor.execute(
                    "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                    " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
                    " AND n.nspname NOT LIKE 'pg_toast%'"
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
    import psycopg2
    from psycopg2 import sql

    def rename(old: str, new: str) -> sql.Composed:
        return sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))

    def allow(name: str, allowed: bool) -> sql.Composed:
        value = sql.SQL("true" if allowed else "false")
        return sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(sql.Identifier(name), value)

    connection = _admin(settings, live)
    try:
        with database_errors(f"swapping {scratch} in as {live} failed ({live} is unchanged)"):
            cursor = connection.cursor()
            if not _exists(cursor, live):
                cursor.execute(rename(scratch, live))
                return None
            # Block new sessions first, or the app reconnects between terminate and rename. This is
            # committed on its own; should we die before the swap commits, live is intact but closed:
            # ALTER DATABASE <db> WITH ALLOW_CONNECTIONS true reopens it.
            cursor.execute(allow(live, False))
            try:
                for attempt in range(RENAME_ATTEMPTS):
                    _terminate(cursor, live)
                    try:
                        # Both renames commit together or not at all: never a moment without <db>.
                        cursor.execute("BEGIN")
                        cursor.execute(rename(live, previous))
                        cursor.execute(rename(scratch, live))
                        cursor.execute(allow(previous, True))
                        cursor.execute("COMMIT")
                        return previous
                    except psycopg2.errors.ObjectInUse:
                        # Terminated sessions take a moment to exit.
                        cursor.execute("ROLLBACK")
                        time.sleep(0.1 * (attempt + 1))
                raise BackupError(
                    f"{live} still has sessions after {RENAME_ATTEMPTS} attempts: stop the app and retry"
                    f" ({live} is unchanged)"
                )
            except BaseException:
                with contextlib.suppress(psycopg2.Error):
                    cursor.execute("ROLLBACK")
                    cursor.execute(allow(live, True))
                raise
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
