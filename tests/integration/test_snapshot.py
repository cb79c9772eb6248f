"""Snapshots against a real server: save, reset again and again, list, drop, names, sessions on the
live database, and a role that may not create databases."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import HOSTILE_PASSWORD, RunningCluster, make_project_dir, run_task

pytestmark = pytest.mark.integration


@dataclass
class Project:
    """A project whose database lives on the shared session cluster."""

    cluster: RunningCluster
    project_dir: Path
    database: str
    environ: dict[str, str]

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        result = run_task(*args, environ={**self.environ, **extra}, cwd=self.project_dir)
        output = result.stdout + result.stderr
        assert HOSTILE_PASSWORD not in output
        assert "Traceback" not in output, output
        return result

    def sql(self, statement: str, database: str | None = None) -> list[tuple]:
        params = self.cluster.settings.database.with_database(database or self.database).libpq_params()
        connection = psycopg2.connect(**params)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(statement)
                return cursor.fetchall() if cursor.description else []
        finally:
            connection.close()

    def databases(self) -> set[str]:
        return {row[0] for row in self.sql("SELECT datname FROM pg_database", database="postgres")}

    def titles(self) -> list[str]:
        return [row[0] for row in self.sql("SELECT title FROM notes ORDER BY id")]


@pytest.fixture
def project(pg_cluster: RunningCluster) -> Iterator[Project]:
    database = f"s_{secrets.token_hex(4)}"
    project_dir = make_project_dir()
    environ = {
        **pg_cluster.environ,
        "SEMANTIK_PROJECT_DIR": str(project_dir),
        "POSTGRES_DB": database,
        "POSTGRES_DATA_DIR": str(pg_cluster.settings.data_dir),
    }
    project = Project(pg_cluster, project_dir, database, environ)
    project.sql(f'CREATE DATABASE "{database}"', database="postgres")
    project.sql("CREATE TABLE notes (id serial PRIMARY KEY, title text); INSERT INTO notes (title) VALUES ('a'), ('b')")
    yield project
    for name in project.databases():
        if database in name:
            project.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', database="postgres")
    shutil.rmtree(project_dir, ignore_errors=True)


def test_save_change_and_reset_again_and_again(project: Project):
    saved = project.run("snapshot.save", "clean")
    assert saved.returncode == 0, saved.stderr
    assert "saved snapshot clean" in saved.stdout
    for round_ in range(2):
        project.sql(f"DELETE FROM notes; INSERT INTO notes (title) VALUES ('changed {round_}')")
        restored = project.run("snapshot.restore", "clean", "--yes")
        assert restored.returncode == 0, restored.stderr
        assert project.titles() == ["a", "b"]
    # The snapshot stays, the replaced databases are gone, the live one accepts sessions.
    leftovers = {name for name in project.databases() if project.database in name} - {project.database}
    assert leftovers == {f"snapshot__{project.database}__clean"}
    assert project.sql("SELECT datallowconn FROM pg_database WHERE datname = current_database()") == [(True,)]


def test_list_shows_name_size_source_and_total(project: Project):
    assert project.run("snapshot.save", "one").returncode == 0
    assert project.run("snapshot.save", "two").returncode == 0
    listing = project.run("snapshot.list")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["NAME", "CREATED", "SIZE", "OF"]
    assert [line.split()[0] for line in lines[1:3]] == ["one", "two"]
    assert all(project.database in line for line in lines[1:3])
    assert lines[-1].startswith("2 snapshots,") and "in all" in lines[-1]
    assert "snapshots: 2 snapshots," in project.run("postgres.status").stdout
    assert "2 snapshots," in project.run("doctor").stdout


def test_keep_current_keeps_the_replaced_database(project: Project):
    assert project.run("snapshot.save", "base").returncode == 0
    project.sql("INSERT INTO notes (title) VALUES ('mine')")
    result = project.run("snapshot.restore", "base", "--yes", "--keep-current")
    assert result.returncode == 0, result.stderr
    kept = [name for name in project.databases() if name.startswith(f"{project.database}_before_restore_")]
    assert len(kept) == 1
    assert project.sql("SELECT count(*) FROM notes WHERE title = 'mine'", database=kept[0]) == [(1,)]


def test_save_closes_sessions_on_the_live_database_and_reopens_it(project: Project):
    params = project.cluster.settings.database.with_database(project.database).libpq_params()
    app = psycopg2.connect(**params)
    try:
        assert project.run("snapshot.save", "busy").returncode == 0
        with pytest.raises(psycopg2.OperationalError), app.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        app.close()
    again = psycopg2.connect(**params)
    again.close()
    # Nobody can work in the snapshot by mistake.
    with pytest.raises(psycopg2.OperationalError):
        psycopg2.connect(**{**params, "dbname": f"snapshot__{project.database}__busy"})


def test_drop_asks_and_removes(project: Project):
    assert project.run("snapshot.save", "gone").returncode == 0
    refused = project.run("snapshot.drop", "gone")
    assert refused.returncode != 0 and "--yes" in refused.stderr
    assert project.run("snapshot.drop", "gone", "--yes").returncode == 0
    assert f"snapshot__{project.database}__gone" not in project.databases()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("snapshot.save", "Bad Name"), "snapshot name 'Bad Name'"),
        (("snapshot.save", "x" * 41), "snapshot name"),
        (("snapshot.restore", "missing", "--yes"), "no snapshot 'missing'"),
        (("snapshot.drop", "missing", "--yes"), "no snapshot 'missing'"),
    ],
)
def test_bad_names_and_missing_snapshots_are_one_line(project: Project, args: tuple[str, ...], expected: str):
    result = project.run(*args)
    assert result.returncode != 0
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_saving_over_an_existing_snapshot_is_refused(project: Project):
    assert project.run("snapshot.save", "dup").returncode == 0
    result = project.run("snapshot.save", "dup")
    assert result.returncode == 1 and "already exists" in result.stderr


def test_a_role_without_createdb_gets_one_line(project: Project):
    role = f"nocreate_{secrets.token_hex(3)}"
    project.sql(
        f"CREATE ROLE {role} LOGIN PASSWORD 'pw-not-secret'; GRANT ALL ON DATABASE \"{project.database}\" TO {role}"
    )
    try:
        result = project.run("snapshot.save", "x", POSTGRES_USER=role, POSTGRES_PASSWORD="pw-not-secret")
        assert result.returncode == 1
        assert "CREATEDB" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    finally:
        project.sql(f"DROP OWNED BY {role}; DROP ROLE {role}", database="postgres")


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_snapshot_restore_leaves_the_live_database_and_no_copy(big_cluster, big_project, how):
    from tests.integration.conftest import start_task

    project_dir, env = big_project
    name = f"big{how.value}"
    assert run_task("snapshot.save", name, environ=env, cwd=project_dir).returncode == 0
    params = big_cluster.settings.database.libpq_params()
    watcher = psycopg2.connect(**{**params, "dbname": "postgres"})
    watcher.autocommit = True
    try:
        with watcher.cursor() as cursor:
            task = start_task(project_dir, env, "snapshot.restore", name, "--yes")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                cursor.execute("SELECT 1 FROM pg_stat_activity WHERE query LIKE 'CREATE DATABASE%%TEMPLATE%%'")
                if cursor.fetchone() or task.poll() is not None:
                    break
                time.sleep(0.01)
            if how == signal.SIGTERM:
                task.send_signal(how)
            else:
                os.killpg(task.pid, signal.SIGINT)
            _, stderr = task.communicate(timeout=120)
            cursor.execute("SELECT datname, datallowconn FROM pg_database")
            databases = dict(cursor.fetchall())
    finally:
        watcher.close()
        run_task("snapshot.drop", name, "--yes", environ=env, cwd=project_dir)
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) <= 1, stderr
    assert databases["semantik"] is True  # never left closed
    assert not [db for db in databases if db.startswith("semantik_restore_")], databases
    # Either the restore finished before the signal, or it stopped and left the live database alone.
    assert task.returncode in (0, 130, 143), stderr
