"""`postgres.import-sqlite`: moving an SQLite database into the configured PostgreSQL database,
all or nothing. The whole import is ONE transaction on the target database: tables are locked,
emptied (`--replace`) or created (`--create-schema`), loaded with COPY, each read back and verified,
foreign keys (dropped for the load, as pg_restore creates them after the data) re-added and
checked, sequences set past the highest imported ids, then committed. PostgreSQL's transactional
DDL and TRUNCATE make that atomic: an error, Ctrl-C, SIGTERM, a killed client or a killed server
all end in a rollback, and the target is exactly as it was. We deliberately do not load a scratch
copy and swap it in as `postgres.restore` does: a copy would need CREATEDB and a full copy of every
table the import does not touch, and the swap would terminate the application's sessions and lose
whatever it wrote meanwhile — while the one transaction already guarantees that either every
table arrived and was verified, or nothing changed. The application can keep using other tables;
the imported ones are locked until the commit."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any

from semantik_infra.config import Settings
from semantik_infra.errors import ConfigError, DataImportError
from semantik_infra.pg_text import NUMERIC_TIME_MODES
from semantik_infra.sqlite_convert import ConversionOptions
from semantik_infra.sqlite_load import RejectFile, TableLoader
from semantik_infra.sqlite_plan import (
    ColumnPlan,
    Plan,
    TablePlan,
    UnknownDefault,
    after_load_statements,
    create_statements,
    default_expression,
    ident,
    load_order,
    plan_existing,
)
from semantik_infra.sqlite_source import SQLiteSource
from semantik_infra.sqlite_target import (
    add_constraints,
    current_schema,
    drop_foreign_keys,
    empty_tables,
    foreign_key_parents,
    has_rows,
    read_tables,
    set_sequences,
    table_exists,
)
from semantik_infra.sqlite_types import TypeMap, parse_type_map

LOCK_TIMEOUT = "30s"
APPLICATION_NAME = "semantik-infra import-sqlite"
# Every output format the converters reproduce, fixed for this session whatever the server's defaults;
# no statement timeout (one COPY of a big batch may take a while); a bounded wait for the app's locks.
SESSION_OPTIONS = (
    "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=1 -c bytea_output=hex"
    " -c statement_timeout=0 -c idle_in_transaction_session_timeout=0 -c standard_conforming_strings=on"
    f" -c lock_timeout={LOCK_TIMEOUT}"
)

Report = Callable[[str, float | None, str], None]


@dataclass(frozen=True)
class ImportOptions:
    """What the user asked for."""

    path: Path
    create_schema: bool = False
    type_map: TypeMap = field(default_factory=lambda: TypeMap({}, {}))
    conversion: ConversionOptions = field(default_factory=ConversionOptions)
    skip_missing: bool = False
    replace: bool = False
    reject_file: Path | None = None
    batch_bytes: int = 4 << 20


@dataclass
class TableResult:
    """One imported table."""

    source: str
    target: str
    rows: int
    rejected: int
    seconds: float

    @property
    def rate(self) -> float:
        """Rows per second."""
        return self.rows / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ImportResult:
    """What the import did; `committed` is False only for a plan-only run."""

    tables: list[TableResult] = field(default_factory=list)
    sequences: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rejected: int = 0
    reject_file: Path | None = None
    seconds: float = 0.0


def default_sqlite_path(settings: Settings) -> Path:
    """SQLITE_PATH, resolved against the project directory (Settings keeps its value; it is no secret)."""
    path = Path(settings.values.get("SQLITE_PATH", "data/semantik.db")).expanduser()
    return path if path.is_absolute() else settings.project_dir / path


def import_options(
    settings: Settings,
    *,
    path: str | None,
    create_schema: bool,
    type_map: Sequence[str],
    source_timezone: str,
    numeric_time: str,
    decode_fallback: str,
    skip_missing: bool,
    replace: bool,
    reject_file: str,
) -> ImportOptions:
    """ImportOptions from the task's arguments, each checked: a bad one is a ConfigError naming it."""
    import codecs

    if type_map and not create_schema:
        raise ConfigError("--type-map only applies with --create-schema (otherwise the target columns' types decide)")
    if numeric_time not in NUMERIC_TIME_MODES:
        raise ConfigError(f"--numeric-time {numeric_time!r}: use one of {', '.join(NUMERIC_TIME_MODES)}")
    if decode_fallback:
        try:
            codecs.lookup(decode_fallback)
        except LookupError:
            raise ConfigError(f"--decode-fallback {decode_fallback!r}: no such encoding") from None
    return ImportOptions(
        path=Path(path).expanduser() if path else default_sqlite_path(settings),
        create_schema=create_schema,
        type_map=parse_type_map(type_map),
        conversion=ConversionOptions(time_zone(source_timezone), numeric_time, decode_fallback or None),
        skip_missing=skip_missing,
        replace=replace,
        reject_file=Path(reject_file).expanduser() if reject_file else None,
    )


