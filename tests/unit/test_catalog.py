"""Pure parts of the backups directory: archive and temp names, retention selection, temp files in
progress or abandoned, and BACKUP_DIR problems named in one line."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from semantik_infra.catalog import BackupEntry, archive_name, parse_archive_name, select_for_pruning
from semantik_infra.errors import ConfigError
from tests.conftest import sample_manifest

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_archive_names_sort_and_parse_back():
    first = archive_name("semantik", NOW)
    second = archive_name("semantik", NOW + timedelta(microseconds=1))
    assert first == "semantik-20261125T120000000000Z.dump" and first < second
    assert parse_archive_name(first) == ("semantik", NOW)
    assert parse_archive_name("my-db-20261125T120000000000Z.dumpdir") == ("my-db", NOW)
    assert parse_archive_name("notes.txt") is None
    with pytest.raises(ConfigError):
        archive_name("../etc", NOW)


def entry(days_old: float, database: str = "db", with_manifest: bool = True) -> BackupEntry:
    created = NOW - timedelta(days=days_old)
    return BackupEntry(
        Path(archive_name(database, created)), database, created, sample_manifest() if with_manifest else None
    )


def created(chosen: list[BackupEntry]) -> list[datetime]:
    return sorted(e.created for e in chosen)


def test_prune_by_count_and_age_never_the_newest():
    entries = [entry(d) for d in (10, 5, 3, 1, 0.5)]
    assert created(select_for_pruning(entries, keep=2, keep_days=None, now=NOW)) == created(entries[:3])
    assert created(select_for_pruning(entries, keep=None, keep_days=4, now=NOW)) == created(entries[:2])
    # Both given: kept if either rule keeps it.
    assert created(select_for_pruning(entries, keep=1, keep_days=4, now=NOW)) == created(entries[:2])
    old = [entry(100), entry(50)]
    assert select_for_pruning(old, keep=None, keep_days=1, now=NOW) == [old[0]]  # the newest survives anyway
    with pytest.raises(ConfigError, match="--keep"):
        select_for_pruning(entries, keep=None, keep_days=None, now=NOW)
    with pytest.raises(ConfigError, match="at least 1"):
        select_for_pruning(entries, keep=0, keep_days=None, now=NOW)
    with pytest.raises(ConfigError, match="negative"):
        select_for_pruning(entries, keep=None, keep_days=-1, now=NOW)


def test_prune_counts_each_database_separately():
    ours = [entry(3), entry(1)]
    other = [entry(9, "other"), entry(8, "other"), entry(7, "other")]
    chosen = select_for_pruning(ours + other, keep=1, keep_days=None, now=NOW)
    assert created(chosen) == created([ours[0], *other[:2]])  # each database keeps its newest


def test_prune_keeps_the_newest_backup_that_has_a_manifest():
    good, damaged = entry(5), entry(1, with_manifest=False)
    older = entry(9)
    assert select_for_pruning([older, good, damaged], keep=1, keep_days=None, now=NOW) == [older]


def test_partial_names_carry_the_writer_pid():
    from semantik_infra.catalog import partial_writer_pid

    final = archive_name("my-db", NOW)
    assert partial_writer_pid(f".{final}.4242.k3j_x9az.partial") == 4242
    assert partial_writer_pid(f".{archive_name('db', NOW, 'directory')}.77.partial") == 77
    assert partial_writer_pid(final) is None
    assert partial_writer_pid(".env.partial") is None
    assert partial_writer_pid(f".{final}.json.4242.k3j_x9az.partial") == 4242


def test_partials_are_in_progress_until_their_writer_is_gone_and_they_sit_idle(tmp_path: Path):
    import os
    import subprocess

    from semantik_infra.catalog import ABANDONED, ABANDONED_AFTER_SECONDS, IN_PROGRESS, list_partials

    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs
    final = archive_name("db", NOW)
    dead = tmp_path / f".{final}.{gone.pid}.abcd1234.partial"
    alive = tmp_path / f".{final}.{os.getpid()}.abcd1234.partial"
    manifest = tmp_path / f".{final}.json.{gone.pid}.abcd1234.partial"
    now = 1_800_000_000.0
    for path in (dead, alive, manifest):
        path.write_bytes(b"x")
        os.utime(path, (now, now))
    (tmp_path / final).write_bytes(b"archive")

    def states(at: float) -> dict[str, str]:
        return {partial.path.name: partial.state for partial in list_partials(tmp_path, now=at)}

    # A writer may just have died while its last write is seconds old: give it a minute.
    assert states(now) == {dead.name: IN_PROGRESS, alive.name: IN_PROGRESS, manifest.name: IN_PROGRESS}
    later = states(now + ABANDONED_AFTER_SECONDS)
    assert later == {dead.name: ABANDONED, alive.name: IN_PROGRESS, manifest.name: ABANDONED}


def test_backup_dir_problems_name_the_variable(tmp_path: Path):
    from semantik_infra.catalog import prepare_backup_dir

    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ConfigError, match=rf"^BACKUP_DIR={afile} is a file"):
        prepare_backup_dir(afile)
    with pytest.raises(ConfigError, match=rf"^BACKUP_DIR={afile}/sub cannot be created: {afile} is a file"):
        prepare_backup_dir(afile / "sub")
    fresh = tmp_path / "new" / "dir"
    prepare_backup_dir(fresh)
    assert fresh.is_dir() and list(fresh.iterdir()) == []


def test_every_temp_file_a_backup_or_restore_writes_is_known_by_its_name(tmp_path: Path):
    import os

    from semantik_infra.backup import temp_path
    from semantik_infra.catalog import TEMP_SUFFIXES, partial_writer_pid

    final = tmp_path / archive_name("db", NOW, suffix=".dump.zst.enc")
    # A task killed with SIGKILL leaves these behind: `postgres.backups` must list and prune them.
    for suffix in ("", *TEMP_SUFFIXES):
        temp = temp_path(final, suffix)
        assert partial_writer_pid(temp.name) == os.getpid(), temp.name
    assert ".toc" in TEMP_SUFFIXES and ".expanded" in TEMP_SUFFIXES
