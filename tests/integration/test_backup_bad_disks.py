"""Bad input and bad disks, against a real server and real filesystems: a BACKUP_DIR that is a
file, lives under /proc, sits on a read-only filesystem or is not writable by the user, and a
disk that fills up at the manifest. Each ends with one `error:` line naming BACKUP_DIR (or the
file) and the fix, leaves nothing under a final name, and `doctor` finds the same problem."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.integration.conftest import DbProject, one_error_line

# What this module tests is ours, not the server binaries': one local backend is enough.
pytestmark = [pytest.mark.integration, pytest.mark.native_only]
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a filesystem needs root")


def _doctor_failures(db: DbProject, **extra: str) -> list[str]:
    result = db.run("doctor", "--json", **extra)
    report = json.loads(result.stdout)
    failed = [f for f in report["findings"] if f["area"] == "backups" and f["status"] == "fail"]
    return [f"{f['summary']} | {f['hint']}" for f in failed]


def _nothing_published(directory: Path) -> None:
    if directory.is_dir():
        assert sorted(p.name for p in directory.iterdir() if p.name != "filler") == [], list(directory.iterdir())


@pytest.mark.parametrize("backup_dir", ["/etc/passwd", "/etc/passwd/backups", "/proc/semantik-backups"])
def test_a_backup_dir_that_cannot_exist_is_one_line(db: DbProject, backup_dir: str):
    result = db.run("postgres.backup", BACKUP_DIR=backup_dir)
    assert result.returncode in (1, 2)
    line = one_error_line(result)
    assert f"BACKUP_DIR={backup_dir}" in line, line
    assert any("BACKUP_DIR" in failure for failure in _doctor_failures(db, BACKUP_DIR=backup_dir))
    listing = db.run("postgres.backups", BACKUP_DIR=backup_dir)
    assert "Traceback" not in listing.stderr


@needs_root
def test_a_read_only_backup_dir_is_one_line(db: DbProject):
    db.backups.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(db.backups)]
    mounted = subprocess.run(mount, capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        result = db.run("postgres.backup")
        assert result.returncode == 1
        line = one_error_line(result)
        assert "read-only" in line and "BACKUP_DIR" in line
        assert any("read-only" in failure for failure in _doctor_failures(db))
    finally:
        subprocess.run(["umount", str(db.backups)], check=False)


def _unprivileged_python() -> tuple[str, str] | None:
    """A Python the `postgres` user can run with this venv's packages, or None."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    if os.geteuid() != 0 or python is None:
        return None
    site = sysconfig.get_paths()["purelib"]
    path = f"{REPO}:{site}"
    probe = subprocess.run(
        [python, "-c", "import psycopg2, cryptography, invoke, semantik_infra"],
        env={"PYTHONPATH": path, "PATH": "/usr/bin:/bin"},
        user="postgres",
        cwd="/",
        capture_output=True,
    )
    return (python, path) if probe.returncode == 0 else None


def test_a_backup_dir_the_user_cannot_write_is_one_line(db: DbProject):
    found = _unprivileged_python()
    if found is None:
        pytest.skip("needs root, and a Python the postgres user can run with this venv's packages")
    python, path = found
    backup_dir = Path(tempfile.mkdtemp(prefix="semantik-root-only-"))
    backup_dir.chmod(0o755)  # root's: the postgres user may look, not write
    try:
        env = {**db.environ, "PYTHONPATH": path, "BACKUP_DIR": str(backup_dir), "HOME": "/tmp"}
        result = subprocess.run(
            [python, "-m", "semantik_infra", "postgres.backup"],
            cwd=db.project_dir,
            env=env,
            user="postgres",
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        line = one_error_line(result)
        assert f"BACKUP_DIR={backup_dir}" in line and "not writable" in line
        _nothing_published(backup_dir)
    finally:
        shutil.rmtree(backup_dir, ignore_errors=True)


@needs_root
def test_a_disk_that_fills_up_at_the_manifest_is_one_line(db: DbProject):
    probe = db.run("postgres.backup", BACKUP_COMPRESSION="0")
    assert probe.returncode == 0, probe.stderr
    [archive] = db.archives()
    pages = -(-archive.stat().st_size // 4096)
    shutil.rmtree(db.backups)
    db.backups.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(db.backups)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        # Leave room for exactly the archive's pages: the archive fits, its manifest does not.
        stats = os.statvfs(db.backups)
        free = stats.f_bavail * stats.f_frsize
        with (db.backups / "filler").open("wb") as filler:
            filler.write(b"\0" * (free - pages * 4096))
        result = db.run("postgres.backup", BACKUP_COMPRESSION="0")
        assert result.returncode == 1
        line = one_error_line(result)
        assert "no space left" in line and "BACKUP_DIR" in line
        _nothing_published(db.backups)
    finally:
        subprocess.run(["umount", str(db.backups)], check=False)


def test_doctor_says_when_backup_dir_is_fine(db: DbProject):
    result = db.run("doctor", "--json")
    findings = [f for f in json.loads(result.stdout)["findings"] if f["area"] == "backups"]
    assert any(f["status"] == "ok" and "writable" in f["summary"] for f in findings), findings


@needs_root
@pytest.mark.parametrize("how", [("--jobs", "2"), ("--jobs", "2", "--in-place")], ids=["jobs", "jobs-in-place"])
def test_a_full_disk_under_a_parallel_restore_is_one_line_and_changes_nothing(db: DbProject, how: tuple[str, ...]):
    shutil.rmtree(db.backups, ignore_errors=True)
    db.backups.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(db.backups)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        assert db.run("postgres.backup", "--encrypt").returncode == 0
        stats = os.statvfs(db.backups)
        with (db.backups / "filler").open("wb") as filler:
            filler.write(b"\0" * (stats.f_bavail * stats.f_frsize))
        before = db.checksums()
        db.sql("CREATE TABLE only_live (v int)")
        result = db.run("postgres.restore", "latest", "--yes", *how)
        assert result.returncode == 1
        line = one_error_line(result)
        assert "no space left" in line and "BACKUP_DIR" in line, line
        assert db.checksums() == before and db.sql("SELECT count(*) FROM only_live") == [(0,)]
        assert not [name for name in db.databases() if "_restore_" in name]
        assert sorted(p.name for p in db.backups.iterdir() if p.name.startswith(".")) == []
    finally:
        subprocess.run(["umount", str(db.backups)], check=False)