def time_zone(name: str) -> tzinfo:
    """--source-timezone: UTC, or an IANA zone name like Europe/Berlin."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if name.upper() in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"--source-timezone {name!r}: unknown time zone (use a name like Europe/Berlin)") from None


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Make SIGTERM unwind like Ctrl-C (KeyboardInterrupt), so the rollback and cleanup run."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    # Around COMMIT: an interrupt must not leave the user unsure whether it happened.
    signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)


NOTHING_IMPORTED = "; nothing was imported"


@contextlib.contextmanager
def _database_errors(action: str, outcome: str = "") -> Iterator[None]:
    """Turn a driver error into one line: what we were doing, why it failed, what it left."""
    import psycopg2

    from semantik_infra.database import classify

    try:
        yield
    except psycopg2.Error as error:
        if getattr(error, "pgcode", None) == "55P03":
            cause = f"a table is in use by another session (waited {LOCK_TIMEOUT}): stop the application and retry"
        else:
            cause = classify(error).cause
        raise DataImportError(f"{action}: {cause}{outcome}") from None


class SQLiteImport:
    """One import: a read-only SQLite snapshot and a PostgreSQL session; use as a context manager."""

    def __init__(self, settings: Settings, options: ImportOptions) -> None:
        if settings.database.is_sqlite:
            raise ConfigError(
                "PostgreSQL is not configured (the SQLite fallback is in force): set DATABASE_URL or POSTGRES_*"
                " to the database to import into"
            )
        self.settings = settings
        self.options = options
        self.database = settings.database.database or "postgres"
        self.source = SQLiteSource(options.path)
        try:
            self.connection = self._connect()
        except BaseException:
            self.source.close()
            raise

    def __enter__(self) -> SQLiteImport:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Roll back anything uncommitted and close both databases."""
        with contextlib.suppress(Exception):
            self.connection.close()
        self.source.close()

    def _connect(self) -> Any:
        import psycopg2

        params = self.settings.database.libpq_params()
        options = " ".join(filter(None, (params.pop("options", ""), SESSION_OPTIONS)))
        with _database_errors(f"cannot connect to {self.settings.database.redacted()}"):
            connection = psycopg2.connect(
                **params,
                connect_timeout=str(self.settings.connect_timeout),
                application_name=APPLICATION_NAME,
                client_encoding="UTF8",
                options=options,
            )
        return connection

    # -- planning ------------------------------------------------------------------------------

    def plan(self, *, storage: bool = False) -> Plan:
        """Decide everything without writing (a --create-schema plan creates its tables in a transaction
        that is rolled back, so the types come from PostgreSQL itself). `storage` also counts each
        column's storage classes (one pass over every table) for --dry-run."""
        schema = self.source.schema()
        if not schema.tables:
            raise DataImportError(f"{self.options.path}: has no tables to import")
        counts = {table.name: self.source.count(table) for table in schema.tables}
        classes = {table.name: self.source.storage_classes(table) for table in schema.tables} if storage else {}
        try:
            with _database_errors(f"cannot read the schema of {self.database}"), self.connection.cursor() as cursor:
                if self.options.create_schema:
                    plan = self._plan_create(cursor, schema, counts, classes)
                else:
                    plan = plan_existing(
                        schema,
                        read_tables(cursor),
                        counts,
                        self.options.conversion,
                        skip_missing=self.options.skip_missing,
                    )
                    plan.nonempty = [t.target.label for t in plan.tables if has_rows(cursor, t.target)]
                    plan.tables = load_order(plan.tables, foreign_key_parents(cursor, plan.tables))
        finally:
            self.connection.rollback()
        for table in plan.tables:
            table.storage = classes.get(table.source.name)
        return plan

    def _plan_create(self, cursor: Any, schema: Any, counts: dict[str, int], classes: dict[str, Any]) -> Plan:
        target_schema = current_schema(cursor)
        statements, reasons = create_statements(schema, target_schema, self.options.type_map, classes)
        after, warnings = after_load_statements(schema, target_schema)
        existing = [t.name for t in schema.tables if table_exists(cursor, target_schema, t.name)]
        cursor.execute("SAVEPOINT semantik_plan")
        if existing:
            # One statement: foreign keys among the dropped tables do not stand in the way.
            cursor.execute(f"DROP TABLE {', '.join(f'{ident(target_schema)}.{ident(name)}' for name in existing)}")
        for statement in statements:
            cursor.execute(statement)
        targets = [t for t in read_tables(cursor) if t.name in {s.name for s in schema.tables}]
        cursor.execute("ROLLBACK TO SAVEPOINT semantik_plan")
        plan = plan_existing(schema, targets, counts, self.options.conversion, skip_missing=False)
        plan.create, plan.create_statements, plan.after_load = True, statements, after
        plan.warnings += warnings
        plan.existing = [f"{target_schema}.{name}" for name in existing]
        for table in plan.tables:
            table.columns = [
                ColumnPlan(c.source, c.target, c.converter, reasons[(table.source.name, c.source.name)])
                for c in table.columns
            ]
            for column in table.columns:
                try:
                    default_expression(column)
                except UnknownDefault:
                    plan.warnings.append(
                        f"{table.source.name}.{column.source.name}: default {column.source.default} is not translated"
                    )
        parents = {
            f"{target_schema}.{t.name}": {f"{target_schema}.{k.parent}" for k in t.foreign_keys} for t in schema.tables
        }
        plan.tables = load_order(plan.tables, parents)
        return plan

    def refusal(self, plan: Plan) -> str | None:
        """Why the import must not go ahead without --replace, or None."""
        if plan.existing and not self.options.replace:
            return (
                f"tables exist already in {self.database}: {', '.join(plan.existing)} (import into them without"
                " --create-schema, or pass --replace to drop and recreate them)"
            )
        if plan.nonempty and not self.options.replace:
            return (
                f"tables in {self.database} already hold rows: {', '.join(plan.nonempty)} (nothing was changed;"
                " pass --replace to replace their rows)"
            )
        return None

    # -- importing -----------------------------------------------------------------------------

    def run(
        self,
        plan: Plan,
        *,
        report: Report = lambda _text, _seconds=None, _status="ok": None,
        progress: Callable[[TablePlan, int], None] = lambda _table, _rows: None,
    ) -> ImportResult:
        """Import in one transaction following `plan`; on any failure nothing is changed."""
        refusal = self.refusal(plan)
        if refusal:
            raise DataImportError(refusal)
        started = time.monotonic()
        rejects = RejectFile(self.options.reject_file) if self.options.reject_file else None
        result = ImportResult(warnings=list(plan.warnings), reject_file=self.options.reject_file)
        try:
            with self.connection.cursor() as cursor:
                with _database_errors(f"preparing {self.database}", NOTHING_IMPORTED):
                    foreign_keys = self._prepare(cursor, plan)
                for table in plan.tables:
                    result.tables.append(self._import_table(cursor, table, rejects, report, progress))
                with _database_errors(f"finishing the import into {self.database}", NOTHING_IMPORTED):
                    add_constraints(cursor, plan.after_load or foreign_keys)
                    result.sequences = set_sequences(cursor, plan.tables)
                    for table in plan.tables:
                        cursor.execute(f"ANALYZE {table.target.sql_name}")
            unknown = "; whether it was committed is unknown: look at the tables before running it again"
            with _signals_deferred(), _database_errors(f"committing the import into {self.database}", unknown):
                self.connection.commit()
                if rejects is not None:
                    rejects.publish()
        except BaseException:
            with contextlib.suppress(Exception):
                self.connection.rollback()
            if rejects is not None:
                rejects.discard()
            raise
        result.rejected = rejects.count if rejects else 0
        result.seconds = time.monotonic() - started
        return result

    def _prepare(self, cursor: Any, plan: Plan) -> list[str]:
        if plan.create:
            schema = current_schema(cursor)
            if plan.existing:
                names = (f"{ident(schema)}.{ident(label.split('.', 1)[1])}" for label in plan.existing)
                cursor.execute(f"DROP TABLE {', '.join(names)}")
            for statement in plan.create_statements:
                cursor.execute(statement)
            self._check_unchanged(cursor, plan)
            for table in plan.tables:
                for column in table.columns:
                    with contextlib.suppress(UnknownDefault):
                        default = default_expression(column)
                        if default is not None:
                            cursor.execute(
                                f"ALTER TABLE {table.target.sql_name} ALTER COLUMN {ident(column.target.name)}"
                                f" SET DEFAULT {default}"
                            )
            return []
        names = ", ".join(table.target.sql_name for table in plan.tables)
        cursor.execute(f"LOCK TABLE {names} IN ACCESS EXCLUSIVE MODE")
        self._check_unchanged(cursor, plan)
        nonempty = [table for table in plan.tables if has_rows(cursor, table.target)]
        if nonempty and not self.options.replace:
            raise DataImportError(
                f"tables in {self.database} received rows meanwhile: {', '.join(t.target.label for t in nonempty)}"
            )
        foreign_keys = drop_foreign_keys(cursor, plan.tables)
        if nonempty:
            empty_tables(cursor, [table.target for table in nonempty])
        return foreign_keys

    def _check_unchanged(self, cursor: Any, plan: Plan) -> None:
        now = {table.label: table for table in read_tables(cursor)}
        for table in plan.tables:
            if now.get(table.target.label) != table.target:
                raise DataImportError(f"{table.target.label} changed since the plan was made (a migration?): retry")

    def _import_table(
        self,
        cursor: Any,
        table: TablePlan,
        rejects: RejectFile | None,
        report: Report,
        progress: Callable[[TablePlan, int], None],
    ) -> TableResult:
        import psycopg2

        started = time.monotonic()
        loader = TableLoader(
            self.source, table, rejects, batch_bytes=self.options.batch_bytes, progress=lambda n: progress(table, n)
        )
        with _database_errors(f"loading {table.target.label}", NOTHING_IMPORTED):
            loaded = loader.load(cursor)
            stored = loader.read_back(cursor).digest
        if stored != loaded.sent:
            try:
                columns = loader.differing_columns(cursor)
            except psycopg2.Error:
                columns = []
            where = f" in columns {', '.join(columns)}" if columns else ""
            raise DataImportError(
                f"{table.target.label}: verification failed: the {stored.count} rows read back differ from the"
                f" {loaded.sent.count} sent{where}; nothing was imported (please report this with the column types)"
            )
        seconds = time.monotonic() - started
        result = TableResult(table.source.name, table.target.label, loaded.rows, loaded.rejected, seconds)
        rejected = f", {loaded.rejected} rejected" if loaded.rejected else ""
        report(
            f"{table.source.name} → {table.target.label}: {loaded.rows} rows{rejected}"
            f" ({result.rate:,.0f} rows/s), verified",
            seconds,
            "ok",
        )
        return result


