"""The backups directory: what is in BACKUP_DIR, and whether backups can be written there. It owns
archive names (`<db>-<UTC time>.dump`) and temp names (`.<final name>.<pid>.<random>.partial`,
the pid telling whether the writer lives), loading an archive with the manifest beside it, listing
archives, temp files (in progress or abandoned) and manifests left without their archive, the
listing lines, retention (which archives --prune deletes) and deletion, and the BACKUP_DIR checks
shared by `postgres.backup` and `doctor` (one line naming BACKUP_DIR and the fix)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from semantik_infra import proc
from semantik_infra.errors import BackupError, ConfigError
from semantik_infra.manifest import (
    MANIFEST_SUFFIX,
    UNAUTHENTICATED,
    BackupManifest,
    check_manifest,
    describe_authenticity,
    manifest_path,
)

CUSTOM, DIRECTORY = "custom", "directory"
ARCHIVE_SUFFIX = {CUSTOM: ".dump", DIRECTORY: ".dumpdir"}
GLOBALS_SUFFIX = ".globals.sql"
# Temporary names: `.<final name>.<pid>.<random>.partial` (the pid tells whether the writer lives).
# A file beside an archive adds its suffix after the archive's name: the manifest, the roles file,
# a restore's decompressed copy (--in-place --jobs) and a restore's table of contents (--jobs).
PARTIAL_SUFFIX = ".partial"
EXPANDED_SUFFIX, TOC_SUFFIX = ".expanded", ".toc"
TEMP_SUFFIXES = (MANIFEST_SUFFIX, GLOBALS_SUFFIX, EXPANDED_SUFFIX, TOC_SUFFIX)
_PARTIAL = re.compile(
    r"^\.(?P<archive>.+\.(?:dump(?:\.zst)?(?:\.enc)?|dumpdir))"
    rf"(?:{'|'.join(re.escape(suffix) for suffix in TEMP_SUFFIXES)})?"
    r"\.(?P<pid>\d+)"
    r"\.(?:[A-Za-z0-9_]+\.)?partial$"
)
# A temp file whose writer is gone counts as abandoned once nothing wrote to it for this long
# (a writer on another host sharing BACKUP_DIR keeps it fresh).
ABANDONED_AFTER_SECONDS = 60.0
IN_PROGRESS, ABANDONED = "in progress", "abandoned"
# `.dump` (pg_dump's own compression or none), `.dump.zst` (ours: `zstd -dc X | pg_restore`), and
# `.enc` after either when encrypted; `.dumpdir` for the directory format.
_STAMP = re.compile(r"^(?P<db>.+)-(?P<stamp>\d{8}T\d{6}\d{6}Z)\.(?:dump(?:\.zst)?(?:\.enc)?|dumpdir)$")


@dataclass(frozen=True)
class BackupEntry:
    """An archive, with its manifest if it has a valid one; `manifest_error` says why a manifest
    that exists cannot be used (never empty when a manifest file exists but `manifest` is None)."""

    path: Path
    database: str
    created: datetime
    manifest: BackupManifest | None
    manifest_error: str = ""
    authenticity: str = UNAUTHENTICATED

    @property
    def manifest_path(self) -> Path:
        """Where its manifest lives."""
        return manifest_path(self.path)

    @property
    def has_no_manifest(self) -> bool:
        """True if there is no manifest file at all (made elsewhere, or by hand)."""
        return self.manifest is None and not self.manifest_error


@dataclass(frozen=True)
class Partial:
    """A temp file of a backup: its writer's pid and whether that writer is still at it."""

    path: Path
    pid: int
    state: str
    writer_alive: bool = False

    def describe(self) -> str:
        """One listing line."""
        who = f"writer pid {self.pid} is {'running' if self.writer_alive else 'gone'}"
        if self.state == IN_PROGRESS and not self.writer_alive:
            who += ", written to within the last minute"
        return f"{self.path.name}  {self.state} ({who})"


