"""The docker backend: PostgreSQL as a docker compose service (compose/docker-compose.postgres.yml,
optionally layered over the app's compose files). Compose operations shell out to `docker compose`
(v2 plugin) or `docker-compose` (v1), whichever exists; engine detection, container state, health
and volumes go through the Docker SDK. The password reaches compose and `docker exec` through the
child's environment only (`-e PGPASSWORD` names the variable, never its value)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from semantik_infra import proc
from semantik_infra.backends.base import (
    Backend,
    BackendStatus,
    Reporter,
    StartResult,
    first_line,
    port_mismatch_message,
    quiet,
)
from semantik_infra.config import Settings
from semantik_infra.console import Timer, format_duration
from semantik_infra.errors import BackendError, ConfigError
from semantik_infra.proc import Command

if TYPE_CHECKING:
    from docker import DockerClient
    from docker.models.containers import Container

HEALTH_POLL_SECONDS = 0.25
# compose labels every volume with the name it has in the compose file.
VOLUME_LABEL = "com.docker.compose.volume=postgres-data"
LOG_LINES_ON_FAILURE = 20


def detect_compose(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The compose command: `docker compose` (v2) if the plugin answers, else `docker-compose` (v1).

    `env` adds to the inherited environment (DOCKER_CONFIG decides where plugins are found)."""
    import shutil

    if shutil.which("docker"):
        result = proc.run(Command(("docker", "compose", "version"), env=env or {}), check=False, timeout=30)
        if result.returncode == 0:
            return ("docker", "compose")
    if shutil.which("docker-compose"):
        return ("docker-compose",)
    raise BackendError(
        "neither `docker compose` (v2 plugin) nor `docker-compose` (v1) is installed:"
        " install one (Debian: apt-get install docker-compose)"
    )


def compose_environment(settings: Settings) -> dict[str, str]:
    """Variables the compose file interpolates; the password travels here, in the environment."""
    url = settings.database
    return {
        "POSTGRES_USER": url.username or "postgres",
        "POSTGRES_PASSWORD": url.password.reveal(),
        "POSTGRES_DB": url.database or "postgres",
        "POSTGRES_PORT": str(url.port or 5432),
        "POSTGRES_IMAGE": settings.compose.image,
        "COMPOSE_PROJECT_NAME": settings.compose.project,
    }


def compose_argv(compose: Sequence[str], settings: Settings, *args: str) -> tuple[str, ...]:
    """A compose command line over every configured file, in order."""
    argv = [*compose, "-p", settings.compose.project]
    for path in settings.compose.files:
        argv += ["-f", str(path)]
    return (*argv, *args)


def connect_engine(timeout: int = 10) -> DockerClient:
    """A Docker SDK client that has answered a ping, or a BackendError saying how to get one."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except DockerException as error:
        raise BackendError(
            "the Docker engine is not reachable (is dockerd running, and may this user use it?"
            f" DOCKER_HOST decides which engine): {_short(error)}"
        ) from None
    return client


def volume_name(settings: Settings) -> str:
    """The data volume of the compose project: compose names volumes <project>_<volume>, and
    compose/docker-compose.postgres.yml calls the volume postgres-data."""
    return f"{settings.compose.project}_postgres-data"


@contextlib.contextmanager
def _engine_if_any() -> Iterator[DockerClient | None]:
    """A client of the Docker engine, or None when there is no SDK or no engine; closed afterwards."""
    try:
        import docker

        client = docker.from_env(timeout=5)
    except Exception:  # no SDK or no engine: the callers' answer is "nothing there"
        yield None
        return
    try:
        yield client
    finally:
        client.close()


def volume_exists(name: str) -> bool:
    """True if an answering Docker engine has this volume; False without an engine."""
    with _engine_if_any() as client:
        try:
            return client is not None and bool(client.volumes.get(name))
        except Exception:  # not found, or an engine that stops answering: nothing we can use
            return False


def project_container(client: DockerClient, settings: Settings) -> Container | None:
    """The compose project's PostgreSQL container (running or not), found by compose's labels."""
    labels = [
        f"com.docker.compose.project={settings.compose.project}",
        f"com.docker.compose.service={settings.compose.service}",
    ]
    found = client.containers.list(all=True, filters={"label": labels})
    return found[0] if found else None


def running_container(settings: Settings) -> tuple[int, str] | None:
    """(published port, 'container NAME') of this project's running container; None without one."""
    with _engine_if_any() as client:
        try:
            container = project_container(client, settings) if client is not None else None
        except Exception:  # an engine that stops answering: nothing we can point at
            return None
        if container is None or container.status != "running":
            return None
        port = published_port(container)
        return (port, f"container {container.name}") if port else None


