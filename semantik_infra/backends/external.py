"""The external backend: a PostgreSQL server someone else runs, reached by DATABASE_URL (or the
POSTGRES_* parts). We never start, stop or delete it; status, wait, shell and the client tools
work against it with the machine's own client programs."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from semantik_infra.backends.base import Backend, BackendStatus, Reporter, StartResult, first_line, quiet
from semantik_infra.backends.native import find_client_tool, tool_major
from semantik_infra.errors import BackendError
from semantik_infra.proc import Command
from semantik_infra.urls import libpq_environment

# Client programs whose version must not be older than the server's.
VERSIONED_TOOLS = ("pg_dump", "pg_dumpall", "pg_restore")


class ExternalBackend(Backend):
    """A server managed elsewhere: lifecycle operations refuse politely, the rest works."""

    name = "external"

    @property
    def manages_server(self) -> bool:
        """Never: someone else runs this server."""
        return False

    def _refuse(self, what: str) -> BackendError:
        return BackendError(
            f"cannot {what}: the server at {self.url.redacted()} is external (SEMANTIK_PG_BACKEND=external);"
            " manage it where it runs, or pick the docker, native or embedded backend"
        )

    def start(self, report: Reporter = quiet, timeout: float = 60.0) -> StartResult:
        """Refuse: we do not start a server we do not own."""
        raise self._refuse("start it")

    def stop(self, report: Reporter = quiet) -> bool:
        """Refuse: we do not stop a server we do not own."""
        raise self._refuse("stop it")

    def destroy_data(self, report: Reporter = quiet) -> None:
        """Refuse: we never delete data on a server we do not own."""
        raise self._refuse("delete its data")

    def logs(self, *, follow: bool = False, tail: int | None = None) -> int:
        """Refuse: the log lives on the server's machine."""
        raise self._refuse("show its log")

    def status(self) -> BackendStatus:
        """Reachable or not, with the server version."""
        import psycopg2

        facts = {"url": self.url.redacted()}
        try:
            connection = psycopg2.connect(**self.url.libpq_params(), connect_timeout=str(self.settings.connect_timeout))
        except psycopg2.Error as error:
            facts["error"] = first_line(str(error))
            return BackendStatus(self.name, False, facts)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SHOW server_version")
                facts["version"] = f"PostgreSQL {cursor.fetchone()[0]}"
        finally:
            connection.close()
        return BackendStatus(self.name, True, facts)

    def client_command(
        self, tool: str, args: Sequence[str] = (), *, database: str | None = None, interactive: bool = False
    ) -> Command:
        """The machine's own client tool, pointed at the server through PG* variables."""
        url = self.url.with_database(database) if database else self.url
        return Command((str(self.tool(tool)), *args), env=libpq_environment(url))

    def tool(self, tool: str) -> Path:
        """The client program this backend runs for `tool` (see VERSIONED_TOOLS)."""
        # pg_dump refuses a server newer than itself, and pg_restore an archive a newer pg_dump made:
        # when the machine's tools are older than the server, the wheel's of its major (or the next
        # newer) serve instead. PG_BIN is the user's explicit choice and always wins.
        found = find_client_tool(tool, self.settings.pg_bin)
        if self.settings.pg_bin is not None or tool not in VERSIONED_TOOLS:
            return found
        server = self._server_major
        if server is None or tool_major(found) >= server:
            return found
        from semantik_infra.backends.embedded import wheel_installs

        try:
            installs = wheel_installs()
        except BackendError:
            return found
        for install in installs:
            candidate = install.root / "bin" / tool
            if install.major >= server and candidate.is_file():
                return candidate
        return found

    @functools.cached_property
    def _server_major(self) -> int | None:
        import psycopg2

        try:
            connection = psycopg2.connect(**self.url.libpq_params(), connect_timeout=str(self.settings.connect_timeout))
        except psycopg2.Error:
            return None  # the task's own connection says why
        try:
            return int(connection.server_version) // 10000
        finally:
            connection.close()
