"""The `postgres` collection: the development database's life on whichever backend is selected
(up, down, status, wait, logs, shell, reset)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invoke import Context, task
from invoke.exceptions import Exit

from semantik_infra.console import step as _report
from semantik_infra.tasks._common import confirm, infra_task, load

if TYPE_CHECKING:
    from semantik_infra.backends import Backend


def _backend() -> Backend:
    from semantik_infra.backends import select_backend

    return select_backend(load())


@task(help={"timeout": "Seconds to wait for the server to accept connections (default 60)"})
@infra_task
def up(c: Context, timeout: float = 60.0) -> None:
    """Start PostgreSQL (creating the cluster, secrets and database on first run) and wait until ready."""
    from semantik_infra.backends import select_backend
    from semantik_infra.console import Timer
    from semantik_infra.envfile import prepare_env_file
    from semantik_infra.tasks._common import env_target

    with Timer() as timer:
        settings = load()
        if not settings.database.password and not settings.database_source.startswith("DATABASE_URL"):
            project_dir, target = env_target()
            result = prepare_env_file(project_dir, target)
            if result.generated:
                _report(f"generated {', '.join(result.generated)} in {target.name} (values not shown)")
                settings = load()
        backend = select_backend(settings)
        result_start = backend.start(_report, timeout=timeout)
    verb = "was already up" if result_start.already_running else "is up"
    _report(f"PostgreSQL {verb} ({backend.name}): {backend.url.redacted()}", timer.seconds)


@task(
    auto_shortflags=False,
    help={
        "volumes": "Docker only: also delete the data volume (asks first unless --yes)",
        "yes": "Do not ask for confirmation",
    },
)
@infra_task
def down(c: Context, volumes: bool = False, yes: bool = False) -> None:
    """Stop PostgreSQL, keeping its data."""
    backend = _backend()
    if volumes:
        confirm(f"delete every database in {backend.data_location}", yes=yes)
        backend.destroy_data(_report)
        return
    if not backend.stop(_report):
        _report(f"PostgreSQL ({backend.name}) is not running: nothing to stop")


@task
@infra_task
def status(c: Context) -> None:
    """Show whether PostgreSQL runs, with pid/container, port, version, data location, uptime and leftovers."""
    from semantik_infra.leftovers import leftovers_fact

    backend = _backend()
    report = backend.status()
    if report.running:
        report = leftovers_fact(backend.settings, report)
    print("\n".join(report.lines()))
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
    """Open psql on the database (password passed through the environment, never the command line)."""
    from semantik_infra.proc import run_interactive

    args = ["-v", "ON_ERROR_STOP=1", "-c", command] if command else []
    backend = _backend()
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