def plan_summary(plan: Plan, path: Path) -> dict[str, Any]:
    """The plan as JSON-ready data (--dry-run --json)."""
    return {
        "source": str(path),
        "mode": "create-schema" if plan.create else "existing-schema",
        "tables": [
            {
                "source": table.source.name,
                "target": table.target.label,
                "rows": table.rows,
                "columns": [
                    {
                        "source": column.source.name,
                        "declared": column.source.declared,
                        "target": column.target.name,
                        "type": column.target.type.display,
                        "storage": dict(table.storage.get(column.source.name, {})) if table.storage else None,
                    }
                    for column in table.columns
                ],
                "skipped_columns": table.skipped_columns,
            }
            for table in plan.tables
        ],
        "missing": plan.missing,
        "not_imported": plan.not_imported,
        "nonempty": plan.nonempty,
        "existing": plan.existing,
        "warnings": plan.warnings,
        "sql_before": plan.create_statements,
        "sql_after": plan.after_load,
    }


def result_summary(result: ImportResult, path: Path, database: str | None) -> dict[str, Any]:
    """What an import did, as JSON-ready data (--json)."""
    return {
        "source": str(path),
        "database": database,
        "committed": True,
        "seconds": round(result.seconds, 3),
        "tables": [
            {
                "source": table.source,
                "target": table.target,
                "rows": table.rows,
                "rejected": table.rejected,
                "seconds": round(table.seconds, 3),
                "rows_per_second": round(table.rate),
                "verified": True,
            }
            for table in result.tables
        ],
        "rejected": result.rejected,
        "reject_file": str(result.reject_file) if result.rejected else None,
        "sequences": result.sequences,
        "warnings": result.warnings,
    }
