"""What interrupted backups and restores can leave on the server, and how each is found and
cleared. Client processes: every pg_dump/pg_restore we start carries a tag as its
application_name (`semantik-infra.<operation>.<host>.<task pid>.<random>`), so an interrupted task
can stop its own (inside a container too, where killing `docker exec` does not), and the next task
can cancel those whose task on this host is gone. A database an interrupted swap left refusing
connections (only our swap closes it) is reopened by `postgres.up`. Scratch (`<db>_restore_*`) and
kept (`<db>_before_restore_*`) databases are listed with sizes and dropped on request; a running
restore holds an advisory lock, so its scratch database is never taken for a leftover."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from semantik_infra import proc
from semantik_infra.backends.base import Backend, BackendStatus
from semantik_infra.config import Settings
from semantik_infra.errors import BackendError, BackupError

TAG_PREFIX = "semantik-infra"
SCRATCH, KEPT = "scratch", "kept"
_TAG = re.compile(rf"^{TAG_PREFIX}\.(?P<op>[a-z]+)\.(?P<host>[0-9a-f]{{6}})\.(?P<pid>\d+)\.(?P<token>[0-9a-f]{{8}})$")
_STAMP = r"_(?P<stamp>\d{14}(?:_\d+)?)$"
# The kept copy's suffix ends like a scratch one's, so it is tried first.
_SUFFIXES = ((KEPT, re.compile(r"_before_restore" + _STAMP)), (SCRATCH, re.compile(r"_restore" + _STAMP)))
# Kills, inside the container, the processes whose command line carries the tag (given as $1) in
# their conninfo. The script itself holds the tag only as `$1`, so it never matches itself.
_KILL_TAGGED = """
for dir in /proc/[0-9]*; do
  pid="${dir#/proc/}"
  [ "$pid" = "$$" ] && continue
  case "$(tr '\\0' ' ' < "$dir/cmdline" 2>/dev/null)" in
    *"application_name='$1'"*) kill "$pid" 2>/dev/null ;;
  esac
done
"""

Report = Callable[..., None]
"""Called with a line, optionally its duration and `status="warn"`, like console.step."""


def _quiet(*_args: Any, **_kwargs: Any) -> None:
    pass


# --- tags on our client processes ------------------------------------------------------------


@dataclass(frozen=True)
class ClientTag:
    """Who started a pg_dump/pg_restore: the operation, this host, the task's pid, and a random token."""

    operation: str
    host: str
    pid: int
    token: str

    @property
    def text(self) -> str:
        """The tag as an application_name (at most 63 bytes, so the server keeps it whole)."""
        return f"{TAG_PREFIX}.{self.operation}.{self.host}.{self.pid}.{self.token}"

    @property
    def tool(self) -> str:
        """The client program an operation runs."""
        return {"backup": "pg_dump", "restore": "pg_restore"}.get(self.operation, "client")


def host_id() -> str:
    """A short, stable id of this machine, so another host's tasks are never judged dead here."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def new_tag(operation: str) -> ClientTag:
    """A fresh tag for a client process this task is about to start."""
    return ClientTag(operation, host_id(), os.getpid(), secrets.token_hex(4))


def parse_tag(text: str | None) -> ClientTag | None:
    """The tag in an application_name, or None if it is not one of ours."""
    match = _TAG.match(text or "")
    if not match:
        return None
    return ClientTag(match.group("op"), match.group("host"), int(match.group("pid")), match.group("token"))


def conninfo(**params: str) -> str:
    """A libpq connection string; unset parameters come from the PG* environment as usual."""
    quoted = (value.replace("\\", "\\\\").replace("'", "\\'") for value in params.values())
    return " ".join(f"{name}='{value}'" for name, value in zip(params, quoted, strict=True))


# --- names ---------------------------------------------------------------------------------


def classify_leftover(live: str, name: str) -> str | None:
    """SCRATCH for `<live>_restore_<time>`, KEPT for `<live>_before_restore_<time>` (names as
    restore_names makes them, shortened to 63 bytes), else None."""
    from semantik_infra.restore import fit_name

    for kind, suffix in _SUFFIXES:
        match = suffix.search(name)
        if match and fit_name(live, name[match.start() :]) == name:
            return kind
    return None


def _stamp(name: str) -> str:
    match = _SUFFIXES[1][1].search(name)
    return match.group("stamp") if match else ""


def restore_lock_key(name: str, *, scratch: bool = False) -> int:
    """The advisory lock a restore holds while it runs (a signed 64-bit key): one on the live
    database it restores, one on the scratch database it fills."""
    label = b"semantik-infra scratch\0" if scratch else b"semantik-infra restore\0"
    digest = hashlib.sha256(label + name.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


# --- connections -----------------------------------------------------------------------------


def _live(settings: Settings) -> str:
    return settings.database.database or "postgres"


@contextlib.contextmanager
def _maintenance(
    settings: Settings, action: str, connect_timeout: int | None = None, connection: Any = None
) -> Iterator[Any]:
    """A cursor on the maintenance database of the configured one (on `connection` when given);
    errors become one BackupError."""
    from semantik_infra.restore import admin_session, database_errors

    with (
        admin_session(settings, _live(settings), connection, connect_timeout=connect_timeout) as session,
        database_errors(action),
        session.cursor() as cursor,
    ):
        yield cursor


class RestoreLock:
    """The session holding a running restore's advisory locks; the server releases them when the
    session ends, however the restore ends (SIGKILL included)."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor
        self.connection = cursor.connection
        """The autocommit session on the maintenance database, for the restore's other queries."""

    def claim_scratch(self, name: str) -> None:
        """Mark `name` as this restore's scratch database, before it is created."""
        from semantik_infra.restore import database_errors

        with database_errors(f"cannot lock {name} for the restore"):
            self._cursor.execute("SELECT pg_advisory_lock(%s)", (restore_lock_key(name, scratch=True),))


