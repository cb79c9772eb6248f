"""Planning an import: matching names, refusing what cannot be filled, DDL for --create-schema,
defaults, load order and the --dry-run description."""

from __future__ import annotations

import pytest

from semantik_infra.errors import DataImportError
from semantik_infra.sqlite_convert import ConversionOptions, TargetType, converter_for
from semantik_infra.sqlite_plan import (
    ColumnPlan,
    Now,
    TablePlan,
    TargetColumn,
    TargetTable,
    UnknownDefault,
    after_load_statements,
    default_expression,
    describe_plan,
    fit_identifier,
    load_order,
    match_name,
    parse_default,
    plan_existing,
    unescape_copy,
)
from semantik_infra.sqlite_source import SourceColumn, SourceForeignKey, SourceIndex, SourceSchema, SourceTable

OPTIONS = ConversionOptions()


def column(name: str, declared: str = "TEXT", **kwargs: object) -> SourceColumn:
    pk = kwargs.pop("pk", 0)
    return SourceColumn(name, declared, kwargs.pop("not_null", False), kwargs.pop("default", None), pk)  # type: ignore[arg-type]


def table(name: str, *columns: SourceColumn, **kwargs: object) -> SourceTable:
    return SourceTable(name, columns, kwargs.pop("rowid", "rowid"), kwargs.pop("integer_pk", None), None, **kwargs)  # type: ignore[arg-type]


def target(name: str, *columns: tuple[str, str], not_null: tuple[str, ...] = (), **flags: set[str]) -> TargetTable:
    return TargetTable(
        "public",
        name,
        tuple(
            TargetColumn(
                cname,
                TargetType(ctype, ctype, not_null=cname in not_null),
                has_default=cname in flags.get("defaults", set()),
                generated=cname in flags.get("generated", set()),
            )
            for cname, ctype in columns
        ),
    )


def test_names_match_exactly_then_case_insensitively_when_unambiguous():
    assert match_name("Users", ["users", "posts"], "table") == "users"
    assert match_name("users", ["Users", "users"], "table") == "users"
    assert match_name("nope", ["users"], "table") is None
    with pytest.raises(DataImportError, match="matches several: USERS, Users"):
        match_name("users", ["Users", "USERS"], "table")


def test_long_names_are_shortened_uniquely():
    long = "x" * 80
    assert len(fit_identifier(long).encode()) == 63
    assert fit_identifier(long) != fit_identifier(long + "y")
    assert fit_identifier("short") == "short"
    assert len(fit_identifier("é" * 40).encode()) <= 63


def test_existing_schema_plan_matches_tables_and_columns():
    schema = SourceSchema([table("Users", column("ID", "INTEGER"), column("Name"))], ["view v"])
    plan = plan_existing(
        schema, [target("users", ("id", "int8"), ("name", "text"))], {"Users": 3}, OPTIONS, skip_missing=False
    )
    [users] = plan.tables
    assert users.target.label == "public.users" and users.rows == 3
    assert [(c.source.name, c.target.name, c.converter.family) for c in users.columns] == [
        ("ID", "id", "integer"),
        ("Name", "name", "text"),
    ]
    assert plan.not_imported == ["view v"]


def test_missing_tables_and_columns_are_refused_or_skipped():
    schema = SourceSchema([table("users", column("id"), column("extra")), table("logs", column("line"))])
    targets = [target("users", ("id", "text"))]
    with pytest.raises(DataImportError, match="no PostgreSQL table for SQLite tables: logs"):
        plan_existing(schema, targets, {"users": 1, "logs": 1}, OPTIONS, skip_missing=False)
    only_tables = SourceSchema([table("users", column("id"), column("extra"))])
    with pytest.raises(DataImportError, match=r"no PostgreSQL column for: users\.extra"):
        plan_existing(only_tables, targets, {"users": 1}, OPTIONS, skip_missing=False)
    plan = plan_existing(schema, targets, {"users": 1, "logs": 1}, OPTIONS, skip_missing=True)
    assert plan.missing == ["logs"] and plan.tables[0].skipped_columns == ["extra"]
    lines = describe_plan(plan)
    assert "  extra: not imported" in lines and "logs: no PostgreSQL table, not imported (--skip-missing)" in lines


def test_a_table_with_no_matching_column_is_refused():
    schema = SourceSchema([table("t", column("a"))])
    with pytest.raises(DataImportError, match="none of its columns"):
        plan_existing(schema, [target("t", ("b", "text"))], {"t": 0}, OPTIONS, skip_missing=True)


def test_not_null_columns_without_source_or_default_are_refused():
    schema = SourceSchema([table("users", column("id"))])
    strict = target("users", ("id", "text"), ("tenant", "int4"), not_null=("tenant",))
    with pytest.raises(
        DataImportError, match="NOT NULL columns without a default and without an SQLite column: tenant"
    ):
        plan_existing(schema, [strict], {"users": 1}, OPTIONS, skip_missing=False)
    defaulted = target("users", ("id", "text"), ("tenant", "int4"), not_null=("tenant",), defaults={"tenant"})
    assert plan_existing(schema, [defaulted], {"users": 1}, OPTIONS, skip_missing=False).tables


def test_generated_target_columns_are_left_to_postgresql():
    schema = SourceSchema([table("t", column("a"), column("b"))])
    plan = plan_existing(
        schema, [target("t", ("a", "text"), ("b", "text"), generated={"b"})], {"t": 0}, OPTIONS, skip_missing=False
    )
    assert [c.target.name for c in plan.tables[0].columns] == ["a"]
    assert plan.tables[0].skipped_columns == ["b (generated by PostgreSQL)"]


