"""Backends: where PostgreSQL runs (docker, native, external) behind one small interface, and
`select_backend`, which resolves SEMANTIK_PG_BACKEND=auto to the one this machine can use."""

from __future__ import annotations

from semantik_infra.backends.base import Backend, BackendStatus, StartResult
from semantik_infra.config import Settings
from semantik_infra.errors import BackendError

__all__ = ["Backend", "BackendStatus", "StartResult", "docker_engine_answers", "select_backend"]

_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", None}


def select_backend(settings: Settings) -> Backend:
    """The backend SEMANTIK_PG_BACKEND names; for `auto`: external for a remote DATABASE_URL,
    else docker if an engine answers, else native if server binaries exist."""
    choice = settings.backend
    if choice == "auto":
        choice = resolve_auto(settings)
    if choice == "external":
        from semantik_infra.backends.external import ExternalBackend

        return ExternalBackend(settings)
    if choice == "native":
        from semantik_infra.backends.native import NativeBackend

        return NativeBackend(settings)
    from semantik_infra.backends.docker import DockerBackend

    return DockerBackend(settings)


def resolve_auto(settings: Settings) -> str:
    """Which backend `auto` means on this machine now."""
    if settings.database_source.startswith("DATABASE_URL") and settings.database.host not in _LOCAL_HOSTS:
        return "external"
    if docker_engine_answers():
        return "docker"
    from semantik_infra.backends.native import find_server_binaries

    try:
        find_server_binaries(settings.pg_bin)
    except BackendError:
        raise BackendError(
            "no way to run PostgreSQL here: start a Docker engine (and install docker compose), or install"
            " the PostgreSQL server binaries (apt-get install postgresql), or set DATABASE_URL and"
            " SEMANTIK_PG_BACKEND=external"
        ) from None
    return "native"


def docker_engine_answers(timeout: float = 2.0) -> bool:
    """True if a Docker engine answers a ping (DOCKER_HOST or the default socket)."""
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=int(max(1, timeout)))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # any failure to reach the engine means "no engine" for auto-selection
        return False
