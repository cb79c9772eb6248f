"""Recorded state: the choices the tool makes when it sets a project up — the backend `auto`
resolved to, the port (a free one when 5432 is taken and the user set none), the compose project
name (one per clone, so two clones' containers and volumes never meet) — are written into the env
file by `onboard` and the first successful `postgres.up`, atomically, under the project lock, with
a `.bak`. From then on they are facts the settings carry, not guesses made again. `start_and_record`
is the one path that starts a managed server and records; `cluster_facts` reads the facts back
from an existing cluster when the env file that recorded them was lost."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from semantik_infra.backends.base import Reporter, StartResult, quiet
from semantik_infra.config import DEFAULT_SOURCE, ENVIRONMENT_SOURCE, VARIABLES, Settings, load_settings

if TYPE_CHECKING:
    from semantik_infra.backends import Backend
    from semantik_infra.envfile import EnvUpdate

RECORDED = ("SEMANTIK_PG_BACKEND", "POSTGRES_PORT", "COMPOSE_PROJECT_NAME")
# How far above the configured port to look for a free one.
PORT_SEARCH = 100
_DEFAULTS = {variable.name: variable.default for variable in VARIABLES}
_CONF_PORT = re.compile(r"^\s*port\s*=\s*(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Plan:
    """The values of the recorded variables this start uses, and what the user should be told."""

    values: dict[str, str]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Started:
    """What start_and_record did: the settings it ran with, the backend, and what it recorded."""

    settings: Settings
    backend: Backend
    result: StartResult
    update: EnvUpdate | None
    plan: Plan


def user_chose(settings: Settings, name: str) -> bool:
    """True if the user set `name`: in the environment (or a flag), or to a value other than the example's."""
    source = settings.sources.get(name, DEFAULT_SOURCE)
    if source == ENVIRONMENT_SOURCE:
        return True
    return source != DEFAULT_SOURCE and settings.values.get(name) != _DEFAULTS[name]


def plan(settings: Settings) -> Plan:
    """The backend, port and compose project to use. For a project with no data yet on that backend,
    a port nobody chose that is taken becomes the next free one, and a compose project name nobody
    chose becomes one of this clone's own."""
    from semantik_infra.backends import explain_auto, project_data

    backend = settings.backend if settings.backend != "auto" else explain_auto(settings).backend
    values = {"SEMANTIK_PG_BACKEND": backend}
    notes: list[str] = []
    if backend not in ("native", "embedded", "docker"):
        return Plan(values)
    fresh = not any(same_data(data.backend, backend) for data in project_data(settings))
    if not settings.database_source.startswith("DATABASE_URL"):
        port = settings.database.port or 5432
        if fresh and not user_chose(settings, "POSTGRES_PORT"):
            free = free_port(port)
            if free != port:
                notes.append(f"port {port} is in use by another program: this project gets port {free}")
                port = free
        values["POSTGRES_PORT"] = str(port)
    if backend == "docker":
        project = settings.compose.project
        if fresh and not user_chose(settings, "COMPOSE_PROJECT_NAME"):
            project = clone_project_name(settings.project_dir)
        values["COMPOSE_PROJECT_NAME"] = project
    return Plan(values, tuple(notes))


def same_data(one: str, other: str) -> bool:
    """True when two backends keep their data in the same place (native and embedded share the data directory)."""
    local = ("native", "embedded")
    return one == other or (one in local and other in local)


def free_port(start: int) -> int:
    """`start` if nothing listens there, else the next free port above it."""
    from semantik_infra.backends.native import port_in_use
    from semantik_infra.errors import BackendError

    for port in range(start, min(start + PORT_SEARCH, 65536)):
        if not port_in_use(port):
            return port
    raise BackendError(f"ports {start}-{start + PORT_SEARCH - 1} are all in use: set POSTGRES_PORT to a free port")


