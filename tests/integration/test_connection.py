"""The database layer and `inv test.connection` against real PostgreSQL servers: every failure
case gets the right cause and hint, and the password never shows in any output."""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import replace

import pytest
import sqlalchemy

from semantik_infra.config import load_settings
from semantik_infra.database import connect_with_retry, create_async_engine, create_engine, health_check, session_scope
from semantik_infra.diagnostics import run_checks
from semantik_infra.errors import ConfigError, DatabaseError
from tests.conftest import (
    HOSTILE_PASSWORD,
    clean_environ,
    destroy_cluster,
    free_port,
    native_cluster_only,
    run_task,
    start_cluster,
)

pytestmark = pytest.mark.integration


def connection_test(cluster, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    result = run_task("test.connection", *args, environ={**cluster.environ, **env}, cwd=cluster.project_dir)
    output = result.stdout + result.stderr
    assert HOSTILE_PASSWORD not in output
    assert "Traceback" not in output
    return result


def test_all_checks_pass_human_and_json(pg_cluster):
    human = connection_test(pg_cluster)
    assert human.returncode == 0, human.stdout
    for step in ("1 configuration", "2 reachability", "3 authentication", "4 server facts", "5 basic operations"):
        assert step in human.stdout
    assert "6 connection pool" in human.stdout and "7 latency" in human.stdout and "p95" in human.stdout
    report = json.loads(connection_test(pg_cluster, "--json").stdout)
    assert report["ok"] is True
    assert [c["name"] for c in report["checks"]][-1] == "latency"
    facts = next(c["facts"] for c in report["checks"] if c["name"] == "server facts")
    assert facts["encoding"] == "UTF8" and facts["max_connections"] > 0


def test_nothing_left_behind(pg_cluster):
    connection_test(pg_cluster)
    engine = create_engine(pg_cluster.settings)
    with engine.connect() as connection:
        tables = connection.execute(
            sqlalchemy.text("SELECT count(*) FROM pg_tables WHERE tablename = 'semantik_conn_test'")
        ).scalar()
    engine.dispose()
    assert tables == 0


@pytest.mark.parametrize(
    ("env", "cause", "hint"),
    [
        ({"POSTGRES_PASSWORD": "wrong-password"}, "wrong password", "POSTGRES_PASSWORD"),
        ({"POSTGRES_DB": "no_such_db"}, "database does not exist", "POSTGRES_DB"),
        ({"POSTGRES_USER": "no_such_role"}, "no such role", "POSTGRES_USER"),
    ],
)
def test_authentication_failures_name_the_variable(pg_cluster, env, cause, hint):
    result = connection_test(pg_cluster, **env)
    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if "3 authentication" in line)
    assert cause in line
    assert hint in result.stdout
    assert "4 server facts: skipped" in result.stdout


@native_cluster_only
def test_nothing_listening(pg_cluster):
    result = connection_test(pg_cluster, "--quick", POSTGRES_PORT=str(free_port()))
    assert result.returncode == 1
    assert "nothing is listening" in result.stdout and "POSTGRES_PORT" in result.stdout


@native_cluster_only
def test_url_flag_and_bad_url_exit_code(pg_cluster):
    good = pg_cluster.settings.database.render(hide_password=False)
    assert connection_test(pg_cluster, "--quick", "--url", good).returncode == 0
    bad = connection_test(pg_cluster, "--url", "mysql://u:p@h/db")
    assert bad.returncode == 2 and "--url in the command line: unknown scheme" in bad.stderr


