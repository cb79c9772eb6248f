"""The `snapshot` collection: save, list, restore and drop instant copies of the database."""

from __future__ import annotations

from invoke import Context, task

from semantik_infra.tasks._common import confirm, infra_task, load


@task(help={"name": "Snapshot name: lowercase letters, digits, '-' and '_'"})
@infra_task
def save(c: Context, name: str) -> None:
    """Save an instant copy of the database inside the same server (sessions on it are closed for a moment)."""
    from semantik_infra.console import Timer, format_bytes, step
    from semantik_infra.snapshot import save_snapshot

    settings = load()
    with Timer() as timer:
        snap = save_snapshot(settings, name)
    step(f"saved snapshot {snap.name} of {snap.source} ({format_bytes(snap.size)})", timer.seconds)


@task(name="list")
@infra_task
def list_(c: Context) -> None:
    """List the database's snapshots: name, created, size, source, and the total size."""
    from semantik_infra.snapshot import describe, list_snapshots

    print("\n".join(describe(list_snapshots(load()))))


@task(
    help={
        "name": "The snapshot to restore (it stays, so you can reset to it again)",
        "yes": "Do not ask for confirmation",
        "keep_current": "Keep the replaced database as <db>_before_restore_<time> instead of dropping it",
    }
)
@infra_task
def restore(c: Context, name: str, yes: bool = False, keep_current: bool = False) -> None:
    """Replace the database with a fresh copy of a snapshot (asks first unless --yes)."""
    from semantik_infra.console import step
    from semantik_infra.snapshot import find_snapshot, restore_snapshot

    settings = load()
    snap = find_snapshot(settings, name)
    keep = "keep the current one" if keep_current else "drop the current one"
    confirm(f"replace database {snap.source} with snapshot {snap.name} and {keep}", yes=yes)
    result = restore_snapshot(settings, name, keep_current=keep_current, report=step)
    after = (
        f"the replaced database is kept as {result.previous}" if result.previous and not result.dropped_previous else ""
    )
    step(f"{snap.source} is snapshot {snap.name} again" + (f"; {after}" if after else ""), result.seconds)


@task(help={"name": "The snapshot to delete", "yes": "Do not ask for confirmation"})
@infra_task
def drop(c: Context, name: str, yes: bool = False) -> None:
    """Delete a snapshot (asks first unless --yes)."""
    from semantik_infra.console import format_bytes, step
    from semantik_infra.snapshot import drop_snapshot, validate_name

    validate_name(name)
    confirm(f"delete snapshot {name}", yes=yes)
    snap = drop_snapshot(load(), name)
    step(f"dropped snapshot {snap.name} ({format_bytes(snap.size)} freed)")
