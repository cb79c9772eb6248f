"""Backup tasks, part of the `postgres` collection: `postgres.backup`, `postgres.backups` (list,
verify, prune) and `postgres.restore`."""

from __future__ import annotations

from invoke import Context
from invoke.exceptions import Exit

from semantik_infra.tasks._common import confirm, infra_task, load, task


@task(
    help={
        "format": "custom (default, one file) or directory (parallel with --jobs; native/external only)",
        "jobs": "Parallel pg_dump jobs (directory format)",
        "encrypt": "Encrypt the archive with BACKUP_ENCRYPTION_KEY (default: BACKUP_ENCRYPT)",
        "no_encrypt": "Write a plain archive even when BACKUP_ENCRYPT=true",
        "include_globals": "Also save roles with pg_dumpall --globals-only (docker/native)",
    }
)
@infra_task
def backup(
    c: Context,
    format: str = "custom",
    jobs: int = 1,
    encrypt: bool = False,
    no_encrypt: bool = False,
    include_globals: bool = False,
) -> None:
    """Back up the database into BACKUP_DIR: atomic, verified, with a manifest."""
    from semantik_infra.backends import select_backend
    from semantik_infra.backup import create_backup
    from semantik_infra.console import Progress, format_bytes, format_duration, step
    from semantik_infra.errors import ConfigError

    if encrypt and no_encrypt:
        raise ConfigError("--encrypt and --no-encrypt contradict each other: pass one")
    settings = load()
    backend = select_backend(settings)
    backend.require_running()
    progress = Progress("backing up")
    try:
        result = create_backup(
            settings,
            backend,
            fmt=format,
            jobs=jobs,
            encrypt=encrypt or (settings.backup.encrypt and not no_encrypt),
            include_globals=include_globals,
            progress=progress.update,
        )
    finally:
        progress.done()
    manifest = result.manifest
    rate = manifest.size / manifest.duration_s if manifest.duration_s else 0
    step(
        f"backed up {manifest.database} to {result.path} ({format_bytes(manifest.size)},"
        f" {manifest.toc_entries} TOC entries{', encrypted' if manifest.encrypted else ''})"
        f" in {format_duration(manifest.duration_s)}, {format_bytes(rate)}/s"
    )
    if result.globals_path:
        step(f"saved roles to {result.globals_path}")


@task(
    help={
        "verify": "Re-check every archive's checksum, decryptability and table of contents",
        "prune": "Delete old archives (with --keep and/or --keep-days); each database's newest is always kept",
        "keep": "With --prune: keep this many newest archives of each database",
        "keep_days": "With --prune: keep archives younger than this many days",
        "dry_run": "With --prune: only print what would be deleted",
    }
)
@infra_task
def backups(
    c: Context, verify: bool = False, prune: bool = False, keep: int = 0, keep_days: float = 0.0, dry_run: bool = False
) -> None:
    """List backups (date, size, database, encrypted, verified); verify or prune them."""
    from datetime import UTC, datetime

    from semantik_infra.backends import select_backend
    from semantik_infra.backup import (
        LISTING_HEADER,
        delete_backup,
        encryption_key,
        entry_columns,
        entry_size,
        list_backups,
        remove_partial,
        select_for_pruning,
        stale_partials,
        verify_archive,
    )
    from semantik_infra.console import format_bytes, format_table, status_line, step
    from semantik_infra.errors import BackupError

    settings = load()
    entries = list_backups(settings.backup.directory)
    leftovers = stale_partials(settings.backup.directory)
    if prune:
        doomed = select_for_pruning(entries, keep=keep or None, keep_days=keep_days or None, now=datetime.now(UTC))
        for entry in doomed:
            if not dry_run:
                delete_backup(entry)
            step(f"{'would delete' if dry_run else 'deleted'} {entry.path.name}", status="info" if dry_run else "ok")
        for path in leftovers:
            if not dry_run:
                remove_partial(path)
            step(
                f"{'would remove' if dry_run else 'removed'} {path.name} (left by an interrupted backup)",
                status="info" if dry_run else "ok",
            )
        step(f"{len(entries) - len(doomed)} backups kept" + (" (dry run: nothing deleted)" if dry_run else ""))
        return
    if leftovers:
        step(f"{len(leftovers)} temporary files left by interrupted backups: --prune removes them", status="warn")
    if not entries:
        step(f"no backups in {settings.backup.directory}", status="info")
        return
    backend = select_backend(settings) if verify else None
    key = None
    if verify and settings.backup.encryption_key:
        key = encryption_key(settings, True)
    failures = 0
    rows = [entry_columns(entry) for entry in entries]
    header, *lines = format_table(LISTING_HEADER, rows, right=(1,))
    print((" " * len(status_line("ok", "")) if verify else "") + header)
    for entry, line in zip(entries, lines, strict=True):
        if verify:
            try:
                verdict = verify_archive(backend, entry, key)  # type: ignore[arg-type]
                print(status_line("ok", f"{line}  [{verdict}]"))
            except BackupError as error:
                failures += 1
                print(status_line("fail", f"{line}  [{error}]"))
        else:
            print(line)
    total = sum(entry_size(entry) for entry in entries)
    print(
        f"{len(entries)} backup{'s' if len(entries) != 1 else ''}, {format_bytes(total)} in {settings.backup.directory}"
    )
    if failures:
        raise Exit(f"error: {failures} of {len(entries)} backups failed verification", code=1)


@task(
    help={
        "archive": "Archive to restore: a path, or 'latest' for the newest backup of the configured database",
        "yes": "Do not ask for confirmation",
        "jobs": "Parallel pg_restore jobs (plain archives on native/external)",
        "in_place": "Clean and restore into the live database instead of swapping in a scratch copy",
        "drop_old": "Drop the previous database after a successful swap",
        "no_privileges": "Skip GRANTs (when the archive grants to roles this server does not have)",
    },
)
@infra_task
def restore(
    c: Context,
    archive: str,
    yes: bool = False,
    jobs: int = 1,
    in_place: bool = False,
    drop_old: bool = False,
    no_privileges: bool = False,
) -> None:
    """Verify a backup, restore it into a scratch database, then swap it in (the old one is kept)."""
    from semantik_infra.backends import select_backend
    from semantik_infra.console import format_duration, step
    from semantik_infra.restore import describe_tables, resolve_archive, restore_backup

    settings = load()
    backend = select_backend(settings)
    backend.require_running()
    entry = resolve_archive(settings, archive)
    live = settings.database.database
    if in_place:
        confirm(f"clean database {live} and restore {entry.path.name} into it (no copy is kept)", yes=yes)
    else:
        keep = "drop the current one" if drop_old else f"keep the current one as {live}_before_restore_<time>"
        confirm(f"replace database {live} with {entry.path.name} and {keep}", yes=yes)
    result = restore_backup(
        settings,
        backend,
        entry,
        jobs=jobs,
        in_place=in_place,
        drop_old=drop_old,
        privileges=not no_privileges,
        report=step,
    )
    print("\n".join(describe_tables(result.tables)))
    step(f"restored {len(result.tables)} tables into {result.database} in {format_duration(result.seconds)}")
