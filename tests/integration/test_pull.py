"""`postgres.pull` between two real clusters: the live database becomes a copy of the source
through the restore's verified swap, the source is only read, its password never shows, and a
source that cannot be dumped leaves the live database as it was, in one line."""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Iterator
from urllib.parse import quote

import psycopg2
import pytest

from tests.conftest import REPO, RunningCluster, destroy_cluster, start_cluster
from tests.integration.conftest import DbProject, start_task, wait_for_child

pytestmark = [pytest.mark.integration, pytest.mark.native_only]

SOURCE_PASSWORD = "source:p@ss/w#rd"
SOURCE_SCHEMA = """
CREATE TABLE notes (id serial PRIMARY KEY, title text NOT NULL);
INSERT INTO notes (title) SELECT 'note ' || g FROM generate_series(1, 120) g;
CREATE TABLE events (id bigserial PRIMARY KEY, payload jsonb);
INSERT INTO events (payload) SELECT jsonb_build_object('n', g) FROM generate_series(1, 300) g;
"""


@pytest.fixture(scope="module")
def source() -> Iterator[RunningCluster]:
    cluster = start_cluster(password=SOURCE_PASSWORD)
    connection = psycopg2.connect(**cluster.settings.database.libpq_params())
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(SOURCE_SCHEMA)
    connection.close()
    try:
        yield cluster
    finally:
        destroy_cluster(cluster)


def _url(cluster: RunningCluster, password: str | None = None) -> str:
    secret = quote(password if password is not None else cluster.password, safe="")
    return f"postgresql://semantik:{secret}@127.0.0.1:{cluster.port}/semantik"


def _run(db: DbProject, *args: str) -> tuple[int, str, str]:
    result = db.run(*args)
    assert SOURCE_PASSWORD not in result.stdout + result.stderr
    assert quote(SOURCE_PASSWORD, safe="") not in result.stdout + result.stderr
    return result.returncode, result.stdout, result.stderr


def test_pull_from_a_url_replaces_the_live_database_and_only_reads_the_source(db: DbProject, source: RunningCluster):
    code, out, err = _run(db, "postgres.pull", _url(source), "--yes")
    assert code == 0, out + err
    assert db.sql("SELECT count(*) FROM notes") == [(120,)] and db.sql("SELECT count(*) FROM events") == [(300,)]
    assert "checksum ok" in out and "***" in out
    assert not db.archives()  # the temporary archive is gone
    connection = psycopg2.connect(**source.settings.database.libpq_params())
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM notes")
        assert cursor.fetchone() == (120,)
    connection.close()


def test_pull_from_an_env_file_with_options(db: DbProject, source: RunningCluster):
    env_file = db.project_dir / ".env.staging"
    env_file.write_text(
        f"POSTGRES_HOST=127.0.0.1\nPOSTGRES_PORT={source.port}\nPOSTGRES_DB=semantik\n"
        f"POSTGRES_USER=semantik\nPOSTGRES_PASSWORD='{SOURCE_PASSWORD}'\n"
    )
    code, out, err = _run(
        db, "postgres.pull", ".env.staging", "--yes", "--exclude-table-data", "events", "--keep-archive"
    )
    assert code == 0, out + err
    assert db.sql("SELECT count(*) FROM notes") == [(120,)] and db.sql("SELECT count(*) FROM events") == [(0,)]
    assert len(db.archives()) == 1 and "from .env.staging" in out
    code, out, err = _run(db, "postgres.pull", ".env.staging", "--yes", "--schema-only")
    assert code == 0, out + err
    assert db.sql("SELECT count(*) FROM notes") == [(0,)]


def test_a_wrong_password_or_an_unreachable_source_is_one_line_and_changes_nothing(
    db: DbProject, source: RunningCluster
):
    before = db.checksums()
    for url in (_url(source, "wrong-" + secrets.token_hex(4)), "postgresql://semantik:x@127.0.0.1:1/semantik"):
        code, _out, err = _run(db, "postgres.pull", url, "--yes")
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and lines[0].startswith("error: cannot connect"), err
    assert db.checksums() == before
    assert not db.archives()


def test_pull_asks_first(db: DbProject, source: RunningCluster):
    code, _out, err = _run(db, "postgres.pull", _url(source))
    assert code != 0 and "--yes" in err


def test_a_bad_source_is_one_line(db: DbProject):
    for bad in ("no-such-file.env", "sqlite:///x.db"):
        code, _out, err = _run(db, "postgres.pull", bad, "--yes")
        assert code == 2 and len(err.strip().splitlines()) == 1, err


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_pull_leaves_the_live_database_and_nothing_else(db: DbProject, big_cluster, how):
    before = db.checksums()
    env = {**db.environ, "PYTHONPATH": str(REPO)}
    task = start_task(db.project_dir, env, "postgres.pull", _url(big_cluster), "--yes")
    wait_for_child(task, "pg_dump")
    time.sleep(0.5)
    if how == signal.SIGTERM:
        task.send_signal(how)
    else:
        os.killpg(task.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
    _, stderr = task.communicate(timeout=120)
    assert task.returncode == (143 if how == signal.SIGTERM else 130), stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert db.checksums() == before
    assert not db.archives()
    assert not (db.backups.exists() and list(db.backups.glob(".*")))
    assert not [name for name in db.databases() if name.startswith(f"{db.database}_restore_")]
