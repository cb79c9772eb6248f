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


# --- issue 11: the setup is a recorded fact -----------------------------------------------------


def _line_of(path, name: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(name + "="))


def test_a_typo_in_env_is_one_line_for_every_task_and_env_init_keeps_the_key(project_dir):
    """Issue 11 item 1: a stray quote on the key's line must not make the key vanish."""
    env = clean_environ(SEMANTIK_PG_BACKEND="native")
    assert run_task("env.init", environ=env, cwd=project_dir).returncode == 0
    dot_env = project_dir / ".env"
    key = dotenv_values(dot_env)["BACKUP_ENCRYPTION_KEY"]
    number = _line_of(dot_env, "BACKUP_ENCRYPTION_KEY")
    dot_env.write_text(dot_env.read_text().replace(f"BACKUP_ENCRYPTION_KEY={key}", f"BACKUP_ENCRYPTION_KEY='{key}"))
    broken = dot_env.read_bytes()
    expected = f"{dot_env}: line {number}: BACKUP_ENCRYPTION_KEY: the value's opening ' is never closed"
    for args in (
        ["env.check"],
        ["env.init"],
        ["postgres.backup", "--encrypt"],
        ["postgres.status"],
        ["test.connection", "--quick"],
        ["onboard"],
    ):
        result = run_task(*args, environ=env, cwd=project_dir)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert expected in result.stderr + result.stdout, (args, result.stderr)
        assert "Traceback" not in result.stderr and key not in result.stdout + result.stderr
    doctor = run_task("doctor", environ=env, cwd=project_dir)
    assert doctor.returncode == 1 and expected in doctor.stdout and key not in doctor.stdout
    assert dot_env.read_bytes() == broken
    assert not list(project_dir.glob(".env.*.bak"))


def test_env_init_keeps_a_backup_whenever_it_changes_an_existing_file(project_dir):
    dot_env = project_dir / ".env"
    dot_env.write_text("SEMANTIK_PG_BACKEND=native\nPOSTGRES_PASSWORD=mine-0123456789-0123456789\n")
    dot_env.chmod(0o600)
    before = dot_env.read_bytes()
    result = run_task("env.init", environ=clean_environ(), cwd=project_dir)
    assert result.returncode == 0, result.stderr
    [backup] = project_dir.glob(".env.*.bak")
    assert backup.read_bytes() == before and backup.stat().st_mode & 0o777 == 0o600
    assert dotenv_values(dot_env)["POSTGRES_PASSWORD"] == "mine-0123456789-0123456789"
    assert dotenv_values(dot_env)["BACKUP_ENCRYPTION_KEY"]


def test_env_init_refuses_to_replace_a_symlinked_env_unless_asked(project_dir):
    """Issue 11 item 4."""
    shared = project_dir / "shared"
    shared.mkdir()
    real = shared / "real.env"
    real.write_text("SEMANTIK_PG_BACKEND=native\nPOSTGRES_PASSWORD=\n")
    (project_dir / ".env").symlink_to(real)
    refused = run_task("env.init", environ=clean_environ(), cwd=project_dir)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: {project_dir / '.env'} is a symbolic link to {real}: refusing to replace it with a regular file"
        " (`inv env.init --follow-symlinks` writes to the link's target instead)"
    ]
    assert (project_dir / ".env").is_symlink() and real.read_text().endswith("POSTGRES_PASSWORD=\n")
    followed = run_task("env.init", "--follow-symlinks", environ=clean_environ(), cwd=project_dir)
    assert followed.returncode == 0, followed.stderr
    assert (project_dir / ".env").is_symlink() and dotenv_values(real)["POSTGRES_PASSWORD"]
    assert list(shared.glob("real.env.*.bak"))


def test_docker_variant_flow_from_the_readme(project_dir):
    """Issue 11 item 11: the documented Docker variant flow works; a mistyped example is an error."""
    env = clean_environ()
    assert run_task("env.init", environ=env, cwd=project_dir).returncode == 0
    plain = (project_dir / ".env").read_bytes()
    typo = run_task("env.init", "--example", ".env.docker.exampel", environ=env, cwd=project_dir)
    assert typo.returncode == 2 and "--example .env.docker.exampel: no such file in env/" in typo.stderr
    variant = run_task("env.init", "--example", ".env.docker.example", environ=env, cwd=project_dir)
    assert variant.returncode == 2, variant.stdout
    assert "SEMANTIK_PG_BACKEND=docker (the file has auto)" in variant.stderr
    assert "SEMANTIK_ENV_FILE=.env.docker inv env.init --example .env.docker.example" in variant.stderr
    assert (project_dir / ".env").read_bytes() == plain
    docker_env = {**env, "SEMANTIK_ENV_FILE": ".env.docker"}
    created = run_task("env.init", "--example", ".env.docker.example", environ=docker_env, cwd=project_dir)
    assert created.returncode == 0, created.stderr
    values = dotenv_values(project_dir / ".env.docker")
    assert values["SEMANTIK_PG_BACKEND"] == "docker" and values["POSTGRES_PASSWORD"]
    check = run_task("env.check", environ=docker_env, cwd=project_dir)
    assert "backend:           docker" in check.stdout and ".env.docker" in check.stdout
    again = run_task("env.init", "--example", ".env.docker.example", environ=docker_env, cwd=project_dir)
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_outside_a_project_every_task_says_so_and_creates_nothing(tmp_path):
    """Issue 11 item 10."""
    unrelated = tmp_path / "somewhere"
    unrelated.mkdir()
    expected = (
        f"error: no semantik-infra project found from {unrelated} (cd into your clone or set SEMANTIK_PROJECT_DIR)"
    )
    for args in (["postgres.status"], ["env.init"], ["env.check"], ["doctor"], ["onboard"], ["postgres.up"]):
        result = run_task(*args, environ=clean_environ(), cwd=unrelated)
        assert (result.returncode, result.stderr.strip()) == (2, expected), (args, result.stdout)
    assert list(unrelated.iterdir()) == []
    for args in (["--help"], ["--list"], ["--help", "postgres.status"]):
        assert run_task(*args, environ=clean_environ(), cwd=unrelated).returncode == 0


def test_env_check_shows_what_auto_resolves_to(project_dir):
    env = clean_environ(POSTGRES_PASSWORD="x", POSTGRES_IMAGE="semantik-infra/no-such-image:0")
    result = run_task("env.check", environ=env, cwd=project_dir)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("backend:"))
    assert line.startswith(tuple(f"backend:           auto → {name} (" for name in ("docker", "embedded", "native")))
