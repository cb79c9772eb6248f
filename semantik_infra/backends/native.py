"""The native backend: a private PostgreSQL cluster for the project, run from the machine's own
server binaries (the way pytest-postgresql does it), so `inv postgres.up` works without Docker.
It owns finding the binaries, initdb (password through a 0600 --pwfile, never argv), the
cluster's settings file (loopback only, the configured port, no Unix socket), start/stop through
pg_ctl, and running everything as the unprivileged `postgres` user when invoked as root, because
the server refuses to run as root."""

from __future__ import annotations

import functools
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from semantik_infra import proc
from semantik_infra.backends.base import (
    Backend,
    BackendStatus,
    Reporter,
    StartResult,
    port_mismatch_message,
    quiet,
    tail_lines,
    wait_until_ready,
)
from semantik_infra.config import Settings
from semantik_infra.console import Timer, format_duration
from semantik_infra.envfile import write_text_atomic
from semantik_infra.errors import BackendError, ConfigError
from semantik_infra.proc import Command

SERVER_TOOLS = ("initdb", "pg_ctl", "postgres")
LOG_NAME = "server.log"
SETTINGS_NAME = "semantik.conf"
RUN_AS_WHEN_ROOT = "postgres"
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Binaries:
    """A directory of PostgreSQL binaries and the version they report."""

    bindir: Path
    version: str
    major: int
    found_by: str

    def tool(self, name: str) -> Path:
        """Path of one program in this directory."""
        return self.bindir / name


def find_server_binaries(pg_bin: Path | None) -> Binaries:
    """Locate initdb/pg_ctl/postgres: PG_BIN, pg_config --bindir, /usr/lib/postgresql/<newest>/bin, PATH."""
    if pg_bin is not None:
        missing = [tool for tool in SERVER_TOOLS if not (pg_bin / tool).is_file()]
        if missing:
            raise BackendError(
                f"PG_BIN={pg_bin} has no {', '.join(missing)}: point PG_BIN at a PostgreSQL bin directory or unset it"
            )
        return _binaries(pg_bin, "PG_BIN")
    for bindir, found_by in _candidate_bindirs():
        if all((bindir / tool).is_file() for tool in SERVER_TOOLS):
            return _binaries(bindir, found_by)
    raise BackendError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: install them"
        " (Debian/Ubuntu: apt-get install postgresql; macOS: brew install postgresql) or set PG_BIN"
    )


def find_client_tool(tool: str, pg_bin: Path | None) -> Path:
    """A client program (psql, pg_dump, …): PG_BIN, the newest server bindir, PATH, then the embedded wheel's."""
    candidates = [(pg_bin, "PG_BIN")] if pg_bin is not None else _candidate_bindirs()
    for bindir, _ in candidates:
        if (bindir / tool).is_file():
            return bindir / tool
    found = shutil.which(tool)
    if found:
        return Path(found)
    from semantik_infra.backends.embedded import newest_client_bindir

    bindir = newest_client_bindir()
    if bindir is not None and (bindir / tool).is_file():
        return bindir / tool
    raise BackendError(f"{tool} not found: install the PostgreSQL client tools (apt-get install postgresql-client)")


@functools.lru_cache(maxsize=32)
def tool_major(path: Path) -> int:
    """The major version a PostgreSQL program reports (0 when it reports none)."""
    result = proc.run(Command((str(path), "--version")), check=False, timeout=10)
    return parse_version(result.stdout)[1] or 0


def _candidate_bindirs() -> list[tuple[Path, str]]:
    candidates: list[tuple[Path, str]] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = proc.run(Command((pg_config, "--bindir")), check=False, timeout=10)
        if result.returncode == 0 and result.stdout.strip():
            candidates.append((Path(result.stdout.strip()), "pg_config --bindir"))
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_major_of_debian_dir, reverse=True)
    candidates.extend((path, "/usr/lib/postgresql") for path in debian)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append((Path(on_path).parent, "PATH"))
    return candidates


def _major_of_debian_dir(path: Path) -> float:
    try:
        return float(path.parent.name)
    except ValueError:
        return -1.0


def _binaries(bindir: Path, found_by: str) -> Binaries:
    result = proc.run(Command((str(bindir / "postgres"), "--version")), check=False, timeout=10)
    version, major = parse_version(result.stdout)
    if major is None:
        raise BackendError(f"{bindir / 'postgres'} --version printed no PostgreSQL version: is it a PostgreSQL binary?")
    return Binaries(bindir, version, major, found_by)


