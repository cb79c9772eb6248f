"""Every bad input is one line: non-numeric and negative flag values, bad DATABASE_URL query
parameters, Ctrl-D or "no" at a prompt, a closed output pipe — and, over every task at once, a
hypothesis-chosen set of bad values never produces a traceback. Tasks run as a user runs them."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semantik_infra.config import load_settings
from semantik_infra.errors import ConfigError
from semantik_infra.urls import libpq_environment
from tests.conftest import REPO, clean_environ, free_port, make_project_dir, run_task


@pytest.fixture
def native_env(project_dir: Path) -> dict[str, str]:
    """A native project with no cluster: tasks fail on what they are given, never on a server."""
    return clean_environ(
        SEMANTIK_PROJECT_DIR=str(project_dir),
        SEMANTIK_PG_BACKEND="native",
        POSTGRES_HOST="127.0.0.1",
        POSTGRES_PORT=str(free_port()),
        POSTGRES_PASSWORD="not-a-real-password-0123456789",
    )


@pytest.mark.parametrize(
    ("args", "flag", "value"),
    [
        (["postgres.backups", "--prune", "--keep", "abc"], "--keep", "abc"),
        (["postgres.backups", "--prune", "--keep-days", "soon"], "--keep-days", "soon"),
        (["postgres.logs", "--tail", "abc"], "--tail", "abc"),
        (["postgres.logs", "--tail", "-5"], "--tail", "-5"),
        (["postgres.wait", "--timeout", "abc"], "--timeout", "abc"),
        (["postgres.up", "--timeout", "nan"], "--timeout", "nan"),
        (["postgres.backup", "--jobs", "two"], "--jobs", "two"),
        (["env.init", "--length", "-1"], "--length", "-1"),
    ],
)
def test_bad_numeric_flag_is_one_line_exit_2(native_env, project_dir, args, flag, value):
    result = run_task(*args, environ=native_env, cwd=project_dir)
    assert result.returncode == 2, (result.stdout, result.stderr)
    what = "a whole number" if flag not in ("--keep-days", "--timeout") else "a number"
    assert result.stderr.strip() == f"error: {flag}={value!r}: not {what} of 0 or more"


def test_database_url_query_parameters_are_checked_and_carried():
    """connect_timeout in the URL sets the one timeout every connection uses; bad ones are config errors."""
    project = make_project_dir()
    try:
        url = "postgresql://u:pw@db.example:5432/app?connect_timeout=5&application_name=semantik-x&sslmode=prefer"
        settings = load_settings(environ={"DATABASE_URL": url}, cwd=project)
        assert settings.connect_timeout == 5
        assert "connect_timeout" not in settings.database.libpq_params()
        assert settings.database.libpq_params()["application_name"] == "semantik-x"
        environment = libpq_environment(settings.database)
        assert environment["PGCONNECT_TIMEOUT"] == "5" and environment["PGAPPNAME"] == "semantik-x"
        async_style = load_settings(environ={"DATABASE_URL": url.replace("connect_timeout", "timeout")}, cwd=project)
        assert async_style.connect_timeout == 5
        for query, problem in (
            ("connect_timeout=abc", "connect_timeout='abc' is not a whole number from 1 to 3600"),
            ("sslmode=sometimes", "sslmode='sometimes' must be one of: disable"),
            ("bogus=1", "?bogus= is not a libpq connection parameter"),
            ("password=x", "put the password in the URL itself"),
        ):
            with pytest.raises(ConfigError, match=re.escape(problem)):
                load_settings(environ={"DATABASE_URL": f"postgresql://u:pw@h:5432/d?{query}"}, cwd=project)
    finally:
        shutil.rmtree(project, ignore_errors=True)


def test_bad_url_parameter_is_one_line_even_on_the_external_backend(project_dir):
    env = clean_environ(
        SEMANTIK_PROJECT_DIR=str(project_dir),
        SEMANTIK_PG_BACKEND="external",
        DATABASE_URL="postgresql://u:pw@db.invalid:5432/app?connect_timeout=abc",
    )
    for args in (["postgres.status"], ["postgres.backup"], ["doctor"], ["test.connection"]):
        result = run_task(*args, environ=env, cwd=project_dir)
        assert "Traceback" not in result.stderr + result.stdout, (args, result.stderr)
        assert "connect_timeout='abc' is not a whole number" in result.stderr + result.stdout, args
        assert result.returncode in (1, 2)


def _run_on_terminal(args: list[str], environ: dict[str, str], cwd: Path, keys: list[bytes]) -> tuple[int, str]:
    """Run a task with a pseudo-terminal as stdin/stdout/stderr, typing `keys` once it prompts."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "semantik_infra", *args],
        cwd=cwd,
        env={**environ, "PYTHONPATH": str(REPO)},
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 60
    typed = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(controller, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        if not typed and b"Type 'yes' to continue" in output:
            for key in keys:
                os.write(controller, key)
            typed = True
        if process.poll() is not None and not ready:
            break
    os.close(controller)
    return process.wait(timeout=30), output.decode("utf-8", "replace")


@pytest.mark.parametrize(("keys", "label"), [([b"no\r"], "declined"), ([b"\x04"], "ctrl-d")])
def test_declining_or_ctrl_d_at_a_prompt_cancels_with_exit_1(native_env, project_dir, keys, label):
    code, output = _run_on_terminal(["postgres.reset"], native_env, project_dir, keys)
    assert "Traceback" not in output, output
    assert code == 1, (label, output)
    assert output.strip().splitlines()[-1] == "cancelled: nothing was changed"


@pytest.mark.parametrize(
    "args",
    [["env.check"], ["--help"], ["--list"], ["postgres.status"], ["doctor"]],
)
def test_output_into_a_closed_pipe_is_a_quiet_exit(native_env, project_dir, args):
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head` that has already gone
    try:
        result = subprocess.run(
            [sys.executable, "-m", "semantik_infra", *args],
            cwd=project_dir,
            env={**native_env, "PYTHONPATH": str(REPO)},
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert result.stderr == "", result.stderr
    assert result.returncode == 141


# --- the one test over every task ------------------------------------------------------------

BAD_NUMBERS = st.one_of(
    st.sampled_from(["abc", "-5", "-0.5", "1e", "nan", "inf", "", " ", "--", "0x10", "１２", "5 5", "1_000x"]),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=6).filter(
        lambda text: not re.fullmatch(r"\s*\+?\d+(\.\d*)?\s*", text)
    ),
)
BAD_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
# Stands for a directory that does not exist, made unique per example below: a fixed path such as
# /no/such/dir, once something created it, had the tasks start real clusters in it.
MISSING_DIR = "<missing project dir>"
BAD_ENVIRONMENTS = st.one_of(
    st.builds(lambda junk: {"DATABASE_URL": f"postgresql://u:p@h:5432/d?{junk}"}, BAD_TEXT.filter(lambda t: "=" in t)),
    st.builds(lambda junk: {"DATABASE_URL": junk}, BAD_TEXT),
    st.builds(lambda junk: {"POSTGRES_PORT": junk}, BAD_NUMBERS),
    st.builds(lambda junk: {"DB_POOL_SIZE": junk}, BAD_NUMBERS),
    st.just({"SEMANTIK_ENV_FILE": "no-such.env"}),
    st.just({"SEMANTIK_PROJECT_DIR": MISSING_DIR}),
    st.just({"COMPOSE_PROJECT_NAME": "Not Valid!"}),
)
BAD_ENV_LINES = st.sampled_from(
    ["KEY='unclosed", "just words", "1X=2", 'K="a"b', "=value", "POSTGRES_PORT=1\nPOSTGRES_PORT=2"]
)


def _every_task() -> list[tuple[str, list[tuple[str, type]], bool]]:
    """(name, [(flag, kind) of its int/float/str flags], has a positional) for every task."""
    from semantik_infra.tasks import namespace

    found = []
    for name in sorted(namespace.task_names):
        flags, positional = [], False
        for argument in namespace[name].get_arguments():
            if argument.positional:
                positional = True
            elif argument.kind in (int, float, str):
                flags.append((f"--{argument.names[0]}", argument.kind))
        found.append((name, flags, positional))
    return found


@pytest.mark.slow
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_every_task_with_bad_values_never_prints_a_traceback(data):
    """Each task with bad flag values, a bad environment or a broken env file (hypothesis picks which)."""
    project = make_project_dir()
    try:
        base = clean_environ(
            SEMANTIK_PROJECT_DIR=str(project),
            SEMANTIK_PG_BACKEND="native",
            POSTGRES_HOST="127.0.0.1",
            POSTGRES_PORT=str(free_port()),
            POSTGRES_PASSWORD="not-a-real-password-0123456789",
            BACKUP_DIR=str(project / "backups"),
        )
        broken = make_project_dir()
        (broken / ".env").write_text(f"POSTGRES_DB=x\n{data.draw(BAD_ENV_LINES)}\n")
        runs = []
        for name, flags, positional in _every_task():
            args = [name, *([data.draw(BAD_TEXT) or "x"] if positional else [])]
            for flag, kind in flags:
                args += [flag, data.draw(BAD_NUMBERS if kind in (int, float) else BAD_TEXT)]
            modes = ["environment", "env file", *(["flags"] if any(k in (int, float) for _, k in flags) else [])]
            mode = data.draw(st.sampled_from(modes))
            if mode == "flags":
                runs.append((args, base))
            elif mode == "environment":
                environment = {**base, **data.draw(BAD_ENVIRONMENTS)}
                if environment["SEMANTIK_PROJECT_DIR"] == MISSING_DIR:
                    environment["SEMANTIK_PROJECT_DIR"] = str(project / "no-such-dir")
                runs.append(([name], environment))
            else:
                runs.append(([name], {**base, "SEMANTIK_PROJECT_DIR": str(broken)}))

        def run(item: tuple[list[str], dict[str, str]]) -> tuple[list[str], subprocess.CompletedProcess[str]]:
            args, environ = item
            return args, run_task(*args, environ=environ, cwd=project, timeout=120)

        with ThreadPoolExecutor(max_workers=4) as pool:
            for args, result in pool.map(run, runs):
                output = result.stdout + result.stderr
                assert "Traceback" not in output, (args, output)
                assert result.returncode != 0 or "error" not in result.stderr, (args, output)
    finally:
        shutil.rmtree(project, ignore_errors=True)
        shutil.rmtree(broken, ignore_errors=True)
