"""The backend interface every place PostgreSQL can run implements (docker, native, external),
the status and result types the tasks print, and `wait_until_ready`: the authenticated
`SELECT 1` poll with a short capped backoff that every backend uses to decide the server is up."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from semantik_infra.config import Settings
from semantik_infra.errors import BackendError, ConfigError
from semantik_infra.proc import Command
from semantik_infra.urls import DatabaseURL

Reporter = Callable[[str, float | None], None]
"""Called with a human status line and, if known, how long that step took."""

CLIENT_TOOLS = ("psql", "pg_dump", "pg_restore", "pg_dumpall", "pg_isready")
# SQLSTATEs that mean "the server is there but not ready yet": keep polling.
_STARTING_UP = {"57P03"}
# First retry within ~50 ms, doubling to a 500 ms cap: fast once the server is up, gentle until.
FIRST_DELAY = 0.05
MAX_DELAY = 0.5


def quiet(_text: str, _seconds: float | None = None) -> None:
    """A Reporter that prints nothing."""


@dataclass(frozen=True)
class BackendStatus:
    """What `postgres.status` shows: running or not, and backend-specific facts in display order."""

    backend: str
    running: bool
    facts: dict[str, str] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The status as aligned 'key: value' lines."""
        rows = {"backend": self.backend, "state": "running" if self.running else "stopped", **self.facts}
        width = max(len(key) for key in rows)
        return [f"{key + ':':<{width + 1}} {value}" for key, value in rows.items()]


@dataclass(frozen=True)
class StartResult:
    """What `up` did: whether the server was already running, and how long readiness took."""

    already_running: bool
    seconds: float


class Backend(ABC):
    """Start, stop, inspect and reach one PostgreSQL server."""

    name: str = "abstract"

    def __init__(self, settings: Settings) -> None:
        if settings.database.is_sqlite:
            raise ConfigError(
                "PostgreSQL is not configured (SQLite fallback in force): run `inv env.init`, or set DATABASE_URL"
            )
        self.settings = settings

    @property
    def url(self) -> DatabaseURL:
        """The URL this machine connects to the server with."""
        return self.settings.database

    @abstractmethod
    def start(self, report: Reporter = quiet, timeout: float = 60.0) -> StartResult:
        """Bring the server up (creating it and the database if needed) and wait until it is ready."""

    @abstractmethod
    def stop(self, report: Reporter = quiet) -> bool:
        """Stop the server, keeping its data; False if it was not running."""

    @abstractmethod
    def status(self) -> BackendStatus:
        """Running or not, with facts for display."""

    @abstractmethod
    def logs(self, *, follow: bool = False, tail: int | None = None) -> int:
        """Print the server log to stdout (following until Ctrl-C if asked); return an exit status."""

    @abstractmethod
    def client_command(
        self, tool: str, args: Sequence[str] = (), *, database: str | None = None, interactive: bool = False
    ) -> Command:
        """A command running a client tool (psql, pg_dump, …) against the server, password in its env.

        `interactive` marks a command run with the user's terminal attached (psql), never a pipe.
        """

    @abstractmethod
    def destroy_data(self, report: Reporter = quiet) -> None:
        """Stop the server and delete its data for good."""

    @property
    def manages_server(self) -> bool:
        """False for a server someone else runs (external): up/down/reset refuse."""
        return True

    @property
    def data_location(self) -> str:
        """Where this backend keeps the data, for summaries."""
        return "on the server"

    def wait_until_ready(self, timeout: float = 30.0) -> float:
        """Poll until an authenticated SELECT 1 succeeds; return the seconds it took."""
        return wait_until_ready(self.url, timeout, connect_timeout=self.settings.connect_timeout)


def wait_until_ready(
    url: DatabaseURL,
    timeout: float,
    *,
    connect_timeout: int = 5,
    alive: Callable[[], bool] | None = None,
) -> float:
    """Poll `url` with SELECT 1 (first retry ~50 ms, cap 500 ms) until it answers or `timeout` passes.

    Authentication failures and a missing database fail at once: waiting cannot fix them.
    `alive`, if given, is asked between attempts; False means the server died and polling stops.
    """
    import psycopg2

    params = {"connect_timeout": str(max(1, min(connect_timeout, int(timeout) or 1))), **url.libpq_params()}
    start = time.monotonic()
    delay = FIRST_DELAY
    last_error = "no attempt made"
    while True:
        try:
            connection = psycopg2.connect(**params)
        except psycopg2.OperationalError as error:
            code = getattr(error, "pgcode", None)
            last_error = first_line(str(error))
            from semantik_infra.database import CLOSED_DATABASE_MARKER, closed_database_cause

            if CLOSED_DATABASE_MARKER in last_error:
                raise BackendError(closed_database_cause(url.database or "")) from None
            if code and code not in _STARTING_UP:
                raise BackendError(f"the server at {url.redacted()} refused the connection: {last_error}") from None
            if _is_permanent_message(last_error):
                raise BackendError(f"the server at {url.redacted()} refused the connection: {last_error}") from None
        else:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
                    cursor.fetchone()
                return time.monotonic() - start
            finally:
                connection.close()
        elapsed = time.monotonic() - start
        if alive is not None and not alive():
            raise BackendError(f"the server stopped while starting ({last_error})")
        if elapsed + delay > timeout:
            raise BackendError(
                f"the server at {url.redacted()} was not ready within {timeout:g} s (last error: {last_error})"
            )
        time.sleep(delay)
        delay = min(delay * 2, MAX_DELAY)


def _is_permanent_message(message: str) -> bool:
    # psycopg2 reports some authentication failures without a SQLSTATE.
    lowered = message.lower()
    return any(
        marker in lowered
        for marker in (
            "password authentication failed",
            "no pg_hba.conf entry",
            "does not exist",
            "no password supplied",
        )
    )


def first_line(text: str) -> str:
    """The first non-empty line of a (driver) message, stripped."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return text.strip()


def tail_lines(path: Path, count: int) -> list[str]:
    """The last `count` lines of a text file, reading only its end."""
    if count <= 0 or not path.exists():
        return []
    with path.open("rb") as stream:
        stream.seek(0, 2)
        size = stream.tell()
        block = 8192
        data = b""
        while size > 0 and data.count(b"\n") <= count:
            step = min(block, size)
            size -= step
            stream.seek(size)
            data = stream.read(step) + data
    return data.decode("utf-8", "replace").splitlines()[-count:]
