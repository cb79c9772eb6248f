"""No half-done state after an interruption, against a real server: SIGTERM is handled like
Ctrl-C, a swap killed while the live database refuses connections is detected by every task and
repaired by `postgres.up`, and the databases killed or finished restores leave behind are listed,
sized and dropped by `postgres.leftovers`, never one a running restore is using."""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, RunningCluster, run_task
from tests.integration.conftest import (
    DbProject,
    assert_live_unchanged,
    mark_live,
    one_error_line,
    start_task,
    wait_for_child,
    warn_lines,
)

pytestmark = pytest.mark.integration


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return state[state.rindex(")") + 2] == "Z"  # a zombie has stopped for good


def _eventually(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


@pytest.mark.slow
def test_sigterm_during_backup_is_handled_like_ctrl_c(big_cluster: RunningCluster, big_project):
    project_dir, env = big_project
    task = start_task(project_dir, {**env, "BACKUP_COMPRESSION": "9"}, "postgres.backup")
    pg_dump = wait_for_child(task, "pg_dump")
    time.sleep(1.0)
    task.send_signal(signal.SIGTERM)  # the task alone, as `kill`, `docker stop` or a CI runner sends it
    _, stderr = task.communicate(timeout=60)
    assert task.returncode == 143, stderr
    assert [line for line in stderr.splitlines() if line.strip()] == ["terminated: no backup written"], stderr
    assert list((project_dir / "backups").iterdir()) == []
    assert _eventually(lambda: _gone(pg_dump), 5)


@pytest.mark.slow
def test_sigterm_during_restore_drops_the_scratch_database(big_cluster: RunningCluster, big_project):
    project_dir, env = big_project
    assert run_task("postgres.backup", environ=env, cwd=project_dir).returncode == 0
    mark_live(big_cluster)
    task = start_task(project_dir, env, "postgres.restore", "latest", "--yes")
    wait_for_child(task, "pg_restore", "--single-transaction")
    time.sleep(0.5)
    task.send_signal(signal.SIGTERM)
    _, stderr = task.communicate(timeout=120)
    assert task.returncode == 143, stderr
    [line] = [line for line in stderr.splitlines() if line.strip()]
    assert re.fullmatch(r"terminated: scratch database semantik_restore_[\d_]+ dropped, semantik unchanged", line), line
    assert_live_unchanged(big_cluster)


def _said(output: str, line: str) -> bool:
    """True if `output` has a status line that is exactly `line` (a regex, names escaped by the caller)."""
    return re.search(rf"^\S+ {line}$", output, re.MULTILINE) is not None


def _leftovers(rows: str) -> list[str]:
    return [line for line in rows.splitlines() if "_restore_" in line]


@pytest.mark.slow
def test_leftovers_of_killed_restores_are_listed_and_dropped_but_never_a_running_restores(
    big_cluster: RunningCluster, big_project
):
    project_dir, env = big_project
    assert run_task("postgres.backup", environ=env, cwd=project_dir).returncode == 0
    killed = start_task(project_dir, env, "postgres.restore", "latest", "--yes")
    wait_for_child(killed, "pg_restore", "--single-transaction")
    os.killpg(killed.pid, signal.SIGKILL)  # no cleanup at all: the scratch database stays
    killed.communicate(timeout=60)
    # The running restore is held at its swap (a transaction holds a lock on the live database),
    # with its scratch database filled: it stays running as long as the test needs.
    blocker = _connect(big_cluster, "postgres")
    blocker.autocommit = False
    with blocker.cursor() as cursor:
        cursor.execute("COMMENT ON DATABASE semantik IS 'held by the test'")
    running = start_task(project_dir, env, "postgres.restore", "latest", "--yes")
    try:
        closed = "SELECT datallowconn FROM pg_database WHERE datname = 'semantik'"
        assert _eventually(lambda: _query(big_cluster, closed) == [(False,)], 120), running.poll()
        listing = run_task("postgres.leftovers", environ=env, cwd=project_dir)
        assert listing.returncode == 0, listing.stdout + listing.stderr
        rows = _leftovers(listing.stdout)
        assert len(rows) == 2 and all(re.search(r"\d+(\.\d+)? (B|KiB|MiB|GiB)", row) for row in rows), rows
        [busy] = [row for row in rows if "in use by a running restore" in row]
        [orphan] = [row for row in rows if row is not busy]
        orphan_name, busy_name = (re.search(r"semantik_restore_[\d_]+", row).group(0) for row in (orphan, busy))
        status = run_task("postgres.status", environ=env, cwd=project_dir)
        assert re.search(r"leftovers:\s+2 databases", status.stdout), status.stdout
        doctor = run_task("doctor", "--json", environ=env, cwd=project_dir)
        warned = [f for f in json.loads(doctor.stdout)["findings"] if f["status"] == "warn"]
        assert any("leftover" in f["summary"] and re.search(r"(KiB|MiB|GiB)", f["summary"]) for f in warned), warned
        dry = run_task("postgres.leftovers", "--drop", "--dry-run", environ=env, cwd=project_dir)
        assert _said(dry.stdout, f"would drop {orphan_name}") and not _said(dry.stdout, f"would drop {busy_name}")
        unconfirmed = run_task("postgres.leftovers", "--drop", environ=env, cwd=project_dir)
        assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
        dropped = run_task("postgres.leftovers", "--drop", "--yes", environ=env, cwd=project_dir)
        assert dropped.returncode == 0, dropped.stdout + dropped.stderr
        assert _said(dropped.stdout, f"dropped {orphan_name}") and _said(dropped.stdout, f"kept {busy_name}: .*")
        names = _database_names(big_cluster)
        assert orphan_name not in names and busy_name in names
    finally:
        # Ctrl-C takes effect once the rename it waits on returns: the swap then rolls back.
        os.killpg(running.pid, signal.SIGINT)
        time.sleep(0.5)
        blocker.rollback()
        blocker.close()
        stdout, stderr = running.communicate(timeout=120)
    assert running.returncode == 130, stderr
    assert re.search(r"interrupted: scratch database semantik_restore_[\d_]+ dropped, semantik unchanged", stderr)
    assert any(orphan_name in line for line in warn_lines(stdout)), stdout  # named, with the warning mark
    assert [name for name in _database_names(big_cluster) if "_restore_" in name] == []


def _connect(cluster: RunningCluster, database: str):  # type: ignore[no-untyped-def]
    import psycopg2

    return psycopg2.connect(**cluster.settings.database.with_database(database).libpq_params())


def _query(cluster: RunningCluster, statement: str) -> list[tuple]:
    connection = _connect(cluster, "postgres")
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchall()
    finally:
        connection.close()


def _database_names(cluster: RunningCluster) -> set[str]:
    return {row[0] for row in _query(cluster, "SELECT datname FROM pg_database")}


def test_copies_kept_by_restores_are_listed_with_sizes_and_dropped(db: DbProject):
    original = db.checksums()
    assert db.run("postgres.backup").returncode == 0
    for _ in range(2):
        assert db.run("postgres.restore", "latest", "--yes").returncode == 0
    kept = sorted(name for name in db.databases() if "_before_restore_" in name)
    assert len(kept) == 2
    listing = db.run("postgres.leftovers")
    rows = _leftovers(listing.stdout)
    assert len(rows) == 2 and all("kept by a restore" in row for row in rows), listing.stdout
    assert "total" in listing.stdout
    doctor = db.run("doctor", "--json")
    warned = [f["summary"] for f in json.loads(doctor.stdout)["findings"] if f["status"] == "warn"]
    assert any("2 leftover databases" in summary for summary in warned), warned
    dropped = db.run("postgres.leftovers", "--drop", "--yes")
    assert dropped.returncode == 0 and all(f"dropped {name}" in dropped.stdout for name in kept)
    assert not [name for name in db.databases() if "_restore_" in name]
    assert db.checksums() == original
    empty = db.run("postgres.leftovers")
    assert empty.returncode == 0 and "no leftover databases" in empty.stdout


def test_an_interrupted_swap_is_detected_everywhere_and_up_reopens_the_database(db: DbProject):
    assert db.run("postgres.backup").returncode == 0
    # A transaction holding a lock on the database object makes the swap's rename wait, right after
    # it closed the live database to new sessions: the moment a SIGKILL leaves it closed for good.
    blocker = db.connect("postgres")
    blocker.autocommit = False
    with blocker.cursor() as cursor:
        cursor.execute(f"COMMENT ON DATABASE \"{db.database}\" IS 'held by the test'")
    closed = f"SELECT datallowconn FROM pg_database WHERE datname = '{db.database}'"
    task = start_task(db.project_dir, {**db.environ, "PYTHONPATH": str(REPO)}, "postgres.restore", "latest", "--yes")
    try:
        assert _eventually(lambda: db.sql(closed, "postgres") == [(False,)], 60), task.poll()
        os.killpg(task.pid, signal.SIGKILL)
        task.communicate(timeout=30)
    finally:
        blocker.rollback()
        blocker.close()
    waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'object' AND classid = 'pg_database'::regclass"
    assert _eventually(lambda: db.sql(waiting, "postgres") == [(0,)], 30)
    assert db.sql(closed, "postgres") == [(False,)]  # what a killed swap leaves

    backup = db.run("postgres.backup")
    assert backup.returncode == 1
    line = one_error_line(backup)
    assert "ALLOW_CONNECTIONS" in line and "inv postgres.up" in line
    connection = db.run("test.connection")
    assert connection.returncode != 0 and "inv postgres.up" in connection.stdout + connection.stderr
    shell = db.run("postgres.shell", "-c", "SELECT 1")
    assert shell.returncode == 1 and "inv postgres.up" in shell.stderr, shell.stderr
    for task in (("postgres.wait", "--timeout", "5"), ("postgres.restore", "latest", "--yes", "--in-place")):
        refused = db.run(*task)
        assert refused.returncode == 1 and "inv postgres.up" in one_error_line(refused), task
    status = db.run("postgres.status")
    assert re.search(rf"database:\s+{db.database} refuses connections", status.stdout), status.stdout
    doctor = json.loads(db.run("doctor", "--json").stdout)
    failed = [f for f in doctor["findings"] if f["status"] == "fail"]
    assert any(db.database in f["summary"] and "inv postgres.up" in f["hint"] for f in failed), failed
    up = db.run("postgres.up")
    assert up.returncode == 0 and f"reopened database {db.database}" in up.stdout, up.stdout + up.stderr
    assert db.sql(closed, "postgres") == [(True,)]
    assert db.sql("SELECT 1") == [(1,)]
