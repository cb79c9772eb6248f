"""Secrets that other things depend on: the role password, which the cluster holds too, and the
backup key, which encrypted backups need. It owns `rotate_password` (server first, then the env
file atomically under the project lock; if the file cannot be written the server gets the old
password back), `recover_password` (the way back in when .env was lost but the cluster exists:
single-user mode on the native data directory, or psql over the container's trusted local socket),
the SCRAM verifier (so neither the password nor anything reversible is ever sent as SQL text), and
the key watch (which encrypted backups the current key can no longer open, and which `.bak` still
holds the key they need)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semantik_infra.backends.base import Reporter, quiet
from semantik_infra.config import Settings, load_settings, source_label
from semantik_infra.errors import BackendError, ConfigError, InfraError

if TYPE_CHECKING:
    from semantik_infra.catalog import BackupEntry
    from semantik_infra.envfile import EnvUpdate

SCRAM_ITERATIONS = 4096
RECOVER_HINT = (
    "`inv postgres.rotate-password --recover` sets the cluster's password to POSTGRES_PASSWORD"
    " through its data directory or container (the data stays)"
)


# --- SCRAM ---------------------------------------------------------------------------------


def scram_verifier(password: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (as `ALTER ROLE … PASSWORD` accepts it)."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", _saslprep(password).encode("utf-8"), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _saslprep(password: str) -> str:
    # PostgreSQL normalises with SASLprep and falls back to the raw password when that fails.
    # ASCII passwords (every generated one) are their own normal form; for others: map non-ASCII
    # spaces to a space, drop the characters mapped to nothing, NFKC, and keep the raw password
    # if the result has prohibited characters.
    if password.isascii():
        return password
    mapped = "".join(
        " " if unicodedata.category(char) == "Zs" else char
        for char in password
        if char not in "\u00ad\u034f\u1806\u180b\u180c\u180d\u200b\u200c\u200d\u2060\ufeff"
        and not "\ufe00" <= char <= "\ufe0f"
    )
    normal = unicodedata.normalize("NFKC", mapped)
    if any(unicodedata.category(char) in ("Cc", "Co", "Cs", "Cn") for char in normal):
        return password
    return normal


# --- rotation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rotation:
    """What a rotation changed: the env file update (with its backup) and the backend."""

    update: EnvUpdate
    backend: str


@dataclass(frozen=True)
class PasswordHolder:
    """A server that holds the current POSTGRES_PASSWORD: where, and whether we manage it."""

    location: str
    managed: bool


def password_holder(settings: Settings) -> PasswordHolder | None:
    """The cluster (or external server) whose role has the current POSTGRES_PASSWORD, if any:
    regenerating the password without changing it there would lock the user out."""
    from semantik_infra.backends import explain_auto, project_data

    if settings.database_source.startswith("DATABASE_URL") or not settings.database.password:
        return None  # the connection does not use POSTGRES_PASSWORD
    backend = settings.backend
    if backend == "external" or (backend == "auto" and explain_auto(settings).backend == "external"):
        return PasswordHolder(f"the external server at {settings.database.redacted()}", managed=False)
    found = [data for data in project_data(settings) if backend in ("auto", data.backend)]
    return PasswordHolder(f"the cluster in {found[0].location}", managed=True) if found else None


def check_rotatable(settings: Settings) -> None:
    """The password must come from POSTGRES_PASSWORD in the main env file: that is what rotation rewrites."""
    if settings.database_source.startswith("DATABASE_URL"):
        raise ConfigError(
            f"the password is part of DATABASE_URL ({settings.database_source}): change it on the server and in"
            " DATABASE_URL yourself, or use the POSTGRES_* variables, which rotation rewrites"
        )
    source = settings.sources.get("POSTGRES_PASSWORD", "default")
    main = source_label(settings.env_file, settings.project_dir)
    if source != main:
        where = "the process environment" if source == "environment" else source
        raise ConfigError(
            f"POSTGRES_PASSWORD comes from {where}, but rotation writes {main}: remove it there so {main} decides"
        )


def rotate_password(
    environ: Mapping[str, str],
    cwd: Path,
    report: Reporter = quiet,
    *,
    length: int | None = None,
    also: Mapping[str, Callable[[], str]] | None = None,
    follow_symlinks: bool = False,
) -> Rotation:
    """Change the role's password on the server, then in the env file (with `also`'s generated values),
    as one step under the project lock. If the file cannot be written, the server gets the old one back."""
    from semantik_infra.backends import select_backend
    from semantik_infra.envfile import update_env_file, writable_target
    from semantik_infra.locking import project_lock
    from semantik_infra.secrets import DEFAULT_PASSWORD_LENGTH, generate_password

    new_password = generate_password(length or DEFAULT_PASSWORD_LENGTH)
    settings = load_settings(environ=environ, cwd=cwd)
    with project_lock(settings.project_dir, lambda text: report(text, None, "info")):
        settings = load_settings(environ=environ, cwd=cwd)  # another process may have rotated meanwhile
        check_rotatable(settings)
        # Refuse a symlinked env file before touching the server.
        writable_target(settings.env_file, follow_symlinks=follow_symlinks)
        backend = select_backend(settings)
        if not backend.manages_server:
            raise ConfigError(
                f"the server at {settings.database.redacted()} is external: change the password where it runs"
                " and in POSTGRES_PASSWORD"
            )
        backend.require_running()
        user = settings.database.username or ""
        old_password = settings.database.password.reveal()
        connection = _connect(settings, old_password)
        try:
            _alter_password(connection, user, new_password)
            report(f"changed the password of {user} on the server ({backend.name})", None)
            values = {"POSTGRES_PASSWORD": new_password, **{name: make() for name, make in (also or {}).items()}}
            try:
                update = update_env_file(settings.env_file, values, follow_symlinks=follow_symlinks)
            except BaseException as error:
                _put_back(connection, user, old_password, error)
                if isinstance(error, OSError):
                    raise ConfigError(
                        f"could not write {settings.env_file} ({error.strerror or error}): the server's password"
                        " was put back, nothing changed"
                    ) from None
                raise
        finally:
            connection.close()
    _connect(settings, new_password).close()  # proves the new password works before we say so
    return Rotation(update, backend.name)


def _put_back(connection: Any, user: str, old_password: str, cause: BaseException) -> None:
    try:
        _alter_password(connection, user, old_password)
    except Exception as error:  # any failure here leaves the server on a password no file holds
        raise BackendError(
            f"the env file was not written ({cause}) and the server's old password could not be put back"
            f" ({type(error).__name__}): {RECOVER_HINT}"
        ) from None


def _connect(settings: Settings, password: str) -> Any:
    import psycopg2

    from semantik_infra.database import classify

    params = {**settings.database.libpq_params(), "password": password}
    try:
        return psycopg2.connect(**params, connect_timeout=str(settings.connect_timeout))
    except psycopg2.Error as error:
        kind = classify(error)
        hint = f": if .env was lost or changed, {RECOVER_HINT}" if "password" in kind.cause else ""
        raise BackendError(f"cannot connect to {settings.database.redacted()}: {kind.cause}{hint}") from None


def _alter_password(connection: Any, user: str, password: str) -> None:
    from psycopg2 import sql
    from psycopg2.extensions import encrypt_password

    # The verifier is computed here by libpq; the statement never carries the password itself.
    verifier = encrypt_password(password, user, connection, "scram-sha-256")
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("ALTER ROLE {} PASSWORD %s").format(sql.Identifier(user)), (verifier,))


@dataclass(frozen=True)
class Regeneration:
    """What `regenerate_secrets` changed, the backup of the old file, and the encrypted backups that
    need the key it replaced (described, or '' when none do)."""

    path: Path
    changed: tuple[str, ...]
    backup: Path | None
    needing_old_key: str
    needing_count: int


def regenerate_secrets(
    environ: Mapping[str, str],
    cwd: Path,
    report: Reporter = quiet,
    *,
    length: int | None = None,
    follow_symlinks: bool = False,
) -> Regeneration:
    """`env.init --force`: new POSTGRES_PASSWORD and BACKUP_ENCRYPTION_KEY. When this project's cluster
    holds the current password it is rotated there too (server first); for an external server this
    refuses. The encrypted backups that need the old key are named."""
    from semantik_infra.envfile import prepare_env_file
    from semantik_infra.secrets import generate_encryption_key

    settings = load_settings(environ=environ, cwd=cwd)
    watch = watch_key(settings)
    holder = password_holder(settings)
    if holder is not None and not holder.managed:
        raise ConfigError(
            f"POSTGRES_PASSWORD is the password of {holder.location}: --force would lock you out;"
            " change it on that server first, then in the env file"
        )
    if holder is not None:
        report(f"{holder.location} uses the current password: changing it on the server too", None, "info")
        rotation = rotate_password(
            environ,
            cwd,
            report,
            length=length,
            also={"BACKUP_ENCRYPTION_KEY": generate_encryption_key},
            follow_symlinks=follow_symlinks,
        )
        path, changed, backup = rotation.update.path, rotation.update.changed, rotation.update.backup
    else:
        result = prepare_env_file(
            settings.project_dir,
            settings.env_file,
            force=True,
            password_length=length,
            follow_symlinks=follow_symlinks,
            waiting=lambda text: report(text, None, "info"),
        )
        path, changed, backup = result.path, result.generated, result.backup
    lost = watch.matching if "BACKUP_ENCRYPTION_KEY" in changed else ()
    return Regeneration(path, changed, backup, watch.describe(lost) if lost else "", len(lost))


# --- recovery ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recovery:
    """Which backend's cluster accepts the env file's password again, and where its data is."""

    backend: str
    location: str


def recover_password(environ: Mapping[str, str], cwd: Path, report: Reporter = quiet) -> Recovery:
    """Make the cluster's password the env file's POSTGRES_PASSWORD (creating the file and a password
    if they are missing) without knowing the old one: for a lost or overwritten .env."""
    from semantik_infra.backends import project_data, select_backend
    from semantik_infra.backends.docker import DockerBackend
    from semantik_infra.backends.native import NativeBackend
    from semantik_infra.config import env_file_chain, find_project_dir
    from semantik_infra.envfile import prepare_env_file
    from semantik_infra.locking import project_lock

    project_dir = find_project_dir(cwd, environ)
    target = env_file_chain(project_dir, environ, must_exist=False)[0]
    with project_lock(project_dir, lambda text: report(text, None, "info")):
        init = prepare_env_file(project_dir, target)
        if init.created or init.generated:
            report(f"{'created' if init.created else 'completed'} {target} with a new password (not shown)", None)
        settings = load_settings(environ=environ, cwd=cwd)
        check_rotatable(settings)
        found = project_data(settings)
        if not found:
            raise BackendError(_nothing_to_recover(settings))
        settings = _with_cluster_facts(settings, environ, cwd, report)
        backend = select_backend(settings)
        user = settings.database.username or ""
        verifier = scram_verifier(settings.database.password.reveal())
        if isinstance(backend, NativeBackend):
            if backend.is_running():
                backend.stop(report)  # single-user mode needs the cluster to itself
            backend.set_password_offline(user, verifier)
            report(f"set the password of {user} in single-user mode", None)
            backend.start(report)
        elif isinstance(backend, DockerBackend):
            backend.start_container(report)
            backend.set_password_in_container(user, verifier)
            report(f"set the password of {user} inside the container", None)
        else:
            raise ConfigError("the server is external: recover its password where it runs")
        backend.wait_until_ready(30)
    return Recovery(backend.name, backend.data_location)


def _nothing_to_recover(settings: Settings) -> str:
    from semantik_infra.backends.docker import project_volumes

    message = (
        f"no cluster of this project found (no native data directory {settings.data_dir}, no docker volume"
        f" for COMPOSE_PROJECT_NAME={settings.compose.project})"
    )
    volumes = project_volumes()
    if volumes:
        projects = ", ".join(sorted(volumes))
        return (
            f"{message}: if yours runs in docker under another compose project, set COMPOSE_PROJECT_NAME to it"
            f" and run this again (compose projects with a PostgreSQL volume here: {projects})"
        )
    return f"{message}: `inv postgres.up` creates one with the password in .env"


def _with_cluster_facts(settings: Settings, environ: Mapping[str, str], cwd: Path, report: Reporter) -> Settings:
    """A lost .env lost the recorded backend and port too: record the ones the cluster uses."""
    from semantik_infra.setup_state import cluster_facts, record

    facts = cluster_facts(settings)
    if not facts:
        return settings
    update = record(settings, facts)
    if update.changed:
        report(f"recorded what the cluster uses in {update.path.name}: {_describe(facts, update.changed)}", None)
    return load_settings(environ=environ, cwd=cwd)


def _describe(values: Mapping[str, str], names: tuple[str, ...]) -> str:
    return ", ".join(f"{name}={values[name]}" for name in names)


# --- the backup key ------------------------------------------------------------------------


@dataclass(frozen=True)
class KeyWatch:
    """Encrypted backups against the current key: which it opens, which need another key, and
    which env-file backups hold the keys they need (fingerprint -> files)."""

    current: str | None
    matching: tuple[BackupEntry, ...]
    other: tuple[BackupEntry, ...]
    keepers: Mapping[str, tuple[Path, ...]]

    def needed_elsewhere(self) -> str:
        """'semantik-A … semantik-B (3 backups) need the key kept in .env.X.bak', one phrase per key."""
        groups: dict[str | None, list[BackupEntry]] = {}
        for entry in self.other:
            groups.setdefault(entry.manifest.key_fingerprint if entry.manifest else None, []).append(entry)
        phrases = []
        for fingerprint, entries in groups.items():
            kept = self.keepers.get(fingerprint or "", ())
            where = (
                f"the key kept in {', '.join(path.name for path in kept)}"
                if kept
                else f"a key this project no longer has (fingerprint {fingerprint})"
            )
            phrases.append(f"{self.describe(entries)} need {where}")
        return "; ".join(phrases)

    @staticmethod
    def describe(entries: tuple[BackupEntry, ...] | list[BackupEntry]) -> str:
        """'A' for one backup, 'A … B (N backups)' for several."""
        if len(entries) == 1:
            return entries[0].path.name
        return f"{entries[0].path.name} … {entries[-1].path.name} ({len(entries)} backups)"


def watch_key(settings: Settings) -> KeyWatch:
    """Compare every encrypted backup's recorded key fingerprint with the current key (read-only)."""
    from semantik_infra.catalog import list_backups

    current = fingerprint_of(settings.backup.encryption_key.reveal())
    encrypted = [
        entry
        for entry in list_backups(settings.backup.directory)
        if entry.manifest is not None and entry.manifest.encrypted and entry.manifest.key_fingerprint
    ]
    matching = tuple(e for e in encrypted if e.manifest and e.manifest.key_fingerprint == current)
    other = tuple(e for e in encrypted if e not in matching)
    return KeyWatch(current, matching, other, _keepers(settings) if other else {})


def fingerprint_of(text: str) -> str | None:
    """The fingerprint of a BACKUP_ENCRYPTION_KEY value, or None if it is empty or malformed."""
    from semantik_infra.encryption import key_fingerprint, parse_key

    try:
        return key_fingerprint(parse_key(text))
    except InfraError:
        return None


def _keepers(settings: Settings) -> dict[str, tuple[Path, ...]]:
    from semantik_infra.envfile import backups_of, read_env_values

    found: dict[str, list[Path]] = {}
    for path in (*backups_of(settings.env_file), *backups_of(settings.project_dir / ".env.local")):
        try:
            fingerprint = fingerprint_of(read_env_values(path).get("BACKUP_ENCRYPTION_KEY", ""))
        except ConfigError:
            continue
        if fingerprint:
            found.setdefault(fingerprint, []).append(path)
    return {fingerprint: tuple(paths) for fingerprint, paths in found.items()}
