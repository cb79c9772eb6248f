"""Snapshots: instant copies of the configured database inside the same server, for resetting a
development database again and again. A snapshot is a database `snapshot__<db>__<name>` made with
`CREATE DATABASE … TEMPLATE <db>` (a file-level copy: about a second for half a gigabyte), labelled
by a JSON comment that says it is ours, what it copies and when it was taken, and closed to
connections so nobody uses it by mistake and it can always serve as a template. Taking one needs
the live database to itself for that moment, so new sessions are blocked and existing ones
terminated, then allowed again (also when interrupted). Restoring one makes a fresh copy of the
snapshot and swaps it in through the restore's swap, so the snapshot stays for the next reset."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from semantik_infra.backends.base import Reporter, quiet
from semantik_infra.config import Settings
from semantik_infra.errors import BackupError, ConfigError
from semantik_infra.restore import (
    MAX_IDENTIFIER_BYTES,
    RENAME_ATTEMPTS,
    admin_connection,
    database_errors,
    database_exists,
    drop_database,
    restore_names,
    swap_in,
    terminate_sessions,
)

PREFIX = "snapshot__"
KIND = "semantik-infra snapshot"
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")


@dataclass(frozen=True)
class Snapshot:
    """A snapshot of `source`: its name, the database holding it, when it was taken and its size."""

    name: str
    database: str
    source: str
    created: datetime | None
    size: int

    @property
    def complete(self) -> bool:
        """False for a copy whose save was interrupted before it was labelled."""
        return self.created is not None


@dataclass(frozen=True)
class SnapshotRestore:
    """What `restore_snapshot` did."""

    snapshot: Snapshot
    previous: str | None
    dropped_previous: bool
    seconds: float


# --- pure ----------------------------------------------------------------------------------


def validate_name(name: str) -> str:
    """A snapshot name: lowercase letters, digits, '-' and '_', starting with a letter or digit, ≤ 40."""
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"snapshot name {name!r}: use 1-40 lowercase letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name


def snapshot_database(live: str, name: str) -> str:
    """The database that holds snapshot `name` of `live`."""
    database = f"{PREFIX}{live}__{validate_name(name)}"
    if len(database.encode()) > MAX_IDENTIFIER_BYTES:
        budget = MAX_IDENTIFIER_BYTES - len(f"{PREFIX}{live}__".encode())
        raise ConfigError(
            f"snapshot name {name!r} is too long for database {live!r}: use at most {max(budget, 0)} characters"
        )
    return database


def label(live: str, name: str, when: datetime) -> str:
    """The comment that marks a database as our snapshot of `live`."""
    return json.dumps({"kind": KIND, "name": name, "source": live, "created": when.isoformat()}, sort_keys=True)


def parse_label(comment: str | None) -> dict[str, str] | None:
    """The label's fields, or None when the comment is not one of our labels."""
    try:
        data = json.loads(comment or "")
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        return None
    if not all(isinstance(data.get(key), str) for key in ("name", "source", "created")):
        return None
    return data


def snapshot_from_row(live: str, database: str, comment: str | None, size: int) -> Snapshot | None:
    """A Snapshot of `live` from a pg_database row, or None if the row is not one."""
    head = f"{PREFIX}{live}__"
    if not database.startswith(head):
        return None
    data = parse_label(comment)
    if data is None:
        # A copy whose save was interrupted before the label was written: listed so it can be dropped.
        return Snapshot(database[len(head) :], database, live, None, size)
    if data["source"] != live or data["name"] != database[len(head) :]:
        return None
    try:
        created = datetime.fromisoformat(data["created"])
    except ValueError:
        created = None
    return Snapshot(data["name"], database, live, created, size)


# --- server --------------------------------------------------------------------------------


def _live(settings: Settings) -> str:
    return settings.database.database or "postgres"


