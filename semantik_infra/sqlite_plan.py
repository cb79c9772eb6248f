"""The plan of an SQLite import, decided before anything is written: which SQLite table goes into
which PostgreSQL table, which column into which column with which conversion, in what order, and —
for `--create-schema` — the DDL (tables first; keys, indexes and foreign keys after the data, as
pg_restore does). Names match exactly, else case-insensitively when that is unambiguous. Pure
functions over the two catalogs; `describe_plan` renders the plan for `--dry-run`."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from semantik_infra.errors import DataImportError
from semantik_infra.sqlite_convert import (
    STORAGE_CLASSES,
    ConversionError,
    ConversionOptions,
    Converter,
    TargetType,
    converter_for,
    is_secret_name,
)
from semantik_infra.sqlite_source import SourceColumn, SourceSchema, SourceTable
from semantik_infra.sqlite_types import TypeMap, postgres_type

MAX_IDENTIFIER_BYTES = 63
_ACTIONS = {"NO ACTION", "RESTRICT", "CASCADE", "SET NULL", "SET DEFAULT"}


@dataclass(frozen=True)
class TargetColumn:
    """A PostgreSQL column as the import needs it."""

    name: str
    type: TargetType
    has_default: bool = False
    identity: bool = False
    generated: bool = False


@dataclass(frozen=True)
class TargetTable:
    """A PostgreSQL table: schema, name, columns in order."""

    schema: str
    name: str
    columns: tuple[TargetColumn, ...]

    @property
    def sql_name(self) -> str:
        """The quoted, schema-qualified name for SQL text."""
        return f"{ident(self.schema)}.{ident(self.name)}"

    @property
    def label(self) -> str:
        """schema.table for messages."""
        return f"{self.schema}.{self.name}"


@dataclass(frozen=True)
class ColumnPlan:
    """One SQLite column going into one PostgreSQL column."""

    source: SourceColumn
    target: TargetColumn
    converter: Converter
    why: str = ""  # --create-schema: why the column got its type

    @property
    def secret(self) -> bool:
        """Whether values of this column must never be shown."""
        return is_secret_name(self.source.name) or is_secret_name(self.target.name)


@dataclass
class TablePlan:
    """One SQLite table going into one PostgreSQL table."""

    source: SourceTable
    target: TargetTable
    columns: list[ColumnPlan]
    rows: int
    skipped_columns: list[str] = field(default_factory=list)
    storage: Mapping[str, Mapping[str, int]] | None = None  # per source column, for --dry-run


@dataclass
class Plan:
    """Everything an import will do, in order."""

    create: bool
    tables: list[TablePlan]
    missing: list[str] = field(default_factory=list)  # SQLite tables without a PostgreSQL table (skipped)
    not_imported: list[str] = field(default_factory=list)  # views, triggers, virtual tables
    warnings: list[str] = field(default_factory=list)
    create_statements: list[str] = field(default_factory=list)
    after_load: list[str] = field(default_factory=list)  # keys, indexes, foreign keys (--create-schema)
    existing: list[str] = field(default_factory=list)  # --create-schema: target tables that exist already
    nonempty: list[str] = field(default_factory=list)  # target tables that hold rows


def ident(name: str) -> str:
    """A PostgreSQL identifier, always quoted."""
    return '"' + name.replace('"', '""') + '"'


def fit_identifier(name: str) -> str:
    """A name PostgreSQL keeps whole: longer than 63 bytes gets shortened with a hash suffix."""
    if len(name.encode()) <= MAX_IDENTIFIER_BYTES:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return name.encode()[: MAX_IDENTIFIER_BYTES - 9].decode("utf-8", "ignore") + "_" + digest


def match_name(name: str, candidates: Iterable[str], what: str) -> str | None:
    """The candidate named `name`: exactly, else case-insensitively if only one matches."""
    candidates = list(candidates)
    if name in candidates:
        return name
    folded = [candidate for candidate in candidates if candidate.lower() == name.lower()]
    if len(folded) > 1:
        raise DataImportError(f"{what} {name!r} matches several: {', '.join(sorted(folded))} (rename all but one)")
    return folded[0] if folded else None


def load_order(tables: Sequence[TablePlan], parents: Mapping[str, set[str]]) -> list[TablePlan]:
    """Tables with the tables they reference first; cycles keep their SQLite order."""
    by_name = {plan.target.label: plan for plan in tables}
    ordered: list[TablePlan] = []
    state: dict[str, int] = {}

    def visit(label: str) -> None:
        if state.get(label):
            return  # done, or a cycle
        state[label] = 1
        for parent in sorted(parents.get(label, ())):
            if parent in by_name and parent != label:
                visit(parent)
        ordered.append(by_name[label])
        state[label] = 2

    for plan in tables:
        visit(plan.target.label)
    return ordered


# ---------------------------------------------------------------------------------------------
# Into an existing schema


def plan_existing(
    schema: SourceSchema,
    targets: Sequence[TargetTable],
    counts: Mapping[str, int],
    options: ConversionOptions,
    *,
    skip_missing: bool,
) -> Plan:
    """Match every SQLite table and column to the PostgreSQL ones; refuse what cannot be filled."""
    by_label = {target.name: target for target in targets}
    plan = Plan(create=False, tables=[], not_imported=list(schema.not_imported))
    missing_columns: list[str] = []
    for source in schema.tables:
        found = match_name(source.name, by_label, "table")
        if found is None:
            plan.missing.append(source.name)
            continue
        target = by_label[found]
        columns, skipped, unmatched = _match_columns(source, target, options)
        if not columns:
            raise DataImportError(f"{source.name}: none of its columns has a PostgreSQL counterpart in {target.label}")
        plan.tables.append(TablePlan(source, target, columns, counts[source.name], skipped_columns=skipped))
        if unmatched:
            if skip_missing:
                plan.tables[-1].skipped_columns += unmatched
            else:
                missing_columns += [f"{source.name}.{name}" for name in unmatched]
        _check_fillable(target, columns)
    if plan.missing and not skip_missing:
        raise DataImportError(
            f"no PostgreSQL table for SQLite tables: {', '.join(plan.missing)}"
            " (run the application's migrations first, use --create-schema, or --skip-missing to leave them out)"
        )
    if missing_columns:
        raise DataImportError(
            f"no PostgreSQL column for: {', '.join(missing_columns)}"
            " (add them with a migration, or --skip-missing to leave them out)"
        )
    if not plan.tables:
        raise DataImportError("no SQLite table has a PostgreSQL counterpart: nothing to import")
    return plan


def _match_columns(
    source: SourceTable, target: TargetTable, options: ConversionOptions
) -> tuple[list[ColumnPlan], list[str], list[str]]:
    by_name = {column.name: column for column in target.columns}
    columns, skipped, unmatched = [], [], []
    used: set[str] = set()
    for column in source.columns:
        found = match_name(column.name, by_name, f"column of {source.name}")
        if found is None:
            unmatched.append(column.name)
            continue
        target_column = by_name[found]
        if found in used:
            raise DataImportError(f"{source.name}: two SQLite columns match PostgreSQL column {found!r}")
        used.add(found)
        if target_column.generated:
            skipped.append(f"{column.name} (generated by PostgreSQL)")
            continue
        columns.append(ColumnPlan(column, target_column, converter_for(target_column.type, options)))
    return columns, skipped, unmatched


def _check_fillable(target: TargetTable, columns: Sequence[ColumnPlan]) -> None:
    filled = {plan.target.name for plan in columns}
    unfillable = [
        column.name
        for column in target.columns
        if column.name not in filled
        and column.type.not_null
        and not (column.has_default or column.identity or column.generated)
    ]
    if unfillable:
        raise DataImportError(
            f"{target.label}: NOT NULL columns without a default and without an SQLite column: {', '.join(unfillable)}"
        )


# ---------------------------------------------------------------------------------------------
# Creating the schema


def create_statements(
    schema: SourceSchema,
    target_schema: str,
    type_map: TypeMap,
    storage: Mapping[str, Mapping[str, Mapping[str, int]]],
) -> tuple[list[str], dict[tuple[str, str], str]]:
    """CREATE TABLE statements (columns and types only) and why each column got its type."""
    statements, reasons = [], {}
    for table in schema.tables:
        columns = []
        for column in table.columns:
            pg_type, why = postgres_type(
                table.name,
                column.name,
                column.declared,
                rowid_alias=column.name == table.integer_pk,
                type_map=type_map,
                storage=storage.get(table.name, {}).get(column.name),
            )
            reasons[(table.name, column.name)] = why
            not_null = " NOT NULL" if (column.not_null or column.pk) and column.name != table.integer_pk else ""
            columns.append(f"{ident(column.name)} {pg_type}{not_null}")
        statements.append(f"CREATE TABLE {ident(target_schema)}.{ident(table.name)} ({', '.join(columns)})")
    return statements, reasons


def after_load_statements(schema: SourceSchema, target_schema: str) -> tuple[list[str], list[str]]:
    """Primary keys, unique constraints, indexes and foreign keys, with warnings for what is left out."""
    statements, warnings = [], []
    names = _Names({table.name for table in schema.tables})
    tables = {table.name: table for table in schema.tables}
    unique_sets = {table.name: _unique_sets(table) for table in schema.tables}
    for table in schema.tables:
        qualified = f"{ident(target_schema)}.{ident(table.name)}"
        if table.primary_key:
            name = names.take(f"{table.name}_pkey")
            statements.append(
                f"ALTER TABLE {qualified} ADD CONSTRAINT {ident(name)} PRIMARY KEY ({_cols(table.primary_key)})"
            )
        for index in table.indexes:
            if index.origin == "pk":
                continue
            if index.partial or index.expression:
                kind = "partial" if index.partial else "expression"
                warnings.append(f"{table.name}: {kind} index {index.name} is not created (create it by hand)")
                continue
            columns = [name for name, _desc in index.columns]
            if index.origin == "u":
                name = names.take(f"{table.name}_{'_'.join(columns)}_key")
                statements.append(f"ALTER TABLE {qualified} ADD CONSTRAINT {ident(name)} UNIQUE ({_cols(columns)})")
            else:
                name = names.take(index.name)
                keys = ", ".join(ident(column) + (" DESC" if desc else "") for column, desc in index.columns)
                unique = "UNIQUE " if index.unique else ""
                statements.append(f"CREATE {unique}INDEX {ident(name)} ON {qualified} ({keys})")
        if table.has_check:
            warnings.append(f"{table.name}: CHECK constraints are not translated (add them by hand)")
    for table in schema.tables:
        qualified = f"{ident(target_schema)}.{ident(table.name)}"
        for key in table.foreign_keys:
            parent = match_name(key.parent, tables, "referenced table")
            where = f"{table.name}({', '.join(key.columns)}) → {key.parent}"
            if parent is None:
                warnings.append(f"foreign key {where} is not created: {key.parent} is not imported")
                continue
            parent_columns = key.parent_columns or tables[parent].primary_key
            if frozenset(c.lower() for c in parent_columns) not in unique_sets[parent]:
                warnings.append(f"foreign key {where} is not created: the referenced columns are not unique")
                continue
            name = names.take(f"{table.name}_{'_'.join(key.columns)}_fkey")
            actions = "".join(
                f" ON {event} {action.upper()}"
                for event, action in (("UPDATE", key.on_update), ("DELETE", key.on_delete))
                if action.upper() in _ACTIONS and action.upper() != "NO ACTION"
            )
            statements.append(
                f"ALTER TABLE {qualified} ADD CONSTRAINT {ident(name)} FOREIGN KEY ({_cols(key.columns)})"
                f" REFERENCES {ident(target_schema)}.{ident(parent)} ({_cols(parent_columns)}){actions}"
            )
    return statements, warnings


def _unique_sets(table: SourceTable) -> set[frozenset[str]]:
    sets = {frozenset(name.lower() for name in table.primary_key)} if table.primary_key else set()
    for index in table.indexes:
        if index.unique and not index.partial and not index.expression:
            sets.add(frozenset(name.lower() for name, _ in index.columns))
    return sets


def _cols(names: Iterable[str]) -> str:
    return ", ".join(ident(name) for name in names)


class _Names:
    """Relation-level names (indexes, constraints) unique in the schema, fitted to 63 bytes."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = {name.lower() for name in taken}

    def take(self, wanted: str) -> str:
        candidate, counter = fit_identifier(wanted), 1
        while candidate.lower() in self.taken:
            counter += 1
            candidate = fit_identifier(f"{wanted}{counter}")
        self.taken.add(candidate.lower())
        return candidate


