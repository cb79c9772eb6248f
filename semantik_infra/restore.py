"""Restoring a backup without risking the live database, and bringing back the same database.
The archive is verified first (a manifest that exists must be valid and authentic; one for
another database needs --into-current; an archive without one restores only when confirmed, and
never with --drop-old). pg_restore then fills a new scratch database created with the archive's
encoding and locale (ICU included), the archive's database settings, comment and GRANTs are
re-applied, and only then is it swapped in (new sessions blocked, sessions terminated, then in one
transaction live renamed to `<db>_before_restore_<time>` and scratch to `<db>`). A failed or
interrupted restore drops the scratch database, leaves the live one as it was and says so. A
running restore holds an advisory lock, so two never race and its scratch database is never
taken for a leftover. `in_place` (clean + restore into the live database) is there for users who
ask for it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semantik_infra import proc
from semantik_infra.archive import open_archive
from semantik_infra.backends.base import Backend
from semantik_infra.backup import (
    check_jobs,
    check_without_manifest,
    checked_reader,
    manifest_key_source,
    precheck,
    verify_archive,
)
from semantik_infra.catalog import EXPANDED_SUFFIX, TOC_SUFFIX, BackupEntry, list_backups, load_entry
from semantik_infra.config import Settings
from semantik_infra.console import Timer
from semantik_infra.dbprops import apply_database_properties, create_scratch_database, read_database_properties
from semantik_infra.errors import BackupError, ConfigError
from semantik_infra.manifest import UNCHECKED, describe_authenticity

if TYPE_CHECKING:
    from semantik_infra.leftovers import RestoreLock

RENAME_ATTEMPTS = 10
# PostgreSQL silently truncates longer identifiers, after which lookups by the full name miss.
MAX_IDENTIFIER_BYTES = 63

Report = Callable[..., None]
"""Called like console.step: a line, optionally its duration and `status="warn"`."""


def _quiet(*_args: Any, **_kwargs: Any) -> None:
    pass


@dataclass
class RestoreResult:
    """What a restore did: the archive, the database, the kept old copy, and the tables the manifest
    lists (with their rows at backup time: the planner's estimate, or exact for small tables)."""

    archive: Path
    database: str
    previous: str | None
    dropped_previous: bool
    seconds: float
    tables: dict[str, int | None] = field(default_factory=dict)
    verification: str = ""


def resolve_archive(settings: Settings, which: str) -> BackupEntry:
    """`latest` (the newest archive of the configured database) or a path, as a BackupEntry whose
    manifest (`<path>.json`, whatever the archive is called) is loaded and authenticated."""
    directory = settings.backup.directory
    database = settings.database.database or "postgres"
    key = manifest_key_source(settings)
    if which == "latest":
        ours = [entry for entry in list_backups(directory, key) if entry.database == database]
        if not ours:
            raise BackupError(f"no backups of {database} in {directory}: run `inv postgres.backup` first")
        return ours[-1]
    path = Path(which).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, directory / path]
    found = next((candidate for candidate in candidates if candidate.exists()), None)
    if found is None:
        raise ConfigError(f"{which}: no such archive (looked in {' and '.join(str(c.parent) for c in candidates)})")
    return load_entry(found, key, database=database)


def check_restorable(entry: BackupEntry, live: str, *, into_current: bool, drop_old: bool) -> None:
    """Refuse, before anything is touched, what must not be restored as asked: an archive whose
    manifest exists but is not valid or authentic, a backup of another database (unless
    `into_current`), and an archive without a manifest together with --drop-old."""
    if entry.manifest_error:
        raise BackupError(f"refusing to restore {entry.path.name}: {entry.manifest_error}")
    if entry.manifest is not None and entry.manifest.database != live and not into_current:
        raise ConfigError(
            f"{entry.path.name} is a backup of database {entry.manifest.database}, not of {live}:"
            f" pass --into-current to restore it into {live} anyway"
        )
    if entry.has_no_manifest and drop_old:
        raise ConfigError(
            f"{entry.path.name} has no manifest, so its checksum cannot be checked: restore it without"
            " --drop-old (the current database is kept) and drop the old copy once you have checked the result"
        )


def restore_names(live: str, when: datetime, taken: Collection[str]) -> tuple[str, str]:
    """(scratch, previous) database names for restoring `live`: `<db>_restore_<time>` and
    `<db>_before_restore_<time>`, unused in `taken`, the `<db>` part shortened to fit 63 bytes."""
    stamp = when.strftime("%Y%m%d%H%M%S")
    for attempt in range(1, 100):
        suffix = stamp if attempt == 1 else f"{stamp}_{attempt}"
        scratch = fit_name(live, f"_restore_{suffix}")
        previous = fit_name(live, f"_before_restore_{suffix}")
        if scratch not in taken and previous not in taken:
            return scratch, previous
    raise BackupError(f"too many databases named {live}_restore_{stamp}…: `inv postgres.leftovers --drop`")


