"""Backup and restore against a real server with real pg_dump/pg_restore: round trips of every
kind of data, and each way a backup or restore can fail leaves the user's data intact."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from semantik_infra.backup import manifest_path
from semantik_infra.secrets import generate_encryption_key
from tests.conftest import (
    HOSTILE_PASSWORD,
    REPO,
    RunningCluster,
    destroy_cluster,
    free_port,
    make_project_dir,
    native_cluster_only,
    run_task,
    start_cluster,
)

pytestmark = pytest.mark.integration

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
        return sorted(self.backups.glob("*.dump"))


def _db_project(cluster: RunningCluster, database: str = "", **extra: str) -> DbProject:
    database = database or f"t_{secrets.token_hex(4)}"
    project_dir = make_project_dir()
    environ = {
        **cluster.environ,
        "SEMANTIK_PROJECT_DIR": str(project_dir),
        "POSTGRES_DB": database,
        "POSTGRES_DATA_DIR": str(cluster.settings.data_dir),
        # The external-backend tests use the machine's client tools: these match the server's version.
        "PG_BIN": str(cluster.bindir),
        "BACKUP_ENCRYPTION_KEY": generate_encryption_key(),
        **extra,
    }
    project = DbProject(cluster, project_dir, database, environ)
    project.sql(f'CREATE DATABASE "{database}"', database="postgres")
    return project


def _drop_project(project: DbProject) -> None:
    for name in project.databases():
        if name.startswith(project.database[:20]):
            project.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', database="postgres")
    shutil.rmtree(project.project_dir, ignore_errors=True)


@pytest.fixture
def db(pg_cluster: RunningCluster) -> Iterator[DbProject]:
    project = _db_project(pg_cluster)
    project.sql(SCHEMA)
    yield project
    _drop_project(project)


def _change_everything(db: DbProject) -> None:
    db.sql(
        "UPDATE docs SET title = 'changed', body = NULL, tags = '{}' WHERE id % 2 = 0;"
        " DELETE FROM docs WHERE id % 3 = 0; INSERT INTO authors (name) VALUES ('new');"
        " SELECT lo_unlink(oid) FROM pg_largeobject_metadata; SELECT setval('docs_id_seq', 9)"
    )


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
def test_round_trip_restores_every_kind_of_data(db: DbProject, encrypt: bool):
    original = db.checksums()
    backup = db.run("postgres.backup", *(["--encrypt"] if encrypt else []))
    assert backup.returncode == 0, backup.stderr
    [archive] = db.archives()
    assert archive.stat().st_mode & 0o777 == 0o600
    manifest = json.loads(manifest_path(archive).read_text())
    assert manifest["encrypted"] is encrypt and manifest["database"] == db.database
    assert manifest["toc_entries"] > 5 and manifest["tables"]["public.docs"] == 2001
    assert db.environ["BACKUP_ENCRYPTION_KEY"] not in json.dumps(manifest)
    _change_everything(db)
    assert db.checksums() != original
    restore = db.run("postgres.restore", "latest", "--yes")
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert db.checksums() == original
    assert "public.docs: 2001 rows" in restore.stdout
    kept = [name for name in db.databases() if name.startswith(f"{db.database}_before_restore_")]
    assert len(kept) == 1  # the replaced database is kept until --drop-old
    assert not [name for name in db.databases() if "_restore_" in name and "before" not in name]


VECTORS = """
CREATE EXTENSION vector;
CREATE TABLE items (id bigserial PRIMARY KEY, embedding vector(3) NOT NULL, half halfvec(3), label text);
INSERT INTO items (embedding, half, label)
SELECT ARRAY[g, g * 0.5, -g]::vector, ARRAY[g % 7, 1, 2]::halfvec, 'item ' || g FROM generate_series(1, 500) g;
CREATE INDEX items_embedding_idx ON items USING hnsw (embedding vector_l2_ops);
"""


def test_pgvector_columns_and_index_round_trip(db: DbProject):
    if not db.sql("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"):
        assert db.cluster.backend != "embedded", "the embedded backend ships pgvector"
        pytest.skip(f"PostgreSQL on the {db.cluster.backend} backend has no pgvector here")
    db.sql(VECTORS)
    vectors = "SELECT md5(string_agg(embedding::text || half::text || label, '|' ORDER BY id)) FROM items"
    nearest = "SET enable_seqscan = off; SELECT id FROM items ORDER BY embedding <-> '[3.1, 1.55, -3.1]' LIMIT 3"
    original = db.sql(vectors), db.sql(nearest)
    assert original[1] == [(3,), (4,), (2,)]
    assert db.run("postgres.backup").returncode == 0
    db.sql("UPDATE items SET embedding = '[0, 0, 0]'; DROP INDEX items_embedding_idx")
    restored = db.run("postgres.restore", "latest", "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert (db.sql(vectors), db.sql(nearest)) == original
    assert db.sql("SELECT indexdef LIKE '%USING hnsw%' FROM pg_indexes WHERE indexname = 'items_embedding_idx'") == [
        (True,)
    ]


def test_restore_drop_old_and_in_place(db: DbProject):
    original = db.checksums()
    assert db.run("postgres.backup").returncode == 0
    _change_everything(db)
    assert db.run("postgres.restore", "latest", "--yes", "--drop-old").returncode == 0
    assert db.checksums() == original
    assert not [name for name in db.databases() if "_before_restore_" in name]
    _change_everything(db)
    in_place = db.run("postgres.restore", "latest", "--yes", "--in-place")
    assert in_place.returncode == 0, in_place.stdout + in_place.stderr
    assert db.checksums() == original


def test_external_backend_backs_up_and_restores(db: DbProject):
    original = db.checksums()
    external = {"SEMANTIK_PG_BACKEND": "external"}
    backup = db.run("postgres.backup", **external)
    assert backup.returncode == 0, backup.stderr
    globals_refused = db.run("postgres.backup", "--include-globals", **external)
    assert globals_refused.returncode == 2 and "docker or native" in globals_refused.stderr
    _change_everything(db)
    restored = db.run("postgres.restore", "latest", "--yes", **external)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert db.checksums() == original


def test_restore_swaps_under_a_connected_app(db: DbProject):
    original = db.checksums()
    assert db.run("postgres.backup").returncode == 0
    _change_everything(db)
    app = db.connect()  # an idle session, as a running app would hold
    restored = db.run("postgres.restore", "latest", "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    with pytest.raises(psycopg2.OperationalError):
        app.cursor().execute("SELECT 1")  # its session was terminated for the swap
    assert db.checksums() == original
    allowed = db.sql(f"SELECT datname, datallowconn FROM pg_database WHERE datname LIKE '{db.database}%'", "postgres")
    assert all(flag for _, flag in allowed) and len(allowed) == 2  # live and the kept copy both accept sessions


def test_long_database_name_round_trip(pg_cluster: RunningCluster):
    # 60 characters: the scratch and kept-copy names must be shortened to PostgreSQL's 63 bytes.
    project = _db_project(pg_cluster, database=f"long_{secrets.token_hex(4)}_" + "n" * 46)
    try:
        project.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g")
        assert project.run("postgres.backup").returncode == 0
        project.sql("DELETE FROM t")
        restored = project.run("postgres.restore", "latest", "--yes")
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert project.sql("SELECT count(*) FROM t") == [(100,)]
        assert len([name for name in project.databases() if "_before_restore_" in name]) == 1
    finally:
        _drop_project(project)


@native_cluster_only
def test_unreachable_server_is_one_clear_line(db: DbProject):
    assert db.run("postgres.backup").returncode == 0
    nowhere = {"SEMANTIK_PG_BACKEND": "external", "POSTGRES_PORT": str(free_port())}
    backup = db.run("postgres.backup", **nowhere)
    assert backup.returncode == 1 and "cannot connect" in backup.stderr
    restore = db.run("postgres.restore", "latest", "--yes", **nowhere)
    assert restore.returncode == 1 and "cannot connect" in restore.stderr
    assert len(restore.stderr.strip().splitlines()) == 1


def test_grant_to_a_missing_role_fails_safely_unless_no_privileges(db: DbProject):
    role = f"reader_{secrets.token_hex(4)}"
    db.sql(f'CREATE ROLE "{role}"; GRANT SELECT ON docs TO "{role}"')
    try:
        assert db.run("postgres.backup").returncode == 0
        db.sql(f'REVOKE ALL ON docs FROM "{role}"; DROP ROLE "{role}"')  # as on another machine
        _change_everything(db)
        changed, databases = db.checksums(), db.databases()
        failed = db.run("postgres.restore", "latest", "--yes")
        assert failed.returncode == 1 and "pg_restore failed" in failed.stderr and role in failed.stderr
        assert db.checksums() == changed and db.databases() == databases  # scratch dropped, live untouched
        restored = db.run("postgres.restore", "latest", "--yes", "--no-privileges")
        assert restored.returncode == 0, restored.stdout + restored.stderr
    finally:
        db.sql(f'DROP ROLE IF EXISTS "{role}"', database="postgres")


def test_user_without_createdb_gets_a_clear_error_and_can_restore_in_place(pg_cluster: RunningCluster):
    role, password = f"owner_{secrets.token_hex(4)}", "role-pw:/@ x"
    admin = _db_project(pg_cluster)
    admin.sql(f"CREATE ROLE \"{role}\" LOGIN NOCREATEDB PASSWORD '{password}'", database="postgres")
    admin.sql(f'ALTER DATABASE "{admin.database}" OWNER TO "{role}"', database="postgres")
    project = DbProject(
        pg_cluster,
        admin.project_dir,
        admin.database,
        {**admin.environ, "SEMANTIK_PG_BACKEND": "external", "POSTGRES_USER": role, "POSTGRES_PASSWORD": password},
    )
    try:
        params = pg_cluster.settings.database.with_database(admin.database).libpq_params()
        owner = psycopg2.connect(**{**params, "user": role, "password": password})
        owner.autocommit = True
        with owner.cursor() as cursor:
            cursor.execute("CREATE TABLE t AS SELECT g FROM generate_series(1, 50) g")
        assert project.run("postgres.backup").returncode == 0
        with owner.cursor() as cursor:
            cursor.execute("DELETE FROM t")
        owner.close()
        refused = project.run("postgres.restore", "latest", "--yes")
        assert refused.returncode == 1 and "needs CREATEDB, or use --in-place" in refused.stderr
        assert password not in refused.stdout + refused.stderr
        in_place = project.run("postgres.restore", "latest", "--yes", "--in-place")
        assert in_place.returncode == 0, in_place.stdout + in_place.stderr
        assert admin.sql("SELECT count(*) FROM t") == [(50,)]
    finally:
        _drop_project(admin)
        admin.sql(f'DROP ROLE IF EXISTS "{role}"', database="postgres")


@native_cluster_only
def test_restore_asks_for_confirmation_and_names_its_archive(db: DbProject):
    assert db.run("postgres.backup").returncode == 0
    refused = db.run("postgres.restore", "latest")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    unnamed = db.run("postgres.restore", "--yes")
    assert unnamed.returncode != 0 and "'archive'" in unnamed.stderr
    missing = db.run("postgres.restore", str(db.backups / "nope.dump"), "--yes")
    assert missing.returncode != 0 and "nope.dump" in missing.stderr


@native_cluster_only
@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupted_archive_is_refused_before_touching_the_database(db: DbProject, damage: str):
    assert db.run("postgres.backup").returncode == 0
    [archive] = db.archives()
    data = bytearray(archive.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    archive.write_bytes(bytes(data))
    _change_everything(db)
    changed, databases = db.checksums(), db.databases()
    result = db.run("postgres.restore", "latest", "--yes")
    assert result.returncode == 1
    assert ("checksum mismatch" if damage == "flip" else "differs from the manifest") in result.stderr
    assert db.checksums() == changed and db.databases() == databases
    listing = db.run("postgres.backups", "--verify")
    assert listing.returncode == 1 and "failed verification" in listing.stderr


@native_cluster_only
def test_wrong_encryption_key_is_a_clear_error(db: DbProject):
    assert db.run("postgres.backup", "--encrypt").returncode == 0
    result = db.run("postgres.restore", "latest", "--yes", BACKUP_ENCRYPTION_KEY=generate_encryption_key())
    assert result.returncode == 1
    assert "encrypted with another key" in result.stderr and "BACKUP_ENCRYPTION_KEY" in result.stderr


@native_cluster_only
def test_backup_encrypt_setting_and_no_encrypt_override(db: DbProject):
    assert db.run("postgres.backup", BACKUP_ENCRYPT="true").returncode == 0
    assert db.run("postgres.backup", "--no-encrypt", BACKUP_ENCRYPT="true").returncode == 0
    manifests = [json.loads(manifest_path(p).read_text()) for p in db.archives()]
    assert sorted(m["encrypted"] for m in manifests) == [False, True]
    both = db.run("postgres.backup", "--encrypt", "--no-encrypt")
    assert both.returncode == 2 and "contradict" in both.stderr


def test_two_backups_at_once_give_two_valid_archives(db: DbProject):
    env = {**db.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "semantik_infra", "postgres.backup"]
    first = subprocess.Popen(argv, cwd=db.project_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    second = subprocess.Popen(argv, cwd=db.project_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert first.wait(120) == 0 and second.wait(120) == 0
    assert len(db.archives()) == 2
    verified = db.run("postgres.backups", "--verify")
    assert verified.returncode == 0 and verified.stdout.count("checksum ok") == 2


@native_cluster_only
def test_prune_keeps_the_newest(db: DbProject):
    for _ in range(3):
        assert db.run("postgres.backup").returncode == 0
    archives = db.archives()
    # What a SIGKILLed backup leaves: a temp file whose writer is gone, untouched for hours.
    gone = subprocess.Popen(["true"])
    gone.wait()
    leftover = db.backups / f".{archives[0].name}.{gone.pid}.x1y2z3ab.partial"
    leftover.write_bytes(b"half an archive")
    os.utime(leftover, (time.time() - 7200, time.time() - 7200))
    listing = db.run("postgres.backups")
    assert "1 temporary files left by interrupted backups" in listing.stdout
    dry = db.run("postgres.backups", "--prune", "--keep", "1", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.count("would delete") == 2 and "would remove" in dry.stdout
    assert db.archives() == archives and leftover.exists()
    pruned = db.run("postgres.backups", "--prune", "--keep", "1")
    assert pruned.returncode == 0 and pruned.stdout.count("deleted") == 2
    assert db.archives() == archives[-1:] and not leftover.exists()
    assert not list(db.backups.glob("*.json"))[1:]
    refuse = db.run("postgres.backups", "--prune")
    assert refuse.returncode == 2 and "--keep" in refuse.stderr


def test_include_globals_saves_roles(db: DbProject):
    result = db.run("postgres.backup", "--include-globals")
    assert result.returncode == 0, result.stderr
    [globals_file] = db.backups.glob("*.globals.sql")
    assert "CREATE ROLE semantik" in globals_file.read_text()
    assert globals_file.stat().st_mode & 0o777 == 0o600


def test_directory_format_with_jobs(db: DbProject):
    original = db.checksums()
    result = db.run("postgres.backup", "--format", "directory", "--jobs", "2")
    assert result.returncode == 0, result.stderr
    [archive] = db.backups.glob("*.dumpdir")
    assert archive.is_dir()
    _change_everything(db)
    restored = db.run("postgres.restore", str(archive), "--yes", "--jobs", "2")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert db.checksums() == original


@native_cluster_only
def test_old_pg_dump_is_refused(db: DbProject, tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for tool in ("psql", "pg_restore"):
        (fake_bin / tool).symlink_to(db.cluster.bindir / tool)
    fake = fake_bin / "pg_dump"
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n")
    fake.chmod(0o755)
    result = db.run("postgres.backup", PG_BIN=str(fake_bin), SEMANTIK_PG_BACKEND="external")
    assert result.returncode == 1
    assert f"pg_dump 9.6 is older than the server (PostgreSQL {db.cluster.major}" in result.stderr
    assert "PG_BIN" in result.stderr


@native_cluster_only
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_disk_full_fails_cleanly_and_keeps_earlier_backups(db: DbProject):
    db.backups.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(db.backups)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        small = db.run("postgres.backup", BACKUP_COMPRESSION="9")
        assert small.returncode == 0, small.stderr
        [earlier] = db.archives()
        before = earlier.read_bytes()
        db.sql(
            "INSERT INTO docs (author_id, title, body) SELECT 1, md5(g::text), decode(md5(g::text), 'hex')"
            " FROM generate_series(1, 40000) g"
        )
        full = db.run("postgres.backup", BACKUP_COMPRESSION="0")
        assert full.returncode == 1
        assert "no space left" in full.stderr
        assert db.archives() == [earlier] and earlier.read_bytes() == before
        assert not list(db.backups.glob(".*partial*"))
    finally:
        subprocess.run(["umount", str(db.backups)], check=False)


# --- failures while the big work runs: a separate cluster with a few hundred MB ----------------


@pytest.fixture(scope="module")
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


def _wait_for_child(parent: subprocess.Popen[str], name: str, needle: str = "", timeout: float = 60) -> int:
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


def _start_task(project_dir: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
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


@pytest.mark.slow
def test_server_killed_mid_backup(big_cluster: RunningCluster, big_project):
    project_dir, env = big_project
    try:
        assert run_task("postgres.backup", environ=env, cwd=project_dir).returncode == 0
        [earlier] = (project_dir / "backups").glob("*.dump")
        before = earlier.read_bytes()
        # The slowest compression keeps pg_dump busy long enough to kill the server under it.
        task = _start_task(project_dir, {**env, "BACKUP_COMPRESSION": "9"}, "postgres.backup")
        _wait_for_child(task, "pg_dump")
        time.sleep(1.0)
        from semantik_infra.backends.native import NativeBackend

        backend = NativeBackend(big_cluster.settings)
        subprocess.run(
            [str(backend.binaries.tool("pg_ctl")), "stop", "-D", str(backend.data_dir), "-m", "immediate"],
            user=backend.run_as,
            cwd="/",
            check=True,
            capture_output=True,
        )
        _, stderr = task.communicate(timeout=120)
        assert task.returncode == 1, stderr
        assert "pg_dump failed" in stderr and "Traceback" not in stderr
        assert list((project_dir / "backups").glob("*.dump")) == [earlier]
        assert earlier.read_bytes() == before
        assert not list((project_dir / "backups").glob(".*"))
    finally:
        from semantik_infra.backends.native import NativeBackend

        NativeBackend(big_cluster.settings).start()


def _mark_live(cluster: RunningCluster) -> None:
    # A table only the live database has: after a failed restore it must still be there.
    connection = psycopg2.connect(**cluster.settings.database.libpq_params())
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE marker AS SELECT 'before' AS v")
    connection.close()


def _assert_live_unchanged(cluster: RunningCluster) -> None:
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


@pytest.mark.slow
def test_interrupted_restore_leaves_live_database_unchanged(big_cluster: RunningCluster, big_project):
    project_dir, env = big_project
    assert run_task("postgres.backup", environ=env, cwd=project_dir).returncode == 0
    _mark_live(big_cluster)
    task = _start_task(project_dir, env, "postgres.restore", "latest", "--yes")
    # Kill as soon as it runs: every moment of a single-transaction restore must be safe to interrupt.
    os.kill(_wait_for_child(task, "pg_restore", "--single-transaction"), signal.SIGKILL)
    _, stderr = task.communicate(timeout=120)
    assert task.returncode == 1 and "pg_restore failed" in stderr, stderr
    _assert_live_unchanged(big_cluster)


@pytest.mark.slow
def test_ctrl_c_during_backup_leaves_nothing(big_cluster: RunningCluster, big_project):
    project_dir, env = big_project
    task = _start_task(project_dir, {**env, "BACKUP_COMPRESSION": "9"}, "postgres.backup")
    _wait_for_child(task, "pg_dump")
    time.sleep(1.0)
    os.killpg(task.pid, signal.SIGINT)  # what the terminal sends the foreground job on Ctrl-C
    _, stderr = task.communicate(timeout=60)
    assert task.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr
    assert list((project_dir / "backups").iterdir()) == []


@pytest.mark.slow
def test_ctrl_c_during_restore_leaves_live_database_unchanged(big_cluster: RunningCluster, big_project):
    project_dir, env = big_project
    assert run_task("postgres.backup", environ=env, cwd=project_dir).returncode == 0
    _mark_live(big_cluster)
    task = _start_task(project_dir, env, "postgres.restore", "latest", "--yes")
    _wait_for_child(task, "pg_restore", "--single-transaction")
    time.sleep(0.5)
    os.killpg(task.pid, signal.SIGINT)  # what the terminal sends the foreground job on Ctrl-C
    _, stderr = task.communicate(timeout=120)
    assert task.returncode == 130 and "interrupted" in stderr and "Traceback" not in stderr, stderr
    _assert_live_unchanged(big_cluster)
