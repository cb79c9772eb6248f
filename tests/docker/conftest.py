"""Docker tests need a real engine, compose, and the stand-in PostgreSQL image that
tests/docker/image.py builds (scripts/ci-docker-setup.sh does all three). Without an engine they
skip with the reason; under CI=true they fail instead, because CI must run them. The compose v2
plugin lives in a private Docker config dir (SEMANTIK_TEST_COMPOSE_V2_CONFIG), so each test picks
its compose flavour: the machine's own (v1 on Debian) or v2 through DOCKER_CONFIG."""

from __future__ import annotations

import os
import platform
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import HOSTILE_PASSWORD, REPO, clean_environ, free_port, make_project_dir, run_task

DEFAULT_TEST_IMAGE = "semantik-infra/postgres-test:15"
COMPOSE_FILE = REPO / "compose" / "docker-compose.postgres.yml"
COMPOSE_V2_CONFIG = Path(
    os.environ.get("SEMANTIK_TEST_COMPOSE_V2_CONFIG") or "/var/cache/semantik-infra/docker-config-compose-v2"
)


def _engine_problem(image: str) -> str | None:
    try:
        import docker
        from docker.errors import DockerException, ImageNotFound

        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as error:  # any failure means there is no usable engine
        return f"no Docker engine answers ({type(error).__name__}); run scripts/ci-docker-setup.sh"
    try:
        client.images.get(image)
    except ImageNotFound:
        return f"test image {image} is missing; run python tests/docker/image.py"
    except DockerException as error:
        return f"Docker engine error: {error}"
    return None


def _skip_or_fail(problem: str, *, ci_must_run: bool = True) -> None:
    if ci_must_run and os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the docker tests: {problem}")
    pytest.skip(problem)


@pytest.fixture(scope="session")
def test_image() -> str:
    """The stand-in image's tag; skips (or fails under CI) when the engine or image is missing."""
    image = os.environ.get("SEMANTIK_TEST_IMAGE") or DEFAULT_TEST_IMAGE
    problem = _engine_problem(image)
    if problem:
        _skip_or_fail(problem)
    return image


@pytest.fixture(scope="session")
def compose_v2_environ() -> dict[str, str]:
    """DOCKER_CONFIG for the private compose v2 plugin; skips where it is not installed."""
    environ = {"DOCKER_CONFIG": str(COMPOSE_V2_CONFIG)}
    docker = shutil.which("docker")
    answers = docker and subprocess.run(
        [docker, "compose", "version"], env={**os.environ, **environ}, capture_output=True, check=False
    )
    if not answers or answers.returncode != 0:
        # The plugin ci-docker-setup.sh installs is an amd64 binary: elsewhere CI runs v1 only.
        _skip_or_fail(
            f"no compose v2 plugin in {COMPOSE_V2_CONFIG}; run scripts/ci-docker-setup.sh",
            ci_must_run=platform.machine() == "x86_64",
        )
    return environ


@pytest.fixture(params=["default-compose", "compose-v2"])
def compose_environ(request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment that selects a compose flavour: the machine's own, then the v2 plugin."""
    if request.param == "compose-v2":
        return request.getfixturevalue("compose_v2_environ")
    return {}


@dataclass(frozen=True)
class DockerProject:
    """A project dir and environment for the docker backend with a unique compose project."""

    project_dir: Path
    environ: dict[str, str]
    port: int
    password: str

    def run(self, *args: str, **extra: str):  # type: ignore[no-untyped-def]
        """Run a task in this project, optionally with extra environment variables."""
        return run_task(*args, environ={**self.environ, **extra}, cwd=self.project_dir, timeout=300)


@pytest.fixture
def docker_project(test_image: str) -> Iterator[DockerProject]:
    """A fresh compose project on a free port; its container and volume are removed afterwards."""
    yield from _docker_project(test_image, {})


@pytest.fixture
def docker_project_each_compose(test_image: str, compose_environ: dict[str, str]) -> Iterator[DockerProject]:
    """As docker_project, once with the machine's compose and once with the v2 plugin."""
    yield from _docker_project(test_image, compose_environ)


def _docker_project(test_image: str, extra: dict[str, str]) -> Iterator[DockerProject]:
    project_dir = make_project_dir("semantik-docker-")
    port = free_port()
    environ = clean_environ(
        SEMANTIK_PROJECT_DIR=str(project_dir),
        SEMANTIK_PG_BACKEND="docker",
        COMPOSE_PROJECT_NAME=f"sitest{secrets.token_hex(4)}",
        COMPOSE_FILES=str(COMPOSE_FILE),
        POSTGRES_IMAGE=test_image,
        POSTGRES_HOST="127.0.0.1",
        POSTGRES_PORT=str(port),
        POSTGRES_USER="semantik",
        POSTGRES_DB="semantik",
        POSTGRES_PASSWORD=HOSTILE_PASSWORD,
        **extra,
    )
    project = DockerProject(project_dir, environ, port, HOSTILE_PASSWORD)
    try:
        yield project
    finally:
        project.run("postgres.down", "--volumes", "--yes")
        shutil.rmtree(project_dir, ignore_errors=True)


def project_container(project: DockerProject):  # type: ignore[no-untyped-def]
    """The docker SDK's handle on the project's database container."""
    import docker

    client = docker.from_env()
    [container] = client.containers.list(
        filters={"label": [f"com.docker.compose.project={project.environ['COMPOSE_PROJECT_NAME']}"]}
    )
    return container