def fit_name(prefix: str, suffix: str) -> str:
    """`prefix + suffix`, the prefix shortened (on a character boundary) to fit 63 bytes."""
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


def admin_connection(settings: Settings, live: str, *, connect_timeout: int | None = None) -> Any:
    """An autocommit connection to the maintenance database of `live`."""
    import psycopg2

    with database_errors(f"cannot connect to {settings.database.redacted()}"):
        connection = psycopg2.connect(
            **settings.database.with_database(maintenance_database(live)).libpq_params(),
            connect_timeout=str(connect_timeout or settings.connect_timeout),
        )
    connection.autocommit = True
    return connection


@contextlib.contextmanager
def admin_session(
    settings: Settings, live: str, connection: Any = None, *, connect_timeout: int | None = None
) -> Iterator[Any]:
    """`connection` when given (a restore shares the one holding its lock, left open), else a new
    admin connection, closed afterwards."""
    if connection is not None:
        yield connection
        return
    connection = admin_connection(settings, live, connect_timeout=connect_timeout)
    try:
        yield connection
    finally:
        connection.close()


def database_exists(cursor: Any, name: str) -> bool:
    """True if a database of that name exists."""
    cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
    return cursor.fetchone() is not None


def terminate_sessions(cursor: Any, name: str) -> None:
    """End every other session on database `name` (they take a moment to go: callers retry)."""
    cursor.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (name,),
    )


