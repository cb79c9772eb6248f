"""`postgres.import-sqlite` against a real server, run as a user runs it: a fixture SQLite file
holding every conversion is imported in both modes and read back row by row; refusals, bad values,
rejects, bad files, verification and foreign-key failures each end in one line with the target
unchanged."""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import HOSTILE_PASSWORD, REPO, RunningCluster, make_project_dir, native_cluster_only, run_task

# The importer talks SQL only: one local backend is enough.
pytestmark = [pytest.mark.integration, native_cluster_only]

SQLITE_SCHEMA = """
CREATE TABLE collections (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    is_public BOOLEAN NOT NULL DEFAULT 0,
    created_at DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE kinds (
    id INTEGER PRIMARY KEY,
    collection_id INTEGER REFERENCES collections(id),
    Flag BOOLEAN,
    created DATETIME,
    day DATE,
    payload BLOB,
    doc JSON,
    big INTEGER,
    ratio REAL,
    label TEXT,
    amount NUMERIC,
    uid UUID,
    api_token TEXT,
    mood TEXT
);
CREATE INDEX kinds_collection ON kinds (collection_id);
CREATE TABLE tags (
    kind_id INTEGER NOT NULL REFERENCES kinds(id),
    tag TEXT NOT NULL,
    PRIMARY KEY (kind_id, tag)
) WITHOUT ROWID;
CREATE VIEW public_collections AS SELECT * FROM collections WHERE is_public;
"""

# The application's migrations, for the existing-schema mode.
POSTGRES_SCHEMA = """
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE TABLE collections (
    id serial PRIMARY KEY,
    name varchar(100) NOT NULL UNIQUE,
    is_public boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE kinds (
    id bigserial PRIMARY KEY,
    collection_id integer REFERENCES collections (id),
    flag boolean,
    created timestamptz,
    day date,
    payload bytea,
    doc jsonb,
    big bigint,
    ratio double precision,
    label text,
    amount numeric(12, 2),
    uid uuid,
    api_token text,
    mood mood,
    imported_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE tags (kind_id bigint NOT NULL REFERENCES kinds (id), tag text NOT NULL, PRIMARY KEY (kind_id, tag));
CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);
INSERT INTO alembic_version VALUES ('abc123');
"""

UID = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
LATIN1_TEXT = "CAST(X'636166e9' AS TEXT)"  # 'café' in Latin-1: not UTF-8


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# (SQLite values for kinds; what PostgreSQL must hold, where the modes agree). SQL text in a
# tuple ("sql", text) is inserted as an SQL expression.
KIND_COLUMNS = ("id", "collection_id", "Flag", "created", "day", "payload", "doc", "big", "ratio", "label")
KIND_COLUMNS += ("amount", "uid", "api_token", "mood")
# fmt: off
KINDS = [
    (
        (1, 1, 1, "2024-01-02T03:04:05Z", "2024-01-02", b"\x00\x01\xff", '{"b": 1, "a": [1.0, "é"]}', 2**40, 0.1,
         "plain", 12.345, UID.upper(), "s3cret", "happy"),
        (1, 1, True, _utc(2024, 1, 2, 3, 4, 5), date(2024, 1, 2), b"\x00\x01\xff", None, 2**40, 0.1,
         "plain", None, UID, "s3cret", "happy"),
    ),
    (
        (2, 1, 0, "2024-01-02 03:04:05.123456", 2460000.5, b"", "[]", -(2**63), float("inf"),
         "", 0, bytes(range(16)), None, "sad"),
        (2, 1, False, _utc(2024, 1, 2, 3, 4, 5, 123456), date(2023, 2, 25), b"", None, -(2**63), math.inf,
         "", None, "00010203-0405-0607-0809-0a0b0c0d0e0f", None, "sad"),
    ),
    (
        # SQLite itself stores -0.0 in a REAL column as the integer 0.
        (3, 2, "true", 1700000000, "2024-02-29", None, '"text"', 2**63 - 1, -0.0,
         None, "1e3", None, "", None),
        (3, 2, True, _utc(2023, 11, 14, 22, 13, 20), date(2024, 2, 29), None, None, 2**63 - 1, 0.0,
         None, None, None, "", None),
    ),
    (
        (4, 2, "f", 1700000000.5, None, b"\x00" * 1000, "null", 2**31, "NaN",
         "tab\there\nnewline\\backslash\r\x08\x0c\x0b", -5.5, None, None, None),
        (4, 2, False, _utc(2023, 11, 14, 22, 13, 20, 500000), None, b"\x00" * 1000, None, 2**31, math.nan,
         "tab\there\nnewline\\backslash\r\x08\x0c\x0b", None, None, None, None),
    ),
    (
        (5, None, "T", 2460000.123456, None, None, None, None, "-Infinity",
         "日本語 ✓ 😀", None, None, None, None),
        (5, None, True, _utc(2023, 2, 24, 14, 57, 46, 598000), None, None, None, None, -math.inf,
         "日本語 ✓ 😀", None, None, None, None),
    ),
    (
        (6, None, "0", "2024-01-02T05:04:05+02:00", None, None, None, None, None,
         ("sql", LATIN1_TEXT), None, None, None, None),
        (6, None, False, _utc(2024, 1, 2, 3, 4, 5), None, None, None, None, None,
         "café", None, None, None, None),
    ),
    (
        (7, None, "FALSE", "2024-01-02 03:04:05.1234567", None, None,
         '{"nested": {"deep": [1, 2, {"x": null}]}, "n": 1.50}', "42", None, " spaced ", None, None, None, None),
        (7, None, False, _utc(2024, 1, 2, 3, 4, 5, 123457), None, None,
         None, 42, None, " spaced ", None, None, None, None),
    ),
    (
        (8, None, None, None, None, None, None, None, None, None, None, None, None, None),
        (8, None, None, None, None, None, None, None, None, None, None, None, None, None),
    ),
]
# fmt: on
# Where the modes differ: jsonb (existing) is normalised and numeric(12,2) rounds; json and
# numeric (created) keep the text and every digit.
DOC_EXISTING = {1: '{"a": [1.0, "é"], "b": 1}', 2: "[]", 3: '"text"', 4: "null"}
DOC_EXISTING[7] = '{"n": 1.50, "nested": {"deep": [1, 2, {"x": null}]}}'
DOC_CREATED = {1: '{"b": 1, "a": [1.0, "é"]}', 2: "[]", 3: '"text"', 4: "null", 7: KINDS[6][0][6]}
AMOUNT_EXISTING = {1: Decimal("12.35"), 2: Decimal("0.00"), 3: Decimal("1000.00"), 4: Decimal("-5.50")}
AMOUNT_CREATED = {1: Decimal("12.345"), 2: Decimal(0), 3: Decimal(1000), 4: Decimal("-5.5")}
TAGS = [(1, "a"), (1, "b"), (2, "a")]