@contextlib.contextmanager
def restore_lock(settings: Settings, live: str) -> Iterator[RestoreLock]:
    """Hold the restore lock of `live` for the duration; BackupError if another restore holds it."""
    from semantik_infra.restore import admin_connection, database_errors

    connection = admin_connection(settings, live)
    try:
        cursor = connection.cursor()
        with database_errors(f"cannot lock {live} for the restore"):
            if not _try_lock(cursor, restore_lock_key(live), hold=True):
                raise BackupError(f"another restore of {live} is running: wait for it to finish")
        yield RestoreLock(cursor)
    finally:
        # Closing the session releases the locks; so does the server when we are killed.
        connection.close()


def _try_lock(cursor: Any, key: int, *, hold: bool = False) -> bool:
    """Take an advisory lock if it is free (and, unless `hold`, give it back at once)."""
    cursor.execute("SELECT pg_try_advisory_lock(%s)", (key,))
    if not cursor.fetchone()[0]:
        return False
    if not hold:
        cursor.execute("SELECT pg_advisory_unlock(%s)", (key,))
    return True


def _restore_running(cursor: Any, live: str) -> bool:
    return not _try_lock(cursor, restore_lock_key(live))


def _scratch_in_use(cursor: Any, name: str) -> bool:
    return not _try_lock(cursor, restore_lock_key(name, scratch=True))


# --- client processes ------------------------------------------------------------------------


def stop_tagged(settings: Settings, backend: Backend, tag: ClientTag) -> None:
    """Stop the client processes carrying `tag`: inside the container (docker), then their
    sessions on the server. Best effort: the interruption or error under way is what matters."""
    if backend.name == "docker":
        with contextlib.suppress(BackendError, OSError):
            proc.run(backend.client_command("sh", ["-c", _KILL_TAGGED, "sh", tag.text]), check=False, timeout=30)
    with contextlib.suppress(BackupError):
        terminate_tagged(settings, [tag])


def terminate_tagged(settings: Settings, tags: list[ClientTag]) -> int:
    """Terminate the server sessions of the tagged clients; the number terminated."""
    with _maintenance(settings, "cannot stop the interrupted client's session") as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = ANY(%s) AND pid <> pg_backend_pid()",
            ([tag.text for tag in tags],),
        )
        return int(cursor.fetchone()[0])


def orphaned_tags(settings: Settings, connection: Any = None) -> list[ClientTag]:
    """Tags of sessions whose task ran on this host and is gone (killed before it could clean up)."""
    with _maintenance(settings, "cannot list sessions", connection=connection) as cursor:
        cursor.execute(
            "SELECT DISTINCT application_name FROM pg_stat_activity"
            " WHERE application_name LIKE %s AND pid <> pg_backend_pid()",
            (f"{TAG_PREFIX}.%",),
        )
        tags = [parse_tag(row[0]) for row in cursor.fetchall()]
    here = host_id()
    return [tag for tag in tags if tag is not None and tag.host == here and not proc.process_alive(tag.pid)]


def cancel_orphans(
    settings: Settings, backend: Backend, report: Report = _quiet, connection: Any = None
) -> list[ClientTag]:
    """Stop pg_dump/pg_restore processes left running by tasks that were killed; say so for each."""
    try:
        orphans = orphaned_tags(settings, connection)
    except BackupError:
        return []  # the caller's own connection will say what is wrong
    for tag in orphans:
        stop_tagged(settings, backend, tag)
        report(
            f"cancelled the {tag.tool} of a {tag.operation} whose task (pid {tag.pid}) was killed", None, status="warn"
        )
    return orphans


# --- a database an interrupted swap closed -----------------------------------------------------


def refuses_connections(settings: Settings, connect_timeout: int | None = None) -> bool | None:
    """True if the configured database exists but does not allow connections; None if unknown
    (the server cannot be reached within `connect_timeout`)."""
    try:
        with _maintenance(settings, "cannot read pg_database", connect_timeout) as cursor:
            cursor.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (_live(settings),))
            row = cursor.fetchone()
    except BackupError:
        return None
    return row is not None and not row[0]