def drop_database(settings: Settings, name: str) -> None:
    """Terminate a database's sessions and drop it (used for scratch and old copies)."""
    from psycopg2 import sql

    connection = admin_connection(settings, name)
    try:
        with database_errors(f"cannot drop database {name}"), connection.cursor() as cursor:
            _when_idle(cursor, name, sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    finally:
        connection.close()


def _database_there(settings: Settings, name: str) -> bool | None:
    try:
        connection = admin_connection(settings, name)
    except BackupError:
        return None
    try:
        with connection.cursor() as cursor:
            return database_exists(cursor, name)
    except Exception:  # best effort while another failure is on its way out
        return None
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
    privileges: bool = True,
    into_current: bool = False,
    server_locale: bool = False,
    report: Report = _quiet,
    progress: Callable[[int], None] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RestoreResult:
    """Verify `entry`, restore it into a scratch database made like the archived one, re-apply the
    database's settings, comment and GRANTs, then swap it in (or clean-restore in place).

    Ownership always goes to the configured user (--no-owner); `privileges=False` also skips GRANTs
    and per-role settings. `server_locale` creates the scratch database with the server's default
    locale instead of the archive's."""
    check_jobs(jobs)
    live = settings.database.database or "postgres"
    if in_place and drop_old:
        raise ConfigError("--drop-old does nothing with --in-place (no copy is kept): pass one of them")
    if in_place and server_locale:
        raise ConfigError("--server-locale does nothing with --in-place (the live database keeps its locale)")
    check_restorable(entry, live, into_current=into_current, drop_old=drop_old)
    from semantik_infra.leftovers import cancel_orphans, restore_lock

    with restore_lock(settings, live) as lock:
        cancel_orphans(settings, backend, report, lock.connection)
        return _restore_locked(
            settings,
            backend,
            entry,
            live,
            lock,
            jobs=jobs,
            in_place=in_place,
            drop_old=drop_old,
            privileges=privileges,
            server_locale=server_locale,
            report=report,
            progress=progress,
            clock=clock,
        )


def _restore_locked(
    settings: Settings,
    backend: Backend,
    entry: BackupEntry,
    live: str,
    lock: RestoreLock,
    *,
    jobs: int,
    in_place: bool,
    drop_old: bool,
    privileges: bool,
    server_locale: bool,
    report: Report,
    progress: Callable[[int], None] | None,
    clock: Callable[[], datetime],
) -> RestoreResult:
    started = time.monotonic()
    key = manifest_key_source(settings)
    encrypted = entry.manifest.encrypted if entry.manifest else _is_encrypted(entry.path)
    stream_key = key if encrypted else None
    parallel = _parallel_possible(backend, entry.path)
    if jobs > 1 and not parallel:
        why = "on docker the archive streams into the container in one transaction"
        report(f"--jobs ignored: {why}", None, status="warn")
    parallel = parallel and jobs > 1
    # A restore that streams into a scratch database checks the checksum as it reads (the archive is
    # read once); the live database is only touched after that check. Everything else verifies first.
    checked_while_reading = not in_place and entry.manifest is not None and entry.path.is_file()
    if checked_while_reading:
        precheck(entry, key)
        _warn_unauthenticated(entry, report)
        verification = "checksum ok, checked while restoring (the archive is read once)"
    else:
        verification = _verify(backend, entry, key, report)
        report(
            f"verified {entry.path.name}: {verification}",
            time.monotonic() - started,
            status="warn" if entry.manifest is None else "ok",
        )
    properties = read_database_properties(backend, entry.path, stream_key)
    if properties is None:
        report("the archive records no database properties: the server's defaults apply", None, status="warn")
    from semantik_infra.leftovers import new_tag, stop_tagged

    tag = new_tag("restore")
    previous: str | None = None
    if in_place:
        from semantik_infra.leftovers import refuses_connections

        if refuses_connections(settings):
            raise BackupError(
                f"database {live} refuses connections (an interrupted restore closed it): run `inv postgres.up`"
                " to reopen it, or restore without --in-place (the swap replaces it)"
            )
        target = live
    else:
        existing = _database_names(settings, live, lock.connection)
        _report_leftovers(settings, live, report, lock.connection)
        target, previous = restore_names(live, clock(), existing)
        lock.claim_scratch(target)  # `postgres.leftovers` never drops it while we run
    try:
        if not in_place:
            create_scratch_database(settings, target, None if server_locale else properties, lock.connection)
        with Timer() as timer:
            run_pg_restore(
                backend,
                entry,
                stream_key,
                target,
                jobs=jobs if parallel else 1,
                clean=in_place,
                privileges=privileges,
                tag=tag.text,
                progress=progress,
                check=checked_while_reading,
                report=report,
            )
        report(f"pg_restore into {target} finished", timer.seconds)
        if checked_while_reading:
            report(f"verified {entry.path.name}: {verification}", None)
        # No count(*) of every table here: it would read the whole database once more. pg_restore in one
        # transaction with --exit-on-error either loaded every row or failed; `postgres.drill`
        # proves the exact counts against the archive's data stream.
        tables = dict(entry.manifest.tables) if entry.manifest else {}
        if properties is not None:
            applied = apply_database_properties(
                settings, target, properties, privileges=privileges, connection=lock.connection
            )
            if applied:
                report(f"re-applied the database's {', '.join(applied)}", None)
        if previous is not None:
            previous = swap_in(settings, live, target, previous, lock.connection)
    except BaseException as error:
        if backend.name == "docker":
            stop_tagged(settings, backend, tag)  # killing `docker exec` leaves pg_restore running inside
        left = _clean_up(settings, live, target, previous, in_place=in_place, parallel=jobs > 1 and parallel)
        if isinstance(error, KeyboardInterrupt):
            raise type(error)(left) from None
        if isinstance(error, BackupError) and not in_place:
            raise BackupError(f"{error} ({left})") from None
        raise
    if previous:
        report(
            f"swapped in: {live} is the restored database; the old one is kept as {previous}"
            " (`inv postgres.leftovers --drop` removes it)",
            None,
        )
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


def _verify(backend: Backend, entry: BackupEntry, key: bytes | None, report: Report) -> str:
    if entry.manifest is None:
        return check_without_manifest(backend, entry, key)
    verification = verify_archive(backend, entry, key)
    _warn_unauthenticated(entry, report)
    return verification


def _warn_unauthenticated(entry: BackupEntry, report: Report) -> None:
    if entry.authenticity != "authenticated":
        why = describe_authenticity(entry.authenticity)
        if entry.authenticity == UNCHECKED:
            why = "BACKUP_ENCRYPTION_KEY is not set to check its MAC"
        report(
            f"the manifest of {entry.path.name} is not authenticated ({why}): its checksum catches"
            " accidental damage, not deliberate changes",
            None,
            status="warn",
        )


def _is_encrypted(path: Path) -> bool:
    from semantik_infra.encryption import is_encrypted

    return path.is_file() and is_encrypted(path)


def _clean_up(
    settings: Settings, live: str, target: str, previous: str | None, *, in_place: bool, parallel: bool
) -> str:
    """Undo a failed or interrupted restore as far as it can be; say what it left."""
    if in_place:
        if parallel:
            return f"{live} may be partly restored (--in-place with --jobs is not one transaction)"
        return f"{live} unchanged (the restore ran in one transaction)"
    if _database_there(settings, target) is False and _database_there(settings, previous or "") is True:
        return f"{live} is the restored database; the old one is kept as {previous}"  # the swap had committed
    try:
        drop_database(settings, target)
    except BackupError as error:
        return (
            f"scratch database {target} left behind ({error}): `inv postgres.leftovers --drop` removes it;"
            f" {live} unchanged"
        )
    return f"scratch database {target} dropped, {live} unchanged"


def _report_leftovers(settings: Settings, live: str, report: Report, connection: Any) -> None:
    from semantik_infra.leftovers import find_leftover_databases, summarize

    try:
        leftovers = find_leftover_databases(settings, connection)
    except BackupError:
        return
    if leftovers:
        names = ", ".join(leftover.name for leftover in leftovers)
        report(
            f"{summarize(leftovers, 'leftover ')} of {live} left by earlier restores: {names}"
            " (`inv postgres.leftovers --drop` removes them)",
            None,
            status="warn",
        )


def _database_names(settings: Settings, live: str, connection: Any) -> set[str]:
    with (
        admin_session(settings, live, connection) as session,
        database_errors("cannot list databases"),
        session.cursor() as cursor,
    ):
        cursor.execute("SELECT datname FROM pg_database")
        return {row[0] for row in cursor.fetchall()}


def _parallel_possible(backend: Backend, archive: Path) -> bool:
    # pg_restore --jobs needs a file it can seek in on this machine, not a host file seen from
    # inside a container (compressed or encrypted archives are expanded into one first).
    return archive.is_dir() or backend.name != "docker"


def pg_restore_argv(
    database: str, *, jobs: int = 1, clean: bool = False, privileges: bool = True, tag: str = ""
) -> list[str]:
    """pg_restore options: objects owned by the configured user, stop at the first error; `tag`
    becomes its application_name."""
    if tag:
        from semantik_infra.leftovers import conninfo

        database = conninfo(dbname=database, application_name=tag)
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


def run_pg_restore(
    backend: Backend,
    entry: BackupEntry,
    key: bytes | None,
    database: str,
    *,
    jobs: int,
    clean: bool,
    privileges: bool,
    tag: str,
    progress: Callable[[int], None] | None,
    check: bool,
    report: Report,
) -> None:
    """pg_restore into `database`, streamed from the archive (hashed on the way when `check`).

    With --jobs the stream goes in two passes (see `_restore_in_two_passes`); a directory archive,
    and --in-place with --jobs (whose --clean must drop every section at once), use a file pg_restore
    can seek in: a compressed or encrypted archive is first expanded into a 0600 temp file in
    BACKUP_DIR, checked, and removed afterwards."""
    archive = entry.path
    if archive.is_dir() or (jobs > 1 and clean):
        args = pg_restore_argv(database, jobs=jobs, clean=clean, privileges=privileges, tag=tag)
        with _seekable(entry, key, report) as path:
            result = proc.run(backend.client_command("pg_restore", [*args, str(path)], database=database), check=False)
        _check_status(result.returncode, result.stderr)
    elif jobs > 1:
        _restore_in_two_passes(backend, entry, key, database, jobs, privileges, tag, progress, check, report)
    else:
        args = pg_restore_argv(database, clean=clean, privileges=privileges, tag=tag)
        command = backend.client_command("pg_restore", args, database=database)
        with _reading(entry, key, progress, check=check) as reader:
            status, _, errors = proc.feed_from(command, reader)
        _check_status(status, errors)


def _reading(
    entry: BackupEntry, key: bytes | None, progress: Callable[[int], None] | None, *, check: bool
) -> contextlib.AbstractContextManager[Any]:
    # Checked before the scratch database may replace anything: a changed file never gets in.
    return checked_reader(entry, key, progress) if check else open_archive(entry.path, key=key, progress=progress)


def _check_status(status: int, errors: str) -> None:
    if status != 0:
        raise BackupError(f"pg_restore failed: {proc.last_line(errors) or f'exit status {status}'}")


def _restore_in_two_passes(
    backend: Backend,
    entry: BackupEntry,
    key: bytes | None,
    database: str,
    jobs: int,
    privileges: bool,
    tag: str,
    progress: Callable[[int], None] | None,
    check: bool,
    report: Report,
) -> None:
    """A parallel restore that reads the archive once and never writes its data to disk.

    pg_restore -j needs a file it can seek in. Its data, though, is read once either way: only the
    post-data steps (indexes, constraints, triggers, which need no data) gain from parallel
    workers. So the tables and their rows stream through one transaction, as in a plain restore,
    and the post-data section then runs with `jobs` workers from the archive's header and table of
    contents alone, written to a small 0600 temp file in BACKUP_DIR once the checksum has passed."""
    from semantik_infra.archive import Prefixed
    from semantik_infra.backup import temp_path
    from semantik_infra.catalog import write_error
    from semantik_infra.dumpfile import read_head

    first = [*pg_restore_argv(database, privileges=privileges, tag=tag), "--section=pre-data", "--section=data"]
    with Timer() as timer, _reading(entry, key, progress, check=check) as reader:
        _, head = read_head(reader)
        status, _, errors = proc.feed_from(
            backend.client_command("pg_restore", first, database=database), Prefixed(head, reader)
        )
        _check_status(status, errors)
    report(f"restored the tables and their rows into {database} in one transaction", timer.seconds)
    later = [*pg_restore_argv(database, jobs=jobs, privileges=privileges, tag=tag), "--section=post-data"]
    toc = temp_path(entry.path, TOC_SUFFIX)
    try:
        try:
            toc.write_bytes(head)
        except OSError as error:
            raise write_error(error, entry.path.parent) from None
        with Timer() as timer:
            result = proc.run(backend.client_command("pg_restore", [*later, str(toc)], database=database), check=False)
        _check_status(result.returncode, result.stderr)
    finally:
        toc.unlink(missing_ok=True)
    report(f"built indexes and constraints with {jobs} parallel jobs", timer.seconds)


@contextlib.contextmanager
def _seekable(entry: BackupEntry, key: bytes | None, report: Report) -> Iterator[Path]:
    """The archive as a plain pg_dump file pg_restore can seek in: itself when it is one, else a
    0600 temp copy in BACKUP_DIR, decrypted and decompressed (removed afterwards, also on failure)."""
    from semantik_infra.archive import ZSTD_MAGIC, copy_stream

    archive = entry.path
    if archive.is_dir():
        yield archive
        return
    with archive.open("rb") as head:
        plain = key is None and head.read(len(ZSTD_MAGIC)) != ZSTD_MAGIC
    if plain:
        yield archive
        return
    from semantik_infra.backup import temp_path
    from semantik_infra.catalog import write_error

    temp = temp_path(archive, EXPANDED_SUFFIX)
    try:
        try:
            with Timer() as timer, checked_reader(entry, key) as reader, temp.open("wb") as out:
                copy_stream(reader, out)
        except OSError as error:
            raise write_error(error, archive.parent) from None
        report(f"expanded {archive.name} into a temporary file for --jobs", timer.seconds)
        yield temp
    finally:
        temp.unlink(missing_ok=True)


def swap_in(settings: Settings, live: str, scratch: str, previous: str, connection: Any = None) -> str | None:
    """Make `scratch` the database `live`: block and end `live`'s sessions, then rename live to
    `previous` and scratch to live in one transaction; the name `previous` got, or None when there
    was no `live` (scratch simply takes the name). On failure `live` is unchanged and open. Runs on
    `connection` (an autocommit session on the maintenance database) when given."""
    import psycopg2
    from psycopg2 import sql

    def rename(old: str, new: str) -> sql.Composed:
        return sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))

    def allow(name: str, allowed: bool) -> sql.Composed:
        value = sql.SQL("true" if allowed else "false")
        return sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(sql.Identifier(name), value)

    with (
        admin_session(settings, live, connection) as session,
        database_errors(f"swapping {scratch} in as {live} failed ({live} is unchanged)"),
    ):
        cursor = session.cursor()
        if not database_exists(cursor, live):
            cursor.execute(rename(scratch, live))
            return None
        try:
            # Block new sessions first, or the app reconnects between terminate and rename. This
            # is committed on its own; should we be killed before the swap commits, live is
            # intact but closed, and `inv postgres.up` reopens it (we hold the restore lock
            # meanwhile, so it never reopens a swap under way). Interrupted (Ctrl-C arrives
            # once the statement returns), the handler below reopens it.
            cursor.execute(allow(live, False))
            for attempt in range(RENAME_ATTEMPTS):
                terminate_sessions(cursor, live)
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


def _when_idle(cursor: Any, name: str, statement: Any) -> None:
    """Run a statement that needs `name` to have no sessions, terminating them first.

    Termination is asynchronous, so a session may linger for a moment: retry briefly.
    """
    import psycopg2

    for attempt in range(RENAME_ATTEMPTS):
        terminate_sessions(cursor, name)
        try:
            cursor.execute(statement)
            return
        except psycopg2.errors.ObjectInUse:
            time.sleep(0.1 * (attempt + 1))
    raise BackupError(f"{name} still has sessions after {RENAME_ATTEMPTS} attempts: stop the app and retry")
