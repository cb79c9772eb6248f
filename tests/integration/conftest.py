"""Shared fixtures for the integration tests of backups and restores: `DbProject` (a project
directory with its own database on the session's `pg_cluster`), and `big_cluster`, a separate
cluster holding a few hundred MB for tests that interrupt the big work midway. Both are shared by
every module, so each cluster starts once per session."""

from __future__ import annotations

import contextlib
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from semantik_infra.secrets import generate_encryption_key
from tests.conftest import (
    HOSTILE_PASSWORD,
    REPO,
    RunningCluster,
    archive_files,
    destroy_cluster,
    make_project_dir,
    run_task,
    start_cluster,
)

SCHEMA = """
CREATE TABLE authors (id serial PRIMARY KEY, name text NOT NULL UNIQUE);
CREATE TABLE docs (
    id bigserial PRIMARY KEY,
    author_id int NOT NULL REFERENCES authors(id),
    title text NOT NULL,
    body bytea,
    meta json,
    tags jsonb,
    scores real[],
    words text[],
    created timestamptz NOT NULL DEFAULT '2026-01-01T00:00:00Z'
);
CREATE INDEX docs_title_idx ON docs (title);
CREATE VIEW doc_titles AS SELECT d.id, a.name, d.title FROM docs d JOIN authors a ON a.id = d.author_id;
INSERT INTO authors (name) VALUES ('Zoë'), ('東京'), ('O''Brien');
INSERT INTO docs (author_id, title, body, meta, tags, scores, words)
SELECT 1 + g % 3, 'doc ' || g || ' ✓ ü',
       decode(md5(g::text) || md5((g * 7)::text), 'hex'),
       json_build_object('n', g, 'name', 'Zürich'),
       jsonb_build_object('tags', jsonb_build_array('a', g, 'ü')),
       ARRAY[g::real / 3, 1.5], ARRAY['x', 'é' || g]
FROM generate_series(1, 2000) g;
INSERT INTO docs (author_id, title, body) VALUES (1, 'big row', decode(repeat(md5('big'), 40000), 'hex'));
SELECT lo_from_bytea(0, convert_to(repeat('large object ✓ ', 5000), 'UTF8'));
SELECT setval('docs_id_seq', 5000);
"""

CHECKSUMS = {
    "authors": "SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) FROM authors t",
    "docs": "SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) FROM docs t",
    "view": "SELECT md5(string_agg(t::text, '|' ORDER BY t.id)) FROM doc_titles t",
    "large objects": "SELECT md5(string_agg(md5(lo_get(oid)), ',' ORDER BY oid)) FROM pg_largeobject_metadata",
    "sequence": "SELECT last_value::text FROM docs_id_seq",
    "index": "SELECT count(*)::text FROM pg_indexes WHERE indexname = 'docs_title_idx'",
    "foreign key": "SELECT count(*)::text FROM pg_constraint WHERE contype = 'f' AND conrelid = 'docs'::regclass",
}


@dataclass
class DbProject:
    """A project dir with its own database and backups directory on a shared cluster."""

    cluster: RunningCluster
    project_dir: Path
    database: str
    environ: dict[str, str]

    @property
    def backups(self) -> Path:
        return self.project_dir / "backups"

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        result = run_task(*args, environ={**self.environ, **extra}, cwd=self.project_dir, timeout=600)
        output = result.stdout + result.stderr
        assert HOSTILE_PASSWORD not in output
        assert self.environ["BACKUP_ENCRYPTION_KEY"] not in output
        assert "Traceback" not in output, output
        return result

    def connect(self, database: str | None = None):  # type: ignore[no-untyped-def]
        params = self.cluster.settings.database.with_database(database or self.database).libpq_params()
        connection = psycopg2.connect(**params)
        connection.autocommit = True
        return connection

    def sql(self, statement: str, database: str | None = None) -> list[tuple]:
        connection = self.connect(database)
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    def checksums(self) -> dict[str, str]:
        return {name: self.sql(query)[0][0] for name, query in CHECKSUMS.items()}

    def databases(self) -> set[str]:
        return {row[0] for row in self.sql("SELECT datname FROM pg_database", database="postgres")}

    def archives(self) -> list[Path]:
        return archive_files(self.backups)


