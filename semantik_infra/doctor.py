"""`inv doctor`: a read-only diagnosis of a developer's setup. It owns the checks behind the seed's
Troubleshooting list — env files (present, valid, secrets not readable by others, not tracked by
git), the backend (what `auto` resolves to and why; engine and compose, image, container health;
or binaries, data directory owner, permissions and major version), the port (identifying *our*
server by its data directory or container, never by "some server runs"), client tool versions,
backups and the key they need, and a quick connection test — each reported as ok / warn / fail
with a hint saying exactly what to run or change. It writes nothing, not even a lock file."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from semantik_infra.config import SECRET_NAMES, Settings, read_env_file
from semantik_infra.errors import ConfigError, InfraError
from semantik_infra.rotation import RECOVER_HINT

if TYPE_CHECKING:
    from semantik_infra.backends.native import NativeBackend
    from semantik_infra.catalog import BackupEntry

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Finding:
    """One check's verdict: area, ok/warn/fail, what was found, and how to fix it."""

    area: str
    status: str
    summary: str
    hint: str = ""


@dataclass
class DoctorReport:
    """All findings, in the order the checks ran."""

    findings: list[Finding] = field(default_factory=list)

    def add(self, area: str, status: str, summary: str, hint: str = "") -> None:
        """Record one finding."""
        self.findings.append(Finding(area, status, summary, hint))

    @property
    def failed(self) -> bool:
        """True if any check failed."""
        return any(f.status == FAIL for f in self.findings)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form."""
        counts = {s: sum(f.status == s for f in self.findings) for s in (OK, WARN, FAIL)}
        return {"ok": not self.failed, "counts": counts, "findings": [asdict(f) for f in self.findings]}


def diagnose(
    settings: Settings | None,
    config_error: ConfigError | None,
    project_dir: Path,
    env_files: Iterable[Path],
    *,
    connection_check: Callable[[Settings], Finding] | None = None,
) -> DoctorReport:
    """Run every check without changing anything; `settings` is None when loading them failed."""
    report = DoctorReport()
    check_env_files(report, settings, config_error, project_dir, list(env_files))
    if settings is None:
        return report
    check_recorded(report, settings)
    backend_name = check_backend(report, settings)
    if backend_name in ("docker", "native", "embedded"):
        check_port(report, settings, backend_name)
    check_client_tools(report, settings, backend_name)
    check_backups(report, settings)
    check_backup_key(report, settings)
    if backend_name is not None and settings.postgres_configured:
        check_server_leftovers(report, settings)
    if connection_check is not None:
        report.findings.append(connection_check(settings))
    return report


# --- env files -----------------------------------------------------------------------------


def check_env_files(
    report: DoctorReport,
    settings: Settings | None,
    config_error: ConfigError | None,
    project_dir: Path,
    env_files: list[Path],
) -> None:
    """Present, readable, valid, secrets set and private, .env not tracked by git."""
    main = env_files[1] if len(env_files) > 1 else project_dir / ".env"
    if not main.exists():
        report.add("env", WARN, f"{main} does not exist", "run `inv env.init` to create it with fresh secrets")
    for path in env_files:
        if not path.exists():
            continue
        try:
            values = read_env_file(path)
        except ConfigError as error:
            report.add("env", FAIL, str(error), f"fix or remove {path}")
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        holds_secret = any(values.get(name) for name in SECRET_NAMES)
        if holds_secret and mode & 0o077:
            report.add(
                "env", FAIL, f"{path} holds secrets but is readable by others (mode {mode:04o})", f"chmod 600 {path}"
            )
        elif holds_secret:
            report.add("env", OK, f"{path} holds secrets and is private (mode {mode:04o})")
    if config_error is not None:
        report.add("env", FAIL, f"invalid configuration: {config_error}", "fix the variable named above")
        return
    assert settings is not None
    if settings.postgres_configured:
        if not settings.database.password:
            report.add("env", FAIL, "POSTGRES_PASSWORD is empty", "run `inv env.init` to generate one")
        else:
            report.add("env", OK, f"configuration valid: {settings.database.redacted()}")
    else:
        report.add("env", WARN, f"PostgreSQL not configured: {settings.database_source}", "run `inv env.init`")
    _check_git_tracking(report, project_dir, main)


def _check_git_tracking(report: DoctorReport, project_dir: Path, env_file: Path) -> None:
    import shutil

    from semantik_infra import proc
    from semantik_infra.proc import Command

    if not env_file.exists() or not shutil.which("git") or not (project_dir / ".git").exists():
        return
    relative = os.path.relpath(env_file, project_dir)
    git = ("git", "-C", str(project_dir))
    tracked = proc.run(Command((*git, "ls-files", "--error-unmatch", relative)), check=False, timeout=10)
    if tracked.returncode == 0:
        report.add(
            "env",
            WARN,
            f"{relative} is tracked by git: its secrets are in the repository history",
            f"git rm --cached {relative}, add it to .gitignore, and rotate the secrets (`inv env.init --force`)",
        )
        return
    ignored = proc.run(Command((*git, "check-ignore", "-q", relative)), check=False, timeout=10)
    if ignored.returncode != 0:
        report.add("env", WARN, f"{relative} is not ignored by git", f"add {relative} to .gitignore")


# --- backend -------------------------------------------------------------------------------


def check_recorded(report: DoctorReport, settings: Settings) -> None:
    """The choices onboarding recorded in the env file, or a warning when a project with data has none."""
    from semantik_infra.setup_state import RECORDED

    try:
        values = read_env_file(settings.env_file) if settings.env_file.exists() else {}
    except ConfigError:
        return  # reported with the env files
    if values.get("SEMANTIK_PG_BACKEND", "auto").lower() != "auto":
        shown = ", ".join(f"{name}={values[name]}" for name in RECORDED if values.get(name))
        report.add("env", OK, f"recorded in {settings.env_file.name}: {shown}")
        return
    from semantik_infra.backends import project_data

    found = project_data(settings) if settings.postgres_configured else []
    if found:
        report.add(
            "env",
            WARN,
            f"the backend is not recorded: `auto` decides each time (now by the data in {found[0].location})",
            "run `inv onboard` to record the backend, port and compose project this project uses",
        )


def check_backend(report: DoctorReport, settings: Settings) -> str | None:
    """Which backend, and whether it can run: engine/compose/image/container, or binaries/data dir."""
    from semantik_infra.backends import explain_auto, project_data

    if not settings.postgres_configured:
        found = project_data(settings)
        if found:
            report.add(
                "backend",
                FAIL,
                f"this project has a cluster ({found[0].location}) but no PostgreSQL settings: was .env lost?",
                f"run `inv env.init`, then {RECOVER_HINT}",
            )
            return found[0].backend
        return None
    name = settings.backend
    if name == "auto":
        try:
            choice = explain_auto(settings)
        except InfraError as error:
            report.add("backend", FAIL, str(error))
            return None
        name = choice.backend
        report.add("backend", OK, f"auto resolves to the {name} backend: {choice.reason}")
    if name == "docker":
        _check_docker(report, settings)
    elif name in ("native", "embedded"):
        _check_local(report, settings, name)
    else:
        report.add("backend", OK, f"external server at {settings.database.redacted()} (not managed here)")
    return name


def _check_docker(report: DoctorReport, settings: Settings) -> None:
    from semantik_infra.backends.docker import DockerBackend, connect_engine, detect_compose

    try:
        client = connect_engine(timeout=5)
    except InfraError as error:
        report.add("backend", FAIL, str(error), "start the engine (e.g. `sudo systemctl start docker`)")
        return
    report.add("backend", OK, f"Docker engine {client.version().get('Version', '?')} reachable")
    try:
        report.add("backend", OK, f"compose: {' '.join(detect_compose())}")
    except InfraError as error:
        report.add("backend", FAIL, str(error))
    from docker.errors import ImageNotFound

    try:
        client.images.get(settings.compose.image)
        report.add("backend", OK, f"image {settings.compose.image} present")
    except ImageNotFound:
        report.add(
            "backend",
            WARN,
            f"image {settings.compose.image} is not on this machine",
            "`inv postgres.up` will try to pull it; set POSTGRES_IMAGE to an image you have if there is no registry",
        )
    try:
        backend = DockerBackend(settings)
        status = backend.status()
    except InfraError as error:
        report.add("backend", FAIL, str(error))
        return
    if status.running:
        health = status.facts.get("health", "")
        verdict = OK if health in ("healthy", "no health check") else FAIL
        hint = "" if verdict == OK else "see `inv postgres.logs --tail 50`"
        report.add("backend", verdict, f"container {status.facts.get('container')} running ({health})", hint)
    else:
        report.add("backend", WARN, "the PostgreSQL container is not running", "run `inv postgres.up`")


def _local_backend(settings: Settings, name: str) -> NativeBackend:
    """The native or embedded backend, built without side effects (no binary copy is made)."""
    from semantik_infra.backends.native import NativeBackend

    if name == "embedded":
        from semantik_infra.backends.embedded import EmbeddedBackend, embedded_binaries

        return EmbeddedBackend(settings, embedded_binaries(settings, make_copy=False))
    return NativeBackend(settings)


def _check_local(report: DoctorReport, settings: Settings, name: str) -> None:
    try:
        backend = _local_backend(settings, name)
    except InfraError as error:
        report.add("backend", FAIL, str(error))
        return
    found = backend.binaries
    report.add("backend", OK, f"PostgreSQL {found.version} binaries in {found.bindir} (found by {found.found_by})")
    if name == "embedded":
        from semantik_infra.backends.embedded import major_reason

        report.add("backend", OK, f"embedded PostgreSQL {found.major}: chosen by {major_reason(settings)}")
    problems = backend.data_dir_problems()
    for problem in problems:
        report.add("backend", FAIL, problem)
    if not backend.data_dir.exists():
        report.add("backend", WARN, f"{backend.data_dir} does not exist yet", "run `inv postgres.up` to create it")
    elif not problems:
        mode = stat.S_IMODE(backend.data_dir.stat().st_mode)
        report.add("backend", OK, f"{backend.data_dir} owned by {backend.server_user()}, mode {mode:04o}")
    if backend.data_dir.exists() and not backend.is_running():
        report.add("backend", WARN, f"the {name} server is not running", "run `inv postgres.up`")


# --- port ----------------------------------------------------------------------------------


def check_port(report: DoctorReport, settings: Settings, backend_name: str) -> None:
    """Our server (found by its data directory or container) on the configured port; the port free;
    or held by something else (what, and which variable to change)."""
    from semantik_infra.backends.native import port_in_use

    port = settings.database.port or 5432
    ours = our_server(settings, backend_name)
    if ours is not None and ours[0] != port:
        if settings.database_source.startswith("DATABASE_URL"):
            where = f"the port in DATABASE_URL is {port}"
        else:
            where = f"POSTGRES_PORT is {port} ({settings.sources.get('POSTGRES_PORT', 'default')})"
        report.add(
            "port",
            FAIL,
            f"this project's server ({ours[1]}) runs on port {ours[0]}, but {where}: tasks would reach"
            f" whatever listens on {port}",
            f"set POSTGRES_PORT={ours[0]}, or move the server: `inv postgres.down`, then `inv postgres.up`",
        )
        return
    if ours is not None:
        report.add("port", OK, f"port {port} is held by our server ({ours[1]})")
        return
    if not port_in_use(port):
        report.add("port", OK, f"port {port} is free for the server")
        return
    holder = listening_process(port)
    what = f"{holder[1]} (pid {holder[0]})" if holder else "another process"
    report.add(
        "port",
        FAIL,
        f"port {port} is held by {what}, not by our server",
        f"stop it, or set POSTGRES_PORT to a free port ({settings.sources.get('POSTGRES_PORT', 'default')})",
    )


def our_server(settings: Settings, backend_name: str) -> tuple[int, str] | None:
    """(port, identity) of this project's running server: the postmaster of our data directory,
    or our compose project's container; None when it does not run."""
    if backend_name in ("native", "embedded"):
        from semantik_infra.backends.native import running_postmaster

        postmaster = running_postmaster(settings.data_dir)
        if postmaster is None:
            return None
        return postmaster.port, f"pid {postmaster.pid}, data directory {settings.data_dir}"
    from semantik_infra.backends.docker import running_container

    return running_container(settings)


