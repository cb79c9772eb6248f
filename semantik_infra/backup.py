"""Backups a user can bet their data on: pg_dump archives written atomically into BACKUP_DIR
(temp name in the same directory, fsync, no-clobber link to `<db>-<UTC time>.dump`), streamed with
flat memory (optionally through AES-256-GCM encryption), verified by reading the table of contents
back with `pg_restore --list`, and described by a JSON manifest beside them. Also listing,
re-verifying and pruning. pg_dump runs through the backend (inside the container on docker), and
the password reaches it only through its environment."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, BinaryIO

from semantik_infra import proc
from semantik_infra.backends.base import Backend
from semantik_infra.config import Settings
from semantik_infra.envfile import atomic_writer, fsync_directory
from semantik_infra.errors import BackupError, ConfigError

CUSTOM, DIRECTORY = "custom", "directory"
ARCHIVE_SUFFIX = {CUSTOM: ".dump", DIRECTORY: ".dumpdir"}
MANIFEST_SUFFIX = ".json"
GLOBALS_SUFFIX = ".globals.sql"
# Temporary names: `.<final name>.<pid>.<random>.partial` (the pid tells prune whether the writer lives).
PARTIAL_SUFFIX = ".partial"
ARCHIVE_MODE = 0o600  # archives hold all the data and, with globals, password hashes
_PARTIAL = re.compile(r"^\.(?P<archive>.+\.(?:dump|dumpdir))\.(?P<pid>\d+)\.(?:[A-Za-z0-9_]+\.)?partial$")
# A leftover temp file must be this old (no write since) before prune removes it.
STALE_PARTIAL_SECONDS = 3600.0
_STAMP = re.compile(r"^(?P<db>.+)-(?P<stamp>\d{8}T\d{6}\d{6}Z)\.(?:dump|dumpdir)$")
# Tables smaller than this are counted exactly when the planner has no estimate yet.
EXACT_COUNT_LIMIT_BYTES = 64 << 20


@dataclass(frozen=True)
class BackupManifest:
    """What a backup holds and how to check it; never holds a secret (only the key's fingerprint)."""

    archive: str
    database: str
    format: str
    sha256: str
    size: int
    compression: int
    encrypted: bool
    key_fingerprint: str | None
    server_version: str
    pg_dump_version: str
    created: str
    duration_s: float
    toc_entries: int
    tables: dict[str, int | None]
    backend: str
    verified: bool = True
    globals_file: str | None = None
    version: int = 1

    def to_json(self) -> str:
        """The manifest as pretty JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, *, source: str = "manifest") -> BackupManifest:
        """Parse and validate a manifest; BackupError names the file and the problem."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise BackupError(f"{source}: not valid JSON ({error.msg} at line {error.lineno})") from None
        if not isinstance(data, dict):
            raise BackupError(f"{source}: expected a JSON object")
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        missing = sorted(name for name in required if name not in data)
        if missing:
            raise BackupError(f"{source}: missing {', '.join(missing)}")
        if data.get("format") not in ARCHIVE_SUFFIX:
            raise BackupError(f"{source}: unknown format {data.get('format')!r}")
        if not re.fullmatch(r"[0-9a-f]{64}", str(data.get("sha256", ""))):
            raise BackupError(f"{source}: sha256 is not a hex digest")
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass(frozen=True)
class BackupEntry:
    """An archive in the backups directory, with its manifest if it has one."""

    path: Path
    database: str
    created: datetime
    manifest: BackupManifest | None
    manifest_error: str = ""

    @property
    def manifest_path(self) -> Path:
        """Where its manifest lives."""
        return manifest_path(self.path)


@dataclass(frozen=True)
class BackupResult:
    """What `create_backup` wrote."""

    path: Path
    manifest: BackupManifest
    globals_path: Path | None = None


# --- pure helpers --------------------------------------------------------------------------


def archive_name(database: str, when: datetime, fmt: str = CUSTOM) -> str:
    """`<db>-<YYYYmmddTHHMMSSffffffZ>.dump`: sortable, and unique even for concurrent backups."""
    if "/" in database or database.startswith("."):
        raise ConfigError(f"database name {database!r} cannot be used in a file name")
    return f"{database}-{when.astimezone(UTC).strftime('%Y%m%dT%H%M%S%fZ')}{ARCHIVE_SUFFIX[fmt]}"


def parse_archive_name(name: str) -> tuple[str, datetime] | None:
    """(database, created) from an archive name, or None if it is not one of ours."""
    match = _STAMP.match(name)
    if not match:
        return None
    created = datetime.strptime(match.group("stamp"), "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
    return match.group("db"), created


def manifest_path(archive: Path) -> Path:
    """The manifest beside an archive."""
    return archive.with_name(archive.name + MANIFEST_SUFFIX)


def globals_path(archive: Path) -> Path:
    """The roles file beside an archive."""
    return archive.with_name(archive.name + GLOBALS_SUFFIX)


def pg_dump_argv(fmt: str, compression: int, jobs: int, target: Path | None = None) -> list[str]:
    """pg_dump options (the database comes from PGDATABASE)."""
    argv = ["--format", fmt, "--compress", str(compression), "--no-password"]
    if fmt == DIRECTORY:
        argv += ["--jobs", str(jobs), "--file", str(target)]
    return argv


def count_toc_entries(listing: str) -> int:
    """Entries in a `pg_restore --list` listing (comment lines start with ';')."""
    return sum(1 for line in listing.splitlines() if line.strip() and not line.startswith(";"))


def toc_tables(listing: str) -> list[str]:
    """`schema.table` for every TABLE DATA entry of a `pg_restore --list` listing."""
    tables = []
    for line in listing.splitlines():
        parts = line.split()
        # e.g. "3402; 0 16390 TABLE DATA public items semantik"
        if "TABLE DATA" in line and not line.startswith(";"):
            index = parts.index("DATA")
            tables.append(f"{parts[index + 1]}.{parts[index + 2]}")
    return tables


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
    if keep_days is not None and keep_days < 0:
        raise ConfigError("--keep-days must not be negative")
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
    """The pid of the backup writing temp file `name` (`.<archive>.<pid>.<random>.partial`), or None."""
    match = _PARTIAL.match(name)
    return int(match.group("pid")) if match else None


# --- streaming sinks -----------------------------------------------------------------------


class HashingWriter:
    """Writes through to a file while hashing and counting exactly the bytes that reach it."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        """Write, hash and count `data`."""
        written = self.raw.write(data)
        self.digest.update(data)
        self.count += len(data)
        return written


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> str:
    """sha256 of a file (or, for a directory archive, of its sorted per-file digests), streamed."""
    if path.is_dir():
        lines = "".join(
            f"{child.relative_to(path)} {file_sha256(child)}\n" for child in sorted(path.rglob("*")) if child.is_file()
        )
        return hashlib.sha256(lines.encode()).hexdigest()
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(chunk_size):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def archive_reader(path: Path, key: bytes | None) -> Iterator[IO[bytes]]:
    """The archive's pg_dump bytes: decrypted (and authenticated) on the fly when a key is given."""
    with path.open("rb") as raw:
        if key is None:
            yield raw
        else:
            from semantik_infra.encryption import DecryptingReader

            yield DecryptingReader(raw, key)  # type: ignore[misc]


# --- server facts --------------------------------------------------------------------------


def server_facts(settings: Settings, database: str) -> tuple[str, int, dict[str, int | None]]:
    """(server version, major, row estimate per table) of the database being dumped."""
    import psycopg2

    params = settings.database.with_database(database).libpq_params()
    try:
        connection = psycopg2.connect(**params, connect_timeout=str(settings.connect_timeout))
    except psycopg2.Error as error:
        from semantik_infra.database import classify

        raise BackupError(f"cannot connect to {settings.database.redacted()}: {classify(error).cause}") from None
    try:
        with connection.cursor() as cursor:
            return _read_facts(connection, cursor)
    except psycopg2.Error as error:
        from semantik_infra.database import classify

        raise BackupError(f"cannot read table statistics of {database}: {classify(error).cause}") from None
    finally:
        connection.close()


def _read_facts(connection: Any, cursor: Any) -> tuple[str, int, dict[str, int | None]]:
    # Planner estimates (pg_class.reltuples) cost nothing; -1 means never analysed (PG14+).
    from psycopg2 import sql

    cursor.execute("SHOW server_version")
    version = str(cursor.fetchone()[0]).split()[0]
    major = connection.server_version // 10000
    cursor.execute(
        "SELECT n.nspname, c.relname, c.reltuples::bigint, pg_relation_size(c.oid)"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        " AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2"
    )
    tables: dict[str, int | None] = {}
    for schema, table, estimate, size in cursor.fetchall():
        name = f"{schema}.{table}"
        if estimate >= 0:
            tables[name] = int(estimate)
        elif size <= EXACT_COUNT_LIMIT_BYTES:
            # Never analysed, and small enough to count exactly.
            cursor.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
            tables[name] = int(cursor.fetchone()[0])
        else:
            tables[name] = None
    return version, major, tables


def client_version(backend: Backend, tool: str) -> str:
    """`tool --version` through the backend (inside the container on docker)."""
    result = proc.run(backend.client_command(tool, ["--version"]), check=False, timeout=30)
    if result.returncode != 0:
        raise BackupError(f"{tool} --version failed: {proc.last_line(result.stderr) or result.returncode}")
    return result.stdout.strip()


def check_pg_dump_version(pg_dump_version: str, server_version: str, server_major: int) -> None:
    """pg_dump refuses servers newer than itself; say so before trying, with the way out."""
    from semantik_infra.backends.native import parse_version

    client, client_major = parse_version(pg_dump_version)
    if client_major is not None and client_major < server_major:
        raise BackupError(
            f"pg_dump {client} is older than the server (PostgreSQL {server_version}):"
            f" install PostgreSQL {server_major} client tools and set PG_BIN to their bin directory"
        )


# --- verification --------------------------------------------------------------------------


def read_toc(backend: Backend, archive: Path, key: bytes | None) -> str:
    """The archive's table of contents via `pg_restore --list`, streaming it (decrypted) on stdin."""
    if archive.is_dir():
        command = _local_tool(backend, "pg_restore", ["--list", str(archive)])
        result = proc.run(command, check=False, timeout=600)
        status, listing, errors = result.returncode, result.stdout, result.stderr
    else:
        with archive_reader(archive, key) as source:
            status, listing, errors = proc.feed_from(backend.client_command("pg_restore", ["--list"]), source)
    if status != 0:
        raise BackupError(f"{archive.name}: pg_restore cannot read it: {proc.last_line(errors) or status}")
    return listing


def _local_tool(backend: Backend, tool: str, args: list[str]) -> proc.Command:
    if backend.name == "docker":
        raise BackupError("the directory format works only on the native and external backends")
    return backend.client_command(tool, args)


def verify_archive(backend: Backend, entry: BackupEntry, key: bytes | None) -> str:
    """Check size, checksum, decryptability and TOC; return a one-line verdict or raise BackupError."""
    manifest = entry.manifest
    if manifest is None:
        raise BackupError(f"{entry.path.name}: no manifest beside it ({entry.manifest_error or 'missing'})")
    if not entry.path.exists():
        raise BackupError(f"{entry.path.name}: the archive is missing")
    if entry.path.is_file() and entry.path.stat().st_size != manifest.size:
        raise BackupError(
            f"{entry.path.name}: size {entry.path.stat().st_size} differs from the manifest's {manifest.size}"
            " (truncated or changed)"
        )
    if file_sha256(entry.path) != manifest.sha256:
        raise BackupError(f"{entry.path.name}: checksum mismatch: the archive is corrupted or was changed")
    if manifest.encrypted and key is None:
        raise BackupError(f"{entry.path.name} is encrypted: set BACKUP_ENCRYPTION_KEY to its key")
    if manifest.encrypted and key is not None:
        from semantik_infra.encryption import key_fingerprint

        if manifest.key_fingerprint and key_fingerprint(key) != manifest.key_fingerprint:
            raise BackupError(
                f"{entry.path.name} was encrypted with another key (fingerprint {manifest.key_fingerprint}):"
                " set BACKUP_ENCRYPTION_KEY to that key"
            )
        authenticate(entry.path, key)
    entries = count_toc_entries(read_toc(backend, entry.path, key if manifest.encrypted else None))
    return f"checksum ok, {entries} TOC entries" + (", decrypts" if manifest.encrypted else "")


def authenticate(path: Path, key: bytes) -> None:
    """Decrypt a whole encrypted archive, discarding the output: BackupError at the first bad chunk."""
    with archive_reader(path, key) as source:
        while source.read(1 << 20):
            pass


# --- listing -------------------------------------------------------------------------------


def list_backups(directory: Path) -> list[BackupEntry]:
    """Our archives in `directory`, oldest first, each with its manifest (or why it has none)."""
    if not directory.is_dir():
        return []
    entries = []
    for path in directory.iterdir():
        parsed = parse_archive_name(path.name)
        if parsed is None:
            continue
        database, created = parsed
        manifest, problem = None, ""
        try:
            manifest = BackupManifest.from_json(
                manifest_path(path).read_text(encoding="utf-8"), source=manifest_path(path).name
            )
        except FileNotFoundError:
            problem = "no manifest"
        except (OSError, BackupError) as error:
            problem = str(error)
        entries.append(BackupEntry(path, database, created, manifest, problem))
    return sorted(entries, key=lambda entry: entry.created)


def stale_partials(directory: Path, *, now: float | None = None) -> list[Path]:
    """Temp files of interrupted backups: their writer is gone and nothing touched them for an hour."""
    if not directory.is_dir():
        return []
    now = time.time() if now is None else now
    stale = []
    for path in sorted(directory.iterdir()):
        pid = partial_writer_pid(path.name)
        if pid is None or _process_alive(pid):
            continue
        try:
            touched = max([path.stat().st_mtime, *(child.stat().st_mtime for child in path.rglob("*"))])
        except OSError:
            continue  # vanished meanwhile
        if now - touched >= STALE_PARTIAL_SECONDS:
            stale.append(path)
    return stale


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def remove_partial(path: Path) -> None:
    """Delete a leftover temp file or directory."""
    _discard(path)


def entry_size(entry: BackupEntry) -> int:
    """Bytes on disk of an archive (file or directory)."""
    if entry.path.is_dir():
        return sum(child.stat().st_size for child in entry.path.rglob("*") if child.is_file())
    return entry.path.stat().st_size if entry.path.exists() else 0


LISTING_HEADER = ("created (UTC)", "size", "database", "encryption", "state", "file")


def entry_columns(entry: BackupEntry) -> tuple[str, ...]:
    """One listing row, column by column (see LISTING_HEADER)."""
    from semantik_infra.console import format_bytes

    manifest = entry.manifest
    when = entry.created.strftime("%Y-%m-%d %H:%M:%S")
    encrypted = "?" if manifest is None else "encrypted" if manifest.encrypted else "plain"
    state = "verified at creation" if manifest and manifest.verified else entry.manifest_error or "unverified"
    return (when, format_bytes(entry_size(entry)), entry.database, encrypted, state, entry.path.name)


def describe_entry(entry: BackupEntry) -> str:
    """One listing line: date, size, database, encrypted or not, verified or not, file name."""
    return "  ".join(entry_columns(entry))


def delete_backup(entry: BackupEntry) -> None:
    """Remove an archive with its manifest and globals file."""
    import shutil

    if entry.path.is_dir():
        shutil.rmtree(entry.path)
    else:
        entry.path.unlink(missing_ok=True)
    manifest_path(entry.path).unlink(missing_ok=True)
    globals_path(entry.path).unlink(missing_ok=True)


# --- creating ------------------------------------------------------------------------------


def encryption_key(settings: Settings, encrypt: bool) -> bytes | None:
    """The parsed key when encrypting (or when a key is set for reading), else None."""
    if not encrypt:
        return None
    from semantik_infra.encryption import parse_key

    return parse_key(settings.backup.encryption_key.reveal())


def create_backup(
    settings: Settings,
    backend: Backend,
    *,
    fmt: str = CUSTOM,
    jobs: int = 1,
    encrypt: bool = False,
    include_globals: bool = False,
    progress: Callable[[int], None] | None = None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BackupResult:
    """Dump the configured database into BACKUP_DIR atomically, verify it, and write its manifest."""
    if fmt not in ARCHIVE_SUFFIX:
        raise ConfigError(f"--format {fmt!r}: use custom or directory")
    if jobs < 1:
        raise ConfigError("--jobs must be at least 1")
    if fmt == DIRECTORY and encrypt:
        raise ConfigError("--encrypt works with the custom format only (a directory archive is many files)")
    if include_globals and backend.name == "external":
        raise ConfigError("--include-globals needs the docker or native backend (roles belong to the whole server)")
    if fmt == DIRECTORY and backend.name == "docker":
        raise ConfigError("--format directory works only on the native and external backends: use --format custom")
    key = encryption_key(settings, encrypt)
    database = settings.database.database or "postgres"
    directory = settings.backup.directory
    directory.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    created = clock()
    server_version, server_major, tables = server_facts(settings, database)
    dump_version = client_version(backend, "pg_dump")
    if backend.name != "docker":
        check_pg_dump_version(dump_version, server_version, server_major)

    final = directory / archive_name(database, created, fmt)
    if fmt == CUSTOM:
        temp, sha256, size = _dump_custom(settings, backend, final, key, progress)
    else:
        temp, sha256, size = _dump_directory(settings, backend, final, jobs)
    try:
        # Verified under its temporary name: only an archive pg_restore can read gets a final name.
        listing = read_toc(backend, temp, key)
        publish_archive(temp, final)
    finally:
        _discard(temp)
    try:
        extra = _dump_globals(backend, final) if include_globals else None
        from semantik_infra.backends.native import parse_version
        from semantik_infra.encryption import key_fingerprint

        manifest = BackupManifest(
            archive=final.name,
            database=database,
            format=fmt,
            sha256=sha256,
            size=size,
            compression=settings.backup.compression,
            encrypted=key is not None,
            key_fingerprint=key_fingerprint(key) if key is not None else None,
            server_version=server_version,
            pg_dump_version=parse_version(dump_version)[0],
            created=created.isoformat(),
            duration_s=round(time.monotonic() - started, 3),
            toc_entries=count_toc_entries(listing),
            tables=tables,
            backend=backend.name,
            globals_file=extra.name if extra else None,
        )
        with atomic_writer(manifest_path(final), mode=0o644) as stream:
            stream.write(manifest.to_json().encode())
    except BaseException:
        # An archive that fails verification must not stay under a final name.
        delete_backup(BackupEntry(final, database, created, None))
        raise
    return BackupResult(final, manifest, extra)


def _temp_path(final: Path) -> Path:
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.{os.getpid()}.", suffix=PARTIAL_SUFFIX)
    os.close(fd)
    os.chmod(name, ARCHIVE_MODE)
    return Path(name)


def _discard(temp: Path) -> None:
    import shutil

    if temp.is_dir():
        shutil.rmtree(temp, ignore_errors=True)
    else:
        temp.unlink(missing_ok=True)


def publish_archive(temp: Path, final: Path) -> None:
    """Give a finished archive its final name, never replacing an existing one."""
    try:
        if temp.is_dir():
            # Reserve the name with an empty directory (fails if it exists), then let rename()
            # atomically replace our own empty reservation.
            final.mkdir(mode=0o700)
            os.rename(temp, final)
        else:
            _publish_file(temp, final)
    except FileExistsError:
        raise BackupError(f"{final} already exists: refusing to overwrite a backup") from None
    except OSError as error:
        raise _write_error(error, final.parent) from None
    fsync_directory(final.parent)


def _publish_file(temp: Path, final: Path) -> None:
    try:
        # link() fails if the name exists, so a finished archive is never replaced.
        os.link(temp, final)
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        # A filesystem without hard links: reserve the name exclusively, then replace the reservation.
        os.close(os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, ARCHIVE_MODE))
        os.replace(temp, final)
        return
    temp.unlink()


def _dump_custom(
    settings: Settings,
    backend: Backend,
    final: Path,
    key: bytes | None,
    progress: Callable[[int], None] | None,
) -> tuple[Path, str, int]:
    """pg_dump -Fc streamed (and encrypted) into a fsynced temp file; (temp, sha256 on disk, size)."""
    command = backend.client_command("pg_dump", pg_dump_argv(CUSTOM, settings.backup.compression, 1))
    temp = _temp_path(final)
    try:
        with temp.open("wb") as raw:
            hashing = HashingWriter(raw)
            if key is not None:
                from semantik_infra.encryption import EncryptingWriter

                sink: Any = EncryptingWriter(hashing, key)  # type: ignore[arg-type]
            else:
                sink = hashing
            status, errors = proc.stream_to(command, sink, progress=progress)
            if status != 0:
                raise BackupError(f"pg_dump failed: {proc.last_line(errors) or f'exit status {status}'}")
            if key is not None:
                sink.close()
            raw.flush()
            os.fsync(raw.fileno())
        return temp, hashing.digest.hexdigest(), hashing.count
    except OSError as error:
        _discard(temp)
        raise _write_error(error, final.parent) from None
    except BaseException:
        _discard(temp)
        raise


def _dump_directory(settings: Settings, backend: Backend, final: Path, jobs: int) -> tuple[Path, str, int]:
    """pg_dump -Fd -j N into a temp directory beside the final one; (temp, sha256, size)."""
    temp = final.with_name(f".{final.name}.{os.getpid()}{PARTIAL_SUFFIX}")
    command = _local_tool(backend, "pg_dump", pg_dump_argv(DIRECTORY, settings.backup.compression, jobs, temp))
    try:
        result = proc.run(command, check=False)
        if result.returncode != 0:
            raise BackupError(f"pg_dump failed: {proc.last_line(result.stderr) or result.returncode}")
        os.chmod(temp, 0o700)  # pg_dump -Fd fsyncs its files itself
        size = sum(child.stat().st_size for child in temp.rglob("*") if child.is_file())
        return temp, file_sha256(temp), size
    except BaseException:
        _discard(temp)
        raise


def _dump_globals(backend: Backend, final: Path) -> Path:
    target = globals_path(final)
    command = backend.client_command("pg_dumpall", ["--globals-only", "--no-password"], database="postgres")
    with atomic_writer(target, mode=ARCHIVE_MODE) as stream:
        status, errors = proc.stream_to(command, stream)
        if status != 0:
            raise BackupError(f"pg_dumpall --globals-only failed: {proc.last_line(errors) or status}")
    return target


def _write_error(error: OSError, directory: Path) -> BackupError:
    if error.errno == errno.ENOSPC:
        return BackupError(f"no space left on the device holding {directory}: free space or set BACKUP_DIR")
    return BackupError(f"writing into {directory} failed: {error.strerror or error}")
