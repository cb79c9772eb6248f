"""`inv onboard`: from a fresh clone to a verified database in one idempotent command. It owns the
sequence — prerequisites, env file and secrets, PostgreSQL up (recording the backend, port and
compose project it used in the env file), a quick connection test, the backups directory — and the
closing summary. When a step fails it stops there, and the caller shows the hints `doctor` gives
for the same setup."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from semantik_infra.backends.base import Reporter
from semantik_infra.config import Settings, load_settings
from semantik_infra.errors import BackendError, InfraError

MIN_PYTHON = (3, 11)


@dataclass
class OnboardResult:
    """What onboarding did and found, for the summary."""

    settings: Settings | None = None
    backend: str = ""
    data_location: str = ""
    server_version: str = ""
    # pgvector's version when the server can `CREATE EXTENSION vector`, else None.
    pgvector: str | None = None
    changed: list[str] = field(default_factory=list)
    recorded: dict[str, str] = field(default_factory=dict)
    env_file: Path | None = None

    @property
    def changed_anything(self) -> bool:
        """True if any step changed the machine."""
        return bool(self.changed)


class StepFailed(InfraError):
    """An onboarding step failed; `step` names it, the message says why."""

    def __init__(self, step: str, error: InfraError) -> None:
        super().__init__(f"{step}: {error}")
        self.step = step
        self.exit_code = error.exit_code


def check_prerequisites(settings: Settings, report: Reporter) -> str:
    """Python version, and a way to run PostgreSQL (docker+compose, embedded or system binaries); return the backend."""
    if sys.version_info < MIN_PYTHON:
        raise BackendError(
            f"Python {'.'.join(map(str, MIN_PYTHON))} or newer is needed, this is {sys.version.split()[0]}"
        )
    report(f"Python {sys.version.split()[0]}", None)
    from semantik_infra.backends import resolve_auto

    name = resolve_auto(settings) if settings.backend == "auto" else settings.backend
    if name == "docker":
        from semantik_infra.backends.docker import connect_engine, detect_compose

        connect_engine()
        report(f"Docker engine reachable, compose: {' '.join(detect_compose())}", None)
    elif name == "native":
        from semantik_infra.backends.native import find_server_binaries

        binaries = find_server_binaries(settings.pg_bin)
        report(f"PostgreSQL {binaries.version} server binaries in {binaries.bindir}", None)
    elif name == "embedded":
        from semantik_infra.backends.embedded import embedded_binaries

        binaries = embedded_binaries(settings)
        report(
            f"PostgreSQL {binaries.version} server and client binaries from {binaries.found_by} in {binaries.bindir}",
            None,
        )
    if name in ("native", "external"):
        from semantik_infra.backends.native import find_client_tool

        tools = [str(find_client_tool(tool, settings.pg_bin).name) for tool in ("psql", "pg_dump", "pg_restore")]
        report(f"client tools found: {', '.join(tools)}", None)
    return name


@contextmanager
def failing_as(step: str) -> Iterator[None]:
    """Re-raise any InfraError inside as StepFailed naming `step`."""
    try:
        yield
    except StepFailed:
        raise
    except InfraError as error:
        raise StepFailed(step, error) from None


def onboard(
    environ: Mapping[str, str],
    cwd: Path,
    report: Reporter,
    *,
    connection_test: Callable[[Settings], None],
    requested: Mapping[str, str] | None = None,
) -> OnboardResult:
    """Run every step in order; raise StepFailed at the first that fails. `requested` holds the
    variables onboard's flags set: they win over every file and are recorded like the rest."""
    from semantik_infra.config import env_file_chain, find_project_dir
    from semantik_infra.envfile import prepare_env_file
    from semantik_infra.setup_state import start_and_record

    environ = {**environ, **(requested or {})}
    result = OnboardResult()
    with failing_as("env file"):
        project_dir = find_project_dir(cwd, environ)
        target = env_file_chain(project_dir, environ, must_exist=False)[0]
        init = prepare_env_file(project_dir, target, waiting=lambda text: report(text, None, "info"))
    if init.created:
        result.changed.append(f"created {target}")
    if init.generated:
        result.changed.append(f"generated {', '.join(init.generated)}")
    result.env_file = init.path
    report(f"env file {target} ready (secrets not shown)", None)

    with failing_as("configuration"):
        settings = result.settings = load_settings(environ=environ, cwd=cwd)
    with failing_as("prerequisites"):
        result.backend = check_prerequisites(settings, report)
    with failing_as("postgres.up"):
        started = start_and_record(environ, cwd, report, record_all=True)
        settings = result.settings = started.settings
        result.backend = started.backend.name
        if not started.result.already_running:
            result.changed.append("started PostgreSQL")
        if started.update is not None and started.update.changed:
            result.changed.append(f"recorded {', '.join(started.update.changed)} in {started.update.path.name}")
        result.recorded = started.plan.values
        result.data_location = started.backend.data_location
    with failing_as("test.connection --quick"):
        connection_test(settings)
        result.server_version, result.pgvector = server_facts(settings)
    with failing_as("backups directory"):
        backups = settings.backup.directory
        if not backups.exists():
            backups.mkdir(parents=True)
            result.changed.append(f"created {backups}")
    report(f"backups directory {backups} ready", None)
    return result


def server_facts(settings: Settings) -> tuple[str, str | None]:
    """The server's version, and pgvector's version if the server has it available."""
    import psycopg2

    from semantik_infra.backends.base import first_line
    from semantik_infra.errors import DatabaseError

    params = {"connect_timeout": str(settings.connect_timeout), **settings.database.libpq_params()}
    try:
        connection = psycopg2.connect(**params)
    except psycopg2.Error as error:
        raise DatabaseError(f"cannot connect to read the server version: {first_line(str(error))}") from None
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0].split()[0]
            cursor.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
            row = cursor.fetchone()
    except psycopg2.Error as error:
        raise DatabaseError(f"cannot read the server version: {first_line(str(error))}") from None
    finally:
        connection.close()
    return version, row[0] if row else None


def summary(result: OnboardResult) -> list[str]:
    """The closing lines: backend, URL, how to open a shell, back up, and where the data lives."""
    assert result.settings is not None
    inv = "inv" if shutil.which("inv") else ".venv/bin/inv"
    head = "everything was already set up: nothing changed" if not result.changed else "onboarding done"
    return [
        "",
        head + ("" if not result.changed else f" ({'; '.join(result.changed)})"),
        f"  backend:   {result.backend}",
        f"  server:    PostgreSQL {result.server_version}",
        "  pgvector:  "
        + (f"{result.pgvector} available: CREATE EXTENSION vector" if result.pgvector else "not available here"),
        f"  recorded:  {', '.join(f'{k}={v}' for k, v in result.recorded.items())}"
        + (f" (in {result.env_file.name})" if result.env_file else ""),
        f"  database:  {result.settings.database.redacted()}",
        f"  data:      {result.data_location}",
        f"  shell:     {inv} postgres.shell",
        f"  backup:    {inv} postgres.backup   (into {result.settings.backup.directory})",
        f"  diagnose:  {inv} doctor",
    ]
