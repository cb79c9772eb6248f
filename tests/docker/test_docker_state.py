"""Issue 11 on the docker backend: onboard's --backend/--port/--project-name are recorded, a lost
.env is recovered inside the container over its local socket without touching the data, logs
after `down` say where they went, and `auto` stays with this project's docker volume."""

from __future__ import annotations

import secrets
import shutil
import subprocess

import psycopg2
import pytest
from dotenv import dotenv_values

from tests.conftest import clean_environ, free_port, make_project_dir, run_task
from tests.docker.conftest import COMPOSE_FILE

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_onboard_flags_are_recorded_and_a_lost_env_is_recovered_in_the_container(test_image: str):
    project = make_project_dir("semantik-docker-")
    name = f"sitest{secrets.token_hex(4)}"
    port = free_port()
    environ = clean_environ(
        SEMANTIK_PROJECT_DIR=str(project), COMPOSE_FILES=str(COMPOSE_FILE), POSTGRES_IMAGE=test_image
    )
    try:
        onboarded = run_task(
            "onboard", "--backend", "docker", "--port", str(port), "--project-name", name, environ=environ, cwd=project
        )
        assert onboarded.returncode == 0, onboarded.stdout + onboarded.stderr
        values = dotenv_values(project / ".env")
        assert (values["SEMANTIK_PG_BACKEND"], values["POSTGRES_PORT"], values["COMPOSE_PROJECT_NAME"]) == (
            "docker",
            str(port),
            name,
        )
        assert f"recorded:  SEMANTIK_PG_BACKEND=docker, POSTGRES_PORT={port}, COMPOSE_PROJECT_NAME={name}" in (
            onboarded.stdout
        )
        with (
            psycopg2.connect(
                host="127.0.0.1", port=port, user="semantik", dbname="semantik", password=values["POSTGRES_PASSWORD"]
            ) as connection,
            connection.cursor() as cursor,
        ):
            cursor.execute("CREATE TABLE keep (note text); INSERT INTO keep VALUES ('still here')")

        (project / ".env").unlink()
        lost = run_task("postgres.rotate-password", "--recover", environ=environ, cwd=project)
        assert lost.returncode == 1
        assert "set COMPOSE_PROJECT_NAME to it and run this again" in lost.stderr and name in lost.stderr
        recovered = run_task(
            "postgres.rotate-password", "--recover", environ={**environ, "COMPOSE_PROJECT_NAME": name}, cwd=project
        )
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
        assert "set the password of semantik inside the container" in recovered.stdout
        values = dotenv_values(project / ".env")
        assert (values["SEMANTIK_PG_BACKEND"], values["POSTGRES_PORT"], values["COMPOSE_PROJECT_NAME"]) == (
            "docker",
            str(port),
            name,
        )
        with (
            psycopg2.connect(
                host="127.0.0.1", port=port, user="semantik", dbname="semantik", password=values["POSTGRES_PASSWORD"]
            ) as connection,
            connection.cursor() as cursor,
        ):
            cursor.execute("SELECT note FROM keep")
            assert cursor.fetchall() == [("still here",)]

        assert run_task("postgres.down", environ=environ, cwd=project).returncode == 0
        logs = run_task("postgres.logs", environ=environ, cwd=project)
        assert logs.returncode == 1
        assert "`inv postgres.down` removes the container and its log with it" in logs.stderr
    finally:
        run_task("postgres.down", "--volumes", "--yes", environ={**environ, "COMPOSE_PROJECT_NAME": name}, cwd=project)
        shutil.rmtree(project, ignore_errors=True)


def test_auto_stays_with_this_projects_docker_volume(test_image: str):
    """Item 7: with the image gone (e.g. pruned) and server binaries installed, auto still means docker."""
    project = make_project_dir("semantik-docker-")
    name = f"sitest{secrets.token_hex(4)}"
    volume = f"{name}_postgres-data"
    subprocess.run(["docker", "volume", "create", volume], check=True, capture_output=True)
    try:
        environ = clean_environ(
            SEMANTIK_PROJECT_DIR=str(project),
            COMPOSE_PROJECT_NAME=name,
            POSTGRES_IMAGE="semantik-infra/no-such-image:0",
            POSTGRES_PASSWORD="x" * 30,
        )
        check = run_task("env.check", environ=environ, cwd=project)
        assert check.returncode == 0, check.stderr
        assert f"auto → docker (this project's data is in the docker volume {volume})" in check.stdout
    finally:
        subprocess.run(["docker", "volume", "rm", "-f", volume], check=False, capture_output=True)
        shutil.rmtree(project, ignore_errors=True)


def test_pulling_is_shown_as_under_way_not_done(docker_project):
    result = docker_project.run("postgres.up", POSTGRES_IMAGE="semantik-infra/no-such-image:0")
    assert result.returncode == 1
    assert "· pulling semantik-infra/no-such-image:0 …" in result.stdout
    assert "✓ pulling" not in result.stdout
