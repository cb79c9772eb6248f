"""The `postgres` collection: the development database's life on whichever backend is selected
(up, down, status, wait, logs, shell, reset, rotate-password)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invoke import Context
from invoke.exceptions import Exit

from semantik_infra.console import step as _report
from semantik_infra.tasks._common import confirm, infra_task, load, task

if TYPE_CHECKING:
    from semantik_infra.backends import Backend
    from semantik_infra.envfile import EnvUpdate


def _backend() -> Backend:
    from semantik_infra.backends import select_backend

    return select_backend(load())


def report_recorded(update: EnvUpdate | None) -> None:
    """Say which recorded variables were written, and where the previous file is."""
    if update is None or not update.changed:
        return
    kept = f" (previous file kept as {update.backup.name})" if update.backup else ""
    _report(f"recorded {', '.join(update.changed)} in {update.path.name}{kept}")


@task(help={"timeout": "Seconds to wait for the server to accept connections (default 60)"})
@infra_task
def up(c: Context, timeout: float = 60.0) -> None:
    """Start PostgreSQL (creating the cluster, secrets and database on first run) and wait until ready."""
    import os
    from pathlib import Path

    from semantik_infra.console import Timer
    from semantik_infra.envfile import prepare_env_file
    from semantik_infra.setup_state import start_and_record
    from semantik_infra.tasks._common import env_target

    with Timer() as timer:
        settings = load()
        if not settings.database.password and not settings.database_source.startswith("DATABASE_URL"):
            project_dir, target = env_target()
            result = prepare_env_file(project_dir, target, waiting=lambda text: _report(text, status="info"))
            if result.generated:
                _report(f"generated {', '.join(result.generated)} in {target.name} (values not shown)")
        started = start_and_record(os.environ, Path.cwd(), _report, timeout=timeout)
        report_recorded(started.update)
    verb = "was already up" if started.result.already_running else "is up"
    backend = started.backend
    _report(f"PostgreSQL {verb} ({backend.name}): {backend.url.redacted()}", timer.seconds)


@task(
    auto_shortflags=False,
    help={
        "volumes": "Also delete the data: the docker volume, or the native data directory (asks first unless --yes)",
        "yes": "Do not ask for confirmation",
    },
)
@infra_task
def down(c: Context, volumes: bool = False, yes: bool = False) -> None:
    """Stop PostgreSQL, keeping its data (unless --volumes)."""
    backend = _backend()
    if volumes:
        confirm(f"delete every database in {backend.data_location}", yes=yes)
        backend.destroy_data(_report)
        return
    if not backend.stop(_report):
        _report(f"PostgreSQL ({backend.name}) is not running: nothing to stop", status="info")


@task
@infra_task
def status(c: Context) -> None:
    """Show whether PostgreSQL runs, with pid/container, port, version, data location, uptime and leftovers."""
    from semantik_infra.console import status_line
    from semantik_infra.leftovers import leftovers_fact

    backend = _backend()
    report = backend.status()
    if report.running:
        from dataclasses import replace

        from semantik_infra.snapshot import snapshots_fact

        report = leftovers_fact(backend.settings, report)
        snapshots = snapshots_fact(backend.settings)
        if snapshots:
            report = replace(report, facts={**report.facts, "snapshots": snapshots})
    print("\n".join(report.lines()))
    for warning in report.warnings:
        print(status_line("warn", warning))
    if not report.running:
        raise Exit(code=3)


@task(help={"timeout": "Seconds to wait (default 30)"})
@infra_task
def wait(c: Context, timeout: float = 30.0) -> None:
    """Wait until the server accepts an authenticated connection."""
    backend = _backend()
    seconds = backend.wait_until_ready(timeout)
    _report(f"PostgreSQL accepts connections: {backend.url.redacted()}", seconds)


@task(help={"follow": "Keep printing new lines until Ctrl-C", "tail": "How many past lines to show (default 100)"})
@infra_task
def logs(c: Context, follow: bool = False, tail: int = 100) -> None:
    """Show the server log."""
    code = _backend().logs(follow=follow, tail=tail)
    if code not in (0, 130):
        raise Exit(code=code)


@task(help={"command": "Run this one SQL command and exit, instead of an interactive psql", "database": "Database"})
@infra_task
def shell(c: Context, command: str = "", database: str = "") -> None:
    """Open psql on the database (password passed through the environment, never the command line).

    Exits with psql's own exit status.
    """
    from semantik_infra.proc import run_interactive

    backend = _backend()
    backend.require_running()
    args = ["-v", "ON_ERROR_STOP=1", "-c", command] if command else []
    code = run_interactive(backend.client_command("psql", args, database=database or None, interactive=True))
    if code == 2 and not database:
        # psql could not connect: if an interrupted restore closed the database, say how to reopen it.
        from semantik_infra.leftovers import closed_database_error

        closed_database_error(backend.settings)
    if code != 0:
        raise Exit(code=code)


@task(auto_shortflags=False, help={"yes": "Do not ask for confirmation"})
@infra_task
def reset(c: Context, yes: bool = False) -> None:
    """Stop PostgreSQL and delete all its data (asks first unless --yes)."""
    backend = _backend()
    if not backend.manages_server:
        backend.destroy_data(_report)  # refuses with the reason
    confirm(f"delete every database in {backend.data_location}", yes=yes)
    backend.destroy_data(_report)
    _report("reset done: `inv postgres.up` creates a fresh cluster")


@task(
    help={
        "recover": "For a lost or overwritten .env: set the cluster's password to POSTGRES_PASSWORD (creating"
        " .env and a password if needed) through its data directory or container, without the old password",
        "length": "Length of the new password (default 43 characters, 258 bits)",
    }
)
@infra_task
def rotate_password(c: Context, recover: bool = False, length: int = 0) -> None:
    """Change the database password on the server and in .env as one step (the old .env is kept as a .bak)."""
    import os
    from pathlib import Path

    from semantik_infra.rotation import recover_password
    from semantik_infra.rotation import rotate_password as rotate

    if recover:
        if length:
            from semantik_infra.errors import ConfigError

            raise ConfigError("--length applies to a new password; --recover uses the one in .env")
        recovery = recover_password(os.environ, Path.cwd(), _report)
        _report(f"the cluster ({recovery.backend}, {recovery.location}) accepts the password in .env again")
        return
    rotation = rotate(os.environ, Path.cwd(), _report, length=length or None)
    update = rotation.update
    kept = f"; previous file kept as {update.backup.name}" if update.backup else ""
    _report(f"wrote the new password to {update.path.name} (value not shown{kept})")
    _report("the new password works")
