"""The backend, port and project never change behind the user's back (issue 11 items 7-9):
onboarding records what it used, `auto` stays where the data is, status warns about a port that
moved, and doctor identifies *our* server by its data directory and writes nothing."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dotenv import dotenv_values

from semantik_infra.backends import docker_engine_answers
from tests.conftest import clean_environ, free_port, make_project_dir, run_task

pytestmark = pytest.mark.integration

NO_IMAGE = "semantik-infra/no-such-image:0"  # so `auto` does not pick docker on a Docker machine
NO_EMBEDDED_MAJOR = "17"  # a major the wheel does not ship, so `auto` picks the system's binaries
TEST_IMAGE = os.environ.get("SEMANTIK_TEST_IMAGE") or "semantik-infra/postgres-test:15"


@dataclass(frozen=True)
class Onboarded:
    project: Path
    environ: dict[str, str]  # no port, no backend: what .env records must be enough
    port: int


def fresh_environ(project: Path) -> dict[str, str]:
    return clean_environ(
        SEMANTIK_PROJECT_DIR=str(project),
        POSTGRES_IMAGE=NO_IMAGE,
        EMBEDDED_PG_MAJOR=NO_EMBEDDED_MAJOR,
        COMPOSE_PROJECT_NAME=f"sitest{secrets.token_hex(4)}",
    )


@pytest.fixture(scope="module")
def onboarded() -> Iterator[Onboarded]:
    """`POSTGRES_PORT=P inv onboard` on a fresh clone, as in the issue."""
    project = make_project_dir()
    environ = fresh_environ(project)
    port = free_port()
    result = run_task("onboard", environ={**environ, "POSTGRES_PORT": str(port)}, cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        yield Onboarded(project, environ, port)
    finally:
        run_task(
            "postgres.down", "--volumes", "--yes", environ={**environ, "SEMANTIK_PG_BACKEND": "native"}, cwd=project
        )
        shutil.rmtree(project, ignore_errors=True)


def doctor(environ: dict[str, str], cwd: Path) -> tuple[int, list[dict[str, str]]]:
    result = run_task("doctor", "--json", environ=environ, cwd=cwd)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout)["findings"]


def test_onboard_records_the_port_and_backend_it_used(onboarded: Onboarded):
    """Item 8: the port given at onboarding is in .env afterwards, so every later task uses it."""
    values = dotenv_values(onboarded.project / ".env")
    assert values["SEMANTIK_PG_BACKEND"] == "native"
    assert values["POSTGRES_PORT"] == str(onboarded.port)
    quick = run_task("test.connection", "--quick", environ=onboarded.environ, cwd=onboarded.project)
    assert quick.returncode == 0, quick.stdout
    assert f":{onboarded.port}/" in quick.stdout
    again = run_task("onboard", environ=onboarded.environ, cwd=onboarded.project)
    assert again.returncode == 0 and "nothing changed" in again.stdout, again.stdout
    _, findings = doctor(onboarded.environ, onboarded.project)
    recorded = f"recorded in .env: SEMANTIK_PG_BACKEND=native, POSTGRES_PORT={onboarded.port}"
    assert any(f["summary"].startswith(recorded) for f in findings), findings


def test_the_first_successful_up_records_and_later_ones_do_not():
    """Item 7: `postgres.up` on a project whose .env still says auto records what it used, once."""
    project = make_project_dir()
    environ = fresh_environ(project)
    port = free_port()
    try:
        assert run_task("env.init", environ=environ, cwd=project).returncode == 0
        first = run_task("postgres.up", environ={**environ, "POSTGRES_PORT": str(port)}, cwd=project)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "recorded SEMANTIK_PG_BACKEND, POSTGRES_PORT in .env (previous file kept as .env." in first.stdout
        values = dotenv_values(project / ".env")
        assert (values["SEMANTIK_PG_BACKEND"], values["POSTGRES_PORT"]) == ("native", str(port))
        recorded = (project / ".env").read_bytes()
        again = run_task("postgres.up", environ={**environ, "POSTGRES_PORT": str(port)}, cwd=project)
        assert again.returncode == 0 and "was already up" in again.stdout
        assert (project / ".env").read_bytes() == recorded
    finally:
        run_task("postgres.down", "--volumes", "--yes", environ=environ, cwd=project)
        shutil.rmtree(project, ignore_errors=True)


def test_status_warns_when_the_server_runs_on_another_port(onboarded: Onboarded):
    other = free_port()
    result = run_task(
        "postgres.status", environ={**onboarded.environ, "POSTGRES_PORT": str(other)}, cwd=onboarded.project
    )
    assert result.returncode == 0, result.stdout
    assert f"port:     {onboarded.port}" in result.stdout
    assert (
        f"! this project's PostgreSQL (native) runs on port {onboarded.port}, but POSTGRES_PORT is {other}"
        " (environment)" in result.stdout
    )


@pytest.mark.skipif(docker_engine_answers(TEST_IMAGE) != "ready", reason="needs a Docker engine with the test image")
def test_auto_never_moves_away_from_the_native_data(onboarded: Onboarded):
    """Item 7: an image the engine has does not make `auto` pick docker while native holds the data."""
    dot_env = onboarded.project / ".env"
    recorded = dot_env.read_text()
    dot_env.write_text(recorded.replace("SEMANTIK_PG_BACKEND=native", "SEMANTIK_PG_BACKEND=auto"))
    environ = {**onboarded.environ, "POSTGRES_IMAGE": TEST_IMAGE}
    volume = f"{environ['COMPOSE_PROJECT_NAME']}_postgres-data"
    try:
        status = run_task("postgres.status", environ=environ, cwd=onboarded.project)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.splitlines()[:2] == ["backend:  native", "state:    running"]
        check = run_task("env.check", environ=environ, cwd=onboarded.project)
        assert f"auto → native (this project's data is in the data directory {onboarded.project}" in check.stdout
        subprocess.run(["docker", "volume", "create", volume], check=True, capture_output=True)
        both = run_task("postgres.status", environ=environ, cwd=onboarded.project)
        assert both.returncode == 1
        assert both.stderr.strip() == (
            f"error: this project has data in the data directory {onboarded.project / 'data' / 'postgres'}"
            f" and in the docker volume {volume}: set SEMANTIK_PG_BACKEND to the one you use (native or docker) in .env"
        )
    finally:
        subprocess.run(["docker", "volume", "rm", "-f", volume], check=False, capture_output=True)
        dot_env.write_text(recorded)


def test_doctor_identifies_our_server_by_its_data_directory(onboarded: Onboarded, pg_cluster):
    """Item 9: another clone's server on the configured port is not 'our server'."""
    environ = {**onboarded.environ, "POSTGRES_PORT": str(pg_cluster.port)}
    code, findings = doctor(environ, onboarded.project)
    assert code == 1
    [port] = [f for f in findings if f["area"] == "port"]
    assert port["status"] == "fail", port
    assert (
        port["summary"].startswith("this project's server (pid ")
        and f"runs on port {onboarded.port}" in port["summary"]
    )
    assert f"POSTGRES_PORT is {pg_cluster.port}" in port["summary"]
    _, findings = doctor(onboarded.environ, onboarded.project)
    [port] = [f for f in findings if f["area"] == "port"]
    assert port["status"] == "ok" and port["summary"].startswith(f"port {onboarded.port} is held by our server (pid ")


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    cluster = root / "data" / "postgres"  # the running server writes there, whatever doctor does
    return {
        str(path): (path.stat().st_mtime_ns, path.stat().st_size)
        for path in root.rglob("*")
        if cluster not in path.parents and path != cluster and not path.is_symlink()
    }


