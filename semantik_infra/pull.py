"""Pulling another database (a teammate's staging server, production) into the configured one. The
source is a database URL or an env file that describes one; it is only read: pg_dump runs on this
machine against it (its transaction is read-only, as pg_dump's always is), with client tools of
the source's major (the external backend picks them, from the system or the embedded wheel). What
it dumps goes through the same pipeline as a backup — streamed, compressed, hashed, its table of
contents checked — into a temporary archive in BACKUP_DIR, which is then restored through the
restore's scratch database and swap, with ownership and privileges left to the local user. So the
live database is never half-replaced, and every check a backup and a restore make is made here
too. `keep_archive` keeps that archive as a normal verified backup."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from semantik_infra.config import Settings
from semantik_infra.errors import ConfigError
from semantik_infra.urls import DatabaseURL, Secret, build_postgres_url, parse_url

Report = Callable[..., None]


def source_url(source: str, project_dir: Path) -> tuple[DatabaseURL, str]:
    """The source database from a URL, or from an env file (DATABASE_URL, else the POSTGRES_* parts);
    (url, how to name it in messages, never with its password)."""
    if "://" in source:
        url = parse_url(source, variable="the pull source", source="the command line")
        if url.is_sqlite:
            raise ConfigError("the pull source is an SQLite URL: use `inv postgres.import-sqlite` for SQLite data")
        return url, url.redacted()
    path = Path(source).expanduser()
    if not path.is_absolute():
        path = project_dir / path if (project_dir / path).exists() else Path.cwd() / path
    if not path.is_file():
        raise ConfigError(f"{source}: neither a database URL (postgresql://…) nor an env file that exists")
    from semantik_infra.config import read_env_file

    values = read_env_file(path)
    if values.get("DATABASE_URL"):
        url = parse_url(values["DATABASE_URL"], variable="DATABASE_URL", source=str(path))
    elif values.get("POSTGRES_HOST") or values.get("POSTGRES_DB"):
        port_text = values.get("POSTGRES_PORT") or "5432"
        if not port_text.isdigit():
            raise ConfigError(f"POSTGRES_PORT={port_text!r} in {path}: not a port number (1-65535)")
        url = build_postgres_url(
            host=values.get("POSTGRES_HOST") or "localhost",
            port=int(port_text),
            database=values.get("POSTGRES_DB") or "semantik",
            username=values.get("POSTGRES_USER") or "semantik",
            password=Secret(values.get("POSTGRES_PASSWORD", "")),
        )
    else:
        raise ConfigError(f"{path}: describes no database (set DATABASE_URL or POSTGRES_HOST/POSTGRES_DB in it)")
    return url, f"{url.redacted()} (from {path.name})"


def dump_options(*, schema_only: bool, exclude_table_data: Sequence[str]) -> list[str]:
    """pg_dump options for a pull."""
    options = ["--schema-only"] if schema_only else []
    for pattern in exclude_table_data:
        if not pattern.strip():
            raise ConfigError("--exclude-table-data needs a table name or pattern")
        options.append(f"--exclude-table-data={pattern}")
    return options


def pull_database(
    settings: Settings,
    backend: Any,
    source: str,
    *,
    schema_only: bool = False,
    exclude_table_data: Sequence[str] = (),
    keep_archive: bool = False,
    report: Report = lambda *_a, **_k: None,
    progress: Callable[[int], None] | None = None,
) -> Any:
    """Replace the configured database with a copy of `source` (see the module docstring); returns the
    RestoreResult."""
    from semantik_infra.backends.external import ExternalBackend
    from semantik_infra.backup import create_backup, manifest_key_source
    from semantik_infra.catalog import delete_backup, load_entry
    from semantik_infra.restore import restore_backup

    url, shown = source_url(source, settings.project_dir)
    live = settings.database
    if (url.host, url.port or 5432, url.database) == (live.host, live.port or 5432, live.database):
        raise ConfigError(f"the pull source {shown} is the configured database itself")
    options = dump_options(schema_only=schema_only, exclude_table_data=exclude_table_data)
    source_settings = dataclasses.replace(
        settings, database=url, database_source=f"pull source {shown}", backend="external"
    )
    source_backend = ExternalBackend(source_settings)
    report(f"pulling {shown} with {source_backend.tool('pg_dump')}", None)
    dumped = create_backup(
        source_settings,
        source_backend,
        dump_options=options,
        encrypt=settings.backup.encrypt,
        progress=progress,
        report=report,
    )
    report(f"dumped {shown} into {dumped.path.name}, checked", dumped.manifest.duration_s)
    entry = load_entry(dumped.path, manifest_key_source(settings))
    try:
        return restore_backup(settings, backend, entry, into_current=True, privileges=False, report=report)
    finally:
        if keep_archive:
            report(f"kept {dumped.path.name} as a backup in {dumped.path.parent}", None)
        else:
            delete_backup(entry)
