"""Top-level tasks for a developer's setup: `inv onboard` (one command to a verified database)
and `inv doctor` (read-only diagnosis)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invoke import Context
from invoke.exceptions import Exit

from semantik_infra.tasks._common import infra_task, task

if TYPE_CHECKING:
    from semantik_infra.config import Settings
    from semantik_infra.doctor import DoctorReport


def _quick_connection_test(settings: Settings) -> None:
    from semantik_infra.diagnostics import first_failure, quick_check
    from semantik_infra.errors import DatabaseError

    failed = first_failure(quick_check(settings))
    if failed is not None:
        raise DatabaseError(f"{failed.name}: {failed.summary}" + (f" ({failed.hint})" if failed.hint else ""))


def _diagnose(overrides: dict[str, str] | None = None) -> DoctorReport:
    import os
    from pathlib import Path

    from semantik_infra.doctor import connection_finding, diagnose_project

    environ = {**os.environ, **(overrides or {})}
    return diagnose_project(environ, Path.cwd(), connection_check=connection_finding)


def _requested(backend: str, port: int, project_name: str) -> dict[str, str]:
    """onboard's flags as the variables they set (they win over every file and are recorded)."""
    from semantik_infra.config import BACKENDS, check_compose_project
    from semantik_infra.errors import ConfigError

    requested = {}
    if backend:
        if backend.lower() not in BACKENDS:
            raise ConfigError(f"--backend={backend!r}: must be one of: {', '.join(BACKENDS)}")
        requested["SEMANTIK_PG_BACKEND"] = backend.lower()
    if port:
        if not 1 <= port <= 65535:
            raise ConfigError(f"--port={port}: not a port number (1-65535)")
        requested["POSTGRES_PORT"] = str(port)
    if project_name:
        requested["COMPOSE_PROJECT_NAME"] = check_compose_project(project_name, "--project-name")
    return requested


@task(
    help={
        "backend": "Run PostgreSQL with this backend (docker, native, external; default: what auto finds), recorded",
        "port": "Serve on this port (default: 5432, or the next free one if that is taken), recorded",
        "project_name": "Docker compose project name (default: one of this clone's own), recorded",
    }
)
@infra_task
def onboard(c: Context, backend: str = "", port: int = 0, project_name: str = "") -> None:
    """Set up everything in one idempotent command: secrets, PostgreSQL, a verified connection.

    The backend, port and compose project it used are recorded in .env.
    """
    import os
    from pathlib import Path

    from semantik_infra.console import step
    from semantik_infra.doctor import render_findings
    from semantik_infra.onboard import StepFailed, summary
    from semantik_infra.onboard import onboard as run_onboard

    requested = _requested(backend, port, project_name)
    try:
        result = run_onboard(os.environ, Path.cwd(), step, connection_test=_quick_connection_test, requested=requested)
    except StepFailed as failure:
        step(f"onboarding stopped at {failure}", status="fail")
        hints = render_findings(_diagnose(requested).findings, problems_only=True)
        if hints:
            print("doctor says:\n" + "\n".join(hints))
        raise Exit(code=failure.exit_code) from None
    print("\n".join(summary(result)))


@task(help={"json": "Print a machine-readable report instead"})
@infra_task
def doctor(c: Context, json: bool = False) -> None:
    """Diagnose the setup without changing anything: env files, backend, port, tools, backups, connection."""
    from semantik_infra.doctor import render_findings

    report = _diagnose()
    if json:
        import json as json_module

        print(json_module.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(render_findings(report.findings)))
    if report.failed:
        raise Exit(code=1)
