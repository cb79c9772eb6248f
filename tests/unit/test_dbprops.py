"""Database-level properties read from `pg_restore --create --schema-only` output or the table of contents: the CREATE
DATABASE options (encoding, locale provider, ICU locale), and the settings, comment and GRANTs to
re-apply, rewritten for another database name, with SQL tokenized properly (quotes, comments,
dollar quoting, psql meta-commands)."""

from __future__ import annotations

from semantik_infra.dbprops import (
    create_database_sql,
    parse_database_properties,
    properties_from_toc,
    quote_ident,
    split_statements,
)

SCHEMA = r'''
--
-- PostgreSQL database dump
--

\restrict Nk38ief9lWzgwhOBRLrImlX7IBqHQUgljnwHIAHv3U9gI1pVJh325ect9610bJF

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: My "db"; Type: DATABASE; Schema: -; Owner: postgres
--

CREATE DATABASE "My ""db""" WITH TEMPLATE = template0 ENCODING = 'UTF8'
    LOCALE_PROVIDER = icu LOCALE = 'C' ICU_LOCALE = 'de-DE';


ALTER DATABASE "My ""db""" OWNER TO postgres;

\unrestrict Nk38ief9lWzgwhOBRLrImlX7IBqHQUgljnwHIAHv3U9gI1pVJh325ect9610bJF
\connect -reuse-previous=on "dbname='My \"db\"'"

COMMENT ON DATABASE "My ""db""" IS 'the ''icu''; db';

ALTER DATABASE "My ""db""" CONNECTION LIMIT = 50;
ALTER DATABASE "My ""db""" SET search_path TO 'my.schema', 'public';
ALTER ROLE reader IN DATABASE "My ""db""" SET work_mem TO '16MB';

CREATE FUNCTION public.f() RETURNS void LANGUAGE sql AS $body$
    GRANT CONNECT ON DATABASE "My ""db""" TO evil; -- inside a function body: not ours to run
$body$;

/* a comment; with GRANT ALL ON DATABASE "My ""db""" TO evil; inside */
CREATE TABLE "my.schema"."Weird ""Table"" Name" (v text DEFAULT E'it''s; \' fine');

REVOKE CONNECT,TEMPORARY ON DATABASE "My ""db""" FROM PUBLIC;
GRANT CONNECT ON DATABASE "My ""db""" TO PUBLIC;
GRANT CONNECT ON DATABASE "My ""db""" TO reader;
GRANT ALL ON DATABASE other TO reader;
'''


def test_statements_split_only_outside_quotes_comments_and_bodies():
    statements = split_statements(SCHEMA)
    texts = [statement.text for statement in statements]
    assert "COMMENT ON DATABASE \"My \"\"db\"\"\" IS 'the ''icu''; db'" in texts
    assert any(text.startswith("CREATE FUNCTION") and text.endswith("$body$") for text in texts)
    assert any(text.startswith('CREATE TABLE "my.schema"') and text.endswith("' fine')") for text in texts)
    assert not any(text.startswith(("\\", "--", "/*")) for text in texts)


def test_properties_of_the_archived_database():
    properties = parse_database_properties(SCHEMA)
    assert properties is not None and properties.name == 'My "db"'
    assert properties.create_options == (
        ("ENCODING", "'UTF8'"),
        ("LOCALE_PROVIDER", "icu"),
        ("LOCALE", "'C'"),
        ("ICU_LOCALE", "'de-DE'"),
    )
    rewritten = [(s.kind, s.sql_for("new_db")) for s in properties.statements]
    assert rewritten == [
        ("comment", """COMMENT ON DATABASE "new_db" IS 'the ''icu''; db'"""),
        ("settings", 'ALTER DATABASE "new_db" CONNECTION LIMIT = 50'),
        ("settings", """ALTER DATABASE "new_db" SET search_path TO 'my.schema', 'public'"""),
        ("role settings", """ALTER ROLE reader IN DATABASE "new_db" SET work_mem TO '16MB'"""),
        ("privileges", 'REVOKE CONNECT,TEMPORARY ON DATABASE "new_db" FROM PUBLIC'),
        ("privileges", 'GRANT CONNECT ON DATABASE "new_db" TO PUBLIC'),
        ("privileges", 'GRANT CONNECT ON DATABASE "new_db" TO reader'),
    ]


def test_create_database_with_the_archives_locale_or_the_servers():
    properties = parse_database_properties(SCHEMA)
    assert create_database_sql("x_restore_1", properties) == (
        "CREATE DATABASE \"x_restore_1\" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = icu"
        " LOCALE = 'C' ICU_LOCALE = 'de-DE'"
    )
    plain = create_database_sql('we"ird', None)
    assert plain == 'CREATE DATABASE "we""ird" WITH TEMPLATE = template0 ENCODING = \'UTF8\''


def test_no_database_entry_means_no_properties():
    assert parse_database_properties("SET x = 1;\nCREATE TABLE t (v int);\n") is None


def test_quote_ident():
    assert quote_ident('Weird "Table" Name') == '"Weird ""Table"" Name"'


def test_properties_from_the_table_of_contents_take_only_the_database_entries():
    from semantik_infra.dumpfile import TocEntry

    def entry(desc: str, tag: str, defn: str | None) -> TocEntry:
        return TocEntry(1, False, desc, None, tag, defn, "postgres", 1)

    entries = [
        entry("ENCODING", "ENCODING", "SET client_encoding = 'UTF8';\n"),
        entry("DATABASE", "shop", "CREATE DATABASE shop WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE = 'C';\n"),
        entry("DATABASE PROPERTIES", "shop", "ALTER DATABASE shop SET work_mem TO '8MB';\n"),
        entry("COMMENT", "DATABASE shop", "COMMENT ON DATABASE shop IS 'the shop';\n"),
        entry("ACL", "DATABASE shop", "GRANT CONNECT ON DATABASE shop TO reader;\n"),
        entry("COMMENT", "TABLE orders", "COMMENT ON TABLE public.orders IS 'DATABASE shop';\n"),
        entry("ACL", "SCHEMA public", "GRANT ALL ON SCHEMA public TO reader;\n"),
        entry("TABLE DATA", "orders", None),
    ]
    properties = properties_from_toc(entries)
    assert properties is not None and properties.option("LOCALE") == "'C'"
    assert [(s.kind, s.sql_for("x")) for s in properties.statements] == [
        ("settings", """ALTER DATABASE "x" SET work_mem TO '8MB'"""),
        ("comment", """COMMENT ON DATABASE "x" IS 'the shop'"""),
        ("privileges", 'GRANT CONNECT ON DATABASE "x" TO reader'),
    ]
    assert properties_from_toc(entries[5:]) is None  # pg_dump before 11 wrote no DATABASE entry