def listening_process(port: int) -> tuple[int, str] | None:
    """(pid, command name) of the process listening on TCP `port`, if /proc lets us see it."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            inodes |= listening_inodes(Path(table).read_text(), port)
        except OSError:
            continue
    if not inodes:
        return None
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                    pid = int(fd_dir.parent.name)
                    return pid, (fd_dir.parent / "comm").read_text().strip()
        except (OSError, ValueError):
            continue
    return None


def listening_inodes(table: str, port: int) -> set[int]:
    """Socket inodes in LISTEN state on `port` from a /proc/net/tcp{,6} table."""
    found = set()
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, state, inode = fields[1], fields[3], fields[9]
        if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
            found.add(int(inode))
    return found


# --- client tools --------------------------------------------------------------------------


def check_client_tools(report: DoctorReport, settings: Settings, backend_name: str | None) -> None:
    """pg_dump must not be older than the server, or backups break."""
    if backend_name == "docker":
        report.add("client tools", OK, "pg_dump/pg_restore run inside the container (versions match the server)")
        return
    from semantik_infra.backends.native import find_client_tool, parse_version
    from semantik_infra.proc import Command, run

    try:
        # The embedded backend's client tools come with its server, from the same wheel; the
        # external backend picks the tools that can dump its server.
        if backend_name == "embedded":
            pg_dump = _local_backend(settings, "embedded").binaries.tool("pg_dump")
        elif backend_name == "external":
            from semantik_infra.backends.external import ExternalBackend

            pg_dump = ExternalBackend(settings).tool("pg_dump")
        else:
            pg_dump = find_client_tool("pg_dump", settings.pg_bin)
    except InfraError as error:
        report.add("client tools", FAIL, str(error))
        return
    client_version, client_major = parse_version(run(Command((str(pg_dump), "--version")), timeout=10).stdout)
    server = server_version(settings)
    if server is None:
        report.add("client tools", OK, f"pg_dump {client_version} ({pg_dump}); server not reachable to compare")
        return
    server_text, server_major = server
    if client_major is not None and client_major < server_major:
        report.add(
            "client tools",
            FAIL,
            f"pg_dump {client_version} is older than the server ({server_text}): backups would fail",
            f"install PostgreSQL {server_major} client tools and point PG_BIN at them",
        )
    else:
        report.add("client tools", OK, f"pg_dump {client_version} can dump the server ({server_text})")


def server_version(settings: Settings) -> tuple[str, int] | None:
    """(version text, major) of the configured server, or None if it cannot be reached quickly."""
    import psycopg2

    try:
        connection = psycopg2.connect(**settings.database.libpq_params(), connect_timeout="3")
    except psycopg2.Error:
        return None
    try:
        return connection.server_version and (
            _format_server_version(connection.server_version),
            connection.server_version // 10000,
        )
    finally:
        connection.close()


def _format_server_version(number: int) -> str:
    return f"{number // 10000}.{number % 10000}"


# --- backups -------------------------------------------------------------------------------


def check_backups(report: DoctorReport, settings: Settings) -> None:
    """BACKUP_DIR can be created and written; how old the configured database's newest backup is,
    whether it verifies, and temp files left by killed backups."""
    import time

    from semantik_infra.backup import manifest_key_source
    from semantik_infra.catalog import ABANDONED, backup_dir_problem, list_backups, list_partials

    directory = settings.backup.directory
    problem = backup_dir_problem(directory)
    if problem:
        report.add("backups", FAIL, problem, "set BACKUP_DIR to a directory this user can write")
        return
    state = "is writable" if directory.is_dir() else "can be created (its parent is writable)"
    report.add("backups", OK, f"BACKUP_DIR={directory} {state}")
    abandoned = [partial for partial in list_partials(directory) if partial.state == ABANDONED]
    if abandoned:
        report.add(
            "backups",
            WARN,
            f"{len(abandoned)} temporary files left by killed backups in {directory}",
            "`inv postgres.backups --prune --keep N` removes them",
        )
    try:
        key = manifest_key_source(settings)
    except ConfigError:
        key = None  # the env check reports a malformed key
    database = settings.database.database or "postgres"
    entries = [entry for entry in list_backups(directory, key) if entry.database == database]
    if not entries:
        report.add("backups", WARN, f"no backups of {database} in {directory} yet", "run `inv postgres.backup`")
        return
    newest = entries[-1]
    from datetime import UTC, datetime

    from semantik_infra.drill import read_record, staleness

    age_days = (time.time() - newest.created.timestamp()) / 86400
    drilled = read_record(newest.path)
    warnings = staleness(newest.created, drilled, now=datetime.now(UTC), max_age_days=settings.backup.max_age_days)
    proven = f", proven by a drill {drilled.drilled[:19]}" if drilled and drilled.ok else ""
    if warnings:
        for warning in warnings:
            hint = "run `inv postgres.backup`" if "days old" in warning else "run `inv postgres.drill latest`"
            report.add("backups", WARN, f"{newest.path.name}: {warning}", hint)
    else:
        report.add("backups", OK, f"newest backup {newest.path.name} is {age_days:.1f} days old{proven}")
    _check_newest_verifies(report, settings, newest, key)


def _check_newest_verifies(report: DoctorReport, settings: Settings, newest: BackupEntry, key: bytes | None) -> None:
    from semantik_infra.backends import select_backend
    from semantik_infra.backup import verify_archive

    if newest.has_no_manifest:
        report.add(
            "backups",
            WARN,
            f"newest backup {newest.path.name} has no manifest: its checksum cannot be checked",
            "run `inv postgres.backup` for a backup with a manifest",
        )
        return
    try:
        verdict = verify_archive(select_backend(settings), newest, key)
    except InfraError as error:
        report.add("backups", FAIL, f"newest backup does not verify: {error}", "run `inv postgres.backups --verify`")
        return
    report.add("backups", OK, f"newest backup verifies: {verdict}")


def check_backup_key(report: DoctorReport, settings: Settings) -> None:
    """Encrypted backups must open with the current BACKUP_ENCRYPTION_KEY: when the key changed,
    say which backups need which key, and which .env backup still holds it."""
    from semantik_infra.rotation import watch_key

    try:
        watch = watch_key(settings)
    except InfraError:
        return  # an unusable BACKUP_DIR is check_backups' finding
    if not watch.matching and not watch.other:
        return
    hint = "put that BACKUP_ENCRYPTION_KEY line back into the env file to restore them; keep the .bak file safe"
    if not watch.matching:
        report.add("backups", FAIL, f"your backup key changed: {watch.needed_elsewhere()}", hint)
    elif watch.other:
        report.add("backups", WARN, f"some backups need another key: {watch.needed_elsewhere()}", hint)
    else:
        report.add("backups", OK, f"BACKUP_ENCRYPTION_KEY opens all {len(watch.matching)} encrypted backups")


def connection_finding(settings: Settings) -> Finding:
    """The quick connection test (steps 1-3) as one finding; a SQLite file that does not exist is
    reported, not created, and an authentication failure on a cluster we manage names the recovery."""
    from semantik_infra.diagnostics import first_failure, quick_check

    if settings.database.is_sqlite and not Path(settings.database.database or "").exists():
        return Finding("connection", WARN, f"SQLite file {settings.database.database} does not exist (not tested)")
    report = quick_check(settings)
    failed = first_failure(report)
    if failed is None:
        return Finding("connection", OK, f"quick connection test passed ({report.url})")
    hint = failed.hint or "run `inv test.connection`"
    if failed.name == "authentication" and "password" in failed.summary and _managed(settings):
        hint = f"{hint}; if .env was lost or changed, {RECOVER_HINT}"
    return Finding("connection", FAIL, f"{failed.name}: {failed.summary}", hint)


def _managed(settings: Settings) -> bool:
    from semantik_infra.backends import explain_auto

    if settings.backend != "auto":
        return settings.backend in ("native", "docker")
    try:
        return explain_auto(settings).backend in ("native", "docker")
    except InfraError:
        return False


# --- what interrupted backups and restores left on the server -----------------------------------


def check_server_leftovers(report: DoctorReport, settings: Settings) -> None:
    """A database an interrupted swap closed, leftover scratch and kept databases (with their total
    size), and pg_dump/pg_restore sessions whose task was killed. Silent when the server cannot be
    reached: the connection check says why."""
    from semantik_infra.leftovers import (
        SCRATCH,
        find_leftover_databases,
        orphaned_tags,
        refuses_connections,
        summarize,
    )

    if any(finding.area == "port" and finding.status == FAIL for finding in report.findings):
        return  # something else holds the port: nothing of ours to ask
    database = settings.database.database or "postgres"
    closed = refuses_connections(settings, connect_timeout=3)  # quick, like the other probes here
    if closed is None:
        return
    if closed:
        report.add(
            "database",
            FAIL,
            f"database {database} refuses connections (ALLOW_CONNECTIONS is off: an interrupted restore left it so)",
            "run `inv postgres.up`, which reopens it",
        )
    try:
        leftovers = find_leftover_databases(settings)
        orphans = orphaned_tags(settings)
    except InfraError:
        return
    if leftovers:
        scratch = sum(leftover.kind == SCRATCH for leftover in leftovers)
        report.add(
            "database",
            WARN,
            f"{summarize(leftovers, 'leftover ')} of {database}: {scratch} scratch from interrupted restores,"
            f" {len(leftovers) - scratch} kept by restores",
            "`inv postgres.leftovers` lists them; `inv postgres.leftovers --drop` removes them",
        )
    from semantik_infra.snapshot import snapshots_fact

    snapshots = snapshots_fact(settings)
    if snapshots:
        report.add("database", OK, snapshots)
    if orphans:
        tools = ", ".join(sorted({f"{tag.tool} (task pid {tag.pid})" for tag in orphans}))
        report.add(
            "database",
            WARN,
            f"still running for killed tasks: {tools}",
            "any backup, restore or `inv postgres.leftovers` cancels them",
        )


def diagnose_project(
    environ: Mapping[str, str], cwd: Path, *, connection_check: Callable[[Settings], Finding] | None = None
) -> DoctorReport:
    """Load the settings (a load failure becomes a finding) and run every check."""
    from semantik_infra.config import env_file_chain, find_project_dir, load_settings

    project_dir = find_project_dir(cwd, environ)
    settings: Settings | None = None
    error: ConfigError | None = None
    try:
        settings = load_settings(environ=environ, cwd=cwd)
    except ConfigError as exc:
        error = exc
    try:
        chain: Iterable[Path] = env_file_chain(project_dir, environ)[1]
    except ConfigError:
        chain = ()
    return diagnose(settings, error, project_dir, chain, connection_check=connection_check)


def render_findings(findings: Iterable[Finding], *, problems_only: bool = False) -> list[str]:
    """Human lines: a status line per finding and, for problems, a `fix:` line."""
    from semantik_infra.console import status_line

    lines = []
    for finding in findings:
        if problems_only and finding.status == OK:
            continue
        lines.append(status_line(finding.status, f"{finding.area}: {finding.summary}"))
        if finding.hint and finding.status != OK:
            lines.append(f"    fix: {finding.hint}")
    return lines
