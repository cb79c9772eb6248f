"""The env tasks run as a user runs them (a subprocess through Invoke's Program)."""

from __future__ import annotations

import subprocess
import sys

from dotenv import dotenv_values

from tests.conftest import REPO, clean_environ, run_task


def test_list_shows_every_collection_with_help():
    result = subprocess.run([sys.executable, "-m", "invoke", "--list"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name in ("env.init", "env.check", "postgres.up", "postgres.backup", "test.connection", "onboard", "doctor"):
        line = next(line for line in result.stdout.splitlines() if line.strip().startswith(name + " "))
        assert len(line.split()) > 1, f"{name} has no help line"


def test_console_script_program_works_from_any_directory(project_dir):
    nested = project_dir / "sub" / "dir"
    nested.mkdir(parents=True)
    env = clean_environ(POSTGRES_PASSWORD="x")
    result = run_task("env.check", environ=env, cwd=nested)
    assert result.returncode == 0, result.stderr
    assert f"project directory: {project_dir}" in result.stdout


def test_help_documents_every_flag(project_dir):
    result = run_task("--help", "env.init", environ=clean_environ(), cwd=project_dir)
    for flag in ("--force", "--length", "--example"):
        assert flag in result.stdout


def test_init_then_check_never_print_secrets(project_dir):
    env = clean_environ()
    first = run_task("env.init", environ=env, cwd=project_dir)
    assert first.returncode == 0, first.stderr
    assert "generated POSTGRES_PASSWORD, BACKUP_ENCRYPTION_KEY" in first.stdout
    written = dotenv_values(project_dir / ".env")
    secrets = [written["POSTGRES_PASSWORD"], written["BACKUP_ENCRYPTION_KEY"]]
    second = run_task("env.init", environ=env, cwd=project_dir)
    assert "nothing to do" in second.stdout
    check = run_task("env.check", environ=env, cwd=project_dir)
    forced = run_task("env.init", "--force", environ=env, cwd=project_dir)
    assert "kept the previous file" in forced.stdout
    for result in (first, second, check, forced):
        for secret in secrets:
            assert secret not in result.stdout + result.stderr
    assert "POSTGRES_PASSWORD" in check.stdout and "(set, hidden)" in check.stdout


def test_bad_input_is_one_line_and_exit_2(project_dir):
    (project_dir / ".env").write_text("POSTGRES_PORT=abc\n")
    result = run_task("env.check", environ=clean_environ(), cwd=project_dir)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: POSTGRES_PORT='abc' in .env: not a port number (1-65535)"
    short = run_task("env.init", "--length", "5", environ=clean_environ(), cwd=project_dir)
    assert short.returncode == 2 and "too short" in short.stderr and "Traceback" not in short.stderr
