"""The `postgres.import-sqlite` task's arguments, run as a user runs it: the optional PATH, and bad
options refused in one line before anything is opened."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, clean_environ, free_port, run_task


@pytest.fixture
def environ(project_dir: Path) -> dict[str, str]:
    # PostgreSQL configured at a port nothing listens on: these runs must stop before connecting.
    return clean_environ(
        SEMANTIK_PROJECT_DIR=str(project_dir),
        SEMANTIK_PG_BACKEND="external",
        POSTGRES_HOST="127.0.0.1",
        POSTGRES_PORT=str(free_port()),
        POSTGRES_PASSWORD="not-used-secret",
    )


def run(project_dir: Path, environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = run_task("postgres.import-sqlite", *args, environ=environ, cwd=project_dir, timeout=60)
    assert "Traceback" not in result.stdout + result.stderr
    assert "not-used-secret" not in result.stdout + result.stderr
    return result


def test_path_is_an_optional_positional_defaulting_to_sqlite_path(project_dir: Path, environ: dict[str, str]):
    default = run(project_dir, environ, "--dry-run")
    assert default.returncode == 1 and f"{project_dir}/data/semantik.db: no such file" in default.stderr
    given = run(project_dir, environ, "--dry-run", "elsewhere.db")
    assert given.returncode == 1 and "elsewhere.db: no such file" in given.stderr
    first = run(project_dir, environ, "other.db", "--dry-run")
    assert first.returncode == 1 and "other.db: no such file" in first.stderr
    invoke = subprocess.run(
        [str(Path(sys.executable).parent / "inv"), "-r", str(REPO), "postgres.import-sqlite", "third.db", "--yes"],
        env={**environ, "PYTHONPATH": str(REPO)},
        cwd=project_dir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert invoke.returncode == 1 and "third.db: no such file" in invoke.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--type-map", "datetime=timestamp"], "--type-map only applies with --create-schema"),
        (["--create-schema", "--type-map", "datetime"], "--type-map 'datetime'"),
        (["--numeric-time", "weekly"], "--numeric-time 'weekly'"),
        (["--source-timezone", "Mars/Olympus"], "unknown time zone"),
        (["--decode-fallback", "klingon"], "no such encoding"),
    ],
)
def test_bad_options_are_one_line_with_exit_2(project_dir: Path, environ: dict[str, str], args, message):
    result = run(project_dir, environ, *args)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert message in line


def test_sqlite_fallback_is_not_a_target(project_dir: Path):
    (project_dir / "data").mkdir()
    import sqlite3

    with sqlite3.connect(project_dir / "data" / "semantik.db") as connection:
        connection.execute("CREATE TABLE t (x)")
    result = run(project_dir, clean_environ(SEMANTIK_PROJECT_DIR=str(project_dir)))
    assert result.returncode == 2 and "PostgreSQL is not configured" in result.stderr


def test_destructive_options_have_no_short_flags(project_dir: Path, environ: dict[str, str]):
    result = run_task("--help", "postgres.import-sqlite", environ=environ, cwd=project_dir)
    assert result.returncode == 0
    assert "--replace" in result.stdout and "-r," not in result.stdout and "-y," not in result.stdout
