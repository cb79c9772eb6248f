"""SQLite declared types to PostgreSQL types for --create-schema: affinity, names, values, --type-map."""

from __future__ import annotations

import pytest

from semantik_infra.errors import ConfigError
from semantik_infra.sqlite_types import IDENTITY, affinity, base_name, parse_type_map, postgres_type, type_from_values

NO_MAP = parse_type_map([])


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ("INTEGER", "INTEGER"),
        ("tinyint", "INTEGER"),
        ("UNSIGNED BIG INT", "INTEGER"),
        ("FLOATING POINT", "INTEGER"),  # SQLite's own example: "INT" wins
        ("VARCHAR(255)", "TEXT"),
        ("NATIVE CHARACTER(70)", "TEXT"),
        ("CLOB", "TEXT"),
        ("BLOB", "BLOB"),
        ("", "BLOB"),
        ("REAL", "REAL"),
        ("DOUBLE PRECISION", "REAL"),
        ("FLOAT", "REAL"),
        ("NUMERIC", "NUMERIC"),
        ("DECIMAL(10,5)", "NUMERIC"),
        ("BOOLEAN", "NUMERIC"),
        ("DATETIME", "NUMERIC"),
        ("JSON", "NUMERIC"),
    ],
)
def test_affinity_follows_sqlite_rules(declared, expected):
    assert affinity(declared) == expected


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        ("BOOLEAN", "boolean"),
        ("bool", "boolean"),
        ("DATETIME", "timestamp with time zone"),
        ("TIMESTAMP", "timestamp with time zone"),
        ("timestamp without time zone", "timestamp without time zone"),
        ("DATE", "date"),
        ("TIME", "time without time zone"),
        ("JSON", "json"),
        ("JSONB", "jsonb"),
        ("UUID", "uuid"),
        ("DECIMAL(10,2)", "numeric"),
        ("INTEGER", "bigint"),
        ("INT", "bigint"),
        ("VARCHAR(20)", "text"),
        ("TEXT", "text"),
        ("REAL", "double precision"),
        ("BLOB", "bytea"),
        ("MONEY", "numeric"),
    ],
)
def test_declared_types_map_to_postgresql_types(declared, expected):
    assert postgres_type("t", "c", declared, rowid_alias=False, type_map=NO_MAP)[0] == expected


def test_integer_primary_key_becomes_identity():
    assert postgres_type("t", "id", "INTEGER", rowid_alias=True, type_map=NO_MAP) == (
        IDENTITY,
        "INTEGER PRIMARY KEY (the rowid)",
    )


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ({"integer": 5, "null": 2}, "bigint"),
        ({"integer": 5, "real": 1}, "double precision"),
        ({"text": 3, "integer": 1}, "text"),
        ({"blob": 2, "null": 1}, "bytea"),
        ({"blob": 2, "text": 1}, "bytea"),
        ({"null": 4}, "text"),
        ({}, "text"),
    ],
)
def test_columns_without_a_type_take_it_from_their_values(storage, expected):
    assert type_from_values(storage) == expected
    assert postgres_type("t", "c", "", rowid_alias=False, type_map=NO_MAP, storage=storage)[0] == expected


def test_type_map_overrides_by_declared_type_and_by_column():
    mapping = parse_type_map(
        ["datetime=timestamp(3), VARCHAR = varchar(50)", "Events.Payload=jsonb", "x=numeric(10,2)"]
    )
    assert postgres_type("t", "c", "DATETIME", rowid_alias=False, type_map=mapping) == ("timestamp(3)", "--type-map")
    assert postgres_type("t", "c", "varchar(255)", rowid_alias=False, type_map=mapping)[0] == "varchar(50)"
    assert postgres_type("events", "payload", "TEXT", rowid_alias=False, type_map=mapping)[0] == "jsonb"
    assert postgres_type("t", "c", "X", rowid_alias=False, type_map=mapping)[0] == "numeric(10,2)"
    assert postgres_type("t", "id", "INTEGER", rowid_alias=True, type_map=parse_type_map(["t.id=integer"]))[0] == (
        "integer"
    )
    assert base_name("NUMERIC( 10 , 2 )") == "NUMERIC"


@pytest.mark.parametrize("entry", ["datetime", "=text", "a=", "a=text; DROP TABLE x", "a=text'", 'a="x"'])
def test_type_map_refuses_what_is_not_a_mapping_to_a_type(entry):
    with pytest.raises(ConfigError, match="--type-map"):
        parse_type_map([entry])