def closed_database_error(settings: Settings) -> None:
    """Raise the one-line error for a configured database an interrupted swap closed, if it is closed."""
    if refuses_connections(settings):
        from semantik_infra.database import closed_database_cause

        raise BackendError(closed_database_cause(_live(settings)))


def reopen_closed_database(settings: Settings, report: Callable[[str, float | None], None]) -> bool:
    """Let the configured database accept connections again if an interrupted swap left it closed.

    Only our swap closes it, and a running one holds the restore lock, so this never undoes a
    swap under way. True if it reopened the database."""
    import psycopg2
    from psycopg2 import sql

    live = _live(settings)
    try:
        with _maintenance(settings, f"cannot reopen database {live}") as cursor:
            cursor.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (live,))
            row = cursor.fetchone()
            if row is None or row[0] or _restore_running(cursor, live):
                return False
            try:
                cursor.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(live)))
            except psycopg2.errors.InsufficientPrivilege:
                raise BackendError(
                    f"database {live} refuses connections (an interrupted restore closed it) and"
                    f" {settings.database.username} may not reopen it: as its owner or a superuser run"
                    f' ALTER DATABASE "{live}" WITH ALLOW_CONNECTIONS true'
                ) from None
    except BackupError:
        return False  # not reachable yet: the caller's wait says why
    report(f"reopened database {live}: an interrupted restore had left it refusing connections", None)
    return True


# --- scratch and kept databases ---------------------------------------------------------------


@dataclass(frozen=True)
class LeftoverDatabase:
    """A scratch or kept database of the configured one, its size, and whether a restore uses it."""

    name: str
    kind: str
    size: int | None
    in_use: bool = False

    def describe(self) -> str:
        """One listing line."""
        from semantik_infra.console import format_bytes

        size = "size unknown" if self.size is None else format_bytes(self.size)
        what = "scratch of an interrupted restore" if self.kind == SCRATCH else "kept by a restore (the old database)"
        busy = ", in use by a running restore: never dropped" if self.in_use else ""
        return f"{self.name}  {size:>10}  {what}{busy}"


def find_leftover_databases(settings: Settings, connection: Any = None) -> list[LeftoverDatabase]:
    """The configured database's scratch and kept databases, with sizes, oldest first."""
    live = _live(settings)
    with _maintenance(settings, "cannot list databases", connection=connection) as cursor:
        cursor.execute("SELECT datname FROM pg_database")
        names = sorted(
            (row[0] for row in cursor.fetchall() if classify_leftover(live, row[0])),
            key=_stamp,
        )
        found = []
        for name in names:
            kind = classify_leftover(live, name) or KEPT
            in_use = kind == SCRATCH and _scratch_in_use(cursor, name)
            found.append(LeftoverDatabase(name, kind, _size(cursor, name), in_use))
    return found


def _size(cursor: Any, name: str) -> int | None:
    import psycopg2

    try:
        cursor.execute("SELECT pg_database_size(%s)", (name,))
        return int(cursor.fetchone()[0])
    except psycopg2.Error:
        return None  # no CONNECT privilege on it: still listed


def drop_leftover_databases(
    settings: Settings, leftovers: list[LeftoverDatabase], report: Report = _quiet
) -> list[LeftoverDatabase]:
    """Drop the given leftovers, except scratch databases a running restore uses; the dropped ones."""
    from semantik_infra.restore import drop_database

    dropped = []
    with _maintenance(settings, "cannot check for a running restore") as cursor:
        for leftover in leftovers:
            key = restore_lock_key(leftover.name, scratch=True)
            # Held while dropping, so no restore can claim the name meanwhile.
            if leftover.kind == SCRATCH and not _try_lock(cursor, key, hold=True):
                report(f"kept {leftover.name}: a running restore uses it", None, status="warn")
                continue
            try:
                drop_database(settings, leftover.name)
            finally:
                if leftover.kind == SCRATCH:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", (key,))
            report(f"dropped {leftover.name}", None)
            dropped.append(leftover)
    return dropped


def summarize(leftovers: list[LeftoverDatabase], adjective: str = "") -> str:
    """'2 databases (1.2 GiB)', or with an adjective '2 leftover databases (1.2 GiB)'."""
    from semantik_infra.console import format_bytes

    total = sum(leftover.size or 0 for leftover in leftovers)
    noun = "database" if len(leftovers) == 1 else "databases"
    return f"{len(leftovers)} {adjective}{noun} ({format_bytes(total)})"


def leftovers_fact(settings: Settings, status: BackendStatus) -> BackendStatus:
    """`postgres.status` with what interrupted restores left: a closed database, leftover databases."""
    from dataclasses import replace

    facts = dict(status.facts)
    if refuses_connections(settings):
        facts["database"] = (
            f"{_live(settings)} refuses connections (an interrupted restore): `inv postgres.up` reopens it"
        )
    try:
        found = find_leftover_databases(settings)
    except BackupError:
        found = []
    if found:
        facts["leftovers"] = f"{summarize(found)}: `inv postgres.leftovers`"
    return replace(status, facts=facts)