def project_volumes() -> dict[str, str]:
    """compose project -> volume name, for every compose project on this engine with a postgres-data
    volume (empty without an engine): candidates when the project name was lost with .env."""
    with _engine_if_any() as client:
        try:
            volumes = client.volumes.list(filters={"label": VOLUME_LABEL}) if client else []
        except Exception:  # an engine that stops answering offers nothing
            return {}
        return {(v.attrs.get("Labels") or {}).get("com.docker.compose.project", "?"): v.name for v in volumes}


def _short(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text[:200]


class DockerBackend(Backend):
    """PostgreSQL in the compose service POSTGRES_SERVICE of project COMPOSE_PROJECT_NAME."""

    name = "docker"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        missing = [str(path) for path in settings.compose.files if not path.is_file()]
        if missing:
            raise ConfigError(f"COMPOSE_FILES names a file that does not exist: {', '.join(missing)}")
        self.port = settings.database.port or 5432
        self._client: DockerClient | None = None
        self._compose: tuple[str, ...] | None = None

    # --- plumbing --------------------------------------------------------------------------

    @property
    def client(self) -> DockerClient:
        """The engine, connected on first use."""
        if self._client is None:
            self._client = connect_engine()
        return self._client

    @property
    def compose(self) -> tuple[str, ...]:
        """The compose command, detected on first use."""
        if self._compose is None:
            self._compose = detect_compose()
        return self._compose

    def _compose_command(self, *args: str) -> Command:
        return Command(compose_argv(self.compose, self.settings, *args), env=compose_environment(self.settings))

    def container(self) -> Container | None:
        """The service's container (running or not), found by compose's labels."""
        return project_container(self.client, self.settings)

    @property
    def data_location(self) -> str:
        """The named volume holding the data."""
        volumes = self._volumes()
        return f"docker volume {', '.join(volumes)}" if volumes else "the service's docker volume"

    def _volumes(self) -> list[str]:
        container = self.container()
        if container is None:
            return []
        return [m["Name"] for m in container.attrs.get("Mounts", []) if m.get("Type") == "volume"]

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, report: Reporter = quiet, timeout: float = 120.0) -> StartResult:
        """compose up -d the service, then wait for a healthy container and a host connection.

        Runs under the project lock: a second `up` waits, then finds the container created and healthy.
        """
        from semantik_infra.locking import project_lock

        _ = self.client  # fail early and clearly when there is no engine
        with project_lock(self.settings.project_dir, lambda text: report(text, None, "info")):
            return self._start(report, timeout)

    def _start(self, report: Reporter, timeout: float) -> StartResult:
        with Timer() as timer:
            already = self.start_container(report, timeout)
            self._reopen_closed_database(report)
            seconds = self.wait_until_ready(max(1.0, timeout - timer.seconds))
        if already:
            return StartResult(already_running=True, seconds=seconds)
        report(f"PostgreSQL accepts connections on 127.0.0.1:{self.port}", timer.seconds)
        return StartResult(already_running=False, seconds=timer.seconds)

    def start_container(self, report: Reporter = quiet, timeout: float = 120.0) -> bool:
        """compose up -d the service and wait until its container is healthy, without logging in
        from the host (recovery needs the container when the password does not work); True if it
        was already running and healthy."""
        mismatch = self.port_mismatch()
        if mismatch:
            raise BackendError(mismatch)
        existing = self.container()
        if existing is not None and existing.status == "running" and _health(existing) == "healthy":
            report(f"container {existing.name} already running and healthy: nothing to do", None)
            return True
        if existing is None or existing.status != "running":
            self._check_port_free()
        self._ensure_image(report)
        with Timer() as timer:
            result = proc.run(
                self._compose_command("up", "-d", "--no-build", self.settings.compose.service),
                check=False,
                timeout=timeout + 60,
            )
            if result.returncode != 0:
                raise BackendError(f"docker compose up failed: {_compose_error(result.stderr, self.port)}")
            container = self._wait_healthy(timeout)
        report(f"container {container.name} is healthy", timer.seconds)
        return False

    def _reopen_closed_database(self, report: Reporter) -> None:
        # An interrupted restore's swap can leave the database refusing connections.
        from semantik_infra.leftovers import reopen_closed_database

        reopen_closed_database(self.settings, report)

    def _check_port_free(self) -> None:
        from semantik_infra.backends.native import port_in_use

        if port_in_use(self.port):
            raise BackendError(
                f"port {self.port} on 127.0.0.1 is already in use by another process:"
                f" set POSTGRES_PORT to a free port ({self.settings.sources.get('POSTGRES_PORT', 'default')})"
            )

    def _ensure_image(self, report: Reporter) -> None:
        from docker.errors import DockerException, ImageNotFound

        image = self.settings.compose.image
        try:
            self.client.images.get(image)
            return
        except ImageNotFound:
            pass
        report(f"pulling {image} …", None, "info")
        try:
            with Timer() as timer:
                self.client.images.pull(image)
        except DockerException as error:
            raise BackendError(
                f"image {image} is not on this machine and could not be pulled ({_short(error)}):"
                " set POSTGRES_IMAGE to an image you have, or make the registry reachable"
            ) from None
        report(f"pulled {image}", timer.seconds)

    def _wait_healthy(self, timeout: float) -> Container:
        deadline = time.monotonic() + timeout
        while True:
            container = self.container()
            if container is None:
                raise BackendError("compose reported success but no container exists for the service")
            state = container.attrs.get("State", {})
            health = _health(container)
            if health == "healthy" or (health is None and state.get("Running")):
                return container
            if health == "unhealthy" or state.get("Status") in ("exited", "dead"):
                why = "unhealthy" if health == "unhealthy" else f"exited with status {state.get('ExitCode')}"
                raise BackendError(f"container {container.name} is {why}; last log lines:\n{self._log_tail(container)}")
            if time.monotonic() > deadline:
                raise BackendError(
                    f"container {container.name} was not healthy within {timeout:g} s (health: {health});"
                    f" last log lines:\n{self._log_tail(container)}"
                )
            time.sleep(HEALTH_POLL_SECONDS)

    def _log_tail(self, container: Container) -> str:
        text = container.logs(tail=LOG_LINES_ON_FAILURE).decode("utf-8", "replace").rstrip()
        return "\n".join(f"  | {line}" for line in text.splitlines()) or "  | (no output)"

    def stop(self, report: Reporter = quiet) -> bool:
        """Stop and remove the service's container; the named volume (the data) stays."""
        container = self.container()
        if container is None:
            self._remove_idle_networks()
            return False
        with Timer() as timer:
            proc.run(self._compose_command("rm", "--stop", "--force", self.settings.compose.service), timeout=120)
            self._remove_idle_networks()
        report(f"stopped and removed container {container.name} (data kept in {self.data_location})", timer.seconds)
        return True

    def _remove_idle_networks(self) -> None:
        # `compose rm` leaves the project's network behind; an idle one only uses up address pools.
        from docker.errors import APIError, NotFound

        label = f"com.docker.compose.project={self.settings.compose.project}"
        for network in self.client.networks.list(filters={"label": label}):
            with contextlib.suppress(NotFound, APIError):
                network.reload()
                if not network.containers:
                    network.remove()

    def destroy_data(self, report: Reporter = quiet) -> None:
        """Remove the container and its named volume."""
        from docker.errors import NotFound

        volumes = self._volumes() or [self._declared_volume_name()]
        self.stop(report)
        for name in volumes:
            try:
                self.client.volumes.get(name).remove()
                report(f"deleted docker volume {name}", None)
            except NotFound:
                report(f"docker volume {name} does not exist: nothing to delete", None)

    def _declared_volume_name(self) -> str:
        # Without a container we cannot read its mounts.
        return volume_name(self.settings)

    def running_port(self) -> int | None:
        """The host port our running container publishes, if it runs."""
        container = self.container()
        if container is None or not container.attrs.get("State", {}).get("Running"):
            return None
        return published_port(container)

    def port_mismatch(self) -> str | None:
        """Why our running container cannot be reached at the configured port, if it publishes another."""
        running = self.running_port()
        if running is None or running == self.port:
            return None
        return port_mismatch_message(self.name, running, self.settings)

    def require_running(self) -> None:
        """Raise BackendError naming `inv postgres.up` when the container is not running."""
        container = self.container()
        if container is None or container.status != "running":
            raise BackendError("the PostgreSQL container is not running: start it with `inv postgres.up`")

    def set_password_in_container(self, role: str, verifier: str) -> None:
        """Set `role`'s password (a SCRAM verifier) with psql inside the container over its local
        socket, which the image trusts: the way back in when the password in .env was lost."""
        from semantik_infra.dbprops import quote_ident

        self.require_running()
        container = self.container()
        assert container is not None
        statement = f"ALTER ROLE {quote_ident(role)} PASSWORD '{verifier}';\n"
        argv = ("docker", "exec", "-i", container.id, "psql", "-X", "-q", "-w", "-v", "ON_ERROR_STOP=1")
        argv += ("-U", role, "-d", "postgres")
        result = proc.run(Command(argv), check=False, input_text=statement, timeout=60)
        if result.returncode != 0:
            why = first_line(result.stderr) or f"psql exited with {result.returncode}"
            if "password" in why.lower():
                why += " (the container's local socket does not trust local users, so this cannot help here)"
            raise BackendError(f"could not set the password of {role} inside {container.name}: {why}")

    def status(self) -> BackendStatus:
        """Container state, health, image, published port and uptime."""
        container = self.container()
        facts = {"compose": " ".join(self.compose), "project": self.settings.compose.project}
        if container is None:
            facts["container"] = "none (run `inv postgres.up`)"
            return BackendStatus(self.name, False, facts)
        state = container.attrs.get("State", {})
        facts.update(
            container=container.name,
            status=state.get("Status", "unknown"),
            health=_health(container) or "no health check",
            image=container.attrs.get("Config", {}).get("Image", "?"),
            port=_published(container) or f"{self.port} (configured, not published)",
            data=self.data_location,
        )
        running = bool(state.get("Running"))
        if running:
            facts["uptime"] = _uptime(state.get("StartedAt", ""))
        mismatch = self.port_mismatch() if running else None
        return BackendStatus(self.name, running, facts, (mismatch,) if mismatch else ())

    def logs(self, *, follow: bool = False, tail: int | None = None) -> int:
        """compose logs for the service; with --follow, Ctrl-C reaches compose and ends it cleanly."""
        if self.container() is None:
            raise BackendError(
                "there is no PostgreSQL container, so no log: `inv postgres.down` removes the container and its"
                " log with it (the data stays in the volume); `inv postgres.up` starts a new one"
            )
        args = ["logs", "--no-color"]
        if tail is not None:
            args += ["--tail", str(tail)]
        if follow:
            args.append("--follow")
        return proc.run_interactive(self._compose_command(*args, self.settings.compose.service))

    def client_command(
        self, tool: str, args: Sequence[str] = (), *, database: str | None = None, interactive: bool = False
    ) -> Command:
        """`docker exec` the tool inside the container, so client and server versions match."""
        container = self.container()
        if container is None or container.status != "running":
            raise BackendError("the PostgreSQL container is not running: run `inv postgres.up`")
        url = self.settings.database
        # A pseudo-terminal only for a session the user types into: with `-t`, docker refuses a
        # redirected stdin and turns "\n" into "\r\n", which corrupts a streamed archive.
        tty = interactive and os.isatty(0) and os.isatty(1)
        argv = ["docker", "exec", "-i", *(["-t"] if tty else [])]
        # `-e NAME` without a value copies NAME from our environment: the secret stays off argv.
        argv += ["-e", "PGPASSWORD", "-e", f"PGUSER={url.username}", "-e", f"PGDATABASE={database or url.database}"]
        argv += [container.id, tool, *args]
        return Command(tuple(argv), env={"PGPASSWORD": url.password.reveal()})


