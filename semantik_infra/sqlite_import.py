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
import re
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semantik_infra.config import Settings
from semantik_infra.errors import ConfigError, DataImportError
from semantik_infra.sqlite_convert import ConversionOptions, TargetType, is_secret_name
from semantik_infra.sqlite_load import RejectFile, TableLoader
from semantik_infra.sqlite_plan import (
    ColumnPlan,
    Plan,
    TablePlan,
    TargetColumn,
    TargetTable,
    UnknownDefault,
    after_load_statements,
    create_statements,
    default_expression,
    ident,
    load_order,
    plan_existing,
)
from semantik_infra.sqlite_source import SQLiteSource
from semantik_infra.sqlite_types import TypeMap

LOCK_TIMEOUT = "30s"
APPLICATION_NAME = "semantik-infra import-sqlite"
# Every output format the converters reproduce, fixed for this session whatever the server's defaults.
SESSION_OPTIONS = (
    "-c TimeZone=UTC -c DateStyle=ISO -c IntervalStyle=postgres -c extra_float_digits=1 -c bytea_output=hex"
    " -c statement_timeout=0 -c idle_in_transaction_session_timeout=0 -c standard_conforming_strings=on"
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
                        _read_tables(cursor),
                        counts,
                        self.options.conversion,
                        skip_missing=self.options.skip_missing,
                    )
                    plan.nonempty = [t.target.label for t in plan.tables if _has_rows(cursor, t.target)]
                    plan.tables = load_order(plan.tables, _foreign_key_parents(cursor, plan.tables))
        finally:
            self.connection.rollback()
        for table in plan.tables:
            table.storage = classes.get(table.source.name)
        return plan

    def _plan_create(self, cursor: Any, schema: Any, counts: dict[str, int], classes: dict[str, Any]) -> Plan:
        target_schema = _current_schema(cursor)
        statements, reasons = create_statements(schema, target_schema, self.options.type_map, classes)
        after, warnings = after_load_statements(schema, target_schema)
        existing = [t.name for t in schema.tables if _table_exists(cursor, target_schema, t.name)]
        cursor.execute("SAVEPOINT semantik_plan")
        if existing:
            # One statement: foreign keys among the dropped tables do not stand in the way.
            cursor.execute(f"DROP TABLE {', '.join(f'{ident(target_schema)}.{ident(name)}' for name in existing)}")
        for statement in statements:
            cursor.execute(statement)
        targets = [t for t in _read_tables(cursor) if t.name in {s.name for s in schema.tables}]
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
                    cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                    foreign_keys = self._prepare(cursor, plan)
                for table in plan.tables:
                    result.tables.append(self._import_table(cursor, table, rejects, report, progress))
                with _database_errors(f"finishing the import into {self.database}", NOTHING_IMPORTED):
                    self._finish(cursor, plan, foreign_keys)
                    result.sequences = self._set_sequences(cursor, plan)
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

    def _prepare(self, cursor: Any, plan: Plan) -> list[tuple[str, str, str]]:
        if plan.create:
            schema = _current_schema(cursor)
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
        nonempty = [table for table in plan.tables if _has_rows(cursor, table.target)]
        if nonempty and not self.options.replace:
            raise DataImportError(
                f"tables in {self.database} received rows meanwhile: {', '.join(t.target.label for t in nonempty)}"
            )
        foreign_keys = _drop_foreign_keys(cursor, plan.tables)
        if nonempty:
            _empty(cursor, [table.target for table in nonempty])
        return foreign_keys

    def _check_unchanged(self, cursor: Any, plan: Plan) -> None:
        now = {table.label: table for table in _read_tables(cursor)}
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

    def _finish(self, cursor: Any, plan: Plan, foreign_keys: Sequence[tuple[str, str, str]]) -> None:
        import psycopg2

        statements = plan.after_load or [
            f"ALTER TABLE {table} ADD CONSTRAINT {ident(name)} {definition}" for table, name, definition in foreign_keys
        ]
        for statement in statements:
            cursor.execute("SAVEPOINT semantik_constraint")
            try:
                cursor.execute(statement)
            except psycopg2.errors.ForeignKeyViolation as error:
                raise DataImportError(_foreign_key_message(error)) from None
            except (psycopg2.errors.UniqueViolation, psycopg2.errors.NotNullViolation) as error:
                constraint = getattr(error.diag, "constraint_name", None) or statement.split(" ADD ")[-1][:80]
                raise DataImportError(
                    f"{getattr(error.diag, 'table_name', '?')}: the imported rows break {constraint}"
                    " (duplicate or NULL key values in the SQLite file); nothing was imported"
                ) from None
            cursor.execute("RELEASE SAVEPOINT semantik_constraint")

    def _set_sequences(self, cursor: Any, plan: Plan) -> list[str]:
        done = []
        for table in plan.tables:
            imported = {column.target.name: column for column in table.columns}
            for column_name, sequence in _sequences(cursor, table.target):
                column = imported.get(column_name)
                if column is None or column.target.type.name not in ("int2", "int4", "int8"):
                    continue
                cursor.execute(f"SELECT max({ident(column_name)}) FROM {table.target.sql_name}")
                highest = cursor.fetchone()[0]
                floor = table.source.autoincrement if column.source.name == table.source.integer_pk else None
                if highest is None and not floor:
                    continue
                cursor.execute(
                    f"SELECT last_value, is_called FROM {sequence}"  # sequence is a regclass text: quoted already
                )
                last_value, is_called = cursor.fetchone()
                value = max(highest or 0, floor or 0, last_value if is_called else 0)
                cursor.execute("SELECT seqincrement FROM pg_sequence WHERE seqrelid = %s::regclass", (sequence,))
                if cursor.fetchone()[0] <= 0:
                    continue
                cursor.execute("SELECT setval(%s::regclass, %s, true)", (sequence, value))
                done.append(f"{sequence} → {value}")
        return done