def parse_version(text: str) -> tuple[str, int | None]:
    """('15.18', 15) from 'postgres (PostgreSQL) 15.18 (Debian …)'; (text, None) if there is none."""
    match = _VERSION.search(text)
    if not match:
        return text.strip(), None
    version = match.group(1) + (f".{match.group(2)}" if match.group(2) else "")
    return version, int(match.group(1))


def render_server_settings(port: int) -> str:
    """The settings file included by postgresql.conf: loopback only, our port, TCP only."""
    return (
        "# Written by semantik-infra on every `postgres.up`; edit POSTGRES_PORT instead.\n"
        "listen_addresses = '127.0.0.1'\n"
        f"port = {port}\n"
        # No Unix socket: /var/run/postgresql may not be writable, and TCP with a password is all we use.
        "unix_socket_directories = ''\n"
        "password_encryption = 'scram-sha-256'\n"
        "timezone = 'UTC'\n"
        "log_timezone = 'UTC'\n"
    )


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True if something already listens on (or holds) host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR as the server sets it, so a TIME_WAIT leftover does not count as "in use".
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def is_initialised(data_dir: Path) -> bool:
    """True if `data_dir` holds a cluster (its PG_VERSION file exists)."""
    try:
        return (data_dir / "PG_VERSION").is_file()
    except OSError:
        return False


@dataclass(frozen=True)
class Postmaster:
    """The server running on a data directory, from its postmaster.pid: pid, start time, port."""

    pid: int
    started: float
    port: int


def running_postmaster(data_dir: Path) -> Postmaster | None:
    """The live server of `data_dir`, or None: this identifies *our* server, whatever port it uses."""
    try:
        # postmaster.pid: line 1 pid, line 3 start time (epoch), line 4 port.
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        postmaster = Postmaster(int(lines[0]), float(lines[2]), int(lines[3]))
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(postmaster.pid, 0)
    except ProcessLookupError:
        return None  # a stale file left by a crash
    except PermissionError:
        pass  # alive, owned by another user
    return postmaster


def unreachable_parent(path: Path, uid: int, gids: set[int]) -> Path | None:
    """The first existing ancestor of `path` that user `uid` cannot search (enter), or None."""
    for parent in reversed(path.parents):
        if not parent.exists():
            break
        info = parent.stat()
        if info.st_uid == uid:
            bit = 0o100
        elif info.st_gid in gids:
            bit = 0o010
        else:
            bit = 0o001
        if not info.st_mode & bit:
            return parent
    return None


