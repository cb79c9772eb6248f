"""Bad-input tracebacks that need a real server (issue 11): a DATABASE_URL with libpq query
parameters (connect_timeout and friends) works for backup, restore, doctor and status; psql's
own exit status comes through `postgres.shell` after a Ctrl-C cancelled a query; a stopped
server's failures name `inv postgres.up`."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import time
from urllib.parse import quote

import psycopg2
import pytest

from tests.conftest import REPO, clean_environ, make_project_dir, run_task

pytestmark = pytest.mark.integration


@pytest.fixture
def url_database(pg_cluster):
    """A database of its own in the session cluster, and a project reaching it by DATABASE_URL."""
    admin = psycopg2.connect(**pg_cluster.settings.database.libpq_params())
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute("DROP DATABASE IF EXISTS urlparams")
        cursor.execute("CREATE DATABASE urlparams")
    project = make_project_dir()
    password = quote(pg_cluster.password, safe="")
    url = (
        f"postgresql://semantik:{password}@127.0.0.1:{pg_cluster.port}/urlparams"
        "?connect_timeout=5&application_name=semantik-url-test&sslmode=disable"
    )
    environ = clean_environ(
        SEMANTIK_PROJECT_DIR=str(project), SEMANTIK_PG_BACKEND="external", DATABASE_URL=url, BACKUP_DIR="backups"
    )
    try:
        yield project, environ
    finally:
        shutil.rmtree(project, ignore_errors=True)
        with admin.cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE 'urlparams%'")
            for (name,) in cursor.fetchall():
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_connect_timeout_in_the_url_works_for_every_task(url_database):
    project, environ = url_database
    for args in (
        ["postgres.status"],
        ["postgres.backup"],
        ["postgres.backups", "--verify"],
        ["postgres.restore", "latest", "--yes", "--drop-old"],
        ["test.connection", "--quick"],
    ):
        result = run_task(*args, environ=environ, cwd=project)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
    doctor = run_task("doctor", environ=environ, cwd=project)
    assert "Traceback" not in doctor.stderr and "multiple values" not in doctor.stdout + doctor.stderr
    assert "✓ client tools: pg_dump " in doctor.stdout, doctor.stdout


def _shell_on_a_terminal(environ: dict[str, str], cwd) -> tuple[int, str]:
    """`postgres.shell` on a pseudo-terminal: a long query, Ctrl-C, then \\q."""
    controller, terminal = pty.openpty()

    def controlling_terminal() -> None:
        import fcntl
        import termios

        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        [sys.executable, "-m", "semantik_infra", "postgres.shell"],
        cwd=cwd,
        env={**environ, "PYTHONPATH": str(REPO), "TERM": "dumb", "PSQL_HISTORY": os.devnull},
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
        preexec_fn=controlling_terminal,
    )
    os.close(terminal)
    output = b""

    def read_until(marker: bytes, timeout: float = 30) -> None:
        nonlocal output
        deadline = time.monotonic() + timeout
        while marker not in output and time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                try:
                    output += os.read(controller, 4096)
                except OSError:
                    return

    read_until(b"=#")
    os.write(controller, b"SELECT pg_sleep(30);\r")
    time.sleep(1.0)
    os.write(controller, b"\x03")  # Ctrl-C: the terminal sends SIGINT to the whole foreground group
    read_until(b"canceling statement")
    read_until(b"=#")
    os.write(controller, b"\\q\r")
    read_until(b"\0", timeout=10)  # until the terminal closes
    os.close(controller)
    return process.wait(timeout=30), output.decode("utf-8", "replace")


def test_shell_passes_psql_exit_status_through_after_ctrl_c(pg_cluster):
    code, output = _shell_on_a_terminal(pg_cluster.environ, pg_cluster.project_dir)
    assert "canceling statement due to user request" in output, output
    assert "interrupted" not in output, output
    assert code == 0, output
    failing = run_task("postgres.shell", "-c", "SELECT 1/0", environ=pg_cluster.environ, cwd=pg_cluster.project_dir)
    assert failing.returncode == 1 and "division by zero" in failing.stderr


def test_a_stopped_server_says_inv_postgres_up(tmp_path):
    project = make_project_dir()
    try:
        environ = clean_environ(
            SEMANTIK_PROJECT_DIR=str(project),
            SEMANTIK_PG_BACKEND="native",
            POSTGRES_HOST="127.0.0.1",
            POSTGRES_PORT="1",
            POSTGRES_PASSWORD="x" * 30,
        )
        for args in (
            ["postgres.backup"],
            ["postgres.shell", "-c", "SELECT 1"],
            ["postgres.restore", "latest", "--yes"],
        ):
            result = run_task(*args, environ=environ, cwd=project)
            assert result.returncode == 1, (args, result.stderr)
            assert result.stderr.strip() == (
                f"error: PostgreSQL (native, {project / 'data' / 'postgres'}) is not running:"
                " start it with `inv postgres.up`"
            ), args
    finally:
        shutil.rmtree(project, ignore_errors=True)


def test_a_warning_is_not_marked_done(url_database):
    """A manifest nobody can authenticate (no BACKUP_ENCRYPTION_KEY) is something to know, not a step
    that succeeded: `!`, not `✓`."""
    project, environ = url_database
    assert run_task("postgres.backup", environ=environ, cwd=project).returncode == 0
    result = run_task("postgres.restore", "latest", "--yes", "--drop-old", environ=environ, cwd=project)
    assert result.returncode == 0, result.stdout + result.stderr
    warnings = [line for line in result.stdout.splitlines() if "is not authenticated" in line]
    assert warnings and all(line.startswith("! ") for line in warnings), result.stdout