def test_load_order_puts_referenced_tables_first_and_survives_cycles():
    plans = [TablePlan(table(name), target(name), [], 0) for name in ("chunks", "documents", "collections", "a", "b")]
    parents = {
        "public.chunks": {"public.documents", "public.collections"},
        "public.documents": {"public.collections"},
        "public.a": {"public.b"},
        "public.b": {"public.a"},
        "public.collections": {"public.collections"},  # self-reference
    }
    order = [plan.target.name for plan in load_order(plans, parents)]
    assert order.index("collections") < order.index("documents") < order.index("chunks")
    assert sorted(order) == sorted(["chunks", "documents", "collections", "a", "b"])


def test_after_load_ddl_keys_indexes_and_foreign_keys():
    users = table(
        "users",
        column("id", "INTEGER", pk=1),
        column("email"),
        integer_pk="id",
        indexes=(
            SourceIndex("sqlite_autoindex_users_1", True, "u", (("email", False),), False, False),
            SourceIndex("users_lower", False, "c", (), False, True),
        ),
    )
    posts = table(
        "posts",
        column("id", "INTEGER", pk=1),
        column("user_id", "INTEGER"),
        column("editor", "TEXT"),
        column("created"),
        integer_pk="id",
        indexes=(
            SourceIndex("posts_created", False, "c", (("created", True), ("user_id", False)), False, False),
            SourceIndex("posts_recent", False, "c", (("created", False),), True, False),
        ),
        foreign_keys=(
            SourceForeignKey(("user_id",), "users", (), "NO ACTION", "CASCADE"),
            SourceForeignKey(("editor",), "users", ("email",), "CASCADE", "SET NULL"),
            SourceForeignKey(("created",), "users", ("nonunique",), "NO ACTION", "NO ACTION"),
            SourceForeignKey(("user_id",), "ghosts", (), "NO ACTION", "NO ACTION"),
        ),
        has_check=True,
    )
    statements, warnings = after_load_statements(SourceSchema([users, posts]), "public")
    assert statements == [
        'ALTER TABLE "public"."users" ADD CONSTRAINT "users_pkey" PRIMARY KEY ("id")',
        'ALTER TABLE "public"."users" ADD CONSTRAINT "users_email_key" UNIQUE ("email")',
        'ALTER TABLE "public"."posts" ADD CONSTRAINT "posts_pkey" PRIMARY KEY ("id")',
        'CREATE INDEX "posts_created" ON "public"."posts" ("created" DESC, "user_id")',
        'ALTER TABLE "public"."posts" ADD CONSTRAINT "posts_user_id_fkey" FOREIGN KEY ("user_id")'
        ' REFERENCES "public"."users" ("id") ON DELETE CASCADE',
        'ALTER TABLE "public"."posts" ADD CONSTRAINT "posts_editor_fkey" FOREIGN KEY ("editor")'
        ' REFERENCES "public"."users" ("email") ON UPDATE CASCADE ON DELETE SET NULL',
    ]
    assert warnings == [
        "users: expression index users_lower is not created (create it by hand)",
        "posts: partial index posts_recent is not created (create it by hand)",
        "posts: CHECK constraints are not translated (add them by hand)",
        "foreign key posts(created) → users is not created: the referenced columns are not unique",
        "foreign key posts(user_id) → ghosts is not created: ghosts is not imported",
    ]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("-1", -1),
        ("1.5", 1.5),
        ("'active'", "active"),
        ("'it''s'", "it's"),
        ('"x"', "x"),
        ("NULL", None),
        ("TRUE", 1),
        ("false", 0),
        ("X'00ff'", b"\x00\xff"),
        ("CURRENT_TIMESTAMP", Now("timestamp")),
        ("(datetime('now'))", Now("timestamp")),
        ("CURRENT_DATE", Now("date")),
        ("(strftime('%s', 'now'))", Now("epoch")),
        ("((0))", 0),
    ],
)
def test_sqlite_defaults_are_read(text, value):
    assert parse_default(text) == value


def test_defaults_become_postgresql_expressions():
    def plan(declared_default: str, type_name: str) -> ColumnPlan:
        kind = TargetType(type_name, type_name)
        return ColumnPlan(column("c", default=declared_default), TargetColumn("c", kind), converter_for(kind, OPTIONS))

    assert default_expression(plan("0", "bool")) == "'f'"
    assert default_expression(plan("'it''s'", "text")) == "'it''s'"
    assert default_expression(plan("'a\tb'", "text")) == "'a\tb'"
    assert default_expression(plan("CURRENT_TIMESTAMP", "timestamptz")) == "CURRENT_TIMESTAMP"
    assert default_expression(plan("CURRENT_TIMESTAMP", "timestamp")) == "(CURRENT_TIMESTAMP AT TIME ZONE 'UTC')"
    assert default_expression(plan("X'01'", "bytea")) == "'\\x01'"
    assert default_expression(plan("NULL", "text")) is None
    for unknown in (("(random())", "int8"), ("CURRENT_TIMESTAMP", "int4"), ("'maybe'", "bool")):
        with pytest.raises(UnknownDefault):
            default_expression(plan(*unknown))


def test_unescape_copy_undoes_escaping():
    assert unescape_copy("a\\tb\\\\c\\nd\\x") == "a\tb\\c\ndx"