# ---------------------------------------------------------------------------------------------
# Defaults (--create-schema)


@dataclass(frozen=True)
class Now:
    """A default that means "the current date/time": 'timestamp', 'date', 'time' or 'epoch'."""

    kind: str


_NOW = {
    "CURRENT_TIMESTAMP": "timestamp",
    "DATETIME('NOW')": "timestamp",
    "CURRENT_DATE": "date",
    "DATE('NOW')": "date",
    "CURRENT_TIME": "time",
    "TIME('NOW')": "time",
    "STRFTIME('%S','NOW')": "epoch",
    "UNIXEPOCH()": "epoch",
    "UNIXEPOCH('NOW')": "epoch",
}
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\Z")


class UnknownDefault(Exception):
    """A default expression this tool does not translate."""


def parse_default(text: str) -> object:
    """The value (or `Now`) an SQLite column default stands for; None for NULL; raises UnknownDefault."""
    expression = text.strip()
    while expression.startswith("(") and expression.endswith(")"):
        expression = expression[1:-1].strip()
    upper = "".join(expression.upper().split())
    if upper == "NULL":
        return None
    if upper in ("TRUE", "FALSE"):
        return int(upper == "TRUE")
    if _NUMBER.match(expression):
        number = float(expression)
        return int(expression) if re.fullmatch(r"[+-]?\d+", expression) else number
    for quote in ("'", '"'):
        if len(expression) >= 2 and expression[0] == quote and expression[-1] == quote:
            return expression[1:-1].replace(quote * 2, quote)
    if re.fullmatch(r"[xX]'([0-9a-fA-F]{2})*'", expression):
        return bytes.fromhex(expression[2:-1])
    if upper in _NOW:
        return Now(_NOW[upper])
    raise UnknownDefault(text)