def _health(container: Container) -> str | None:
    container.reload()
    health: dict[str, Any] | None = container.attrs.get("State", {}).get("Health")
    return health.get("Status") if health else None


def published_port(container: Container) -> int | None:
    """The host port a container publishes for PostgreSQL's 5432, if any."""
    ports = container.attrs.get("NetworkSettings", {}).get("Ports") or {}
    for binding in ports.get("5432/tcp") or []:
        with contextlib.suppress(TypeError, ValueError):
            return int(binding.get("HostPort"))
    return None


def _published(container: Container) -> str:
    ports = container.attrs.get("NetworkSettings", {}).get("Ports") or {}
    bindings = ports.get("5432/tcp") or []
    return ", ".join(f"{b.get('HostIp') or '0.0.0.0'}:{b.get('HostPort')}" for b in bindings)


def _uptime(started_at: str) -> str:
    from datetime import datetime

    try:
        started = datetime.fromisoformat(started_at[:26].rstrip("Z") + "+00:00")
    except ValueError:
        return "unknown"
    return format_duration(max(0.0, time.time() - started.timestamp()))


def _compose_error(stderr: str, port: int) -> str:
    lowered = stderr.lower()
    if "port is already allocated" in lowered or "address already in use" in lowered:
        return f"port {port} is already in use: set POSTGRES_PORT to a free port"
    if "pull access denied" in lowered or "manifest unknown" in lowered or "not found" in lowered:
        return "the image could not be found or pulled: set POSTGRES_IMAGE to an image you have"
    return proc.last_line(stderr) or "no error output"