def archive_name(database: str, when: datetime, fmt: str = CUSTOM, suffix: str | None = None) -> str:
    """`<db>-<YYYYmmddTHHMMSSffffffZ><suffix>`: sortable, and unique even for concurrent backups.
    `suffix` (see archive.archive_suffix) defaults to the format's plain one."""
    if "/" in database or database.startswith("."):
        raise ConfigError(f"database name {database!r} cannot be used in a file name")
    return f"{database}-{when.astimezone(UTC).strftime('%Y%m%dT%H%M%S%fZ')}{suffix or ARCHIVE_SUFFIX[fmt]}"


def parse_archive_name(name: str) -> tuple[str, datetime] | None:
    """(database, created) from an archive name, or None if it is not one of ours."""
    match = _STAMP.match(name)
    if not match:
        return None
    created = datetime.strptime(match.group("stamp"), "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
    return match.group("db"), created


def globals_path(archive: Path) -> Path:
    """The roles file beside an archive."""
    return archive.with_name(archive.name + GLOBALS_SUFFIX)


def select_for_pruning(
    entries: list[BackupEntry], *, keep: int | None, keep_days: float | None, now: datetime
) -> list[BackupEntry]:
    """The entries to delete, oldest first: per database, those neither among its newest `keep`
    nor younger than `keep_days`. Each database's newest backup, and its newest one with a
    manifest, are never selected, whatever the arguments."""
    if keep is None and keep_days is None:
        raise ConfigError("--prune needs --keep N and/or --keep-days D")
    if keep is not None and keep < 1:
        raise ConfigError("--keep must be at least 1: the newest backup is always kept")
    if keep_days is not None and keep_days <= 0:
        raise ConfigError("--keep-days must be more than 0 (0 or negative would keep nothing by age)")
    by_database: dict[str, list[BackupEntry]] = {}
    for entry in entries:
        by_database.setdefault(entry.database, []).append(entry)
    doomed = []
    for group in by_database.values():
        ordered = sorted(group, key=lambda entry: entry.created, reverse=True)
        # A newest archive that is damaged (no manifest) must not cost the last good one.
        newest_good = next((entry for entry in ordered if entry.manifest is not None), None)
        for rank, entry in enumerate(ordered):
            kept_by_count = keep is not None and rank < keep
            kept_by_age = keep_days is not None and now - entry.created <= timedelta(days=keep_days)
            if rank == 0 or entry is newest_good or kept_by_count or kept_by_age:
                continue
            doomed.append(entry)
    return sorted(doomed, key=lambda entry: entry.created)


def partial_writer_pid(name: str) -> int | None:
    """The pid of the backup writing temp file `name` (`.<archive>[.json].<pid>.<random>.partial`), or None."""
    match = _PARTIAL.match(name)
    return int(match.group("pid")) if match else None


# --- listing -------------------------------------------------------------------------------


def load_entry(path: Path, key: bytes | None, *, database: str = "") -> BackupEntry:
    """An archive with the manifest beside it (`<archive>.json`, whatever the archive is called),
    parsed, validated and authenticated with `key`; `database` names it when nothing else does."""
    parsed = parse_archive_name(path.name)
    manifest, problem, authenticity = None, "", UNAUTHENTICATED
    where = manifest_path(path)
    try:
        text = where.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = None
    except (OSError, UnicodeDecodeError) as error:
        text, problem = None, f"{where.name}: cannot be read ({getattr(error, 'strerror', None) or error})"
    if text is not None:
        try:
            manifest, authenticity = check_manifest(text, where.name, key)
        except BackupError as error:
            problem = str(error)
    name = manifest.database if manifest is not None else parsed[0] if parsed else database
    created = parsed[1] if parsed else datetime.fromtimestamp(path.stat().st_mtime if path.exists() else 0, UTC)
    return BackupEntry(path, name, created, manifest, problem, authenticity)


def _backups_directory(directory: Path) -> bool:
    if directory.exists() and not directory.is_dir():
        raise _not_a_directory(directory, directory)
    return directory.is_dir()


def list_backups(directory: Path, key: bytes | None = None) -> list[BackupEntry]:
    """Our archives in `directory`, oldest first, each with its manifest (or why it cannot be used)."""
    if not _backups_directory(directory):
        return []
    entries = [load_entry(path, key) for path in directory.iterdir() if parse_archive_name(path.name)]
    return sorted(entries, key=lambda entry: entry.created)


def list_partials(directory: Path, *, now: float | None = None) -> list[Partial]:
    """Temp files of backups, each in progress (its writer lives, or wrote within the last minute)
    or abandoned (left by a backup that was killed)."""
    if not _backups_directory(directory):
        return []
    now = time.time() if now is None else now
    found = []
    for path in sorted(directory.iterdir()):
        pid = partial_writer_pid(path.name)
        if pid is None:
            continue
        try:
            touched = max([path.stat().st_mtime, *(child.stat().st_mtime for child in path.rglob("*"))])
        except OSError:
            continue  # finished (renamed) or removed meanwhile
        alive = proc.process_alive(pid)
        idle = now - touched >= ABANDONED_AFTER_SECONDS
        found.append(Partial(path, pid, ABANDONED if idle and not alive else IN_PROGRESS, alive))
    return found


def lone_files(directory: Path, *, older_than: float = 0.0, now: float | None = None) -> list[Path]:
    """Manifests and roles files whose archive does not exist (what a backup killed between
    publishing them and publishing its archive leaves), untouched for `older_than` seconds."""
    if not _backups_directory(directory):
        return []
    now = time.time() if now is None else now
    lone = []
    for path in sorted(directory.iterdir()):
        for suffix in (MANIFEST_SUFFIX, GLOBALS_SUFFIX):
            archive = path.name.removesuffix(suffix)
            if archive != path.name and parse_archive_name(archive) and not (directory / archive).exists():
                with contextlib.suppress(OSError):
                    if now - path.stat().st_mtime >= older_than:
                        lone.append(path)
    return lone


def entry_size(entry: BackupEntry) -> int:
    """Bytes on disk of an archive (file or directory)."""
    if entry.path.is_dir():
        return sum(child.stat().st_size for child in entry.path.rglob("*") if child.is_file())
    return entry.path.stat().st_size if entry.path.exists() else 0


LISTING_HEADER = ("created (UTC)", "size", "database", "encryption", "state", "proven", "file")


def entry_columns(entry: BackupEntry) -> tuple[str, ...]:
    """One listing row, column by column (see LISTING_HEADER)."""
    from semantik_infra.console import format_bytes

    manifest = entry.manifest
    when = entry.created.strftime("%Y-%m-%d %H:%M:%S")
    encrypted = "?" if manifest is None else "encrypted" if manifest.encrypted else "plain"
    if manifest is not None:
        verified = "verified at creation" if manifest.verified else "unverified"
        state = f"{verified}, {describe_authenticity(entry.authenticity)}"
    else:
        state = entry.manifest_error or "no manifest: checksum cannot be checked"
    from semantik_infra.drill import read_record

    drilled = read_record(entry.path)
    proven = "never" if drilled is None else drilled.drilled[:19].replace("T", " ")
    if drilled is not None and not drilled.ok:
        proven = f"FAILED {proven}"
    return (when, format_bytes(entry_size(entry)), entry.database, encrypted, state, proven, entry.path.name)


def describe_entry(entry: BackupEntry) -> str:
    """One listing line: date, size, database, encrypted or not, verified and authenticated or not, file name."""
    return "  ".join(entry_columns(entry))


def delete_backup(entry: BackupEntry) -> None:
    """Remove an archive with its manifest, globals file and drill record."""
    import shutil

    from semantik_infra.drill import drill_path

    if entry.path.is_dir():
        shutil.rmtree(entry.path)
    else:
        entry.path.unlink(missing_ok=True)
    manifest_path(entry.path).unlink(missing_ok=True)
    globals_path(entry.path).unlink(missing_ok=True)
    drill_path(entry.path).unlink(missing_ok=True)


# --- the backups directory ----------------------------------------------------------------------


def backup_dir_problem(directory: Path) -> str:
    """Why backups cannot be written into BACKUP_DIR ("" if they can): it or a parent is a file, it
    cannot be created, or it is not writable. Writes nothing (the doctor asks it): permissions, a
    read-only mount and a pseudo-filesystem are read from the system, not tried."""
    blocker = _file_in_the_way(directory)
    if blocker is not None:
        return str(_not_a_directory(directory, blocker))
    existing = next(path for path in (directory, *directory.parents) if path.is_dir())
    creating = existing != directory
    if _mount_type(existing) in _PSEUDO_FILESYSTEMS:
        return str(write_error(OSError(errno.ENOENT, "a kernel pseudo-filesystem"), directory, creating=True))
    if os.statvfs(existing).f_flag & os.ST_RDONLY:
        return str(write_error(OSError(errno.EROFS, "read-only"), directory, creating=creating))
    if not os.access(existing, os.W_OK | os.X_OK):
        return str(write_error(OSError(errno.EACCES, "permission denied"), directory, creating=creating))
    return ""


# Kernel filesystems where nothing can be stored, whatever the permissions say.
_PSEUDO_FILESYSTEMS = {"proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "securityfs", "debugfs"}


def _mount_type(path: Path) -> str:
    """The filesystem type of the mount holding `path` (from /proc/mounts; "" when unknown)."""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    resolved, best, kind = str(path.resolve()), "", ""
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1].replace("\\040", " ")
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, parts[2]
    return kind


def prepare_backup_dir(directory: Path) -> Path:
    """Create BACKUP_DIR if needed and prove it writable, or one line naming BACKUP_DIR and the fix."""
    blocker = _file_in_the_way(directory)
    if blocker is not None:
        raise _not_a_directory(directory, blocker)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(error, directory, creating=True) from None
    try:
        _probe(directory)
    except OSError as error:
        raise write_error(error, directory) from None
    return directory


def _file_in_the_way(directory: Path) -> Path | None:
    return next((path for path in (directory, *directory.parents) if path.exists() and not path.is_dir()), None)


def _probe(directory: Path) -> None:
    fd, name = tempfile.mkstemp(dir=directory, prefix=".semantik-write-probe.")
    os.close(fd)
    os.unlink(name)


def _not_a_directory(directory: Path, blocker: Path) -> ConfigError:
    if blocker == directory:
        return ConfigError(f"BACKUP_DIR={directory} is a file, not a directory: set BACKUP_DIR to a directory")
    return ConfigError(f"BACKUP_DIR={directory} cannot be created: {blocker} is a file: set BACKUP_DIR to a directory")


def write_error(error: OSError, directory: Path, *, creating: bool = False) -> BackupError:
    """One line for a failed write into BACKUP_DIR: full disk, read-only, permissions, or why not."""
    where = f"BACKUP_DIR={directory}"
    if error.errno == errno.ENOSPC:
        return BackupError(f"no space left on the device holding {where}: free space or set BACKUP_DIR")
    if error.errno == errno.EROFS:
        return BackupError(f"{where} is on a read-only filesystem: set BACKUP_DIR to a writable directory")
    if error.errno in (errno.EACCES, errno.EPERM):
        import pwd

        user = pwd.getpwuid(os.geteuid()).pw_name
        return BackupError(f"{where} is not writable by this user ({user}): fix its permissions or set BACKUP_DIR")
    if creating:
        return BackupError(
            f"{where} cannot be created ({error.strerror or error}): set BACKUP_DIR to a writable directory"
        )
    return BackupError(f"writing into {where} failed: {error.strerror or error}")


def discard(temp: Path) -> None:
    """Delete a temp file or directory (already gone is fine)."""
    import shutil

    if temp.is_dir():
        shutil.rmtree(temp, ignore_errors=True)
    else:
        temp.unlink(missing_ok=True)