def unescape_copy(text: str) -> str:
    """Undo `copy_escape`: the value a COPY text field stands for."""
    return re.sub(
        r"\\(.)",
        lambda m: {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "v": "\v"}.get(m.group(1), m.group(1)),
        text,
    )


def default_expression(column: ColumnPlan) -> str | None:
    """The PostgreSQL DEFAULT for a created column, None when it has none; raises UnknownDefault."""
    if column.source.default is None or column.target.identity:
        return None
    value = parse_default(column.source.default)
    if value is None:
        return None
    kind = column.target.type.name
    if isinstance(value, Now):
        now = {
            ("timestamp", "timestamptz"): "CURRENT_TIMESTAMP",
            ("timestamp", "timestamp"): "(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')",
            ("timestamp", "text"): "to_char(CURRENT_TIMESTAMP AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')",
            ("date", "date"): "(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')::date",
            ("time", "time"): "(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')::time(0)",
            ("epoch", "int8"): "extract(epoch FROM CURRENT_TIMESTAMP)::bigint",
        }.get((value.kind, kind))
        if now is None:
            raise UnknownDefault(column.source.default)
        return now
    try:
        text = column.converter.one(value)
    except ConversionError:
        raise UnknownDefault(column.source.default) from None
    return "'" + unescape_copy(text).replace("'", "''") + "'"


