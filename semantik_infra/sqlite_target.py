"""The PostgreSQL side of an SQLite import: the catalog as the plan needs it (tables, columns,
types through domains, enum labels), the foreign keys touching the imported tables (dropped for the
load and re-added after it, as pg_restore creates them after the data), emptying tables for
`--replace`, the statements that follow the data, and sequences set past the imported ids. Every
function runs on the import's cursor, inside its one transaction."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from semantik_infra.errors import DataImportError
from semantik_infra.sqlite_convert import TargetType, is_secret_name
from semantik_infra.sqlite_plan import TablePlan, TargetColumn, TargetTable, ident


def current_schema(cursor: Any) -> str:
    """The schema unqualified names resolve to (the first existing one on search_path)."""
    cursor.execute("SELECT current_schema()")
    schema = cursor.fetchone()[0]
    if schema is None:
        raise DataImportError("no schema to work in: search_path names no existing schema")
    return schema


def table_exists(cursor: Any, schema: str, name: str) -> bool:
    """Whether a relation of that exact name exists in the schema."""
    cursor.execute(
        "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s",
        (schema, name),
    )
    return cursor.fetchone() is not None


def read_tables(cursor: Any) -> list[TargetTable]:
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


def has_rows(cursor: Any, table: TargetTable) -> bool:
    """Whether the table holds at least one row this transaction can see."""
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


def foreign_key_parents(cursor: Any, tables: Sequence[TablePlan]) -> dict[str, set[str]]:
    """schema.table -> the tables its foreign keys reference, for the load order."""
    parents: dict[str, set[str]] = {}
    for _table, _name, _definition, child, parent in _foreign_keys(cursor, tables):
        parents.setdefault(child, set()).add(parent)
    return parents


def drop_foreign_keys(cursor: Any, tables: Sequence[TablePlan]) -> list[str]:
    """Drop the foreign keys touching the imported tables; return the statements that re-add them
    ([] and nothing dropped when this role may not: then the load order keeps parents first)."""
    import psycopg2

    keys = [(table, name, definition) for table, name, definition, _c, _p in _foreign_keys(cursor, tables)]
    cursor.execute("SAVEPOINT semantik_fk")
    try:
        for table, name, _definition in keys:
            cursor.execute(f"ALTER TABLE {table} DROP CONSTRAINT {ident(name)}")
    except psycopg2.errors.InsufficientPrivilege:
        cursor.execute("ROLLBACK TO SAVEPOINT semantik_fk")
        return []
    cursor.execute("RELEASE SAVEPOINT semantik_fk")
    return [f"ALTER TABLE {table} ADD CONSTRAINT {ident(name)} {definition}" for table, name, definition in keys]


def empty_tables(cursor: Any, tables: Sequence[TargetTable]) -> None:
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


def add_constraints(cursor: Any, statements: Sequence[str]) -> None:
    """Run the ALTER TABLE / CREATE INDEX statements that follow the data; broken keys are one line."""
    import psycopg2

    for statement in statements:
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


def set_sequences(cursor: Any, tables: Sequence[TablePlan]) -> list[str]:
    """Move serial, identity and nextval() sequences past the highest imported id (and past SQLite's
    AUTOINCREMENT counter, which remembers deleted ids); never backwards."""
    done = []
    for table in tables:
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
