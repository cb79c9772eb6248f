"""A restore brings back the same database, against a real server: its locale provider, ICU
locale and collation (so ORDER BY answers the same), its `ALTER DATABASE … SET` settings, comment,
connection limit, GRANTs and per-role settings, and tables whose names need quoting."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest

from semantik_infra.manifest import manifest_path
from tests.conftest import RunningCluster
from tests.integration.conftest import DbProject, db_project, drop_project, one_error_line

pytestmark = pytest.mark.integration

ODD = '"my.schema"."Weird ""Table"" Name"'
ORDERED = "SELECT string_agg(v, ' ' ORDER BY v) FROM " + ODD
PROPERTIES = """
SELECT d.datlocprovider, d.daticulocale, d.datcollate, d.datctype, pg_encoding_to_char(d.encoding),
       d.datconnlimit, (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(d.datacl) a),
       shobj_description(d.oid, 'pg_database'),
       (SELECT string_agg(coalesce(r.rolname, '*') || ':' || array_to_string(s.setconfig, ','), ';'
                          ORDER BY r.rolname NULLS FIRST)
          FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole WHERE s.setdatabase = d.oid)
FROM pg_database d WHERE d.datname = current_database()
"""


@pytest.fixture
def icu_db(pg_cluster: RunningCluster) -> Iterator[tuple[DbProject, str]]:
    project = db_project(pg_cluster, options="LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' TEMPLATE template0")
    role, name = f"reader_{secrets.token_hex(4)}", project.database
    project.sql(f'CREATE ROLE "{role}"', database="postgres")
    project.sql(
        f"ALTER DATABASE \"{name}\" SET work_mem = '8MB';"
        f" ALTER DATABASE \"{name}\" SET search_path TO 'my.schema', public;"
        f" COMMENT ON DATABASE \"{name}\" IS 'the ''icu'' database';"
        f' GRANT CONNECT ON DATABASE "{name}" TO "{role}";'
        f' REVOKE TEMPORARY ON DATABASE "{name}" FROM PUBLIC;'
        f' ALTER DATABASE "{name}" CONNECTION LIMIT 50;'
        f' ALTER ROLE "{role}" IN DATABASE "{name}" SET work_mem = \'16MB\'',
        database="postgres",
    )
    project.sql(f'CREATE SCHEMA "my.schema"; CREATE TABLE {ODD} (v text)')
    project.sql(f"INSERT INTO {ODD} VALUES ('a'), ('B'), ('ä'), ('z')")
    try:
        yield project, role
    finally:
        drop_project(project)
        project.sql(f'DROP ROLE IF EXISTS "{role}"', database="postgres")


def test_restore_brings_back_locale_settings_comment_grants_and_odd_names(icu_db: tuple[DbProject, str]):
    db, _role = icu_db
    properties, ordered = db.sql(PROPERTIES), db.sql(ORDERED)
    assert properties[0][:2] == ("i", "de-DE") and ordered == [("a ä B z",)]  # ICU, not byte order
    backup = db.run("postgres.backup")
    assert backup.returncode == 0, backup.stdout + backup.stderr
    [archive] = db.archives()
    assert json.loads(manifest_path(archive).read_text())["tables"][ODD] == 4
    db.sql(f"DELETE FROM {ODD} WHERE v = 'z'")
    restored = db.run("postgres.restore", "latest", "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert f"{ODD}: 4 rows" in restored.stdout
    assert db.sql(PROPERTIES) == properties
    assert db.sql(ORDERED) == ordered


def test_server_locale_restores_into_the_servers_default_locale(icu_db: tuple[DbProject, str]):
    db, _role = icu_db
    assert db.run("postgres.backup").returncode == 0
    restored = db.run("postgres.restore", "latest", "--yes", "--server-locale")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    provider, _, _, _, _, limit, _, comment, _ = db.sql(PROPERTIES)[0]
    assert provider == "c" and (limit, comment) == (50, "the 'icu' database")  # the rest still comes back
    assert db.sql(ORDERED) == [("B a z ä",)]


def test_database_grants_to_a_missing_role_fail_safely_unless_no_privileges(icu_db: tuple[DbProject, str]):
    db, role = icu_db
    assert db.run("postgres.backup").returncode == 0
    db.sql(
        f'REVOKE ALL ON DATABASE "{db.database}" FROM "{role}";'
        f' ALTER ROLE "{role}" IN DATABASE "{db.database}" RESET ALL; DROP ROLE "{role}"',
        database="postgres",
    )
    before = db.databases()
    failed = db.run("postgres.restore", "latest", "--yes")
    assert failed.returncode == 1
    line = one_error_line(failed)
    assert role in line and "--no-privileges" in line
    assert db.databases() == before
    restored = db.run("postgres.restore", "latest", "--yes", "--no-privileges")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert db.sql(PROPERTIES)[0][:2] == ("i", "de-DE")