def test_doctor_with_env_missing_tells_the_truth_and_writes_nothing(onboarded: Onboarded):
    """Item 9: with .env gone doctor finds our cluster, names the recovery, and creates nothing."""
    dot_env = onboarded.project / ".env"
    aside = onboarded.project.parent / f"{onboarded.project.name}.env-aside"
    shutil.move(dot_env, aside)
    try:
        before = _snapshot(onboarded.project)
        code, findings = doctor(onboarded.environ, onboarded.project)
        assert _snapshot(onboarded.project) == before
        assert not (onboarded.project / "data" / "semantik.db").exists()
        assert code == 1
        text = "\n".join(f"{f['status']} {f['area']}: {f['summary']} | {f['hint']}" for f in findings)
        assert "not by our server" not in text, text
        assert "fail backend: this project has a cluster (the data directory" in text, text
        assert "rotate-password --recover" in text
        assert f"runs on port {onboarded.port}, but POSTGRES_PORT is 5432" in text
    finally:
        shutil.move(aside, dot_env)


@pytest.mark.slow
def test_two_fresh_clones_get_their_own_ports_with_no_manual_step():
    """Item 8: with 5432 taken and no port set, each clone's onboarding picks a free port and records it."""
    holder = socket.socket()
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", 5432))
        holder.listen()
    except OSError:
        holder.close()
        holder = None  # something else already holds 5432: the case under test all the same
    clones = [make_project_dir() for _ in range(2)]
    environs = [fresh_environ(clone) for clone in clones]
    try:
        ports = []
        for clone, environ in zip(clones, environs, strict=True):
            result = run_task("onboard", environ=environ, cwd=clone)
            assert result.returncode == 0, result.stdout + result.stderr
            assert "port 5432 is in use by another program: this project gets port" in result.stdout
            ports.append(dotenv_values(clone / ".env")["POSTGRES_PORT"])
        assert "5432" not in ports and len(set(ports)) == 2
        for clone, environ in zip(clones, environs, strict=True):
            assert run_task("test.connection", "--quick", environ=environ, cwd=clone).returncode == 0
    finally:
        if holder is not None:
            holder.close()
        for clone, environ in zip(clones, environs, strict=True):
            run_task("postgres.down", "--volumes", "--yes", environ=environ, cwd=clone)
            shutil.rmtree(clone, ignore_errors=True)
