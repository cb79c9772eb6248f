"""Issue 11's "also" list without a server: the backups listing is a table with a header and a
total, dry-run lines are not marked done, and `postgres.down --help` says what --volumes deletes."""

from __future__ import annotations

from tests.conftest import clean_environ, run_task

NAMES = (
    "semantik-20250101T000000000001Z.dump",
    "semantik-20250201T000000000001Z.dump",
    "other-20250301T000000000001Z.dump",
)


def _project_with_backups(project_dir):
    backups = project_dir / "backups"
    backups.mkdir()
    for size, name in zip((10, 2000, 300000), NAMES, strict=True):
        (backups / name).write_bytes(b"x" * size)
    return clean_environ(SEMANTIK_PROJECT_DIR=str(project_dir), SEMANTIK_PG_BACKEND="native", POSTGRES_PASSWORD="x")


def test_backups_listing_has_aligned_columns_a_header_and_a_total(project_dir):
    result = run_task("postgres.backups", environ=_project_with_backups(project_dir), cwd=project_dir)
    assert result.returncode == 0, result.stderr
    header, *rows, total = result.stdout.strip().splitlines()
    assert header.split() == ["created", "(UTC)", "size", "database", "encryption", "state", "proven", "file"]
    assert len(rows) == 3
    file_column = {row.rindex(" ") + 1 for row in rows}
    assert len(file_column) == 1 and header.rindex(" ") + 1 in file_column  # "file" heads the file names
    size_ends = {row.index("B ") + 1 for row in rows}
    assert len(size_ends) == 1 and header.index("size") + 4 in size_ends  # sizes right-aligned under "size"
    assert total == f"3 backups, 294.9 KiB in {project_dir / 'backups'}"


def test_dry_run_lines_are_not_marked_done(project_dir):
    environ = _project_with_backups(project_dir)
    result = run_task("postgres.backups", "--prune", "--keep", "1", "--dry-run", environ=environ, cwd=project_dir)
    assert result.returncode == 0, result.stderr
    assert f"· would delete {NAMES[0]}" in result.stdout
    assert "✓ would delete" not in result.stdout


def test_down_help_says_volumes_also_deletes_the_native_data(project_dir):
    result = run_task("--help", "postgres.down", environ=clean_environ(), cwd=project_dir)
    assert "Docker only" not in result.stdout
    assert "the native data directory" in " ".join(result.stdout.split())
