"""`postgres.import-sqlite [PATH]`: move the data Semantik kept in SQLite into the configured
PostgreSQL database, in one verified transaction (see semantik_infra.sqlite_import)."""

from __future__ import annotations

import sys
import time
from typing import Any

from invoke import Context

from semantik_infra.console import Progress, format_duration
from semantik_infra.tasks._common import confirm, infra_task, load, task


@task(
    positional=["path"],
    iterable=["type_map"],
    auto_shortflags=False,
    help={
        "path": "The SQLite file (default: SQLITE_PATH)",
        "create_schema": "Create the tables, keys, indexes and foreign keys from the SQLite schema",
        "type_map": "With --create-schema: DECLARED=PGTYPE or table.column=PGTYPE (repeatable, or comma-separated)",
        "source_timezone": "Time zone of timestamps written without one (default UTC)",
        "numeric_time": "Numbers in date/time columns: auto (default), unixepoch or julianday",
        "decode_fallback": "Encoding for TEXT that is not valid UTF-8, e.g. cp1252 (default: such text is an error)",
        "skip_missing": "Leave out SQLite tables and columns that PostgreSQL does not have",
        "replace": "Replace the rows of target tables that hold rows (--create-schema: drop and recreate them)",
        "yes": "Do not ask for confirmation",
        "reject_file": "Write rows that cannot be converted to FILE (JSON lines) and go on",
        "dry_run": "Print the plan (tables, rows, column mappings, conversions) and change nothing",
        "json": "Print a JSON summary instead of lines",
    },
)
@infra_task
def import_sqlite(
    c: Context,
    path: str | None = None,
    create_schema: bool = False,
    type_map: list[str] | None = None,
    source_timezone: str = "UTC",
    numeric_time: str = "auto",
    decode_fallback: str = "",
    skip_missing: bool = False,
    replace: bool = False,
    yes: bool = False,
    reject_file: str = "",
    dry_run: bool = False,
    json: bool = False,
) -> None:
    """Import an SQLite database into PostgreSQL: one transaction, every table verified."""
    import json as json_module

    from semantik_infra.console import status_line
    from semantik_infra.sqlite_import import (
        SQLiteImport,
        import_options,
        plan_summary,
        result_summary,
        sigterm_as_interrupt,
    )
    from semantik_infra.sqlite_plan import describe_plan

    settings = load()
    options = import_options(
        settings,
        path=path,
        create_schema=create_schema,
        type_map=type_map or [],
        source_timezone=source_timezone,
        numeric_time=numeric_time,
        decode_fallback=decode_fallback,
        skip_missing=skip_missing,
        replace=replace,
        reject_file=reject_file,
    )
    database = settings.database.database

    progress = _RowProgress() if not json else None

    def say(text: str, seconds: float | None = None, status: str = "ok") -> None:
        if not json:
            if progress is not None:
                progress.done()  # clear the progress line; the next update redraws it
            _emit(status_line(status, text, seconds))

    with sigterm_as_interrupt(), SQLiteImport(settings, options) as importer:
        plan = importer.plan(storage=dry_run)
        if dry_run:
            if json:
                _emit(json_module.dumps(plan_summary(plan, options.path), indent=2))
            else:
                _emit("\n".join(describe_plan(plan)))
                say("dry run: nothing was changed", status="info")
            return
        for warning in plan.warnings:
            say(warning, status="warn")
        if importer.refusal(plan) is None and (plan.nonempty or plan.existing):
            action = "drop and recreate" if plan.create else "replace every row of"
            tables = ", ".join(plan.existing or plan.nonempty)
            confirm(f"{action} {tables} in database {database} with the data of {options.path}", yes=yes)
        if progress is not None:
            progress.expect(len(plan.tables), sum(table.rows for table in plan.tables))
        try:
            result = importer.run(plan, report=say, progress=progress.table if progress else lambda _t, _n: None)
        finally:
            if progress:
                progress.done()
    rows = sum(table.rows for table in result.tables)
    if json:
        _emit(json_module.dumps(result_summary(result, options.path, database), indent=2))
        return
    if result.sequences:
        say(f"set {len(result.sequences)} sequences past the highest imported ids")
    if result.rejected:
        say(f"{result.rejected} rows rejected, written to {result.reject_file}", status="warn")
    elif options.reject_file:
        say("no rows rejected", status="info")
    say(
        f"imported {len(result.tables)} tables, {rows} rows from {options.path} into {database}"
        f" in {format_duration(result.seconds)}: committed"
    )


def _emit(text: str) -> None:
    """Print; once stdout is a closed pipe (`| head`) print nothing more, and let the work go on."""
    import os

    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


class _RowProgress(Progress):
    """Rows and tables done and the rate, rewritten in place on a terminal."""

    def __init__(self) -> None:
        super().__init__("importing")
        self.tables = self.rows = 0
        self.before = 0  # rows of the tables already done
        self.index = 0
        self.current: Any = None

    def expect(self, tables: int, rows: int) -> None:
        """How many tables and rows the import will move; the clock starts now."""
        self.tables, self.rows = tables, rows
        self.start = time.monotonic()

    def table(self, table: Any, rows: int) -> None:
        """`rows` rows of `table` are done."""
        if table is not self.current:
            self.before += self.current.rows if self.current is not None else 0
            self.current, self.index = table, self.index + 1
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.25:
            return
        self._last = now
        done, elapsed = self.before + rows, now - self.start
        self.stream.write(
            f"\r{table.source.name} (table {self.index}/{self.tables}): {done}/{self.rows} rows,"
            f" {done / elapsed if elapsed else 0:,.0f} rows/s, {format_duration(elapsed)}   "
        )
        self.stream.flush()
