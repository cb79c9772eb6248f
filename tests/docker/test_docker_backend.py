"""The postgres tasks on the docker backend against a real engine, compose and container."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from semantik_infra.manifest import manifest_path
from tests.conftest import archive_files
from tests.docker.conftest import COMPOSE_FILE, DockerProject

pytestmark = [pytest.mark.docker, pytest.mark.slow]

APP_FILE = COMPOSE_FILE.parents[1] / "tests" / "docker" / "fixtures" / "docker-compose.app.yml"


def _compose(environ: dict[str, str]) -> list[str]:
    from semantik_infra.backends.docker import detect_compose

    return list(detect_compose(environ))


def _ok(result, *fragments: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for fragment in fragments:
        assert fragment in output, output
    return output


def _config(*files, environ: dict[str, str] | None = None) -> dict:
    environ = environ or {}
    argv = [*_compose(environ), "-p", "configcheck"]
    for path in files:
        argv += ["-f", str(path)]
    result = subprocess.run(
        [*argv, "config"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "POSTGRES_PASSWORD": "x", **environ},
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_each_compose_flavour_is_detected(compose_v2_environ: dict[str, str]):
    import os

    if os.environ.get("CI") == "true":
        # CI's machine has Debian's v1 only, so both code paths really run.
        assert _compose({}) == ["docker-compose"]
    assert _compose(compose_v2_environ) == ["docker", "compose"]


def test_compose_file_is_valid_alone_and_layered(compose_environ: dict[str, str]):
    if not shutil.which("docker-compose") and not shutil.which("docker"):
        pytest.skip("no compose installed")
    alone = _config(COMPOSE_FILE, environ=compose_environ)
    assert "postgres" in alone["services"]
    layered = _config(APP_FILE, COMPOSE_FILE, environ=compose_environ)
    assert {"postgres"} <= set(layered["services"]) and len(layered["services"]) >= 2


def test_compose_file_hardening_and_loopback_port():
    service = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["postgres"]
    assert service["cap_drop"] == ["ALL"]
    assert set(service["cap_add"]) <= {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"}
    assert any("no-new-privileges" in opt for opt in service["security_opt"])
    assert service.get("tmpfs")
    assert "healthcheck" in service and "pg_isready" in str(service["healthcheck"]["test"])
    assert service.get("cpus") or service.get("deploy")
    assert service.get("mem_limit") or service.get("deploy")
    port = service["ports"][0]
    assert str(port).startswith("${POSTGRES_BIND_ADDRESS:-127.0.0.1}:")
    resolved = _config(COMPOSE_FILE)["services"]["postgres"]["ports"][0]
    host_ip = resolved["host_ip"] if isinstance(resolved, dict) else str(resolved).split(":")[0]
    assert host_ip == "127.0.0.1"


def test_lifecycle_data_survives_and_volume_delete(docker_project_each_compose: DockerProject):
    p = docker_project_each_compose
    up = _ok(p.run("postgres.up"), "is healthy", "accepts connections")
    _ok(p.run("postgres.up"), "already running")
    status = _ok(p.run("postgres.status"), "health:", "healthy", f"127.0.0.1:{p.port}")
    _ok(p.run("postgres.shell", "-c", "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('in the volume')"))
    _ok(p.run("postgres.logs", "--tail", "5"))
    _ok(p.run("postgres.down"), "data kept")
    assert p.run("postgres.status").returncode == 3
    _ok(p.run("postgres.up"), "is healthy")
    _ok(p.run("postgres.shell", "-c", "SELECT v FROM kept"), "in the volume")
    refused = p.run("postgres.down", "--volumes")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    _ok(p.run("postgres.down", "--volumes", "--yes"), "deleted docker volume")
    for output in (up, status):
        assert p.password not in output


def test_host_connection_with_special_character_password(docker_project: DockerProject):
    import psycopg2

    p = docker_project
    _ok(p.run("postgres.up"))
    connection = psycopg2.connect(
        host="127.0.0.1", port=p.port, user="semantik", password=p.password, dbname="semantik", connect_timeout=5
    )
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        assert cursor.fetchone()[0] == "semantik"
    connection.close()


def test_unhealthy_container_fails_up_with_its_logs(docker_project_each_compose: DockerProject, tmp_path):
    p = docker_project_each_compose
    broken = tmp_path / "broken-health.yml"
    broken.write_text(
        "services:\n  postgres:\n    healthcheck:\n"
        "      test: ['CMD-SHELL', 'echo broken-on-purpose >&2; exit 1']\n"
        "      interval: 1s\n      timeout: 2s\n      retries: 2\n      start_period: 0s\n"
    )
    result = p.run("postgres.up", "--timeout", "60", COMPOSE_FILES=f"{COMPOSE_FILE}:{broken}")
    assert result.returncode == 1
    assert "unhealthy" in result.stderr and "last log lines" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_image_fails_clearly(docker_project_each_compose: DockerProject):
    result = docker_project_each_compose.run("postgres.up", POSTGRES_IMAGE="semantik-infra/does-not-exist:0")
    assert result.returncode == 1
    assert "POSTGRES_IMAGE" in result.stderr and "Traceback" not in result.stderr


def test_backup_restore_and_connection_test_on_docker(docker_project: DockerProject):
    import json

    p = docker_project
    _ok(p.run("postgres.up"))
    _ok(
        p.run(
            "postgres.shell",
            "-c",
            "CREATE TABLE t (v text); INSERT INTO t SELECT 'row ' || g FROM generate_series(1, 500) g",
        )
    )
    backup = _ok(p.run("postgres.backup", "--include-globals"), "backed up semantik", "saved roles")
    [archive] = archive_files(p.project_dir / "backups")
    manifest = json.loads(manifest_path(archive).read_text())
    assert manifest["backend"] == "docker" and manifest["tables"]["public.t"] == 500
    _ok(p.run("postgres.shell", "-c", "DELETE FROM t"))
    restore = _ok(p.run("postgres.restore", "latest", "--yes"), "(1 table)", "checksum ok")
    _ok(p.run("postgres.drill"), "exactly as archived", "500 rows")
    _ok(p.run("postgres.shell", "-c", "SELECT count(*) FROM t"), "500")
    connection = _ok(p.run("test.connection"), "all checks passed", "backend docker")
    for output in (backup, restore, connection):
        assert p.password not in output


def _in_terminal(project: DockerProject, *args: str) -> tuple[int, str]:
    """Run a task with a pseudo-terminal as stdin, stdout and stderr, as a user at a shell would."""
    import os
    import sys

    from tests.conftest import REPO

    master, slave = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "semantik_infra", *args],
        cwd=project.project_dir,
        env={**project.environ, "PYTHONPATH": str(REPO)},
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the terminal's last writer has exited
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return process.wait(timeout=300), b"".join(chunks).decode("utf-8", "replace")


def test_backup_and_restore_from_a_terminal(docker_project: DockerProject):
    # On a terminal `docker exec -t` would refuse the redirected stdin and mangle binary output.
    p = docker_project
    _ok(p.run("postgres.up"))
    _ok(p.run("postgres.shell", "-c", "CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g"))
    status, output = _in_terminal(p, "postgres.backup")
    assert status == 0 and "backed up semantik" in output, output
    _ok(p.run("postgres.shell", "-c", "DELETE FROM t"))
    status, output = _in_terminal(p, "postgres.restore", "latest", "--yes")
    assert status == 0 and "(1 table)" in output and "checksum ok" in output, output
    _ok(p.run("postgres.backups", "--verify"), "checksum ok")
    assert p.password not in output


def test_port_taken_fails_up_clearly(docker_project_each_compose: DockerProject):
    import socket

    p = docker_project_each_compose
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", p.port))
        holder.listen()
        result = p.run("postgres.up")
    assert result.returncode == 1
    assert f"port {p.port}" in result.stderr and "POSTGRES_PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_auto_on_a_fresh_project_docker_embedded_native_then_pull(docker_project: DockerProject, test_image: str):
    from semantik_infra.backends import resolve_auto
    from semantik_infra.config import load_settings

    def auto(**extra: str) -> str:
        environ = {**docker_project.environ, "SEMANTIK_PG_BACKEND": "auto", **extra}
        return resolve_auto(load_settings(environ=environ, cwd=docker_project.project_dir))

    assert auto() == "docker"  # the engine has the image
    absent = "semantik-infra/absent:0"
    assert auto(POSTGRES_IMAGE=absent) == "embedded"  # no image: the binaries pip installed
    assert auto(POSTGRES_IMAGE=absent, EMBEDDED_PG_MAJOR="17") == "native"  # not in the wheel: the system's
    assert auto(POSTGRES_IMAGE=absent, EMBEDDED_PG_MAJOR="17", PG_BIN="/nonexistent") == "docker"  # pull it