def clone_project_name(project_dir: Path) -> str:
    """A compose project name of this clone's own: 'semantik-<dir>-<hash of its path>'."""
    slug = re.sub(r"[^a-z0-9]+", "-", project_dir.name.lower()).strip("-")[:24] or "project"
    digest = hashlib.sha256(str(project_dir.resolve()).encode()).hexdigest()[:6]
    return f"semantik-{slug}-{digest}"


def start_and_record(
    environ: Mapping[str, str],
    cwd: Path,
    report: Reporter = quiet,
    *,
    timeout: float | None = None,
    record_all: bool = False,
) -> Started:
    """Plan, start the server, and record the plan in the env file, all under the project lock.

    `record_all` (onboard) writes every planned value; otherwise (`postgres.up`) everything is
    written the first time (while the file still says auto), later only the tool's own choices.
    """
    from semantik_infra.backends import select_backend
    from semantik_infra.locking import project_lock

    settings = load_settings(environ=environ, cwd=cwd)
    with project_lock(settings.project_dir, lambda text: report(text, None, "info")):
        settings = load_settings(environ=environ, cwd=cwd)  # another process may have set it up meanwhile
        chosen = plan(settings)
        for note in chosen.notes:
            report(note, None, "info")
        differs = {name: value for name, value in chosen.values.items() if settings.values.get(name) != value}
        run_settings = load_settings(environ={**environ, **differs}, cwd=cwd) if differs else settings
        backend = select_backend(run_settings)
        result = backend.start(report, **({"timeout": timeout} if timeout else {}))
        update = _record_plan(settings, chosen, differs, record_all, report)
    return Started(run_settings, backend, result, update, chosen)


def _record_plan(
    settings: Settings, chosen: Plan, differs: Mapping[str, str], record_all: bool, report: Reporter
) -> EnvUpdate | None:
    from semantik_infra.envfile import read_env_values

    path = settings.env_file
    if not path.exists():
        return None  # configured by the environment alone: nothing to record into
    first_time = read_env_values(path).get("SEMANTIK_PG_BACKEND", "auto").lower() == "auto"
    values = chosen.values if record_all or first_time else dict(differs)
    if not values:
        return None
    if path.is_symlink():
        shown = ", ".join(f"{name}={value}" for name, value in values.items())
        report(f"not recorded ({path.name} is a symbolic link): set {shown} in it yourself", None, "warn")
        return None
    return record(settings, values)


def record(settings: Settings, values: Mapping[str, str]) -> EnvUpdate:
    """Write `values` into the main env file (only those that differ; a .bak when it changes)."""
    from semantik_infra.envfile import update_env_file
    from semantik_infra.locking import project_lock

    with project_lock(settings.project_dir):
        return update_env_file(settings.env_file, values)


def cluster_facts(settings: Settings) -> dict[str, str]:
    """The backend and port this project's existing cluster uses, read from the cluster itself
    (the native data directory's settings file or running server; the running container)."""
    from semantik_infra.backends import project_data

    found = project_data(settings)
    if len(found) != 1:
        return {}
    backend = found[0].backend
    facts = {"SEMANTIK_PG_BACKEND": backend}
    if backend == "docker":
        facts["COMPOSE_PROJECT_NAME"] = settings.compose.project
    port = _docker_port(settings) if backend == "docker" else _native_port(settings)
    if port is not None and not settings.database_source.startswith("DATABASE_URL"):
        facts["POSTGRES_PORT"] = str(port)
    return facts


def _native_port(settings: Settings) -> int | None:
    from semantik_infra.backends.native import SETTINGS_NAME, running_postmaster

    postmaster = running_postmaster(settings.data_dir)
    if postmaster is not None:
        return postmaster.port
    try:
        match = _CONF_PORT.search((settings.data_dir / SETTINGS_NAME).read_text(encoding="utf-8"))
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _docker_port(settings: Settings) -> int | None:
    from semantik_infra.backends.docker import DockerBackend
    from semantik_infra.errors import InfraError

    try:
        return DockerBackend(settings).running_port()
    except InfraError:
        return None