# ---------------------------------------------------------------------------------------------
# The PostgreSQL catalog


def _current_schema(cursor: Any) -> str:
    cursor.execute("SELECT current_schema()")
    schema = cursor.fetchone()[0]
    if schema is None:
        raise DataImportError("no schema to work in: search_path names no existing schema")
    return schema


def _table_exists(cursor: Any, schema: str, name: str) -> bool:
    cursor.execute(
        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    )
    return cursor.fetchone() is not None


def _read_tables(cursor: Any) -> list[TargetTable]:
    """Every table in the current schema with its columns, types resolved through domains."""
    cursor.execute(
        """
        SELECT c.relname, a.attname, a.attnotnull, a.atthasdef, a.attidentity <> '', a.attgenerated <> '',
               format_type(a.atttypid, a.atttypmod), bt.typname, bt.typtype = 'e', bt.oid,
               CASE WHEN t.typtype = 'd' AND a.atttypmod = -1 THEN t.typtypmod ELSE a.atttypmod END
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        JOIN pg_type t ON t.oid = a.atttypid
        JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
        WHERE c.relkind IN ('r', 'p') AND n.nspname = current_schema()
        ORDER BY c.relname, a.attnum
        """
    )
    rows = cursor.fetchall()
    enums = {row[9] for row in rows if row[8]}
    labels: dict[int, list[str]] = {}
    if enums:
        cursor.execute(
            "SELECT enumtypid, enumlabel FROM pg_enum WHERE enumtypid = ANY(%s) ORDER BY enumsortorder", (list(enums),)
        )
        for oid, label in cursor.fetchall():
            labels.setdefault(oid, []).append(label)
    cursor.execute("SELECT current_schema()")
    schema = cursor.fetchone()[0]
    tables: dict[str, list[TargetColumn]] = {}
    for table, name, not_null, has_default, identity, generated, display, base, enum, oid, typmod in rows:
        target_type = _target_type(base, display, typmod, not_null, tuple(labels.get(oid, ())) if enum else None)
        tables.setdefault(table, []).append(TargetColumn(name, target_type, has_default, identity, generated))
    return [TargetTable(schema, name, tuple(columns)) for name, columns in tables.items()]


def _target_type(base: str, display: str, typmod: int, not_null: bool, labels: tuple[str, ...] | None) -> TargetType:
    length = precision = scale = None
    if base in ("varchar", "bpchar") and typmod >= 4:
        length = typmod - 4
    elif base == "numeric" and typmod >= 4:
        precision = ((typmod - 4) >> 16) & 0xFFFF
        scale = (((typmod - 4) & 0x7FF) ^ 1024) - 1024
    elif base in ("timestamp", "timestamptz", "time") and typmod >= 0:
        precision = typmod
    return TargetType(
        name=base,
        display=display,
        length=length,
        precision=precision,
        scale=scale,
        labels=labels or (),
        enum=labels is not None,
        not_null=not_null,
    )


def _has_rows(cursor: Any, table: TargetTable) -> bool:
    cursor.execute(f"SELECT EXISTS (SELECT 1 FROM {table.sql_name})")
    return bool(cursor.fetchone()[0])