# ---------------------------------------------------------------------------------------------
# --dry-run


def describe_plan(plan: Plan) -> list[str]:
    """The plan as lines for a person: tables, rows, each column's mapping and conversions."""
    lines = [f"mode: {'create the schema' if plan.create else 'into the existing schema'}"]
    for table in plan.tables:
        lines.append(f"{table.source.name} → {table.target.label}: {table.rows} rows")
        for column in table.columns:
            source = column.source
            declared = source.declared or "(no type)"
            lines.append(
                f"  {source.name} [{declared}] → {column.target.name} {column.target.type.display}"
                + (f" ({column.why})" if column.why else "")
            )
            if table.storage is not None:
                counts = table.storage.get(source.name, {})
                for kind in STORAGE_CLASSES:
                    count = counts.get(kind, 0)
                    if not count or kind == "null":
                        continue
                    conversion = column.converter.describe(kind)
                    verdict = conversion or f"cannot become {column.target.type.display}: stops the import"
                    lines.append(f"      {count} {kind}: {verdict}")
                if counts.get("null"):
                    verdict = "stops the import (NOT NULL)" if column.target.type.not_null else "NULL"
                    lines.append(f"      {counts['null']} null: {verdict}")
        for name in table.skipped_columns:
            lines.append(f"  {name}: not imported")
    for name in plan.missing:
        lines.append(f"{name}: no PostgreSQL table, not imported (--skip-missing)")
    for name in plan.not_imported:
        lines.append(f"{name}: not imported")
    if plan.nonempty:
        lines.append(f"tables already holding rows (--replace empties them): {', '.join(plan.nonempty)}")
    if plan.existing:
        lines.append(f"tables that exist already (--replace drops them): {', '.join(plan.existing)}")
    lines += [f"warning: {text}" for text in plan.warnings]
    if plan.create_statements:
        lines.append("SQL before the data:")
        lines += [f"  {statement};" for statement in plan.create_statements]
    if plan.after_load:
        lines.append("SQL after the data:")
        lines += [f"  {statement};" for statement in plan.after_load]
    return lines
