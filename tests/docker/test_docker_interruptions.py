"""Interrupting backups on the docker backend, against a real engine and container: Ctrl-C or
SIGTERM stops pg_dump inside the container too (killing `docker exec` alone does not), a pg_dump
left running by a SIGKILLed task is cancelled by the next task that touches the server, and
`postgres.up` reopens a database an interrupted swap left refusing connections."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import REPO, archive_files
from tests.docker.conftest import DockerProject, _docker_project, project_container

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BIG_TABLE = (
    "CREATE TABLE big AS SELECT g AS id, md5(g::text) || repeat(md5((g * 3)::text), 6) AS payload"
    " FROM generate_series(1, 1000000) g"
)


@pytest.fixture(scope="module")
def busy_docker(test_image: str) -> Iterator[DockerProject]:
    """One container for the module, holding enough data that pg_dump -Z9 runs for many seconds."""
    for project in _docker_project(test_image, {"BACKUP_COMPRESSION": "9"}):
        up = project.run("postgres.up")
        assert up.returncode == 0, up.stdout + up.stderr
        filled = project.run("postgres.shell", "-c", BIG_TABLE)
        assert filled.returncode == 0, filled.stdout + filled.stderr
        yield project


def _pg_dumps(project: DockerProject) -> list[str]:
    """Command lines of the pg_dump processes running inside the container."""
    top = project_container(project).top(ps_args="-eo pid,args")
    return [" ".join(row) for row in top.get("Processes") or [] if "pg_dump" in " ".join(row)]


def _start(project: DockerProject, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "semantik_infra", *args],
        cwd=project.project_dir,
        env={**project.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        process_group=0,
    )


def _wait_for_pg_dump(project: DockerProject, task: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _pg_dumps(project):
            time.sleep(1.0)  # well into the COPY
            return
        if task.poll() is not None:
            raise AssertionError(f"the backup ended before pg_dump ran: {task.communicate()}")
        time.sleep(0.1)
    raise AssertionError("pg_dump never ran in the container")


def _eventually_no_pg_dump(project: DockerProject, timeout: float) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := _pg_dumps(project)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


@pytest.mark.parametrize(
    ("send", "code", "word"),
    [
        (lambda task: os.killpg(task.pid, signal.SIGINT), 130, "interrupted"),
        (lambda task: task.send_signal(signal.SIGTERM), 143, "terminated"),
    ],
    ids=["ctrl-c", "sigterm"],
)
def test_interrupting_a_backup_stops_pg_dump_inside_the_container(busy_docker: DockerProject, send, code, word):
    task = _start(busy_docker, "postgres.backup")
    _wait_for_pg_dump(busy_docker, task)
    send(task)
    _, stderr = task.communicate(timeout=60)
    assert task.returncode == code and stderr.strip() == f"{word}: no backup written", stderr
    assert _eventually_no_pg_dump(busy_docker, 3) == []
    assert not (archive_files(busy_docker.project_dir / "backups"))


def test_a_pg_dump_orphaned_by_sigkill_is_cancelled_by_the_next_task(busy_docker: DockerProject):
    task = _start(busy_docker, "postgres.backup")
    _wait_for_pg_dump(busy_docker, task)
    os.killpg(task.pid, signal.SIGKILL)  # no cleanup at all, docker exec included
    task.communicate(timeout=30)
    assert _pg_dumps(busy_docker), "pg_dump should outlive its killed task inside the container"
    nxt = busy_docker.run("postgres.leftovers")
    assert nxt.returncode == 0, nxt.stdout + nxt.stderr
    assert "cancelled" in nxt.stdout and "pg_dump" in nxt.stdout, nxt.stdout
    assert _eventually_no_pg_dump(busy_docker, 5) == []


def test_up_reopens_a_database_a_killed_swap_left_closed(busy_docker: DockerProject):
    closing = busy_docker.run(
        "postgres.shell", "--database", "postgres", "-c", "ALTER DATABASE semantik WITH ALLOW_CONNECTIONS false"
    )
    assert closing.returncode == 0, closing.stdout + closing.stderr
    refused = busy_docker.run("postgres.backup")
    assert refused.returncode == 1 and "inv postgres.up" in refused.stderr, refused.stderr
    up = busy_docker.run("postgres.up")
    assert up.returncode == 0 and "reopened database semantik" in up.stdout, up.stdout + up.stderr
    shell = busy_docker.run("postgres.shell", "-c", "SELECT 'open again'")
    assert "open again" in shell.stdout