def _foreign_keys(cursor: Any, tables: Sequence[TablePlan]) -> list[tuple[str, str, str, str, str]]:
    """(child table, name, definition, child label, parent label) of FKs touching the imported tables."""
    cursor.execute(
        """
        SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid),
               cn.nspname || '.' || cc.relname, pn.nspname || '.' || pc.relname
        FROM pg_constraint c
        JOIN pg_class cc ON cc.oid = c.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
        JOIN pg_class pc ON pc.oid = c.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
        WHERE c.contype = 'f' AND c.conparentid = 0
          AND (c.conrelid = ANY(%(tables)s::regclass[]) OR c.confrelid = ANY(%(tables)s::regclass[]))
        ORDER BY 1, 2
        """,
        {"tables": [table.target.sql_name for table in tables]},
    )
    return cursor.fetchall()


def _foreign_key_parents(cursor: Any, tables: Sequence[TablePlan]) -> dict[str, set[str]]:
    parents: dict[str, set[str]] = {}
    for _table, _name, _definition, child, parent in _foreign_keys(cursor, tables):
        parents.setdefault(child, set()).add(parent)
    return parents


def _drop_foreign_keys(cursor: Any, tables: Sequence[TablePlan]) -> list[tuple[str, str, str]]:
    """Drop the FKs touching the imported tables (re-added after the load); [] if not allowed."""
    import psycopg2

    keys = [(table, name, definition) for table, name, definition, _c, _p in _foreign_keys(cursor, tables)]
    cursor.execute("SAVEPOINT semantik_fk")
    try:
        for table, name, _definition in keys:
            cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {ident(name)}")
    except psycopg2.errors.InsufficientPrivilege:
        # Not the owner: keep them, and rely on the load order (parents first).
        cursor.execute("ROLLBACK TO SAVEPOINT semantik_fk")
        return []
    cursor.execute("RELEASE SAVEPOINT semantik_fk")
    return keys


def _empty(cursor: Any, tables: Sequence[TargetTable]) -> None:
    """TRUNCATE the tables (fast, and an aborted import leaves no dead rows); DELETE if not allowed."""
    import psycopg2

    cursor.execute("SAVEPOINT semantik_empty")
    try:
        cursor.execute(f"TRUNCATE {', '.join(table.sql_name for table in tables)}")
    except (psycopg2.errors.InsufficientPrivilege, psycopg2.errors.FeatureNotSupported):
        # Not allowed to TRUNCATE, or other tables' foreign keys (which we may not drop) point here.
        cursor.execute("ROLLBACK TO SAVEPOINT semantik_empty")
        for table in tables:
            cursor.execute(f"DELETE FROM {table.sql_name}")
        return
    cursor.execute("RELEASE SAVEPOINT semantik_empty")


def _foreign_key_message(error: Any) -> str:
    diag = error.diag
    table, constraint = diag.table_name or "?", diag.constraint_name or "?"
    detail = (diag.message_detail or "").rstrip(".")
    # 'Key (kind_id)=(777) is not present in table "kinds"': show it unless a key column looks secret.
    match = re.match(r"Key \((.*?)\)=\(", detail)
    columns = match.group(1).split(", ") if match else ["?"]
    example = f" (e.g. {detail})" if match and not any(map(is_secret_name, columns)) else ""
    return (
        f"{table}: rows reference rows that do not exist, breaking foreign key {constraint}{example};"
        " fix them in the SQLite file (`sqlite3 FILE 'PRAGMA foreign_key_check'` lists them); nothing was imported"
    )


def _sequences(cursor: Any, table: TargetTable) -> list[tuple[str, str]]:
    """(column, sequence as regclass text) for serial, identity and nextval() defaults."""
    cursor.execute(
        """
        SELECT a.attname, d.objid::regclass::text
        FROM pg_depend d
        JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
        JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
        WHERE d.classid = 'pg_class'::regclass AND d.refobjid = %(table)s::regclass AND d.deptype IN ('a', 'i')
        UNION
        SELECT a.attname, d.refobjid::regclass::text
        FROM pg_attrdef ad
        JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
        JOIN pg_depend d ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
             AND d.refclassid = 'pg_class'::regclass
        JOIN pg_class s ON s.oid = d.refobjid AND s.relkind = 'S'
        WHERE ad.adrelid = %(table)s::regclass
        ORDER BY 1, 2
        """,
        {"table": table.sql_name},
    )
    return cursor.fetchall()
