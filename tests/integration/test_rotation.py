"""No secret is ever lost (issue 11 items 2, 5, 6): the password changes on the server and in .env
as one step (and is put back on the server when .env cannot be written), a lost .env is recovered
without deleting the data, `env.init --force` never locks the user out, and a changed backup key
is named together with the backups that need the old one and the .bak that keeps it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest
from dotenv import dotenv_values

from tests.conftest import archive_files, free_port, make_project_dir, run_task
from tests.integration.test_recorded_state import fresh_environ

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Project:
    path: Path
    environ: dict[str, str]
    port: int

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        result = run_task(*args, environ={**self.environ, **extra}, cwd=self.path)
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def password(self, env_file: str = ".env") -> str:
        return dotenv_values(self.path / env_file)["POSTGRES_PASSWORD"] or ""

    def connect(self, password: str) -> psycopg2.extensions.connection:
        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user="semantik", dbname="semantik", password=password, connect_timeout=5
        )


@pytest.fixture(scope="module")
def project() -> Iterator[Project]:
    """An onboarded native clone whose password lives in .env, with a table of data in it."""
    path = make_project_dir()
    port = free_port()
    environ = {**fresh_environ(path), "SEMANTIK_PG_BACKEND": "native", "POSTGRES_PORT": str(port)}
    onboarded = run_task("onboard", environ=environ, cwd=path)
    assert onboarded.returncode == 0, onboarded.stdout + onboarded.stderr
    made = Project(path, environ, port)
    with made.connect(made.password()) as connection, connection.cursor() as cursor:
        cursor.execute("CREATE TABLE keep (note text); INSERT INTO keep VALUES ('still here')")
    try:
        yield made
    finally:
        run_task("postgres.down", "--volumes", "--yes", environ={**environ, "SEMANTIK_PG_BACKEND": "native"}, cwd=path)
        shutil.rmtree(path, ignore_errors=True)


def assert_rejected(project: Project, password: str) -> None:
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        project.connect(password).close()


def test_rotate_password_changes_the_server_and_env_together(project: Project):
    """Item 5: server first, then .env atomically, the old file kept as a .bak."""
    old = project.password()
    backups_before = set(project.path.glob(".env.*.bak"))
    result = project.run("postgres.rotate-password")
    assert result.returncode == 0, result.stdout + result.stderr
    new = project.password()
    assert new and new != old
    project.connect(new).close()
    assert_rejected(project, old)
    [backup] = set(project.path.glob(".env.*.bak")) - backups_before
    assert dotenv_values(backup)["POSTGRES_PASSWORD"] == old and backup.stat().st_mode & 0o777 == 0o600
    assert old not in result.stdout + result.stderr and new not in result.stdout + result.stderr
    assert "wrote the new password to .env" in result.stdout


def test_rotation_puts_the_old_password_back_when_env_cannot_be_written(project: Project):
    """Item 5: the env file lives on a full disk; the server must end up on the old password."""
    conf = project.path / "conf"
    conf.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(conf)], capture_output=True)
    if mounted.returncode != 0:
        conf.rmdir()
        pytest.skip(f"cannot mount tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        shutil.copy(project.path / ".env", conf / ".env")
        before = (conf / ".env").read_bytes()
        filler = os.open(conf / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(filler, b"\0" * 4096):
                pass
        except OSError:
            pass  # full
        finally:
            os.close(filler)
        old = project.password("conf/.env")
        result = project.run("postgres.rotate-password", SEMANTIK_ENV_FILE="conf/.env")
        assert result.returncode == 2, result.stdout
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(f"error: could not write {conf / '.env'} (No space left on device)")
        assert line.endswith("the server's password was put back, nothing changed")
        assert (conf / ".env").read_bytes() == before
        project.connect(old).close()
    finally:
        subprocess.run(["umount", str(conf)], check=False)
        shutil.rmtree(conf, ignore_errors=True)


def test_doctor_names_the_recovery_when_the_password_is_refused(project: Project):
    """Item 5: authentication failing on a cluster we manage points at rotate-password --recover."""
    result = project.run("doctor", "--json", POSTGRES_PASSWORD="not-the-password-0123456789")
    assert result.returncode == 1
    [connection] = [f for f in json.loads(result.stdout)["findings"] if f["area"] == "connection"]
    assert connection["status"] == "fail" and "wrong password" in connection["summary"]
    assert "inv postgres.rotate-password --recover" in connection["hint"]


def test_a_lost_env_is_recovered_without_touching_the_data(project: Project):
    """Item 5: .env gone (the recorded port with it); --recover writes a new one and the cluster takes it."""
    (project.path / ".env").unlink()
    result = project.run("postgres.rotate-password", "--recover")
    assert result.returncode == 0, result.stdout + result.stderr
    values = dotenv_values(project.path / ".env")
    assert values["SEMANTIK_PG_BACKEND"] == "native" and values["POSTGRES_PORT"] == str(project.port)
    new = values["POSTGRES_PASSWORD"] or ""
    assert new not in result.stdout + result.stderr
    assert "single-user mode" in result.stdout
    with project.connect(new) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT note FROM keep")
        assert cursor.fetchall() == [("still here",)]
    assert project.run("test.connection", "--quick").returncode == 0


def test_env_init_force_changes_the_server_password_too(project: Project):
    """Item 2: --force with a cluster holding the password rotates it there, or refuses while stopped."""
    old = project.password()
    forced = project.run("env.init", "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "uses the current password: changing it on the server too" in forced.stdout
    assert project.password() != old
    assert project.run("test.connection", "--quick").returncode == 0
    assert project.run("postgres.down").returncode == 0
    try:
        before = (project.path / ".env").read_bytes()
        refused = project.run("env.init", "--force")
        assert refused.returncode == 1
        assert refused.stderr.strip().splitlines() == [
            f"error: PostgreSQL (native, {project.path / 'data' / 'postgres'}) is not running:"
            " start it with `inv postgres.up`"
        ]
        assert (project.path / ".env").read_bytes() == before
    finally:
        assert project.run("postgres.up").returncode == 0


def test_a_changed_key_names_the_backups_and_the_bak_that_keeps_it(project: Project):
    """Items 2 and 6: env.init --force says which backups need the old key; doctor fails on it."""
    backup = project.run("postgres.backup", "--encrypt")
    assert backup.returncode == 0, backup.stderr
    [archive] = archive_files(project.path / "backups")
    old_key = dotenv_values(project.path / ".env")["BACKUP_ENCRYPTION_KEY"]
    forced = project.run("env.init", "--force")
    assert forced.returncode == 0, forced.stderr
    [kept] = [p for p in project.path.glob(".env.*.bak") if dotenv_values(p)["BACKUP_ENCRYPTION_KEY"] == old_key][-1:]
    assert (
        f"! 1 encrypted backups were made with the previous BACKUP_ENCRYPTION_KEY ({archive.name}): it is kept in"
        f" {kept}" in forced.stdout
    )
    result = project.run("doctor", "--json")
    assert result.returncode == 1
    keyed = [f for f in json.loads(result.stdout)["findings"] if "key changed" in f["summary"]]
    assert keyed and keyed[0]["status"] == "fail"
    assert keyed[0]["summary"] == f"your backup key changed: {archive.name} need the key kept in {kept.name}"
    assert old_key not in result.stdout and old_key not in forced.stdout + forced.stderr
