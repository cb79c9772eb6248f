"""The postgres tasks on the local backends (native: the system's binaries; embedded: the wheel's),
run as a user runs them, against real servers. Both share the lifecycle code, so the same tests
run on both."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import HOSTILE_PASSWORD, LOCAL_BACKENDS, cluster_environ, free_port, make_project_dir, run_task

pytestmark = pytest.mark.integration


def _project(backend: str) -> Iterator[tuple[Path, dict[str, str]]]:
    project = make_project_dir()
    environ = cluster_environ(project, free_port(), backend=backend)
    yield project, environ
    run_task("postgres.reset", "--yes", environ=environ, cwd=project)
    shutil.rmtree(project, ignore_errors=True)


@pytest.fixture(params=LOCAL_BACKENDS)
def local_project(request: pytest.FixtureRequest) -> Iterator[tuple[Path, dict[str, str]]]:
    yield from _project(request.param)


@pytest.fixture
def native_project() -> Iterator[tuple[Path, dict[str, str]]]:
    yield from _project("native")


def _ok(result, *fragments: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert HOSTILE_PASSWORD not in output
    for fragment in fragments:
        assert fragment in output, output
    return output


def test_full_lifecycle_keeps_data_across_restarts(local_project):
    project, env = local_project
    _ok(run_task("postgres.up", environ=env, cwd=project), "initialised a new cluster", "created database semantik")
    _ok(run_task("postgres.up", environ=env, cwd=project), "already running", "nothing to do")
    _ok(run_task("postgres.status", environ=env, cwd=project), "state:    running", "pid:", "uptime:")
    _ok(run_task("postgres.wait", "--timeout", "5", environ=env, cwd=project), "accepts connections")
    sql = "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('survives')"
    _ok(run_task("postgres.shell", "-c", sql, environ=env, cwd=project))
    _ok(run_task("postgres.down", environ=env, cwd=project), "stopped PostgreSQL")
    stopped = run_task("postgres.status", environ=env, cwd=project)
    assert stopped.returncode == 3 and "state:    stopped" in stopped.stdout
    _ok(run_task("postgres.down", environ=env, cwd=project), "not running")
    _ok(run_task("postgres.up", environ=env, cwd=project), "started PostgreSQL")
    _ok(run_task("postgres.shell", "-c", "SELECT v FROM kept", environ=env, cwd=project), "survives")
    _ok(run_task("postgres.logs", "--tail", "5", environ=env, cwd=project))
    refused = run_task("postgres.reset", environ=env, cwd=project)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert (project / "data" / "postgres" / "PG_VERSION").exists()
    _ok(run_task("postgres.reset", "--yes", environ=env, cwd=project), "deleted")
    assert not (project / "data" / "postgres").exists()


def test_password_never_on_a_command_line(local_project):
    project, env = local_project
    _ok(run_task("postgres.up", environ=env, cwd=project))
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        assert HOSTILE_PASSWORD not in text


@pytest.mark.skipif(os.geteuid() != 0, reason="checks the privilege drop that happens only as root")
def test_server_runs_as_postgres_user_when_invoked_as_root(local_project):
    import pwd

    project, env = local_project
    _ok(run_task("postgres.up", environ=env, cwd=project))
    pid = int((project / "data" / "postgres" / "postmaster.pid").read_text().split()[0])
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    uid = next(int(line.split()[1]) for line in status if line.startswith("Uid:"))
    assert pwd.getpwuid(uid).pw_name == "postgres"


def test_port_taken_by_another_process(local_project):
    project, env = local_project
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", int(env["POSTGRES_PORT"])))
        holder.listen()
        result = run_task("postgres.up", environ=env, cwd=project)
    assert result.returncode == 1
    assert f"port {env['POSTGRES_PORT']}" in result.stderr and "POSTGRES_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_binaries(native_project):
    project, env = native_project
    result = run_task("postgres.up", environ={**env, "PG_BIN": "/nonexistent/bin"}, cwd=project)
    assert result.returncode == 1
    assert "PG_BIN=/nonexistent/bin has no initdb" in result.stderr
    assert "Traceback" not in result.stderr


def test_data_dir_from_another_major_version(local_project):
    project, env = local_project
    _ok(run_task("postgres.up", environ=env, cwd=project))
    _ok(run_task("postgres.down", environ=env, cwd=project))
    version_file = project / "data" / "postgres" / "PG_VERSION"
    real = version_file.read_text()
    version_file.write_text("14\n")
    try:
        result = run_task("postgres.up", environ=env, cwd=project)
        assert result.returncode == 1
        assert "created by PostgreSQL 14" in result.stderr and "PG_BIN" in result.stderr
        assert "`inv postgres.backup` with PostgreSQL 14" in result.stderr and "postgres.reset" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    finally:
        version_file.write_text(real)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the data dir to another user")
def test_data_dir_owned_by_someone_else(local_project):
    project, env = local_project
    _ok(run_task("postgres.up", environ=env, cwd=project))
    _ok(run_task("postgres.down", environ=env, cwd=project))
    data = project / "data" / "postgres"
    stat = data.stat()
    os.chown(data, 65534, 65534)
    try:
        result = run_task("postgres.up", environ=env, cwd=project)
        assert result.returncode == 1
        assert f"chown -R postgres {data}" in result.stderr
    finally:
        os.chown(data, stat.st_uid, stat.st_gid)


def test_wait_times_out_with_nothing_listening(local_project):
    project, env = local_project
    result = run_task("postgres.wait", "--timeout", "1", environ=env, cwd=project)
    assert result.returncode == 1
    assert "not ready within 1 s" in result.stderr


@pytest.mark.parametrize("args", [("postgres.up",), ("postgres.down",), ("postgres.reset", "--yes")])
def test_external_backend_refuses_lifecycle(pg_cluster, args):
    env = {**pg_cluster.environ, "SEMANTIK_PG_BACKEND": "external"}
    result = run_task(*args, environ=env, cwd=pg_cluster.project_dir)
    assert result.returncode == 1, result.stderr
    assert "is external (SEMANTIK_PG_BACKEND=external)" in result.stderr


def test_external_backend_status_and_shell(pg_cluster):
    env = {**pg_cluster.environ, "SEMANTIK_PG_BACKEND": "external"}
    status = run_task("postgres.status", environ=env, cwd=pg_cluster.project_dir)
    _ok(status, "state:   running", f"PostgreSQL {pg_cluster.major}")
    _ok(run_task("postgres.shell", "-c", "SELECT 40 + 2", environ=env, cwd=pg_cluster.project_dir), "42")
