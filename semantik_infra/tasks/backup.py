"""Backup tasks, part of the `postgres` collection: `postgres.backup`, `postgres.backups` (list,
verify, prune), `postgres.restore` and `postgres.leftovers`. No flag has a short form: a slip of
one letter must not drop a database."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from invoke import Context
from invoke.exceptions import Exit

from semantik_infra.tasks._common import confirm, infra_task, load, task

if TYPE_CHECKING:
    from semantik_infra.console import Progress


def _reporter(progress: Progress) -> Any:
    """console.step, clearing the progress line first."""
    from semantik_infra.console import step

    def report(text: str, seconds: float | None = None, status: str = "ok") -> None:
        progress.done()
        step(text, seconds, status)

    return report


@task(
    auto_shortflags=False,
    help={
        "format": "custom (default, one file) or directory (parallel with --jobs; native/external only)",
        "jobs": "Parallel pg_dump jobs (directory format only)",
        "encrypt": "Encrypt the archive with BACKUP_ENCRYPTION_KEY (default: BACKUP_ENCRYPT)",
        "no_encrypt": "Write a plain archive even when BACKUP_ENCRYPT=true",
        "include_globals": "Also save roles with pg_dumpall --globals-only (docker/native)",
    },
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
    """Back up the database into BACKUP_DIR: atomic, verified, with an authenticated manifest."""
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
            report=_reporter(progress),
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
    if manifest.mac is None:
        step("the manifest is unauthenticated: set BACKUP_ENCRYPTION_KEY (`inv env.init`) to sign it", status="warn")
    if result.globals_path:
        step(f"saved roles to {result.globals_path}")


def _number(flag: str, text: str | None, kind: type) -> Any:
    """A numeric flag given as text (None when absent, so 0 is never mistaken for 'not given')."""
    import math

    from semantik_infra.errors import ConfigError

    if text is None:
        return None
    what = "a whole number" if kind is int else "a number"
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or (kind is float and not math.isfinite(value)):
        raise ConfigError(f"{flag}={text!r}: not {what} of 0 or more") from None
    return value


@task(
    auto_shortflags=False,
    help={
        "verify": "Re-check every archive's manifest, checksum, decryptability and table of contents",
        "prune": "Delete old archives (with --keep and/or --keep-days); each database's newest is always kept",
        "keep": "With --prune: keep this many newest archives of each database (at least 1)",
        "keep_days": "With --prune: keep archives younger than this many days (more than 0)",
        "dry_run": "With --prune: only print what would be deleted",
    },
)
@infra_task
def backups(
    c: Context,
    verify: bool = False,
    prune: bool = False,
    keep: str | None = None,
    keep_days: str | None = None,
    dry_run: bool = False,
) -> None:
    """List backups (date, size, database, encrypted, verified, authenticated) and temp files; verify or prune."""
    from semantik_infra.console import status_line, step
    from semantik_infra.errors import ConfigError

    kept, days = _number("--keep", keep, int), _number("--keep-days", keep_days, float)
    if not prune:
        given = [flag for flag, value in (("--keep", kept), ("--keep-days", days)) if value is not None]
        if dry_run:
            given.append("--dry-run")
        if given:
            raise ConfigError(f"{' and '.join(given)} only work with --prune: add --prune, or leave them out")
    elif verify:
        raise ConfigError("--verify and --prune are separate runs: verify first, then prune")
    settings = load()
    if prune:
        _prune(settings, kept, days, dry_run)
        return
    from semantik_infra.backup import check_without_manifest, manifest_key_source, verify_archive
    from semantik_infra.catalog import (
        LISTING_HEADER,
        entry_columns,
        entry_size,
        list_backups,
        list_partials,
        lone_files,
    )
    from semantik_infra.console import format_bytes, format_table
    from semantik_infra.errors import BackupError

    directory = settings.backup.directory
    key = manifest_key_source(settings)
    entries = list_backups(directory, key)
    for partial in list_partials(directory):
        step(f"temporary file {partial.describe()}", status="warn" if partial.state == "abandoned" else "info")
    for lone in lone_files(directory):
        step(f"{lone.name}: without its archive (left by a backup killed while publishing)", status="warn")
    if not entries:
        step(f"no backups in {directory}", status="info")
        return
    backend = None
    if verify:
        from semantik_infra.backends import select_backend

        backend = select_backend(settings)
    failures = unchecked = 0
    rows = [entry_columns(entry) for entry in entries]
    header, *lines = format_table(LISTING_HEADER, rows, right=(1,))
    if entries:
        print((" " * len(status_line("ok", "")) if verify else "") + header)
    for entry, line in zip(entries, lines, strict=True):
        if not verify:
            print(line)
            continue
        try:
            if entry.has_no_manifest:
                unchecked += 1
                print(status_line("warn", f"{line}  [{check_without_manifest(backend, entry, key)}]"))  # type: ignore[arg-type]
            else:
                print(status_line("ok", f"{line}  [{verify_archive(backend, entry, key)}]"))  # type: ignore[arg-type]
        except BackupError as error:
            failures += 1
            print(status_line("fail", f"{line}  [{error}]"))
    total = sum(entry_size(entry) for entry in entries)
    print(f"{len(entries)} backup{'s' if len(entries) != 1 else ''}, {format_bytes(total)} in {directory}")
    if unchecked:
        step(
            f"{unchecked} archives have no manifest: their tables of contents read, checksums cannot be checked",
            status="warn",
        )
    if failures:
        raise Exit(f"error: {failures} of {len(entries)} backups failed verification", code=1)


def _prune(settings: Any, keep: int | None, keep_days: float | None, dry_run: bool) -> None:
    from datetime import UTC, datetime

    from semantik_infra.backup import manifest_key_source
    from semantik_infra.catalog import (
        ABANDONED,
        ABANDONED_AFTER_SECONDS,
        delete_backup,
        discard,
        list_backups,
        list_partials,
        lone_files,
        select_for_pruning,
    )
    from semantik_infra.console import step

    directory = settings.backup.directory
    entries = list_backups(directory, manifest_key_source(settings))
    doomed = select_for_pruning(entries, keep=keep, keep_days=keep_days, now=datetime.now(UTC))
    verb = "would delete" if dry_run else "deleted"
    mark = "info" if dry_run else "ok"
    for entry in doomed:
        if not dry_run:
            delete_backup(entry)
        step(f"{verb} {entry.path.name}", status=mark)
    for partial in list_partials(directory):
        if partial.state == ABANDONED:
            if not dry_run:
                discard(partial.path)
            step(
                f"{'would remove' if dry_run else 'removed'} {partial.path.name} (left by an interrupted backup)",
                status=mark,
            )
    # A live backup publishes its archive a moment after its manifest: leave young ones alone.
    for lone in lone_files(directory, older_than=ABANDONED_AFTER_SECONDS):
        if not dry_run:
            lone.unlink(missing_ok=True)
        step(f"{'would remove' if dry_run else 'removed'} {lone.name} (its archive was never published)", status=mark)
    step(f"{len(entries) - len(doomed)} backups kept" + (" (dry run: nothing deleted)" if dry_run else ""))


@task(
    auto_shortflags=False,
    help={
        "archive": "A path, a name in BACKUP_DIR, or 'latest' (the newest backup of the configured database)",
        "yes": "Do not ask for confirmation",
        "jobs": "Parallel pg_restore jobs (plain archives on native/external)",
        "in_place": "Clean and restore into the live database instead of swapping in a scratch copy",
        "drop_old": "Drop the previous database after a successful swap (not with an archive that has no manifest)",
        "no_privileges": "Skip GRANTs and per-role settings (when the archive names roles this server lacks)",
        "into_current": "Restore a backup of another database into the configured one",
        "server_locale": "Create the database with the server's default locale instead of the archive's",
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
    into_current: bool = False,
    server_locale: bool = False,
) -> None:
    """Verify a backup, restore it into a scratch database, then swap it in (the old one is kept)."""
    from semantik_infra.backends import select_backend
    from semantik_infra.backup import check_jobs
    from semantik_infra.catalog import entry_size
    from semantik_infra.console import Progress, format_duration, step
    from semantik_infra.restore import check_restorable, resolve_archive, restore_backup

    check_jobs(jobs)
    settings = load()
    live = settings.database.database or "postgres"
    backend = select_backend(settings)
    backend.require_running()
    entry = resolve_archive(settings, archive)
    check_restorable(entry, live, into_current=into_current, drop_old=drop_old)
    if in_place:
        action = f"clean database {live} and restore {entry.path.name} into it (no copy is kept)"
    else:
        kept = "drop the current one" if drop_old else f"keep the current one as {live}_before_restore_<time>"
        action = f"replace database {live} with {entry.path.name} and {kept}"
    if entry.has_no_manifest:
        warning = f"{entry.path.name} has no manifest: its checksum cannot be checked"
        if yes:
            step(warning, status="warn")
        action = f"{action}, although {warning}"
    confirm(action, yes=yes)
    progress = Progress("restoring", total=entry_size(entry) if entry.path.is_file() else None)
    try:
        result = restore_backup(
            settings,
            backend,
            entry,
            jobs=jobs,
            in_place=in_place,
            drop_old=drop_old,
            privileges=not no_privileges,
            into_current=into_current,
            server_locale=server_locale,
            report=_reporter(progress),
            progress=progress.update,
        )
    finally:
        progress.done()
    count = len(result.tables)
    tables = f" ({count} table{'s' if count != 1 else ''})" if count else ""
    step(
        f"restored {result.archive.name} into {result.database}{tables} in {format_duration(result.seconds)}"
        " (`inv postgres.drill` proves every table's rows)"
    )


@task(
    auto_shortflags=False,
    help={
        "drop": "Drop the listed databases (asks first unless --yes); a running restore's is never dropped",
        "dry_run": "With --drop: only print what would be dropped",
        "yes": "Do not ask for confirmation",
    },
)
@infra_task
def leftovers(c: Context, drop: bool = False, dry_run: bool = False, yes: bool = False) -> None:
    """List (and with --drop remove) the scratch and kept databases restores left behind, with sizes."""
    from semantik_infra.backends import select_backend
    from semantik_infra.console import step
    from semantik_infra.errors import ConfigError
    from semantik_infra.leftovers import (
        SCRATCH,
        cancel_orphans,
        drop_leftover_databases,
        find_leftover_databases,
        summarize,
    )

    if dry_run and not drop:
        raise ConfigError("--dry-run only works with --drop")
    settings = load()
    live = settings.database.database or "postgres"
    cancel_orphans(settings, select_backend(settings), step)
    found = find_leftover_databases(settings)
    if not found:
        step(f"no leftover databases of {live}", status="info")
        return
    for leftover in found:
        print(leftover.describe())
    step(f"total: {summarize(found)}", status="info")
    if not drop:
        step("`inv postgres.leftovers --drop` removes them", status="info")
        return
    doomed = [leftover for leftover in found if not (leftover.kind == SCRATCH and leftover.in_use)]
    if dry_run:
        for leftover in doomed:
            step(f"would drop {leftover.name}")
        return
    if doomed:
        confirm(f"drop {', '.join(leftover.name for leftover in doomed)}", yes=yes)
    drop_leftover_databases(settings, found, step)


@task(
    positional=["archive"],
    help={
        "archive": "The backup to drill: latest (default), a path, or a name in BACKUP_DIR",
        "all": "Drill every backup of the configured database, newest first, and summarise",
    },
)
@infra_task
def drill(c: Context, archive: str | None = None, all: bool = False) -> None:
    """Prove a backup restores: restore it into a throwaway database and compare every table's rows."""
    from semantik_infra.backends import select_backend
    from semantik_infra.catalog import list_backups
    from semantik_infra.console import step
    from semantik_infra.drill import drill_backup
    from semantik_infra.errors import BackupError, ConfigError
    from semantik_infra.restore import resolve_archive

    settings = load()
    live = settings.database.database or "postgres"
    if all and archive:
        raise ConfigError("--all drills every backup: pass it without an archive")
    if all:
        entries = [entry for entry in list_backups(settings.backup.directory) if entry.database == live][::-1]
        if not entries:
            raise BackupError(f"no backups of {live} in {settings.backup.directory}: run `inv postgres.backup` first")
    else:
        entries = [resolve_archive(settings, archive or "latest")]
    backend = select_backend(settings)
    failed = 0
    for entry in entries:
        try:
            record = drill_backup(settings, backend, entry, report=step)
        except BackupError as error:
            if not all:
                raise
            failed += 1
            step(f"{entry.path.name}: {error}", status="fail")
            continue
        if record.ok:
            step(
                f"proven: {entry.path.name} restores {record.tables} tables, {record.rows} rows, exactly as archived",
                record.seconds,
            )
        else:
            failed += 1
            for problem in record.problems:
                step(f"{entry.path.name}: {problem}", status="fail")
    if all:
        step(f"{len(entries) - failed} of {len(entries)} backups proven", status="fail" if failed else "ok")
    if failed:
        raise Exit(code=1)