def db_project(cluster: RunningCluster, database: str = "", options: str = "", **extra: str) -> DbProject:
    """A project with its own new database (`options` go to CREATE DATABASE) and a fresh backup key."""
    database = database or f"t_{secrets.token_hex(4)}"
    project_dir = make_project_dir()
    environ = {
        **cluster.environ,
        "SEMANTIK_PROJECT_DIR": str(project_dir),
        "POSTGRES_DB": database,
        "POSTGRES_DATA_DIR": str(cluster.settings.data_dir),
        "BACKUP_ENCRYPTION_KEY": generate_encryption_key(),
        **extra,
    }
    project = DbProject(cluster, project_dir, database, environ)
    project.sql(f'CREATE DATABASE "{database}" {options}', database="postgres")
    return project


def drop_project(project: DbProject) -> None:
    for name in project.databases():
        if name.startswith(project.database[:20]):
            project.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', database="postgres")
    shutil.rmtree(project.project_dir, ignore_errors=True)


@pytest.fixture
def db(pg_cluster: RunningCluster) -> Iterator[DbProject]:
    project = db_project(pg_cluster)
    project.sql(SCHEMA)
    yield project
    drop_project(project)


# --- failures while the big work runs: a separate cluster with a few hundred MB ----------------


def change_everything(db: DbProject) -> None:
    """Change rows, large objects and the sequence, so a restore has something to undo."""
    db.sql(
        "UPDATE docs SET title = 'changed', body = NULL, tags = '{}' WHERE id % 2 = 0;"
        " DELETE FROM docs WHERE id % 3 = 0; INSERT INTO authors (name) VALUES ('new');"
        " SELECT lo_unlink(oid) FROM pg_largeobject_metadata; SELECT setval('docs_id_seq', 9)"
    )


@pytest.fixture(scope="session")
def big_cluster() -> Iterator[RunningCluster]:
    cluster = start_cluster()
    connection = psycopg2.connect(**cluster.settings.database.libpq_params())
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE big AS SELECT g AS id, md5(g::text) || repeat(md5((g * 3)::text), 6) AS payload"
            " FROM generate_series(1, 1200000) g"
        )
        cursor.execute("ANALYZE big")
    connection.close()
    yield cluster
    destroy_cluster(cluster)


def wait_for_child(parent: subprocess.Popen[str], name: str, needle: str = "", timeout: float = 60) -> int:
    """The pid of `parent`'s child `name` with `needle` in its argv: ours, never another test run's."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
                text = stat.read_text()
            except OSError:
                continue
            comm = text[text.index("(") + 1 : text.rindex(")")]
            ppid = int(text[text.rindex(")") + 2 :].split()[1])
            if ppid == parent.pid and comm == name[:15]:
                with contextlib.suppress(OSError):
                    if needle.encode() in (stat.parent / "cmdline").read_bytes():
                        return int(stat.parent.name)
        if parent.poll() is not None:
            raise AssertionError(f"the task exited before starting {name}: {parent.communicate()}")
        time.sleep(0.05)
    raise AssertionError(f"{name} never started")


@pytest.fixture
def big_project(big_cluster: RunningCluster) -> Iterator[tuple[Path, dict[str, str]]]:
    project_dir = make_project_dir()
    env = {
        **big_cluster.environ,
        "SEMANTIK_PROJECT_DIR": str(project_dir),
        "BACKUP_COMPRESSION": "1",
        "POSTGRES_DATA_DIR": str(big_cluster.settings.data_dir),
        "PYTHONPATH": str(REPO),
    }
    yield project_dir, env
    shutil.rmtree(project_dir, ignore_errors=True)


def start_task(project_dir: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    # Its own process group, like a shell job, so a test can send Ctrl-C to it and its children.
    return subprocess.Popen(
        [sys.executable, "-m", "semantik_infra", *args],
        cwd=project_dir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        process_group=0,
    )


def mark_live(cluster: RunningCluster) -> None:
    # A table only the live database has: after a failed restore it must still be there.
    connection = psycopg2.connect(**cluster.settings.database.libpq_params())
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE marker AS SELECT 'before' AS v")
    connection.close()


def assert_live_unchanged(cluster: RunningCluster) -> None:
    connection = psycopg2.connect(**cluster.settings.database.libpq_params())
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT v FROM marker")
            assert cursor.fetchall() == [("before",)]  # the live database is exactly as it was
            cursor.execute("SELECT count(*) FROM big")
            assert cursor.fetchone()[0] == 1200000
            cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE '%\\_restore\\_%'")
            assert cursor.fetchall() == []  # the scratch database was dropped
            cursor.execute("DROP TABLE marker")
    finally:
        connection.close()


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single `error:` line a failed task printed on stderr (asserting there is exactly one)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stdout + result.stderr
    return lines[0]


def warn_lines(output: str) -> list[str]:
    """Lines printed with the warning mark."""
    return [line for line in output.splitlines() if line.startswith(("! ", "[warn] "))]
