"""Pure parts of backups: TOC counting, pg_dump options and versions, no-clobber publishing."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from semantik_infra.backup import check_pg_dump_version, count_toc_entries, pg_dump_argv
from semantik_infra.catalog import archive_name
from semantik_infra.errors import BackupError

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


LISTING = """\
;
; Archive created at 2026-11-25 12:00:00 UTC
;     dbname: semantik
;
215; 1259 16386 TABLE public docs semantik
3350; 0 16386 TABLE DATA public docs semantik
3351; 0 16390 TABLE DATA public "odd name" semantik
3200; 2613 16400 BLOB - 16400 semantik
"""


def test_toc_entries_are_counted_without_comments():
    assert count_toc_entries(LISTING) == 4


def test_pg_dump_argv_and_versions():
    assert pg_dump_argv("custom", 6, 1) == ["--format", "custom", "--compress", "6", "--no-password"]
    assert pg_dump_argv("directory", 0, 4, Path("/t"))[-4:] == ["--jobs", "4", "--file", "/t"]
    with pytest.raises(BackupError, match=r"pg_dump 14\.2 is older than the server \(PostgreSQL 15\.4\)"):
        check_pg_dump_version("pg_dump (PostgreSQL) 14.2 (Debian 14.2-1)", "15.4", 15)
    check_pg_dump_version("pg_dump (PostgreSQL) 16.1 (Debian 16.1-1)", "15.4", 15)


def test_publishing_never_replaces_an_archive(tmp_path: Path):
    from semantik_infra.backup import publish_archive

    final = tmp_path / archive_name("db", NOW)
    temp = tmp_path / ".partial"
    temp.write_bytes(b"new")
    publish_archive(temp, final)
    assert final.read_bytes() == b"new" and not temp.exists()
    temp.write_bytes(b"newer")
    with pytest.raises(BackupError, match="refusing to overwrite"):
        publish_archive(temp, final)
    assert final.read_bytes() == b"new"

    final_dir = tmp_path / archive_name("db", NOW, "directory")
    temp_dir = tmp_path / ".partial-dir"
    temp_dir.mkdir()
    (temp_dir / "toc.dat").write_bytes(b"toc")
    publish_archive(temp_dir, final_dir)
    assert (final_dir / "toc.dat").read_bytes() == b"toc" and not temp_dir.exists()
    temp_dir.mkdir()
    with pytest.raises(BackupError, match="refusing to overwrite"):
        publish_archive(temp_dir, final_dir)
    assert (final_dir / "toc.dat").read_bytes() == b"toc"