def list_snapshots(settings: Settings) -> list[Snapshot]:
    """Snapshots of the configured database, oldest first (interrupted ones last)."""
    live = _live(settings)
    connection = admin_connection(settings, live)
    try:
        with database_errors("cannot list snapshots"), connection.cursor() as cursor:
            cursor.execute(
                "SELECT datname, shobj_description(oid, 'pg_database'), pg_database_size(oid)"
                " FROM pg_database WHERE starts_with(datname, %s)",
                (f"{PREFIX}{live}__",),
            )
            rows = cursor.fetchall()
    finally:
        connection.close()
    found = [snap for row in rows if (snap := snapshot_from_row(live, row[0], row[1], int(row[2])))]
    return sorted(found, key=lambda snap: (snap.created is None, snap.created or datetime.min.replace(tzinfo=UTC)))


def snapshots_fact(settings: Settings) -> str | None:
    """'N snapshots, X in all' for status and doctor, or None when there are none (or the server
    cannot be asked)."""
    from semantik_infra.console import format_bytes

    try:
        snapshots = list_snapshots(settings)
    except BackupError:
        return None
    if not snapshots:
        return None
    total = format_bytes(sum(snap.size for snap in snapshots))
    return f"{len(snapshots)} snapshot{'s' if len(snapshots) != 1 else ''}, {total} in all (`inv snapshot.list`)"


def find_snapshot(settings: Settings, name: str) -> Snapshot:
    """The snapshot called `name`, or a BackupError listing the ones there are."""
    validate_name(name)
    snapshots = list_snapshots(settings)
    for snap in snapshots:
        if snap.name == name:
            if not snap.complete:
                raise BackupError(f"snapshot {name} is incomplete (its save was interrupted): drop it and save again")
            return snap
    names = ", ".join(s.name for s in snapshots if s.complete) or "none"
    raise BackupError(f"no snapshot {name!r} of {_live(settings)} (snapshots: {names})")


def _sql(statement: str, *names: str) -> Any:
    from psycopg2 import sql

    return sql.SQL(statement).format(*(sql.Identifier(name) for name in names))


@contextlib.contextmanager
def _closed(cursor: Any, live: str) -> Iterator[None]:
    """Block new sessions on `live` and terminate the ones it has; allow them again afterwards, also
    when interrupted (a SIGKILL in between leaves it closed: `inv postgres.up` reopens it)."""
    cursor.execute(_sql("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", live))
    try:
        yield
    finally:
        import psycopg2

        with contextlib.suppress(psycopg2.Error):
            cursor.execute(_sql("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true", live))


def _copy_database(cursor: Any, source: str, target: str) -> None:
    """CREATE DATABASE target TEMPLATE source, terminating the source's sessions while they linger."""
    import psycopg2

    # FILE_COPY (PostgreSQL 15+) copies the files and checkpoints; the default WAL_LOG writes every
    # block to the WAL, several times slower for a database of any size.
    strategy = " STRATEGY FILE_COPY" if cursor.connection.server_version >= 150000 else ""
    for attempt in range(RENAME_ATTEMPTS):
        terminate_sessions(cursor, source)
        try:
            cursor.execute(_sql("CREATE DATABASE {} TEMPLATE {}" + strategy, target, source))
            return
        except psycopg2.errors.ObjectInUse:
            time.sleep(0.1 * (attempt + 1))
    raise BackupError(f"{source} still has sessions after {RENAME_ATTEMPTS} attempts: stop the app and retry")


def _create_rights_error(error: Exception, settings: Settings) -> BackupError:
    from semantik_infra.database import first_line

    return BackupError(
        f"cannot create a database on {settings.database.redacted()} ({first_line(str(error))}):"
        " snapshots need a role that may create databases (CREATEDB)"
    )