def test_sqlite_fallback(project_dir):
    env = clean_environ(SEMANTIK_PROJECT_DIR=str(project_dir))
    missing = run_task("test.connection", environ=env, cwd=project_dir)
    assert missing.returncode == 1 and "data does not exist" in missing.stdout and "SQLITE_PATH" in missing.stdout
    (project_dir / "data").mkdir()
    result = run_task("test.connection", environ=env, cwd=project_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SQLite fallback" in result.stdout and "basic operations" in result.stdout


@native_cluster_only
def test_pool_exhaustion_and_timeout(pg_cluster):
    result = connection_test(pg_cluster, DB_POOL_SIZE="2", DB_MAX_OVERFLOW="1", DB_POOL_TIMEOUT="0.5")
    assert result.returncode == 0, result.stdout
    assert "2 + 1 overflow checked out, checkout 4 timed out after 0.5" in result.stdout


@native_cluster_only
def test_pool_larger_than_server_allows_is_capped_with_a_warning(pg_cluster):
    result = connection_test(pg_cluster, DB_POOL_SIZE="500", DB_MAX_OVERFLOW="500")
    assert result.returncode == 0, result.stdout
    assert "exceeds the" in result.stdout and "free server connections" in result.stdout


@native_cluster_only
def test_pre_ping_recovers_after_terminate(pg_cluster):
    engine = create_engine(pg_cluster.settings, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as connection:
            victim = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        admin = create_engine(pg_cluster.settings, poolclass=sqlalchemy.pool.NullPool)
        with admin.connect() as connection:
            connection.exec_driver_sql(f"SELECT pg_terminate_backend({int(victim)})")
        admin.dispose()
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT pg_backend_pid()").scalar() != victim
    finally:
        engine.dispose()


def test_server_stopped_mid_way_then_back():
    cluster = start_cluster()
    try:
        from semantik_infra.backends.native import NativeBackend

        backend = NativeBackend(cluster.settings)
        engine = create_engine(cluster.settings)
        assert health_check(engine).ok
        backend.stop()
        down = health_check(engine)
        assert not down.ok and down.error
        report = run_checks(cluster.settings, backend="native")
        assert not report.ok and "nothing is listening" in report.checks[1].summary
        backend.start()
        assert health_check(engine).ok  # pre-ping replaced the dead pooled connections
        engine.dispose()
    finally:
        destroy_cluster(cluster)


@native_cluster_only
def test_connect_with_retry_retries_transient_and_logs_redacted(pg_cluster, caplog):
    settings = load_settings(
        environ={**pg_cluster.environ, "POSTGRES_PORT": str(free_port()), "DB_RETRY_ATTEMPTS": "3"},
        cwd=pg_cluster.project_dir,
    )
    sleeps: list[float] = []
    engine = create_engine(settings)
    with caplog.at_level(logging.WARNING, logger="semantik_infra.database"), pytest.raises(DatabaseError) as raised:
        connect_with_retry(engine, settings, sleep=sleeps.append)
    assert len(sleeps) == 2
    assert "after 3 attempts" in str(raised.value)
    assert len(caplog.records) == 2 and "retry 1/2" in caplog.text
    assert HOSTILE_PASSWORD not in caplog.text + str(raised.value)


@native_cluster_only
def test_connect_with_retry_gives_up_at_once_on_wrong_password(pg_cluster):
    settings = load_settings(environ={**pg_cluster.environ, "POSTGRES_PASSWORD": "nope"}, cwd=pg_cluster.project_dir)
    sleeps: list[float] = []
    with pytest.raises(DatabaseError, match="wrong password"):
        connect_with_retry(create_engine(settings), settings, sleep=sleeps.append)
    assert sleeps == []


@native_cluster_only
def test_session_scope_commits_and_rolls_back(pg_cluster):
    engine = create_engine(pg_cluster.settings)
    text = sqlalchemy.text
    try:
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE IF NOT EXISTS scope_test (v int)"))
            connection.execute(text("TRUNCATE scope_test"))
        with session_scope(engine) as session:
            session.execute(text("INSERT INTO scope_test VALUES (1)"))
        with pytest.raises(RuntimeError), session_scope(engine) as session:
            session.execute(text("INSERT INTO scope_test VALUES (2)"))
            raise RuntimeError("boom")
        with engine.connect() as connection:
            assert connection.execute(text("SELECT array_agg(v) FROM scope_test")).scalar() == [1]
            connection.execute(text("DROP TABLE scope_test"))
            connection.commit()
    finally:
        engine.dispose()


@native_cluster_only
def test_engine_uses_settings_and_connect_arguments(pg_cluster):
    settings = replace(
        pg_cluster.settings, statement_timeout_ms=1234, pool=replace(pg_cluster.settings.pool, size=3, max_overflow=2)
    )
    engine = create_engine(settings)
    try:
        assert engine.pool.size() == 3 and engine.pool._max_overflow == 2
        assert HOSTILE_PASSWORD not in repr(engine) + str(engine.url)
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SHOW statement_timeout").scalar() == "1234ms"
            assert connection.exec_driver_sql("SHOW TimeZone").scalar() == "UTC"
            assert connection.exec_driver_sql("SHOW application_name").scalar() == "semantik"
    finally:
        engine.dispose()


def test_sqlite_engine_has_foreign_keys_and_wal(tmp_path, project_dir):
    settings = load_settings(environ=clean_environ(SQLITE_PATH=str(tmp_path / "app.db")), cwd=project_dir)
    engine = create_engine(settings)
    with engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()


@native_cluster_only
def test_async_engine_without_asyncpg_says_how_to_get_it(pg_cluster):
    import importlib.util

    if importlib.util.find_spec("asyncpg") is not None:
        pytest.skip("asyncpg is installed here")
    with pytest.raises(ConfigError, match="asyncpg"):
        create_async_engine(pg_cluster.settings)
