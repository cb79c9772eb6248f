"""Verification that cannot be skipped or fooled, against a real server: a manifest that exists
is either valid and authentic or the restore is refused; an archive without one restores only
after a confirmation that says its checksum cannot be checked; temp files and half-published
backups are visible at once; flags that would do nothing, or something dangerous by a slip of one
letter, are refused."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from semantik_infra.manifest import manifest_path
from semantik_infra.secrets import generate_encryption_key
from tests.conftest import REPO, RunningCluster
from tests.integration.conftest import DbProject, change_everything, db_project, drop_project, one_error_line

pytestmark = pytest.mark.integration

# Row data as it sits in an uncompressed archive: one byte of it changes, and pg_restore would
# happily restore the wrong value.
ROW_BYTES = "Zürich".encode()


def _plain_backup(db: DbProject, **extra: str):
    result = db.run("postgres.backup", BACKUP_COMPRESSION="0", **extra)
    assert result.returncode == 0, result.stdout + result.stderr
    return db.archives()[-1]


def _flip_row_byte(archive) -> None:
    data = bytearray(archive.read_bytes())
    data[data.index(ROW_BYTES)] ^= 0x20  # 'Z' -> 'z': the TOC still reads, a row silently differs
    archive.write_bytes(bytes(data))


def _assert_unchanged(db: DbProject, before: tuple) -> None:
    assert (db.checksums(), db.databases()) == before


def _state(db: DbProject) -> tuple:
    return db.checksums(), db.databases()


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (lambda text: text[: len(text) // 2], "not valid JSON"),
        (lambda text: re.sub(r'"sha256": "[0-9a-f]+"', '"sha256": "zz"', text), "sha256 is not a hex digest"),
    ],
    ids=["not-json", "bad-sha256"],
)
def test_a_manifest_that_cannot_be_read_refuses_the_restore(db: DbProject, damage, problem: str):
    archive = _plain_backup(db)
    _flip_row_byte(archive)
    manifest = manifest_path(archive)
    manifest.write_text(damage(manifest.read_text()))
    change_everything(db)
    before = _state(db)
    result = db.run("postgres.restore", "latest", "--yes")
    assert result.returncode == 1
    line = one_error_line(result)
    assert manifest.name in line and problem in line
    _assert_unchanged(db, before)


def test_the_manifest_beside_a_renamed_archive_is_used(db: DbProject):
    archive = _plain_backup(db)
    renamed = db.project_dir / "my-backup.dump"
    shutil.copy(archive, renamed)
    shutil.copy(manifest_path(archive), manifest_path(renamed))
    _flip_row_byte(renamed)
    change_everything(db)
    before = _state(db)
    result = db.run("postgres.restore", str(renamed), "--yes")
    assert result.returncode == 1 and "checksum mismatch" in one_error_line(result)
    _assert_unchanged(db, before)
    # Intact, the renamed copy restores normally, checked against its manifest.
    shutil.copy(archive, renamed)
    restored = db.run("postgres.restore", str(renamed), "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "checksum ok" in restored.stdout


def test_a_backup_of_another_database_needs_into_current(db: DbProject, pg_cluster: RunningCluster):
    archive = _plain_backup(db)
    other = db_project(pg_cluster, BACKUP_ENCRYPTION_KEY=db.environ["BACKUP_ENCRYPTION_KEY"])
    try:
        other.sql("CREATE TABLE mine AS SELECT 1 AS v")
        refused = other.run("postgres.restore", str(archive), "--yes")
        assert refused.returncode == 2
        line = one_error_line(refused)
        assert db.database in line and other.database in line and "--into-current" in line
        assert other.sql("SELECT count(*) FROM mine") == [(1,)]
        restored = other.run("postgres.restore", str(archive), "--yes", "--into-current")
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert other.checksums() == db.checksums()
    finally:
        drop_project(other)


def test_an_archive_without_manifest_restores_only_when_confirmed_and_never_with_drop_old(db: DbProject):
    original = db.checksums()
    archive = _plain_backup(db)
    manifest_path(archive).unlink()
    change_everything(db)
    before = _state(db)
    unconfirmed = db.run("postgres.restore", "latest")
    assert unconfirmed.returncode == 2
    line = one_error_line(unconfirmed)
    assert "checksum cannot be checked" in line and "--yes" in line
    drop_old = db.run("postgres.restore", "latest", "--yes", "--drop-old")
    assert drop_old.returncode == 2 and "--drop-old" in one_error_line(drop_old)
    _assert_unchanged(db, before)
    restored = db.run("postgres.restore", "latest", "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "checksum cannot be checked" in restored.stdout
    assert db.checksums() == original


def test_a_tampered_archive_with_a_recomputed_checksum_is_refused(db: DbProject):
    archive = _plain_backup(db)
    _flip_row_byte(archive)
    manifest = json.loads(manifest_path(archive).read_text())
    manifest["sha256"] = __import__("hashlib").sha256(archive.read_bytes()).hexdigest()
    manifest_path(archive).write_text(json.dumps(manifest, indent=2))
    change_everything(db)
    before = _state(db)
    result = db.run("postgres.restore", "latest", "--yes")
    assert result.returncode == 1 and "does not authenticate" in one_error_line(result)
    _assert_unchanged(db, before)
    listing = db.run("postgres.backups")
    assert "does not authenticate" in listing.stdout


def test_manifests_record_the_key_and_say_when_they_are_unauthenticated(db: DbProject):
    from semantik_infra.encryption import key_fingerprint, parse_key

    signed = _plain_backup(db)
    manifest = json.loads(manifest_path(signed).read_text())
    assert manifest["key_fingerprint"] == key_fingerprint(parse_key(db.environ["BACKUP_ENCRYPTION_KEY"]))
    assert manifest["mac"] and manifest["version"] == 2
    unsigned = _plain_backup(db, BACKUP_ENCRYPTION_KEY="")
    assert json.loads(manifest_path(unsigned).read_text())["mac"] is None
    # A manifest written before manifests were authenticated (version 1) still reads.
    old = _plain_backup(db)
    legacy = json.loads(manifest_path(old).read_text())
    del legacy["mac"]
    legacy.update(version=1, key_fingerprint=None)
    manifest_path(old).write_text(json.dumps(legacy, indent=2))
    listing = db.run("postgres.backups")
    lines = {path.name: line for path in (old, unsigned) for line in listing.stdout.splitlines() if path.name in line}
    assert all("unauthenticated" in line for line in lines.values()), listing.stdout
    signed_line = next(line for line in listing.stdout.splitlines() if signed.name in line)
    assert "unauthenticated" not in signed_line and "authenticated" in signed_line
    restored = db.run("postgres.restore", str(old), "--yes")
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "not authenticated" in restored.stdout


def _backup_dying_after_link(db: DbProject, suffix: str) -> subprocess.CompletedProcess[str]:
    """Run a backup that is SIGKILL-like dead (no cleanup at all) right after it links `*suffix`."""
    script = (
        "import os, sys\n"
        "real = os.link\n"
        "def link(src, dst, *args, **kwargs):\n"
        "    real(src, dst, *args, **kwargs)\n"
        f"    if str(dst).endswith({suffix!r}):\n"
        "        os._exit(137)\n"
        "os.link = link\n"
        "sys.argv = ['semantik-infra', 'postgres.backup']\n"
        "from semantik_infra.cli import main\n"
        "main()\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=db.project_dir,
        env={**db.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_backup_killed_at_publication_never_leaves_an_archive_without_manifest(db: DbProject):
    assert _backup_dying_after_link(db, ".dump.zst").returncode == 137
    [archive] = db.archives()
    assert manifest_path(archive).exists()
    verified = db.run("postgres.backups", "--verify")
    assert verified.returncode == 0 and "checksum ok" in verified.stdout, verified.stdout + verified.stderr
    # Killed between the manifest and the archive: no archive, and the lone manifest is reported.
    archive.unlink()
    manifest_path(archive).unlink()
    assert _backup_dying_after_link(db, ".json").returncode == 137
    assert db.archives() == []
    [lone] = db.backups.glob("*.json")
    listing = db.run("postgres.backups")
    assert lone.name in listing.stdout and "without its archive" in listing.stdout
    old = lone.stat().st_mtime - 3600
    os.utime(lone, (old, old))
    pruned = db.run("postgres.backups", "--prune", "--keep", "1")
    assert pruned.returncode == 0 and not lone.exists(), pruned.stdout + pruned.stderr


def test_temp_files_are_listed_at_once_as_in_progress_or_abandoned(db: DbProject):
    archive = _plain_backup(db)
    gone = subprocess.Popen(["true"])
    gone.wait()
    alive = subprocess.Popen(["sleep", "60"])
    try:
        abandoned = db.backups / f".{archive.name}.{gone.pid}.abc123.partial"
        running = db.backups / f".{archive.name}.{alive.pid}.def456.partial"
        for path in (abandoned, running):
            path.write_bytes(b"half an archive")
        old = abandoned.stat().st_mtime - 120
        os.utime(abandoned, (old, old))
        listing = db.run("postgres.backups")
        lines = listing.stdout.splitlines()
        assert any(abandoned.name in line and "abandoned" in line for line in lines), listing.stdout
        assert any(running.name in line and "in progress" in line for line in lines), listing.stdout
        pruned = db.run("postgres.backups", "--prune", "--keep", "1")
        assert pruned.returncode == 0 and not abandoned.exists() and running.exists()
    finally:
        alive.kill()
        alive.wait()


def _in_terminal(db: DbProject, *args: str) -> tuple[int, str]:
    """Run a task with a pseudo-terminal as stdin, stdout and stderr, as a user at a shell would."""
    master, slave = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "semantik_infra", *args],
        cwd=db.project_dir,
        env={**db.environ, "PYTHONPATH": str(REPO)},
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


def test_restore_shows_progress_on_a_terminal(db: DbProject):
    archive = _plain_backup(db)
    status, output = _in_terminal(db, "postgres.restore", "latest", "--yes")
    assert status == 0, output
    from semantik_infra.console import format_bytes

    assert re.search(rf"restoring: [0-9.]+ \S+ of {re.escape(format_bytes(archive.stat().st_size))}", output), output


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("postgres.backups", "--keep", "2"), "--prune"),
        (("postgres.backups", "--dry-run"), "--prune"),
        (("postgres.backups", "--prune", "--keep-days", "0"), "--keep-days"),
        (("postgres.backups", "--prune", "--keep", "0"), "--keep"),
        (("postgres.backup", "--jobs", "2"), "--format directory"),
        (("postgres.backup", "--format", "directory", "--jobs", "0"), "--jobs"),
        (("postgres.restore", "latest", "--yes", "--jobs", "0"), "--jobs"),
        (("postgres.restore", "latest", "--yes", "--in-place", "--drop-old"), "--drop-old"),
    ],
)
def test_flags_that_would_do_nothing_are_refused(db: DbProject, args: tuple[str, ...], fragment: str):
    _plain_backup(db)
    before = _state(db)
    result = db.run(*args)
    assert result.returncode == 2 and fragment in one_error_line(result)
    _assert_unchanged(db, before)


def test_destructive_flags_have_no_short_form(db: DbProject):
    for task in ("postgres.restore", "postgres.backups", "postgres.leftovers"):
        shown = db.run("--help", task)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        shorts = [line for line in shown.stdout.splitlines() if re.match(r"^\s+-[A-Za-z][, ]", line)]
        assert shorts == [], f"{task}: {shorts}"
    _plain_backup(db)
    before = _state(db)
    slip = db.run("postgres.restore", "latest", "-y", "-d")
    assert slip.returncode != 0
    _assert_unchanged(db, before)


def test_a_wrong_key_names_its_fingerprint_and_the_way_out(db: DbProject):
    archive = _plain_backup(db)
    fingerprint = json.loads(manifest_path(archive).read_text())["key_fingerprint"]
    result = db.run("postgres.restore", "latest", "--yes", BACKUP_ENCRYPTION_KEY=generate_encryption_key())
    assert result.returncode == 1
    line = one_error_line(result)
    assert fingerprint in line and "BACKUP_ENCRYPTION_KEY" in line
