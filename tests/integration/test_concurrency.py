"""Two terminals at once (issue 11 item 3): parallel `env.init` generate the secrets once, and
parallel `onboard` on a fresh clone end with a cluster whose password is the one in .env. The
processes are real and released at the same instant (tests.conftest.run_tasks_together), many
times over; before the project lock both tests failed on their first trial."""

from __future__ import annotations

import shutil

import psycopg2
import pytest
from dotenv import dotenv_values

from tests.conftest import WARM_FOR_ENV, cluster_environ, free_port, make_project_dir, run_task, run_tasks_together

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENV_INIT_TRIALS = 20
ONBOARD_TRIALS = 3


def test_parallel_env_init_generates_the_secrets_once():
    for trial in range(ENV_INIT_TRIALS):
        project = make_project_dir()
        try:
            environ = cluster_environ(project, free_port())
            del environ["POSTGRES_PASSWORD"]
            results = run_tasks_together([(["env.init"], environ, project)] * 4, warm=WARM_FOR_ENV)
            for result in results:
                assert result.returncode == 0, (trial, result.stdout, result.stderr)
            generated = [r for r in results if "generated POSTGRES_PASSWORD, BACKUP_ENCRYPTION_KEY" in r.stdout]
            assert len(generated) == 1, (trial, [r.stdout for r in results])
            assert not list(project.glob(".env.*.bak")), trial
            values = dotenv_values(project / ".env")
            assert values["POSTGRES_PASSWORD"] and values["BACKUP_ENCRYPTION_KEY"]
        finally:
            shutil.rmtree(project, ignore_errors=True)


def test_parallel_onboard_ends_with_the_cluster_password_in_env():
    for trial in range(ONBOARD_TRIALS):
        project = make_project_dir()
        environ = cluster_environ(project, free_port())
        del environ["POSTGRES_PASSWORD"]
        try:
            results = run_tasks_together([(["onboard"], environ, project)] * 2)
            for result in results:
                assert result.returncode == 0, (trial, result.stdout, result.stderr)
            assert sum("initialised a new cluster" in r.stdout for r in results) == 1, trial
            password = dotenv_values(project / ".env")["POSTGRES_PASSWORD"]
            connection = psycopg2.connect(
                host="127.0.0.1",
                port=environ["POSTGRES_PORT"],
                user="semantik",
                dbname="semantik",
                password=password,
                connect_timeout=5,
            )
            connection.close()
        finally:
            run_task("postgres.down", "--volumes", "--yes", environ=environ, cwd=project)
            shutil.rmtree(project, ignore_errors=True)