def build_sqlite(path: Path, *, journal: str = "delete") -> Path:
    """The fixture database: every conversion the import promises, plus a view it must skip."""
    connection = sqlite3.connect(path)
    connection.execute(f"PRAGMA journal_mode={journal}")
    connection.executescript(SQLITE_SCHEMA)
    connection.executemany(
        "INSERT INTO collections (id, name, is_public, created_at) VALUES (?, ?, ?, ?)",
        [(1, "first", 1, "2024-01-01 00:00:00"), (2, "second", "false", "2024-01-01T12:00:00Z"), (9, "gone", 0, 0)],
    )
    connection.execute("DELETE FROM collections WHERE id = 9")  # AUTOINCREMENT remembers 9
    for source, _expected in KINDS:
        values = ", ".join(value[1] if isinstance(value, tuple) else "?" for value in source)
        parameters = [value for value in source if not isinstance(value, tuple)]
        connection.execute(f"INSERT INTO kinds ({', '.join(KIND_COLUMNS)}) VALUES ({values})", parameters)
    connection.executemany("INSERT INTO tags VALUES (?, ?)", TAGS)
    connection.commit()
    connection.close()
    path.chmod(0o644)
    return path


@dataclass
class Target:
    """A fresh database on the session cluster and a project whose settings point at it."""

    cluster: RunningCluster
    project_dir: Path
    database: str
    environ: dict[str, str]

    def run(self, *args: str, input_text: str | None = None, **extra: str) -> subprocess.CompletedProcess[str]:
        result = run_task(
            "postgres.import-sqlite",
            *args,
            environ={**self.environ, **extra},
            cwd=self.project_dir,
            input_text=input_text,
            timeout=300,
        )
        output = result.stdout + result.stderr
        assert HOSTILE_PASSWORD not in output
        assert "Traceback" not in output, output
        return result

    def connect(self):  # type: ignore[no-untyped-def]
        connection = psycopg2.connect(
            **self.cluster.settings.database.with_database(self.database).libpq_params(), options="-c TimeZone=UTC"
        )
        connection.autocommit = True
        return connection

    def sql(self, statement: str, parameters: tuple = ()) -> list[tuple]:
        connection = self.connect()
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement, parameters or None)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    def snapshot(self) -> dict[str, list[tuple]]:
        """Every user table's rows, for 'nothing changed' checks."""
        tables = [row[0] for row in self.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return {name: sorted(repr(_plain(row)) for row in self.sql(f'SELECT * FROM "{name}"')) for name in tables}


def _plain(row: tuple) -> tuple:
    return tuple(bytes(value) if isinstance(value, memoryview) else value for value in row)


@pytest.fixture
def target(pg_cluster: RunningCluster) -> Iterator[Target]:
    database = f"imp_{secrets.token_hex(4)}"
    project_dir = make_project_dir()
    environ = {
        **pg_cluster.environ,
        "SEMANTIK_PROJECT_DIR": str(project_dir),
        "POSTGRES_DB": database,
        "POSTGRES_DATA_DIR": str(pg_cluster.settings.data_dir),
        "SEMANTIK_PG_BACKEND": "external",
    }
    admin = psycopg2.connect(**pg_cluster.settings.database.libpq_params())
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{database}"')
    yield Target(pg_cluster, project_dir, database, environ)
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    admin.close()
    shutil.rmtree(project_dir, ignore_errors=True)


@pytest.fixture
def fixture_db(tmp_path: Path) -> Path:
    return build_sqlite(tmp_path / "semantik.db")


def _read_kinds(target: Target) -> dict[int, tuple]:
    rows = target.sql(
        "SELECT id, collection_id, flag, created, day, payload, doc::text, big, ratio, label, amount, uid::text,"
        " api_token, mood::text FROM kinds ORDER BY id"
    )
    return {row[0]: _plain(row) for row in rows}


def _same(actual: object, expected: object) -> bool:
    if expected is None:
        return actual is None
    if isinstance(expected, float) and isinstance(actual, float) and math.isnan(expected):
        return math.isnan(actual)
    if isinstance(expected, float) and actual == expected:
        return math.copysign(1, actual) == math.copysign(1, expected)  # -0.0 stays -0.0
    return actual == expected and type(actual) is type(expected)


def _check_kinds(target: Target, doc: dict[int, object], amount: dict[int, Decimal]) -> None:
    actual = _read_kinds(target)
    assert sorted(actual) == [row[0][0] for row in KINDS]
    for (_source, expected), row_id in zip(KINDS, sorted(actual), strict=True):
        wanted = list(expected)
        wanted[6], wanted[10] = doc.get(row_id), amount.get(row_id)
        for name, got, want in zip(KIND_COLUMNS, actual[row_id], wanted, strict=True):
            assert _same(got, want), f"kinds id {row_id}, {name}: {got!r} != {want!r}"


def test_existing_schema_receives_every_conversion_exactly(target: Target, fixture_db: Path):
    target.sql(POSTGRES_SCHEMA)
    result = target.run(str(fixture_db), "--decode-fallback", "cp1252")
    assert result.returncode == 0, result.stdout + result.stderr
    for table, rows in (("collections", 2), ("kinds", 8), ("tags", 3)):
        assert f"{table} → public.{table}: {rows} rows" in result.stdout and "verified" in result.stdout
    assert "committed" in result.stdout
    _check_kinds(target, DOC_EXISTING, AMOUNT_EXISTING)
    assert target.sql("SELECT id, name, is_public, created_at FROM collections ORDER BY id") == [
        (1, "first", True, _utc(2024, 1, 1)),
        (2, "second", False, _utc(2024, 1, 1, 12)),
    ]
    assert sorted(target.sql("SELECT kind_id, tag FROM tags")) == TAGS
    assert target.sql("SELECT count(*) FROM kinds WHERE imported_at IS NULL") == [(0,)]  # the default filled it
    assert target.sql("SELECT * FROM alembic_version") == [("abc123",)]  # tables SQLite lacks are untouched
    # Sequences continue past the imported ids; AUTOINCREMENT's memory of id 9 is kept.
    assert target.sql("SELECT nextval('kinds_id_seq'), nextval('collections_id_seq')") == [(9, 10)]
    # The foreign keys dropped for the load are back, and enforced.
    constraints = target.sql("SELECT conname FROM pg_constraint WHERE contype = 'f' ORDER BY 1")
    assert constraints == [("kinds_collection_id_fkey",), ("tags_kind_id_fkey",)]
    with pytest.raises(psycopg2.errors.ForeignKeyViolation):
        target.sql("INSERT INTO tags VALUES (999, 'x')")


def test_create_schema_builds_tables_keys_and_indexes_and_imports_exactly(target: Target, fixture_db: Path):
    result = target.run(str(fixture_db), "--create-schema", "--decode-fallback", "cp1252")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("verified") == 3
    types = dict(
        target.sql(
            "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'public'"
        )
    )
    assert types["kinds.Flag"] == "boolean" and types["kinds.created"] == "timestamp with time zone"
    assert types["kinds.day"] == "date" and types["kinds.payload"] == "bytea" and types["kinds.doc"] == "json"
    assert types["kinds.big"] == "bigint" and types["kinds.ratio"] == "double precision"
    assert types["kinds.amount"] == "numeric" and types["kinds.uid"] == "uuid" and types["kinds.mood"] == "text"
    assert types["collections.id"] == "bigint"
    kinds = {row[0]: row for row in target.sql('SELECT id, "Flag", doc::text FROM kinds')}
    assert kinds[1][1] is True and kinds[1][2] == DOC_CREATED[1]
    target.sql('ALTER TABLE kinds RENAME COLUMN "Flag" TO flag')  # so the shared reader works
    _check_kinds(target, DOC_CREATED, AMOUNT_CREATED)
    definitions = {
        name: definition
        for name, definition in target.sql(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
        )
    }
    assert definitions["collections_pkey"] == "PRIMARY KEY (id)"
    assert definitions["collections_name_key"] == "UNIQUE (name)"
    assert definitions["tags_pkey"] == "PRIMARY KEY (kind_id, tag)"
    assert definitions["kinds_collection_id_fkey"].startswith("FOREIGN KEY (collection_id) REFERENCES collections(id)")
    assert target.sql("SELECT indexname FROM pg_indexes WHERE indexname = 'kinds_collection'") == [
        ("kinds_collection",)
    ]
    # Defaults translated; identity continues past the highest id (AUTOINCREMENT remembered 9).
    target.sql("INSERT INTO collections (name) VALUES ('new')")
    assert target.sql("SELECT id, is_public, created_at IS NOT NULL FROM collections WHERE name = 'new'") == [
        (10, False, True)
    ]
    assert "public_collections" not in str(target.sql("SELECT tablename FROM pg_tables"))


def test_dry_run_prints_the_plan_and_changes_nothing(target: Target, fixture_db: Path):
    target.sql(POSTGRES_SCHEMA)
    before = target.snapshot()
    plan = target.run(str(fixture_db), "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "kinds → public.kinds: 8 rows" in plan.stdout
    assert "Flag [BOOLEAN] → flag boolean" in plan.stdout
    assert "0/1 → false/true" in plan.stdout and "Julian day" in plan.stdout
    assert "view public_collections: not imported" in plan.stdout
    assert "nothing was changed" in plan.stdout
    created = target.run(str(fixture_db), "--dry-run", "--create-schema", "--json")
    assert created.returncode == 0, created.stderr
    described = json.loads(created.stdout)
    assert described["mode"] == "create-schema" and any("CREATE TABLE" in s for s in described["sql_before"])
    assert target.snapshot() == before


def test_rows_in_the_target_are_refused_unless_replace_which_asks(target: Target, fixture_db: Path):
    target.sql(POSTGRES_SCHEMA)
    assert target.run(str(fixture_db), "--decode-fallback", "cp1252").returncode == 0
    target.sql("DELETE FROM tags; UPDATE kinds SET label = 'changed'")
    changed = target.snapshot()
    refused = target.run(str(fixture_db), "--decode-fallback", "cp1252")
    assert refused.returncode == 1 and "already hold rows: public.collections, public.kinds" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    unconfirmed = target.run(str(fixture_db), "--replace", "--decode-fallback", "cp1252")
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert target.snapshot() == changed
    replaced = target.run(str(fixture_db), "--replace", "--yes", "--decode-fallback", "cp1252")
    assert replaced.returncode == 0, replaced.stdout + replaced.stderr
    _check_kinds(target, DOC_EXISTING, AMOUNT_EXISTING)
    assert sorted(target.sql("SELECT kind_id, tag FROM tags")) == TAGS
    again = target.run(str(fixture_db), "--create-schema", "--replace", "--yes", "--decode-fallback", "cp1252")
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_bad_value_stops_the_import_with_one_line_naming_it(target: Target, fixture_db: Path):
    target.sql(POSTGRES_SCHEMA)
    before = target.snapshot()
    result = target.run(str(fixture_db))  # row 6 holds Latin-1 text and no --decode-fallback was given
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "kinds rowid 6, column label (text → text): TEXT is not valid UTF-8" in line
    assert "--reject-file" in line and "--decode-fallback" in line
    assert target.snapshot() == before


def test_secret_values_never_appear_in_errors(target: Target, tmp_path: Path):
    path = tmp_path / "users.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT, password_hash TEXT)")
        connection.execute("INSERT INTO users VALUES (1, 'a@b.c', 'hunter2-' || char(0) || '-secret')")
        connection.execute("INSERT INTO users VALUES (2, 'x' || char(0), 'fine')")
    result = target.run(str(path), "--create-schema")
    assert result.returncode == 1
    assert "users rowid 1, column password_hash (text → text): contains a NUL character" in result.stderr
    assert "value not shown" in result.stderr and "hunter2" not in result.stderr


def test_reject_file_sets_bad_rows_aside_and_the_rest_arrives(target: Target, fixture_db: Path, tmp_path: Path):
    target.sql(POSTGRES_SCHEMA)
    with sqlite3.connect(fixture_db) as connection:
        connection.execute("INSERT INTO kinds (id, Flag, doc, label) VALUES (20, 2, '{}', 'bad flag')")
        connection.execute("INSERT INTO kinds (id, doc) VALUES (21, '{broken')")
        connection.execute("INSERT INTO kinds (id, mood) VALUES (22, 'angry')")  # not a label of the enum
    rejects = tmp_path / "rejects.jsonl"
    result = target.run(str(fixture_db), "--reject-file", str(rejects))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 rows rejected" in result.stdout and str(rejects) in result.stdout
    assert "kinds → public.kinds: 7 rows, 4 rejected" in result.stdout
    assert rejects.stat().st_mode & 0o777 == 0o600
    records = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert sorted((r["row"], r["column"]) for r in records) == [(6, "label"), (20, "Flag"), (21, "doc"), (22, "mood")]
    latin = next(r for r in records if r["row"] == 6)
    assert latin["values"]["label"] == {"text_base64": "Y2Fm6Q=="} and latin["values"]["payload"] is None
    assert sorted(row[0] for row in target.sql("SELECT id FROM kinds")) == [1, 2, 3, 4, 5, 7, 8]
    # The rejected kind 6 has no tags; a tag pointing at a rejected row would break the foreign key.
    assert sorted(target.sql("SELECT kind_id, tag FROM tags")) == TAGS


def test_a_role_that_does_not_own_the_tables_imports_with_the_foreign_keys_in_place(target: Target, fixture_db: Path):
    # The application's migrations ran as the owner; the import runs as a role with only DML rights,
    # so the foreign keys cannot be dropped: the tables are loaded parents first instead.
    role, password = f"loader_{secrets.token_hex(4)}", "loader-pw:/@ x"
    target.sql(POSTGRES_SCHEMA)
    target.sql(
        f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}';"
        f' GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA public TO "{role}";'
        f' GRANT USAGE, UPDATE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"'
    )
    try:
        loader = {"POSTGRES_USER": role, "POSTGRES_PASSWORD": password}
        first = target.run(str(fixture_db), "--decode-fallback", "cp1252", **loader)
        assert first.returncode == 0, first.stdout + first.stderr
        _check_kinds(target, DOC_EXISTING, AMOUNT_EXISTING)
        again = target.run(str(fixture_db), "--decode-fallback", "cp1252", "--replace", "--yes", **loader)
        assert again.returncode == 0, again.stdout + again.stderr
        assert sorted(target.sql("SELECT kind_id, tag FROM tags")) == TAGS
        assert password not in first.stdout + first.stderr + again.stdout + again.stderr
    finally:
        target.sql(f'DROP OWNED BY "{role}"; DROP ROLE "{role}"')


