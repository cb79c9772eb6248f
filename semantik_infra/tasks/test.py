"""The `test` collection: `inv test.connection`, the connection diagnostics."""

from __future__ import annotations

from invoke import Context
from invoke.exceptions import Exit

from semantik_infra.tasks._common import infra_task, load, task


@task(
    help={
        "json": "Print a machine-readable report (the same facts)",
        "quick": "Only configuration, reachability and authentication (steps 1-3)",
        "url": "Test this database URL instead of the configured one (.env is not touched)",
    }
)
@infra_task
def connection(c: Context, json: bool = False, quick: bool = False, url: str = "") -> None:
    """Check the database step by step: config, reachability, auth, facts, operations, pool, latency."""
    from semantik_infra.diagnostics import render_human, run_checks_for

    report = run_checks_for(load(), url=url or None, quick=quick)
    if json:
        import json as json_module

        print(json_module.dumps(report.to_dict(), indent=2, default=str))
    else:
        print("\n".join(render_human(report)))
    if not report.ok:
        raise Exit(code=1)