@task(
    positional=["source"],
    iterable=["exclude_table_data"],
    auto_shortflags=False,
    help={
        "source": "The database to copy: a postgresql:// URL or an env file describing one (e.g. .env.staging)",
        "yes": "Do not ask for confirmation",
        "schema_only": "Copy the schema only, no rows",
        "exclude_table_data": "Leave out the rows of tables matching PATTERN (repeatable; e.g. big logs or embeddings)",
        "keep_archive": "Also keep what was pulled as a normal verified backup in BACKUP_DIR",
    },
)
@infra_task
def pull(
    c: Context,
    source: str,
    yes: bool = False,
    schema_only: bool = False,
    exclude_table_data: list[str] | None = None,
    keep_archive: bool = False,
) -> None:
    """Replace the database with a copy of another one (read only there), through a verified swap."""
    from semantik_infra.backends import select_backend
    from semantik_infra.console import Progress, format_duration, step
    from semantik_infra.pull import pull_database, source_url

    settings = load()
    backend = select_backend(settings)
    backend.require_running()
    live = settings.database.database or "postgres"
    _, shown = source_url(source, settings.project_dir)
    confirm(f"replace database {live} with a copy of {shown} (the current one is kept)", yes=yes)
    progress = Progress("pulling")
    try:
        result = pull_database(
            settings,
            backend,
            source,
            schema_only=schema_only,
            exclude_table_data=exclude_table_data or (),
            keep_archive=keep_archive,
            report=_reporter(progress),
            progress=progress.update,
        )
    finally:
        progress.done()
    step(f"{live} is now a copy of {shown} (pulled in {format_duration(result.seconds)})")