def test_json_that_postgresql_refuses_names_the_row_or_is_set_aside(target: Target, tmp_path: Path):
    # --create-schema makes doc a json column, which PostgreSQL's json input checks during COPY.
    path = tmp_path / "docs.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE docs (id INTEGER PRIMARY KEY, doc JSON)")
        good = [(n, json.dumps({"n": n})) for n in range(1, 100)]
        connection.executemany("INSERT INTO docs VALUES (?, ?)", [*good, (100, "{nope"), (101, "[1,]"), (102, "NaN")])
    stopped = target.run(str(path), "--create-schema")
    assert stopped.returncode == 1
    [line] = stopped.stderr.strip().splitlines()
    assert "docs rowid 100, column doc (text → json): PostgreSQL refused it: invalid input syntax for type json" in line
    assert target.snapshot() == {}
    rejects = tmp_path / "json.jsonl"
    kept = target.run(str(path), "--create-schema", "--reject-file", str(rejects))
    assert kept.returncode == 0, kept.stdout + kept.stderr
    records = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert sorted(r["row"] for r in records) == [100, 101, 102]
    # The first was refused by PostgreSQL; after that the column is checked here, in one pass.
    assert sorted(r["reason"] for r in records) == [
        "PostgreSQL refused it: invalid input syntax for type json",
        "text is not valid JSON",
        "text is not valid JSON",
    ]
    assert target.sql("SELECT count(*), max(id), (SELECT doc::text FROM docs WHERE id = 7) FROM docs") == [
        (99, 99, '{"n": 7}')
    ]


