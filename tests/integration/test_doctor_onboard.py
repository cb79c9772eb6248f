"""`inv doctor` finds each seeded fault; `inv onboard` goes from nothing to a verified database
and is a no-op the second time. Real conditions in temp dirs, real servers."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess

import pytest

from tests.conftest import HOSTILE_PASSWORD, cluster_environ, free_port, make_project_dir, run_task

pytestmark = pytest.mark.integration


@pytest.fixture
def project():
    path = make_project_dir()
    environ = cluster_environ(path, free_port())
    del environ["POSTGRES_PASSWORD"]  # onboarding generates it into .env
    yield path, environ
    run_task("postgres.reset", "--yes", environ=environ, cwd=path)
    shutil.rmtree(path, ignore_errors=True)


def doctor(environ, cwd) -> tuple[int, dict]:
    result = run_task("doctor", "--json", environ=environ, cwd=cwd)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)


def findings(report: dict, status: str) -> list[str]:
    return [f"{f['area']}: {f['summary']} | {f['hint']}" for f in report["findings"] if f["status"] == status]


def test_onboard_from_nothing_then_noop_then_doctor_clean(project):
    path, env = project
    first = run_task("onboard", environ=env, cwd=path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "onboarding done" in first.stdout and "started PostgreSQL" in first.stdout
    assert (path / ".env").stat().st_mode & 0o777 == 0o600
    assert (path / "backups").is_dir()
    secret = next(
        line.split("=", 1)[1]
        for line in (path / ".env").read_text().splitlines()
        if line.startswith("POSTGRES_PASSWORD=")
    )
    env_file_before = (path / ".env").read_bytes()
    second = run_task("onboard", environ=env, cwd=path)
    assert second.returncode == 0, second.stderr
    assert "nothing changed" in second.stdout
    assert (path / ".env").read_bytes() == env_file_before
    for output in (first.stdout + first.stderr, second.stdout + second.stderr):
        assert secret not in output
    code, report = doctor(env, path)
    assert code == 0, findings(report, "fail")
    assert any("held by our server" in line for line in findings(report, "ok"))
    shell = run_task("postgres.shell", "-c", "SELECT 'verified'", environ=env, cwd=path)
    assert "verified" in shell.stdout


def test_doctor_fails_world_readable_env(project):
    path, env = project
    assert run_task("env.init", environ=env, cwd=path).returncode == 0
    (path / ".env").chmod(0o644)
    code, report = doctor(env, path)
    assert code == 1
    assert any(f"chmod 600 {path / '.env'}" in line for line in findings(report, "fail"))


def test_doctor_names_the_process_holding_the_port(project):
    path, env = project
    assert run_task("env.init", environ=env, cwd=path).returncode == 0
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", int(env["POSTGRES_PORT"])))
        holder.listen()
        code, report = doctor(env, path)
    assert code == 1
    failed = findings(report, "fail")
    assert any(f"port {env['POSTGRES_PORT']} is held by" in line and "POSTGRES_PORT" in line for line in failed)
    if os.geteuid() == 0:  # /proc shows other users' sockets only to root
        assert any("python" in line for line in failed), failed


def test_doctor_missing_binaries(project):
    path, env = project
    assert run_task("env.init", environ=env, cwd=path).returncode == 0
    code, report = doctor({**env, "PG_BIN": "/nonexistent"}, path)
    assert code == 1
    assert any("PG_BIN=/nonexistent has no initdb" in line for line in findings(report, "fail"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the data dir to another user")
def test_doctor_data_dir_owned_by_another_user_and_stopped_server(project):
    path, env = project
    assert run_task("onboard", environ=env, cwd=path).returncode == 0
    assert run_task("postgres.down", environ=env, cwd=path).returncode == 0
    _, report = doctor(env, path)
    assert any("not running" in line for line in findings(report, "warn"))
    data = path / "data" / "postgres"
    owner = data.stat()
    os.chown(data, 65534, 65534)
    try:
        code, report = doctor(env, path)
        assert code == 1
        assert any(f"chown -R postgres {data}" in line for line in findings(report, "fail"))
        failed_onboard = run_task("onboard", environ=env, cwd=path)
        assert failed_onboard.returncode != 0
        assert "onboarding stopped at postgres.up" in failed_onboard.stdout
        assert f"chown -R postgres {data}" in failed_onboard.stdout  # doctor's hint, shown by onboard
    finally:
        os.chown(data, owner.st_uid, owner.st_gid)


def test_doctor_reports_invalid_configuration_without_traceback(project):
    path, env = project
    code, report = doctor({**env, "POSTGRES_PORT": "abc"}, path)
    assert code == 1
    assert any("POSTGRES_PORT='abc'" in line for line in findings(report, "fail"))


def test_doctor_output_never_shows_the_password(pg_cluster):
    result = run_task("doctor", environ=pg_cluster.environ, cwd=pg_cluster.project_dir)
    assert HOSTILE_PASSWORD not in result.stdout + result.stderr
    assert f"client tools: pg_dump {pg_cluster.major}" in result.stdout


def test_doctor_warns_when_env_is_tracked_by_git(project):
    path, env = project
    assert run_task("env.init", environ=env, cwd=path).returncode == 0
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "add", "-f", ".env"], check=True)
    _, report = doctor(env, path)
    assert any(".env is tracked by git" in line for line in findings(report, "warn"))