def save_snapshot(
    settings: Settings, name: str, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
) -> Snapshot:
    """Copy the configured database into snapshot `name` (which must not exist yet)."""
    import psycopg2

    live = _live(settings)
    target = snapshot_database(live, name)
    connection = admin_connection(settings, live)
    try:
        cursor = connection.cursor()
        with database_errors(f"cannot save snapshot {name}"):
            if not database_exists(cursor, live):
                raise BackupError(f"database {live} does not exist: nothing to snapshot")
            if database_exists(cursor, target):
                raise BackupError(f"snapshot {name} already exists: drop it first (`inv snapshot.drop {name}`)")
        when = clock()
        try:
            with _closed(cursor, live):
                _copy_database(cursor, live, target)
        except psycopg2.errors.InsufficientPrivilege as error:
            raise _create_rights_error(error, settings) from None
        except psycopg2.Error as error:
            from semantik_infra.database import classify

            raise BackupError(f"cannot save snapshot {name}: {classify(error).cause}") from None
        try:
            with database_errors(f"cannot label snapshot {name}"):
                cursor.execute(_sql("COMMENT ON DATABASE {} IS ", target) + _literal(label(live, name, when)))
                # Closed to sessions: nobody works in it by mistake, and it can always be copied from.
                cursor.execute(_sql("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false", target))
        except BaseException:
            with contextlib.suppress(psycopg2.Error):
                cursor.execute(_sql("DROP DATABASE IF EXISTS {}", target))
            raise
        cursor.execute("SELECT pg_database_size(%s)", (target,))
        size = int(cursor.fetchone()[0])
    finally:
        connection.close()
    return Snapshot(name, target, live, when, size)


def _literal(text: str) -> Any:
    from psycopg2 import sql

    return sql.Literal(text)


def restore_snapshot(
    settings: Settings,
    name: str,
    *,
    keep_current: bool = False,
    report: Reporter = quiet,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> SnapshotRestore:
    """Replace the configured database with a fresh copy of snapshot `name`; the snapshot stays.

    The copy is made beside the live database and swapped in the way a restore does, so a failure
    leaves the live database as it was. The replaced database is dropped unless `keep_current`.
    """
    import psycopg2

    started = time.monotonic()
    snap = find_snapshot(settings, name)
    live = _live(settings)
    scratch = ""
    try:
        connection = admin_connection(settings, live)
        try:
            cursor = connection.cursor()
            with database_errors("cannot list databases"):
                cursor.execute("SELECT datname FROM pg_database")
                taken = {row[0] for row in cursor.fetchall()}
            scratch, previous = restore_names(live, clock(), taken)
            try:
                _copy_database(cursor, snap.database, scratch)
            except psycopg2.errors.InsufficientPrivilege as error:
                raise _create_rights_error(error, settings) from None
            except psycopg2.Error as error:
                from semantik_infra.database import classify

                raise BackupError(f"cannot copy snapshot {name}: {classify(error).cause}") from None
        finally:
            connection.close()
        report(f"copied snapshot {name}", time.monotonic() - started)
        kept = swap_in(settings, live, scratch, previous)
    except BaseException as error:
        # The copy never replaced anything unless the swap committed (then the name is gone): drop it.
        left = f"{live} unchanged"
        if scratch:
            try:
                drop_database(settings, scratch)
                left = f"scratch database {scratch} dropped, {left}"
            except BackupError:
                left = f"scratch database {scratch} left behind (`inv postgres.leftovers --drop`), {left}"
        if isinstance(error, KeyboardInterrupt):
            raise type(error)(left) from None
        raise
    dropped = False
    if kept and not keep_current:
        drop_database(settings, kept)
        dropped = True
    return SnapshotRestore(snap, kept, dropped, time.monotonic() - started)


def drop_snapshot(settings: Settings, name: str) -> Snapshot:
    """Delete snapshot `name` (complete or interrupted)."""
    validate_name(name)
    for snap in list_snapshots(settings):
        if snap.name == name:
            drop_database(settings, snap.database)
            return snap
    raise BackupError(f"no snapshot {name!r} of {_live(settings)}")


def describe(snapshots: list[Snapshot]) -> list[str]:
    """Listing lines: a header, one aligned row per snapshot, and the total size."""
    from semantik_infra.console import format_bytes

    rows = [("NAME", "CREATED", "SIZE", "OF")]
    for snap in snapshots:
        when = snap.created.strftime("%Y-%m-%d %H:%M:%S UTC") if snap.created else "incomplete (drop it)"
        rows.append((snap.name, when, format_bytes(snap.size), snap.source))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d}" for a, b, c, d in rows]
    total = sum(snap.size for snap in snapshots)
    lines.append(f"{len(snapshots)} snapshot{'s' if len(snapshots) != 1 else ''}, {format_bytes(total)} in all")
    return lines
