"""Top-level tasks for a developer's setup: `inv onboard` (one command to a verified database)
and `inv doctor` (read-only diagnosis)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from invoke import Context, task
from invoke.exceptions import Exit

from semantik_infra.tasks._common import infra_task

if TYPE_CHECKING:
    from semantik_infra.config import Settings
    from semantik_infra.doctor import DoctorReport, Finding


def _quick_connection_test(settings: Settings) -> None:
    from semantik_infra.diagnostics import first_failure, quick_check
    from semantik_infra.errors import DatabaseError

    failed = first_failure(quick_check(settings))
    if failed is not None:
        raise DatabaseError(f"{failed.name}: {failed.summary}" + (f" ({failed.hint})" if failed.hint else ""))


def _connection_finding(settings: Settings) -> Finding:
    from semantik_infra.diagnostics import first_failure, quick_check
    from semantik_infra.doctor import FAIL, OK, Finding

    report = quick_check(settings)
    failed = first_failure(report)
    if failed is None:
        return Finding("connection", OK, f"quick connection test passed ({report.url})")
    return Finding("connection", FAIL, f"{failed.name}: {failed.summary}", failed.hint or "run `inv test.connection`")


def _diagnose() -> DoctorReport:
    import os
    from pathlib import Path

    from semantik_infra.doctor import diagnose_project

    return diagnose_project(os.environ, Path.cwd(), connection_check=_connection_finding)


@task
@infra_task
def onboard(c: Context) -> None:
    """Set up everything in one idempotent command: secrets, PostgreSQL, a verified connection."""
    import os
    from pathlib import Path

    from semantik_infra.console import step
    from semantik_infra.doctor import render_findings
    from semantik_infra.onboard import StepFailed, summary
    from semantik_infra.onboard import onboard as run_onboard

    try:
        result = run_onboard(os.environ, Path.cwd(), step, connection_test=_quick_connection_test)
    except StepFailed as failure:
        step(f"onboarding stopped at {failure}", status="fail")
        hints = render_findings(_diagnose().findings, problems_only=True)
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