class NativeBackend(Backend):
    """A project-private cluster in POSTGRES_DATA_DIR, served on 127.0.0.1:POSTGRES_PORT.

    Subclasses change only where the binaries come from (`find_binaries`) and how to get another
    major from there (`other_major_hint`); the lifecycle is this class's.
    """

    name = "native"

    def __init__(self, settings: Settings, binaries: Binaries | None = None) -> None:
        super().__init__(settings)
        host = settings.database.host or "localhost"
        if host not in _LOCAL_HOSTS:
            raise ConfigError(
                f"the {self.name} backend serves 127.0.0.1, but the database host is {host!r}"
                f" ({settings.database_source}): set POSTGRES_HOST=localhost or SEMANTIK_PG_BACKEND=external"
            )
        self.binaries = binaries or self.find_binaries(settings)
        self.data_dir = settings.data_dir
        self.log_file = self.data_dir / LOG_NAME
        self.port = settings.database.port or 5432
        self.run_as = RUN_AS_WHEN_ROOT if os.geteuid() == 0 else None
        if self.run_as:
            _uid_of(self.run_as)  # fail early, with the fix, if the user does not exist

    @classmethod
    def find_binaries(cls, settings: Settings) -> Binaries:
        """The server binaries this backend runs: the machine's own (PG_BIN, pg_config, …)."""
        return find_server_binaries(settings.pg_bin)

    def other_major_hint(self, major: str) -> str:
        """How to run PostgreSQL `major` on this data directory, for the mismatch message."""
        from semantik_infra.backends.embedded import wheel_majors

        hint = f"set PG_BIN to PostgreSQL {major}'s bin directory"
        if major in {str(shipped) for shipped in wheel_majors()}:
            # Both local backends use POSTGRES_DATA_DIR: the wheel's binaries can serve it.
            return f"set SEMANTIK_PG_BACKEND=embedded (with EMBEDDED_PG_MAJOR={major}), or {hint}"
        return hint

    @property
    def data_location(self) -> str:
        """The cluster's data directory."""
        return str(self.data_dir)

    # --- commands --------------------------------------------------------------------------

    def _server_command(self, tool: str, *args: str | os.PathLike[str]) -> Command:
        return Command(proc.as_argv([self.binaries.tool(tool), *args]), user=self.run_as)

    def client_command(
        self, tool: str, args: Sequence[str] = (), *, database: str | None = None, interactive: bool = False
    ) -> Command:
        """A client tool from the same binaries, pointed at the cluster through PG* variables."""
        url = self.url.with_database(database) if database else self.url
        path = self.binaries.tool(tool)
        if not path.is_file():
            path = find_client_tool(tool, self.settings.pg_bin)
        from semantik_infra.urls import libpq_environment

        env = {**libpq_environment(url), "PGHOST": "127.0.0.1", "PGPORT": str(self.port)}
        return Command((str(path), *args), env=env)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, report: Reporter = quiet, timeout: float = 60.0) -> StartResult:
        """initdb on first use, write the settings file, start with pg_ctl, create the database, wait.

        Runs under the project lock: a second `up` waits, then finds the cluster created and running.
        """
        from semantik_infra.locking import project_lock

        with project_lock(self.settings.project_dir, lambda text: report(text, None, "info")):
            return self._start(report, timeout)

    def _start(self, report: Reporter, timeout: float) -> StartResult:
        report(
            f"PostgreSQL {self.binaries.version} from {self.binaries.bindir} (found by {self.binaries.found_by})", None
        )
        initialised = self._is_initialised()
        if initialised:
            # Before "already running": a server of another major must not pass for this one.
            self._check_data_dir()
        mismatch = self.port_mismatch()
        if mismatch:
            raise BackendError(mismatch)
        if self.is_running():
            seconds = self._wait_and_ensure_database(report, timeout)
            report(f"already running on 127.0.0.1:{self.port}: nothing to do", None)
            return StartResult(already_running=True, seconds=seconds)
        if port_in_use(self.port):
            raise BackendError(
                f"port {self.port} on 127.0.0.1 is already in use by another process:"
                f" set POSTGRES_PORT to a free port ({self.settings.sources.get('POSTGRES_PORT', 'default')})"
            )
        if not initialised:
            self._initdb(report)
            self._check_data_dir()
        write_text_atomic(self.data_dir / SETTINGS_NAME, render_server_settings(self.port), mode=0o644)
        self._chown(self.data_dir / SETTINGS_NAME)
        with Timer() as timer:
            # -w: pg_ctl returns once the postmaster reports "ready" (it polls every 100 ms) or failed.
            result = proc.run(
                self._server_command(
                    "pg_ctl", "start", "-D", self.data_dir, "-l", self.log_file, "-w", "-t", str(int(timeout))
                ),
                check=False,
                timeout=timeout + 10,
            )
            if result.returncode != 0:
                hint = " | ".join(tail_lines(self.log_file, 3)) or proc.last_line(result.stderr)
                raise BackendError(f"the server did not start: {hint} (full log: {self.log_file})")
            self._wait_and_ensure_database(report, timeout)
        report(f"started PostgreSQL on 127.0.0.1:{self.port}", timer.seconds)
        return StartResult(already_running=False, seconds=timer.seconds)

    def stop(self, report: Reporter = quiet) -> bool:
        """Fast shutdown; immediate shutdown if that does not finish in 30 s."""
        if not self.is_running():
            return False
        with Timer() as timer:
            fast = proc.run(
                self._server_command("pg_ctl", "stop", "-D", self.data_dir, "-m", "fast", "-w", "-t", "30"),
                check=False,
                timeout=45,
            )
            if fast.returncode != 0 and self.is_running():
                report("fast shutdown timed out: stopping immediately (crash recovery runs on next start)", None)
                proc.run(self._server_command("pg_ctl", "stop", "-D", self.data_dir, "-m", "immediate", "-w"))
        report(f"stopped PostgreSQL ({self.data_dir})", timer.seconds)
        return True

    def destroy_data(self, report: Reporter = quiet) -> None:
        """Stop the cluster and delete its data directory."""
        self.stop(report)
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)
            report(f"deleted {self.data_dir}", None)
        else:
            report(f"{self.data_dir} does not exist: nothing to delete", None)

    def status(self) -> BackendStatus:
        """Running or stopped, with pid, port, version, data dir and uptime; a warning when the
        server runs on another port than the configured one."""
        facts = {
            "version": f"PostgreSQL {self.binaries.version}",
            "binaries": f"{self.binaries.bindir} ({self.binaries.found_by})",
            "data dir": str(self.data_dir) if self._is_initialised() else f"{self.data_dir} (not initialised)",
        }
        postmaster = running_postmaster(self.data_dir) if self.is_running() else None
        if postmaster:
            facts.update(
                pid=str(postmaster.pid),
                port=str(postmaster.port),
                uptime=format_duration(max(0.0, time.time() - postmaster.started)),
            )
        else:
            facts["port"] = f"{self.port} (configured)"
        facts["log"] = str(self.log_file)
        mismatch = self.port_mismatch() if postmaster else None
        return BackendStatus(self.name, postmaster is not None, facts, (mismatch,) if mismatch else ())

    def port_mismatch(self) -> str | None:
        """Why the running server cannot be reached at the configured port, if it runs on another."""
        postmaster = running_postmaster(self.data_dir)
        if postmaster is None or postmaster.port == self.port:
            return None
        return port_mismatch_message(self.name, postmaster.port, self.settings)

    def require_running(self) -> None:
        """Raise BackendError naming `inv postgres.up` when the cluster is stopped."""
        if not self.is_running():
            raise BackendError(f"PostgreSQL (native, {self.data_dir}) is not running: start it with `inv postgres.up`")

    def logs(self, *, follow: bool = False, tail: int | None = None) -> int:
        """Print the server log's last lines, then follow it until Ctrl-C if asked."""
        if not self.log_file.exists():
            raise BackendError(f"no server log yet at {self.log_file}: run `inv postgres.up` first")
        for line in tail_lines(self.log_file, tail if tail is not None else 100):
            print(line)
        if follow:
            _follow(self.log_file)
        return 0

    # --- helpers ---------------------------------------------------------------------------

    def is_running(self) -> bool:
        """True if pg_ctl reports a server running on this data directory."""
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        result = proc.run(self._server_command("pg_ctl", "status", "-D", self.data_dir), check=False, timeout=10)
        return result.returncode == 0

    def _is_initialised(self) -> bool:
        return is_initialised(self.data_dir)

    def server_user(self) -> str:
        """The user the server runs as: `postgres` when invoked as root, else the current user."""
        return self.run_as or _user_name(os.geteuid())

    def data_dir_problems(self) -> list[str]:
        """What stops this data directory from starting: another major version, another owner, or unreachable."""
        problems = []
        if self.run_as:
            blocked = unreachable_parent(self.data_dir, _uid_of(self.run_as), _groups_of(self.run_as))
            if blocked is not None:
                problems.append(
                    f"the '{self.run_as}' user cannot enter {blocked} to reach {self.data_dir}:"
                    " set POSTGRES_DATA_DIR to a path outside it (e.g. /var/tmp/semantik-postgres)"
                    f" or chmod o+x {blocked}"
                )
        if not self._is_initialised():
            return problems
        data_version = (self.data_dir / "PG_VERSION").read_text().strip()
        if data_version != str(self.binaries.major):
            problems.append(self._other_major_problem(data_version))
        owner = self.data_dir.stat().st_uid
        expected = _uid_of(self.run_as) if self.run_as else os.geteuid()
        if owner != expected:
            user = self.server_user()
            problems.append(
                f"{self.data_dir} is owned by {_user_name(owner)}, but the server runs as {user}:"
                f" chown -R {user} {self.data_dir}"
            )
        return problems

    def _other_major_problem(self, data_version: str) -> str:
        head = (
            f"{self.data_dir} was created by PostgreSQL {data_version}, but the {self.name} backend runs"
            f" PostgreSQL {self.binaries.version}: to use it, {self.other_major_hint(data_version)}"
        )
        if _major_of(data_version) > self.binaries.major:
            # pg_restore cannot read archives made by a newer pg_dump: there is no way down through a backup.
            return f"{head} (a backup cannot move data to an older major)"
        return (
            f"{head}; to move its data to {self.binaries.major}, run `inv postgres.backup` with PostgreSQL"
            f" {data_version}, then `inv postgres.reset --yes` and `inv postgres.restore latest --yes`"
            f" with {self.binaries.major}"
        )

    def _check_data_dir(self) -> None:
        problems = self.data_dir_problems()
        if problems:
            raise BackendError(problems[0])

    def _initdb(self, report: Reporter) -> None:
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise BackendError(
                f"{self.data_dir} is not empty and not a PostgreSQL data directory:"
                " move it away or set POSTGRES_DATA_DIR to another path"
            )
        self._make_data_dir()
        password = self.url.password.reveal()
        if not password:
            raise ConfigError("POSTGRES_PASSWORD is empty: run `inv env.init` to generate one")
        with Timer() as timer, tempfile.TemporaryDirectory(prefix="semantik-initdb-") as scratch:
            pwfile = Path(scratch) / "pwfile"
            # The password reaches initdb only through this 0600 file, never its command line.
            write_text_atomic(pwfile, password + "\n", mode=0o600)
            if self.run_as:
                os.chmod(scratch, 0o711)
                self._chown(pwfile)
            proc.run(
                self._server_command(
                    "initdb",
                    "-D",
                    self.data_dir,
                    f"--username={self.url.username}",
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "--encoding=UTF8",
                    "--no-locale",
                    "--no-instructions",
                ),
                timeout=300,
            )
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(f"\n# semantik-infra settings (port, listen address)\ninclude_if_exists = '{SETTINGS_NAME}'\n")
        report(f"initialised a new cluster in {self.data_dir} (superuser {self.url.username})", timer.seconds)

    def _make_data_dir(self) -> None:
        missing = [p for p in (self.data_dir, *self.data_dir.parents) if not p.exists()]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        for created in missing[1:]:
            # Directories we create for the cluster must let the server's user through.
            os.chmod(created, 0o755)
        os.chmod(self.data_dir, 0o700)
        if self.run_as:
            self._chown(self.data_dir)
            self._check_data_dir()

    def _chown(self, path: Path) -> None:
        if self.run_as:
            import pwd

            entry = pwd.getpwnam(self.run_as)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def set_password_offline(self, role: str, verifier: str) -> None:
        """Set `role`'s password (a SCRAM verifier, never the password) while the cluster is stopped,
        through single-user mode: no network, no pg_hba change, nothing to undo afterwards."""
        if self.is_running():
            raise BackendError("the server must be stopped to set a password in single-user mode")
        self._check_data_dir()
        from semantik_infra.dbprops import quote_ident

        # A verifier is base64 and '$:' only, so it needs no escaping inside the quotes.
        statement = f"ALTER ROLE {quote_ident(role)} PASSWORD '{verifier}';\n"
        result = proc.run(
            self._server_command("postgres", "--single", "-D", self.data_dir, "postgres"),
            check=False,
            input_text=statement,
            timeout=120,
        )
        errors = [line for line in (result.stdout + result.stderr).splitlines() if "ERROR:" in line or "FATAL:" in line]
        if result.returncode != 0 or errors:
            why = errors[0].split(":", 3)[-1].strip() if errors else proc.last_line(result.stderr)
            raise BackendError(f"could not set the password of {role} in single-user mode: {why}")

    def _wait_and_ensure_database(self, report: Reporter, timeout: float) -> float:
        # Wait on the maintenance database: the configured one may not exist yet.
        seconds = wait_until_ready(
            self.url.with_database("postgres"),
            timeout,
            connect_timeout=self.settings.connect_timeout,
            alive=self.is_running,
        )
        self._ensure_database(report)
        from semantik_infra.leftovers import reopen_closed_database

        reopen_closed_database(self.settings, report)
        return seconds

    def _ensure_database(self, report: Reporter) -> None:
        import psycopg2
        from psycopg2 import sql

        database = self.url.database or "postgres"
        params = {**self.url.with_database("postgres").libpq_params(), "host": "127.0.0.1", "port": str(self.port)}
        connection = psycopg2.connect(**params)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cursor.fetchone() is None:
                    cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
                    report(f"created database {database}", None)
        finally:
            connection.close()


def _major_of(version: str) -> float:
    # PG_VERSION holds "9.6" before PostgreSQL 10 and "16" since.
    try:
        return float(version)
    except ValueError:
        return 0.0


def data_major(data_dir: Path) -> int | None:
    """The PostgreSQL major that made the cluster in `data_dir`, or None when there is none."""
    try:
        major = _major_of((data_dir / "PG_VERSION").read_text().strip())
    except OSError:
        return None
    return int(major) if major >= 10 else None


def _follow(path: Path) -> None:
    # Poll rather than inotify: portable, and a quarter second is fast enough for a log.
    with path.open("r", encoding="utf-8", errors="replace") as stream:
        stream.seek(0, 2)
        while True:
            line = stream.readline()
            if line:
                print(line, end="", flush=True)
            else:
                time.sleep(0.25)


def _uid_of(user: str) -> int:
    import pwd

    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        raise BackendError(
            f"running as root needs an unprivileged '{user}' user for the server (PostgreSQL refuses root):"
            f" create it (useradd --system {user}) or run as a normal user"
        ) from None


def _groups_of(user: str) -> set[int]:
    import grp
    import pwd

    entry = pwd.getpwnam(user)
    return {entry.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
