"""Restore drills against a real server: a backup is proven by restoring it into a throwaway
database and comparing every table's exact rows (counted from the archive's data stream) and every
sequence; the live database is never touched, the throwaway database never stays, and the
outcome is recorded beside the archive."""

from __future__ import annotations

import json
import shutil
import signal

import pytest

from semantik_infra.drill import drill_path
from semantik_infra.manifest import manifest_path
from tests.integration.conftest import DbProject, one_error_line, start_task, wait_for_child

# Drills run pg_restore like a restore does: one local backend is enough here.
pytestmark = [pytest.mark.integration, pytest.mark.native_only]

WEIRD = """
CREATE SCHEMA "my.schema";
CREATE TABLE "my.schema"."Weird ""Table"" Name" (id serial PRIMARY KEY, v text);
INSERT INTO "my.schema"."Weird ""Table"" Name" (v) SELECT 'line' || g || E'\\n' FROM generate_series(1, 37) g;
CREATE TABLE empty (a int);
"""


def _throwaways(db: DbProject) -> set[str]:
    return {name for name in db.databases() if name.startswith(f"{db.database}_restore_")}


def test_a_drill_proves_the_backup_and_records_it(db: DbProject):
    db.sql(WEIRD)
    assert db.run("postgres.backup").returncode == 0
    before = db.checksums()
    result = db.run("postgres.drill")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "checksum ok" in result.stdout
    assert "proven:" in result.stdout and "exactly as archived" in result.stdout
    [archive] = db.archives()
    record = json.loads(drill_path(archive).read_text())
    assert record["ok"] is True and record["problems"] == []
    # authors 3 + docs 2001 + weird 37 + empty 0
    assert record["tables"] == 4 and record["rows"] == 3 + 2001 + 37
    assert db.checksums() == before
    assert _throwaways(db) == set()


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
def test_every_compression_drills(db: DbProject, encrypt: bool):
    for compression in ("zstd:1", "gzip:6", "none"):
        args = ["postgres.backup", "--encrypt"] if encrypt else ["postgres.backup"]
        assert db.run(*args, BACKUP_COMPRESSION=compression).returncode == 0
    result = db.run("postgres.drill", "--all")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 of 3 backups proven" in result.stdout


def test_a_changed_archive_fails_the_drill_and_says_why(db: DbProject):
    assert db.run("postgres.backup", BACKUP_COMPRESSION="none").returncode == 0
    [archive] = db.archives()
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    result = db.run("postgres.drill", str(archive))
    assert result.returncode == 1
    assert "checksum mismatch" in one_error_line(result)
    assert _throwaways(db) == set()


def test_an_archive_without_manifest_is_drilled_and_says_the_checksum_was_not_checked(db: DbProject):
    assert db.run("postgres.backup").returncode == 0
    [archive] = db.archives()
    elsewhere = db.project_dir / "made-elsewhere.dump.zst"
    shutil.copy(archive, elsewhere)
    result = db.run("postgres.drill", str(elsewhere))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no manifest: checksum not checked" in result.stdout
    assert not manifest_path(elsewhere).exists()


def test_all_with_nothing_to_drill_is_one_line(db: DbProject):
    result = db.run("postgres.drill", "--all")
    assert result.returncode == 1 and "no backups of" in one_error_line(result)


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_drill_drops_its_throwaway_database(big_project, how: signal.Signals):
    project_dir, env = big_project
    from tests.conftest import run_task

    assert run_task("postgres.backup", environ=env, cwd=project_dir).returncode == 0
    task = start_task(project_dir, env, "postgres.drill")
    wait_for_child(task, "pg_restore")
    task.send_signal(how)
    _, stderr = task.communicate(timeout=120)
    assert task.returncode in (130, 143), stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    listing = run_task("postgres.leftovers", environ=env, cwd=project_dir)
    assert "_restore_" not in listing.stdout, listing.stdout


def test_listing_and_doctor_say_whether_the_newest_backup_was_proven(db: DbProject):
    assert db.run("postgres.backup").returncode == 0
    doctor = json.loads(db.run("doctor", "--json").stdout)
    warnings = [f["summary"] for f in doctor["findings"] if f["area"] == "backups" and f["status"] == "warn"]
    assert any("never drilled" in summary for summary in warnings), warnings
    assert db.run("postgres.backups").stdout.splitlines()[1].split()[-2] == "never"
    assert db.run("postgres.drill").returncode == 0
    row = db.run("postgres.backups").stdout.splitlines()[1]
    assert "never" not in row and "FAILED" not in row
    doctor = json.loads(db.run("doctor", "--json").stdout)
    assert not [f for f in doctor["findings"] if "drill" in f["summary"] and f["status"] != "ok"]
    stale = json.loads(db.run("doctor", "--json", BACKUP_MAX_AGE_DAYS="0").stdout)
    assert any("days old" in f["summary"] and f["status"] == "warn" for f in stale["findings"])
