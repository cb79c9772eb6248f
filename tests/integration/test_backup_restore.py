"""Backup and restore against a real server with real pg_dump/pg_restore: round trips of every
kind of data, and each way a backup or restore can fail leaves the user's data intact."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time

import psycopg2
import pytest

from semantik_infra.manifest import manifest_path
from semantik_infra.secrets import generate_encryption_key
from tests.conftest import REPO, RunningCluster, archive_files, free_port, native_cluster_only, run_task
from tests.integration.conftest import (
    DbProject,
    assert_live_unchanged,
    change_everything,
    db_project,
    drop_project,
    mark_live,
    start_task,
    wait_for_child,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize("compression", ["zstd:3", "gzip:6", "none"])
def test_round_trip_restores_every_kind_of_data(db: DbProject, encrypt: bool, compression: str):
    original = db.checksums()
    backup = db.run("postgres.backup", *(["--encrypt"] if encrypt else []), BACKUP_COMPRESSION=compression)
    assert backup.returncode == 0, backup.stderr
    [archive] = db.archives()
    assert archive.stat().st_mode & 0o777 == 0o600
    assert archive.name.endswith((".dump.zst" if compression.startswith("zstd") else ".dump") + (".enc" * encrypt))
    manifest = json.loads(manifest_path(archive).read_text())
    assert manifest["encrypted"] is encrypt and manifest["database"] == db.database
    assert manifest["compression"] == compression
    assert manifest["toc_entries"] > 5 and manifest["tables"]["public.docs"] == 2001
    assert db.environ["BACKUP_ENCRYPTION_KEY"] not in json.dumps(manifest)
    change_everything(db)
    assert db.checksums() != original
    restore = db.run("postgres.restore", "latest", "--yes")
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert db.checksums() == original
    assert "(2 tables)" in restore.stdout
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
    change_everything(db)
    assert db.run("postgres.restore", "latest", "--yes", "--drop-old").returncode == 0
    assert db.checksums() == original
    assert not [name for name in db.databases() if "_before_restore_" in name]
    change_everything(db)
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
    change_everything(db)
    restored = db.run("postgres.restore", "latest", "--yes", **external)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert db.checksums() == original


def test_restore_swaps_under_a_connected_app(db: DbProject):
    original = db.checksums()
    assert db.run("postgres.backup").returncode == 0
    change_everything(db)
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
    project = db_project(pg_cluster, database=f"long_{secrets.token_hex(4)}_" + "n" * 46)
    try:
        project.sql("CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g")
        assert project.run("postgres.backup").returncode == 0
        project.sql("DELETE FROM t")
        restored = project.run("postgres.restore", "latest", "--yes")
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert project.sql("SELECT count(*) FROM t") == [(100,)]
        assert len([name for name in project.databases() if "_before_restore_" in name]) == 1
    finally:
        drop_project(project)


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
        change_everything(db)
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
    admin = db_project(pg_cluster)
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
        drop_project(admin)
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
    change_everything(db)
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
    assert f"{leftover.name}  abandoned (writer pid {gone.pid} is gone)" in listing.stdout
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
    change_everything(db)
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


@pytest.mark.slow
def test_server_killed_mid_backup(big_cluster: RunningCluster, big_project):
    project_dir, env = big_project
    try:
        assert run_task("postgres.backup", environ=env, cwd=project_dir).returncode == 0
        [earlier] = archive_files(project_dir / "backups")
        before = earlier.read_bytes()
        # The slowest compression keeps pg_dump busy long enough to kill the server under it.
        task = start_task(project_dir, {**env, "BACKUP_COMPRESSION": "9"}, "postgres.backup")
        wait_for_child(task, "pg_dump")
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
        assert (archive_files(project_dir / "backups")) == [earlier]
        assert earlier.read_bytes() == before
        assert not list((project_dir / "backups").glob(".*"))
    finally:
        from semantik_infra.backends.native import NativeBackend

        NativeBackend(big_cluster.settings).start()


@pytest.mark.slow
def test_interrupted_restore_leaves_live_database_unchanged(big_cluster: RunningCluster, big_project):
    project_dir, env = big_project
    assert run_task("postgres.backup", environ=env, cwd=project_dir).returncode == 0
    mark_live(big_cluster)
    task = start_task(project_dir, env, "postgres.restore", "latest", "--yes")
    # Kill as soon as it runs: every moment of a single-transaction restore must be safe to interrupt.
    os.kill(wait_for_child(task, "pg_restore", "--single-transaction"), signal.SIGKILL)
    _, stderr = task.communicate(timeout=120)
    assert task.returncode == 1 and "pg_restore failed" in stderr, stderr
    assert_live_unchanged(big_cluster)


@pytest.mark.slow
def test_ctrl_c_during_backup_leaves_nothing(big_cluster: RunningCluster, big_project):
    project_dir, env = big_project
    task = start_task(project_dir, {**env, "BACKUP_COMPRESSION": "9"}, "postgres.backup")
    wait_for_child(task, "pg_dump")
    time.sleep(1.0)
    os.killpg(task.pid, signal.SIGINT)  # what the terminal sends the foreground job on Ctrl-C
    _, stderr = task.communicate(timeout=60)
    assert task.returncode == 130 and "Traceback" not in stderr, stderr
    assert [line for line in stderr.splitlines() if line.strip()] == ["interrupted: no backup written"], stderr
    assert list((project_dir / "backups").iterdir()) == []


@pytest.mark.slow
def test_ctrl_c_during_restore_leaves_live_database_unchanged(big_cluster: RunningCluster, big_project):
    project_dir, env = big_project
    assert run_task("postgres.backup", environ=env, cwd=project_dir).returncode == 0
    mark_live(big_cluster)
    task = start_task(project_dir, env, "postgres.restore", "latest", "--yes")
    wait_for_child(task, "pg_restore", "--single-transaction")
    time.sleep(0.5)
    os.killpg(task.pid, signal.SIGINT)  # what the terminal sends the foreground job on Ctrl-C
    _, stderr = task.communicate(timeout=120)
    assert task.returncode == 130 and "Traceback" not in stderr, stderr
    [line] = [line for line in stderr.splitlines() if line.strip()]
    expected = r"interrupted: scratch database semantik_restore_[\d_]+ dropped, semantik unchanged"
    assert re.fullmatch(expected, line), line
    assert_live_unchanged(big_cluster)


@native_cluster_only
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_a_flipped_byte_in_a_zstd_archive_is_a_checksum_mismatch_and_changes_nothing(db: DbProject, jobs: str):
    assert db.run("postgres.backup").returncode == 0
    [archive] = db.archives()
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x20
    archive.write_bytes(bytes(data))
    change_everything(db)
    before = db.checksums()
    result = db.run("postgres.restore", "latest", "--yes", "--jobs", jobs)
    assert result.returncode == 1
    [line] = [line for line in result.stderr.splitlines() if line.strip()]
    assert "checksum mismatch" in line, line
    assert db.checksums() == before
    assert not [name for name in db.databases() if "_restore_" in name]
    assert not [path for path in db.backups.iterdir() if path.name.startswith(".")]


@pytest.mark.parametrize(
    ("compression", "encrypt"), [("zstd:3", True), ("gzip:6", False), ("none", False)], ids=["zstd-enc", "gzip", "none"]
)
def test_a_parallel_restore_round_trips_every_archive_kind(db: DbProject, compression: str, encrypt: bool):
    original = db.checksums()
    backup = db.run("postgres.backup", *(["--encrypt"] if encrypt else []), BACKUP_COMPRESSION=compression)
    assert backup.returncode == 0, backup.stderr
    change_everything(db)
    restored = db.run("postgres.restore", "latest", "--yes", "--jobs", "2")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert db.checksums() == original  # rows, large objects, the view, the index and the foreign key
    assert "with 2 parallel jobs" in restored.stdout and "read once" in restored.stdout
    assert not [path for path in db.backups.iterdir() if path.name.startswith(".")]


_READ_BYTES = (
    "import atexit, pathlib, sys\n"
    "out = pathlib.Path(sys.argv.pop(1))\n"
    "atexit.register(lambda: out.write_text(pathlib.Path('/proc/self/io').read_text()))\n"
    "sys.argv[0] = 'semantik-infra'\n"
    "from semantik_infra.cli import main\n"
    "main()\n"
)


def _bytes_read(db: DbProject, tmp_path, *args: str) -> int:
    """Bytes the task read: its own reads of files and pipes, and (once reaped) its children's."""
    out = tmp_path / "io"
    env = {**db.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", _READ_BYTES, str(out), *args]
    result = subprocess.run(argv, cwd=db.project_dir, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return int(re.search(r"^rchar: (\d+)$", out.read_text(), re.MULTILINE).group(1))  # type: ignore[union-attr]


@native_cluster_only
def test_a_parallel_restore_reads_the_archive_once_and_writes_no_copy_of_its_data(db: DbProject, tmp_path):
    # Incompressible enough that the archive, not the modules Python reads, dominates what is read.
    db.sql(
        "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS v"
        " FROM generate_series(1, 250000) g"
    )
    assert db.run("postgres.backup", "--encrypt").returncode == 0
    [archive] = db.archives()
    size = archive.stat().st_size
    assert size > 8_000_000
    # Both read the archive, and pg_restore reads what it holds, once.
    streamed = _bytes_read(db, tmp_path, "postgres.restore", "latest", "--yes")
    parallel = _bytes_read(db, tmp_path, "postgres.restore", "latest", "--yes", "--jobs", "2")
    # Before, --jobs also verified the archive (a second read) and expanded it into a temp file
    # that pg_restore then read (a third read, of the larger plain data).
    assert parallel - streamed < 0.3 * size, (parallel, streamed, size)
    assert db.sql("SELECT count(*) FROM bulk") == [(250000,)]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "sigkill-child"])
def test_an_interrupted_parallel_restore_leaves_live_database_unchanged(
    big_cluster: RunningCluster, big_project, how: str
):
    project_dir, env = big_project
    assert run_task("postgres.backup", environ=env, cwd=project_dir).returncode == 0
    mark_live(big_cluster)
    task = start_task(project_dir, env, "postgres.restore", "latest", "--yes", "--jobs", "2")
    child = wait_for_child(task, "pg_restore", "--section=data")
    time.sleep(0.5)
    if how == "ctrl-c":
        os.killpg(task.pid, signal.SIGINT)  # what the terminal sends the foreground job on Ctrl-C
    else:
        os.kill(child, signal.SIGKILL)
    _, stderr = task.communicate(timeout=120)
    [line] = [line for line in stderr.splitlines() if line.strip()]
    if how == "ctrl-c":
        assert task.returncode == 130, stderr
        assert re.fullmatch(r"interrupted: scratch database semantik_restore_[\d_]+ dropped, semantik unchanged", line)
    else:
        assert task.returncode == 1 and "pg_restore failed" in line and "semantik unchanged" in line, line
    assert_live_unchanged(big_cluster)
    assert not [path for path in (project_dir / "backups").iterdir() if path.name.startswith(".")]