def test_output_into_a_closed_pipe_is_no_traceback_and_the_import_goes_on(target: Target, fixture_db: Path):
    target.sql(POSTGRES_SCHEMA)
    argv = [sys.executable, "-m", "semantik_infra", "postgres.import-sqlite", str(fixture_db), "--decode-fallback"]
    task = subprocess.Popen(
        [*argv, "cp1252"],
        cwd=target.project_dir,
        env={**target.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert task.stdout is not None
    task.stdout.close()  # like `| head -0`: the reader is gone before the first line
    errors = task.stderr.read() if task.stderr else ""
    assert task.wait(120) == 0 and "Traceback" not in errors, errors
    assert target.sql("SELECT count(*) FROM kinds") == [(8,)]


def test_foreign_key_orphans_stop_the_import(target: Target, fixture_db: Path):
    target.sql(POSTGRES_SCHEMA)
    with sqlite3.connect(fixture_db) as connection:  # SQLite does not enforce foreign keys by default
        connection.execute("INSERT INTO tags VALUES (777, 'orphan')")
    before = target.snapshot()
    result = target.run(str(fixture_db), "--decode-fallback", "cp1252")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "breaking foreign key tags_kind_id_fkey" in line and "(kind_id)=(777)" in line
    assert target.snapshot() == before


def test_verification_catches_a_value_changed_on_the_way(target: Target, fixture_db: Path):
    target.sql(POSTGRES_SCHEMA)
    # A trigger that alters what arrives: the read-back must notice, and nothing may be committed.
    target.sql(
        "CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN NEW.label := upper(NEW.label); RETURN NEW; END $$;"
        " CREATE TRIGGER shout BEFORE INSERT ON kinds FOR EACH ROW EXECUTE FUNCTION shout()"
    )
    before = target.snapshot()
    result = target.run(str(fixture_db), "--decode-fallback", "cp1252")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "public.kinds: verification failed" in line and "in columns label" in line
    assert target.snapshot() == before


def test_unique_violation_names_the_row_or_is_rejected(target: Target, fixture_db: Path, tmp_path: Path):
    target.sql(POSTGRES_SCHEMA.replace("api_token text,", "api_token text UNIQUE,"))
    with sqlite3.connect(fixture_db) as connection:
        connection.execute("UPDATE kinds SET api_token = 's3cret' WHERE id = 7")
    stopped = target.run(str(fixture_db), "--decode-fallback", "cp1252")
    assert stopped.returncode == 1
    [line] = stopped.stderr.strip().splitlines()
    assert "kinds rowid 7: PostgreSQL refused it: duplicate key for unique constraint kinds_api_token_key" in line
    assert "s3cret" not in line
    rejects = tmp_path / "dupes.jsonl"
    kept = target.run(str(fixture_db), "--decode-fallback", "cp1252", "--reject-file", str(rejects))
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert [json.loads(line)["row"] for line in rejects.read_text().splitlines()] == [7]


def test_missing_tables_are_listed_and_skippable(target: Target, fixture_db: Path):
    target.sql(POSTGRES_SCHEMA.replace("CREATE TABLE tags", "CREATE TABLE other_tags"))
    result = target.run(str(fixture_db), "--decode-fallback", "cp1252")
    assert result.returncode == 1 and "no PostgreSQL table for SQLite tables: tags" in result.stderr
    assert "--skip-missing" in result.stderr
    skipped = target.run(str(fixture_db), "--decode-fallback", "cp1252", "--skip-missing")
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert target.sql("SELECT count(*) FROM kinds") == [(8,)]


def test_wal_database_is_read_from_one_snapshot_while_the_app_writes(target: Target, tmp_path: Path):
    path = build_sqlite(tmp_path / "wal.db", journal="wal")
    app = sqlite3.connect(path, check_same_thread=False)
    app.execute("PRAGMA wal_autocheckpoint=0")  # committed rows live only in the WAL
    app.executemany("INSERT INTO tags VALUES (?, ?)", [(3, f"wal-{n}") for n in range(500)])
    app.commit()
    stop = threading.Event()

    def keep_writing() -> None:
        n = 0
        while not stop.is_set():
            app.execute("INSERT INTO tags VALUES (?, ?)", (4, f"live-{n}"))
            app.commit()
            n += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        result = target.run(str(path), "--create-schema", "--decode-fallback", "cp1252")
    finally:
        stop.set()
        writer.join()
        app.close()
    assert result.returncode == 0, result.stdout + result.stderr
    imported = target.sql("SELECT count(*) FROM tags WHERE tag LIKE 'wal-%'")
    assert imported == [(500,)]  # what was only in the WAL arrived


def test_two_imports_at_once_import_once(target: Target, fixture_db: Path):
    target.sql(POSTGRES_SCHEMA)
    env = {**target.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "semantik_infra", "postgres.import-sqlite", str(fixture_db), "--decode-fallback"]
    runs = [
        subprocess.Popen(
            [*argv, "cp1252"],
            cwd=target.project_dir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = [(run.wait(120), run.stderr.read()) for run in runs]
    assert sorted(code for code, _ in outcomes) == [0, 1], outcomes
    assert any("hold rows" in errors or "received rows" in errors for _, errors in outcomes)
    assert target.sql("SELECT count(*) FROM kinds") == [(8,)]


# --- bad files ---------------------------------------------------------------------------


def _corrupt(path: Path) -> Path:
    data = bytearray(path.read_bytes())
    page = 4096
    data[page : page * 2] = os.urandom(page)  # a b-tree page of garbage
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
        (lambda p: p.write_bytes(os.urandom(8192)), "not an SQLite database"),
        (lambda p: p.write_text("id,name\n1,a\n"), "not an SQLite database"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: None, "no such file"),
        (lambda p: sqlite3.connect(p).execute("PRAGMA user_version = 1").connection.commit(), "has no tables"),
    ],
    ids=["empty", "encrypted-or-random", "csv", "directory", "missing", "no-tables"],
)
def test_bad_files_are_one_line(target: Target, tmp_path: Path, make, message):
    path = tmp_path / "bad.db"
    make(path)
    result = target.run(str(path))
    assert result.returncode == 1, result.stdout
    [line] = result.stderr.strip().splitlines()
    assert message in line


def test_corrupt_and_truncated_files_are_one_line(target: Target, tmp_path: Path):
    big = tmp_path / "big.db"
    with sqlite3.connect(big) as connection:
        connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        connection.executemany("INSERT INTO t (v) VALUES (?)", [("x" * 200,) for _ in range(5000)])
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(big.read_bytes()[: 40 * 4096])
    corrupt = tmp_path / "corrupt.db"
    shutil.copy(big, corrupt)
    _corrupt(corrupt)
    for path in (truncated, corrupt):
        result = target.run(str(path), "--create-schema")
        assert result.returncode == 1, result.stdout
        [line] = result.stderr.strip().splitlines()
        assert "corrupt" in line, line
    assert target.snapshot() == {}


@pytest.mark.slow
def test_locked_database_is_one_line(target: Target, fixture_db: Path):
    holder = sqlite3.connect(fixture_db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # a writer mid-transaction in rollback-journal mode
    try:
        result = target.run(str(fixture_db))  # after SQLite's busy timeout
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "locked by another process" in line


def test_default_path_is_sqlite_path(target: Target, fixture_db: Path):
    target.sql(POSTGRES_SCHEMA)
    data = target.project_dir / "data"
    data.mkdir()
    shutil.copy(fixture_db, data / "semantik.db")
    result = target.run("--dry-run")
    assert result.returncode == 0 and "kinds → public.kinds: 8 rows" in result.stdout
    elsewhere = target.run("--dry-run", SQLITE_PATH=str(fixture_db.parent / "nowhere.db"))
    assert elsewhere.returncode == 1 and "nowhere.db: no such file" in elsewhere.stderr


# --- interrupted imports: Ctrl-C, SIGTERM, SIGKILL, the server killed ----------------------

BIG_ROWS = 300_000
OLD_ROWS = [(n, n % 2 == 0, f"old row {n}", _utc(2020, 1, 1)) for n in range(1, 11)]


@pytest.fixture(scope="module")
def big_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Enough rows that an import takes seconds; every 5000th has a flag that is not a boolean."""
    path = tmp_path_factory.mktemp("big") / "big.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, flag BOOLEAN, body TEXT, created DATETIME)")
        connection.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?)",
            (
                (n, "maybe" if n % 5000 == 0 else n % 2, f"row {n} " + "x" * 200, f"2024-01-01T00:00:{n % 60:02d}Z")
                for n in range(1, BIG_ROWS + 1)
            ),
        )
    path.chmod(0o644)
    return path


def _with_old_rows(target: Target) -> None:
    target.sql("CREATE TABLE items (id bigint PRIMARY KEY, flag boolean, body text, created timestamptz)")
    connection = target.connect()
    with connection.cursor() as cursor:
        cursor.executemany("INSERT INTO items VALUES (%s, %s, %s, %s)", OLD_ROWS)
    connection.close()


def _assert_old_rows(target: Target) -> None:
    assert target.sql("SELECT * FROM items ORDER BY id") == OLD_ROWS


def _start(target: Target, *args: str) -> subprocess.Popen[str]:
    # Its own process group, like a shell job, so a test can send it what Ctrl-C sends.
    return subprocess.Popen(
        [sys.executable, "-m", "semantik_infra", "postgres.import-sqlite", *args],
        cwd=target.project_dir,
        env={**target.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        process_group=0,
    )


def _wait_for_copy(target: Target, task: subprocess.Popen[str]) -> None:
    """Return while the task's COPY into the target is under way."""
    import time

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        [(copying,)] = target.sql(
            "SELECT count(*) FROM pg_stat_progress_copy p JOIN pg_stat_activity a ON a.pid = p.pid"
            " WHERE a.datname = %s AND a.application_name = 'semantik-infra import-sqlite' AND p.tuples_processed > 0",
            (target.database,),
        )
        if copying:
            return
        if task.poll() is not None:
            raise AssertionError(f"the import ended before it was interrupted: {task.communicate()}")
        time.sleep(0.005)
    raise AssertionError("the import never started copying")


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupted_import_leaves_the_target_as_it_was(target: Target, big_db: Path, tmp_path: Path, how: str):
    import signal

    _with_old_rows(target)
    rejects = tmp_path / "rejects.jsonl"
    task = _start(target, str(big_db), "--replace", "--yes", "--reject-file", str(rejects))
    _wait_for_copy(target, task)
    if how == "ctrl-c":
        os.killpg(task.pid, signal.SIGINT)  # what the terminal sends the foreground job
    else:
        os.kill(task.pid, signal.SIGTERM)
    _, stderr = task.communicate(timeout=60)
    assert task.returncode == 130 and stderr.strip() == "interrupted", stderr
    _assert_old_rows(target)
    assert list(tmp_path.iterdir()) == []  # the reject file's temp copy is gone too


@pytest.mark.slow
def test_killed_import_leaves_the_target_as_it_was(target: Target, big_db: Path, tmp_path: Path):
    import signal
    import time

    _with_old_rows(target)
    task = _start(target, str(big_db), "--replace", "--yes", "--reject-file", "/dev/null/never")
    task.wait(60)
    assert task.returncode == 2 and "--reject-file" in task.stderr.read()  # refused before touching anything
    # --create-schema --replace drops the old table inside the transaction: killed, it must be back.
    task = _start(target, str(big_db), "--create-schema", "--replace", "--yes", "--reject-file", str(tmp_path / "r"))
    _wait_for_copy(target, task)
    os.kill(task.pid, signal.SIGKILL)
    task.wait(30)
    deadline = time.monotonic() + 30
    while (
        target.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (target.database,)
        )
        != [(0,)]
        and time.monotonic() < deadline
    ):
        time.sleep(0.05)  # the server notices the dead client and rolls back
    _assert_old_rows(target)


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[RunningCluster]:
    from tests.conftest import destroy_cluster, start_cluster

    cluster = start_cluster()
    yield cluster
    destroy_cluster(cluster)


@pytest.mark.slow
def test_server_killed_mid_import_is_one_line_and_changes_nothing(own_cluster: RunningCluster, big_db: Path):
    from semantik_infra.backends.native import NativeBackend

    project_dir = make_project_dir()
    environ = {**own_cluster.environ, "SEMANTIK_PROJECT_DIR": str(project_dir), "SEMANTIK_PG_BACKEND": "external"}
    target = Target(own_cluster, project_dir, own_cluster.settings.database.database or "semantik", environ)
    backend = NativeBackend(own_cluster.settings)
    try:
        _with_old_rows(target)
        task = _start(target, str(big_db), "--replace", "--yes", "--reject-file", str(project_dir / "r.jsonl"))
        _wait_for_copy(target, task)
        subprocess.run(
            [str(backend.binaries.tool("pg_ctl")), "stop", "-D", str(backend.data_dir), "-m", "immediate"],
            user=backend.run_as,
            cwd="/",
            check=True,
            capture_output=True,
        )
        _, stderr = task.communicate(timeout=120)
        assert task.returncode == 1, stderr
        [line] = stderr.strip().splitlines()
        assert "loading public.items: the server closed the connection; nothing was imported" in line, line
        backend.start()
        _assert_old_rows(target)
        assert not list(project_dir.glob("*r.jsonl*"))
    finally:
        backend.start()
        target.sql("DROP TABLE IF EXISTS items")
        shutil.rmtree(project_dir, ignore_errors=True)
