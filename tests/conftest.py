"""Shared fixtures: isolated project directories, running tasks as a user would (a subprocess of
`python -m semantik_infra`), and `pg_cluster`, a real PostgreSQL cluster for the session started
through the project's own native backend."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from semantik_infra.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
# Every character that breaks naive URL or shell handling, plus a space.
HOSTILE_PASSWORD = "p@ss:w/rd#%?&'\" x"
_OURS = ("DATABASE_URL", "POSTGRES_", "DB_", "SEMANTIK_", "COMPOSE_", "BACKUP_", "PG", "SQLITE_PATH")


def clean_environ(**extra: str) -> dict[str, str]:
    """The process environment without any of our variables (or libpq's PG*), plus `extra`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    return {**base, **extra}


def make_project_dir(prefix: str = "semantik-test-") -> Path:
    """A fresh project directory the `postgres` user can reach (pytest's tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    (path / "env").mkdir()
    shutil.copy(REPO / "env" / ".env.example", path / "env" / ".env.example")
    shutil.copy(REPO / "env" / ".env.docker.example", path / "env" / ".env.docker.example")
    return path


def archive_files(directory: Path) -> list[Path]:
    """The backup archives in `directory` (`.dump`, `.dump.zst`, `.enc`, `.dumpdir`), sorted by name."""
    from semantik_infra.catalog import parse_archive_name

    if not directory.is_dir():
        return []
    return sorted(path for path in directory.iterdir() if parse_archive_name(path.name) is not None)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_task(
    *args: str, environ: Mapping[str, str], cwd: Path, timeout: float = 180, input_text: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `semantik-infra ARGS` as a user would, capturing output."""
    env = {**environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "semantik_infra", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input_text,
        stdin=None if input_text is not None else subprocess.DEVNULL,
    )


@dataclass(frozen=True)
class RunningCluster:
    """A running native cluster and the environment that points the tasks at it."""

    project_dir: Path
    environ: dict[str, str]
    settings: Settings
    port: int
    password: str


def cluster_environ(project_dir: Path, port: int, password: str = HOSTILE_PASSWORD, **extra: str) -> dict[str, str]:
    """An environment for a native cluster in `project_dir` on `port`."""
    return clean_environ(
        SEMANTIK_PROJECT_DIR=str(project_dir),
        SEMANTIK_PG_BACKEND="native",
        POSTGRES_HOST="127.0.0.1",
        POSTGRES_PORT=str(port),
        POSTGRES_USER="semantik",
        POSTGRES_PASSWORD=password,
        POSTGRES_DB="semantik",
        **extra,
    )


def start_cluster(project_dir: Path | None = None, password: str = HOSTILE_PASSWORD) -> RunningCluster:
    """Start a native cluster through the project's backend in a fresh project directory."""
    from semantik_infra.backends.native import NativeBackend

    project_dir = project_dir or make_project_dir()
    port = free_port()
    environ = cluster_environ(project_dir, port, password)
    settings = load_settings(environ=environ, cwd=project_dir)
    NativeBackend(settings).start()
    return RunningCluster(project_dir, environ, settings, port, password)


def destroy_cluster(cluster: RunningCluster) -> None:
    """Stop the cluster and delete its project directory."""
    from semantik_infra.backends.native import NativeBackend

    NativeBackend(cluster.settings).destroy_data()
    shutil.rmtree(cluster.project_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[RunningCluster]:
    """A real PostgreSQL server for the whole test session (native backend, hostile password)."""
    cluster = start_cluster()
    try:
        yield cluster
    finally:
        destroy_cluster(cluster)


@pytest.fixture
def project_dir() -> Iterator[Path]:
    """A fresh, empty project directory with the example env files."""
    path = make_project_dir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
