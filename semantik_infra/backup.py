"""Backups a user can bet their data on: pg_dump archives written atomically into BACKUP_DIR
(temp name in the same directory, fsync, no-clobber link to `<db>-<UTC time>.dump`), streamed with
flat memory (optionally through AES-256-GCM encryption), verified by reading the table of contents
back with `pg_restore --list`, and described by a manifest (semantik_infra.manifest) that is
published before the archive, so an archive never appears without it; and re-verifying archives
(semantik_infra.catalog knows what is in BACKUP_DIR). pg_dump runs through the backend (inside the
container on docker) tagged with our application_name, so an interruption can stop it there too;
the password reaches it only through its environment."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from semantik_infra import proc
from semantik_infra.archive import (
    CHUNK_SIZE,
    ArchiveReader,
    ArchiveWriter,
    Compression,
    archive_suffix,
    file_sha256,
    open_archive,
)
from semantik_infra.backends.base import Backend
from semantik_infra.catalog import (
    ARCHIVE_SUFFIX,
    CUSTOM,
    DIRECTORY,
    GLOBALS_SUFFIX,
    PARTIAL_SUFFIX,
    BackupEntry,
    archive_name,
    discard,
    prepare_backup_dir,
    write_error,
)
from semantik_infra.config import Settings
from semantik_infra.envfile import fsync_directory
from semantik_infra.errors import BackupError, ConfigError
from semantik_infra.manifest import MANIFEST_SUFFIX, BackupManifest, describe_authenticity, sign_manifest

ARCHIVE_MODE = 0o600  # archives hold all the data and, with globals, password hashes
# Tables smaller than this are counted exactly when the planner has no estimate yet.
EXACT_COUNT_LIMIT_BYTES = 64 << 20


@dataclass(frozen=True)
class BackupResult:
    """What `create_backup` wrote."""

    path: Path
    manifest: BackupManifest
    globals_path: Path | None = None


# --- pure helpers --------------------------------------------------------------------------


def pg_dump_argv(fmt: str, compression: int, jobs: int, target: Path | None = None, tag: str = "") -> list[str]:
    """pg_dump options; the database comes from PGDATABASE, `tag` becomes its application_name."""
    argv = ["--format", fmt, "--compress", str(compression), "--no-password"]
    if tag:
        from semantik_infra.leftovers import conninfo

        argv += ["--dbname", conninfo(application_name=tag)]
    if fmt == DIRECTORY:
        argv += ["--jobs", str(jobs), "--file", str(target)]
    return argv


def check_jobs(jobs: int, *, flag: str = "--jobs") -> None:
    """Every task validates --jobs the same way."""
    if jobs < 1:
        raise ConfigError(f"{flag} must be at least 1 (got {jobs})")


def count_toc_entries(listing: str) -> int:
    """Entries in a `pg_restore --list` listing (comment lines start with ';')."""
    return sum(1 for line in listing.splitlines() if line.strip() and not line.startswith(";"))


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
        "SELECT n.nspname, c.relname, c.reltuples::bigint, pg_relation_size(c.oid),"
        " format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
        " AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2"
    )
    tables: dict[str, int | None] = {}
    # Keys are quoted as PostgreSQL quotes them, so "my.schema"."t" never reads as my.schema.t.
    for schema, table, estimate, size, name in cursor.fetchall():
        if estimate >= 0:
            tables[name] = int(estimate)
        elif size <= EXACT_COUNT_LIMIT_BYTES:
            # Never analysed, and small enough to count exactly.
            cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table)))
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
        with open_archive(archive, key=key) as source:
            status, listing, errors = proc.feed_from(backend.client_command("pg_restore", ["--list"]), source)
    if status != 0:
        raise BackupError(f"{archive.name}: pg_restore cannot read it: {proc.last_line(errors) or status}")
    return listing


def _local_tool(backend: Backend, tool: str, args: list[str]) -> proc.Command:
    if backend.name == "docker":
        raise BackupError("the directory format works only on the native and external backends")
    return backend.client_command(tool, args)


def precheck(entry: BackupEntry, key: bytes | None) -> None:
    """What can be checked without reading the archive: a valid manifest, the archive there with the
    manifest's size, and the key it was encrypted with. BackupError otherwise."""
    manifest = entry.manifest
    if entry.manifest_error:
        raise BackupError(entry.manifest_error)
    if manifest is None:
        raise BackupError(f"{entry.path.name}: no manifest beside it: its checksum cannot be checked")
    if not entry.path.exists():
        raise BackupError(f"{entry.path.name}: the archive is missing")
    if entry.path.is_file() and entry.path.stat().st_size != manifest.size:
        raise BackupError(
            f"{entry.path.name}: size {entry.path.stat().st_size} differs from the manifest's {manifest.size}"
            " (truncated or changed)"
        )
    if manifest.encrypted and key is None:
        raise BackupError(f"{entry.path.name} is encrypted: set BACKUP_ENCRYPTION_KEY to its key")
    if manifest.encrypted and key is not None:
        from semantik_infra.encryption import key_fingerprint

        if manifest.key_fingerprint and key_fingerprint(key) != manifest.key_fingerprint:
            raise BackupError(
                f"{entry.path.name} was encrypted with another key (fingerprint {manifest.key_fingerprint}):"
                " set BACKUP_ENCRYPTION_KEY to that key"
            )


def check_digest(entry: BackupEntry, sha256: str, size: int) -> None:
    """BackupError unless the bytes read from disk are the ones the manifest describes."""
    manifest = entry.manifest
    if manifest is not None and (sha256 != manifest.sha256 or size != manifest.size):
        raise BackupError(f"{entry.path.name}: checksum mismatch: the archive is corrupted or was changed")


@contextlib.contextmanager
def checked_reader(
    entry: BackupEntry, key: bytes | None, progress: Callable[[int], None] | None = None
) -> Iterator[ArchiveReader]:
    """The archive's pg_dump bytes, read once and checked: when the body is done, the rest of the
    file is read (decrypted and decompressed, every chunk and frame checked) and its checksum compared
    with the manifest. A decoding error in a file whose checksum no longer matches is reported as the
    checksum mismatch it is."""
    with open_archive(entry.path, key=key, progress=progress) as reader:
        try:
            yield reader
            reader.finish()
        except BackupError:
            reader.finish_raw()
            check_digest(entry, reader.sha256, reader.size)
            raise
        check_digest(entry, reader.sha256, reader.size)


def read_through(backend: Backend, entry: BackupEntry, key: bytes | None) -> str:
    """Read an archive once (see checked_reader), handing its head to `pg_restore --list`; the listing."""
    command = backend.client_command("pg_restore", ["--list"])
    with checked_reader(entry, key) as reader, proc.Feeder(command) as toc:
        while chunk := reader.read(CHUNK_SIZE):
            toc.write(chunk)
        status, listing, errors = toc.finish()
    if status != 0:
        raise BackupError(f"{entry.path.name}: pg_restore cannot read it: {proc.last_line(errors) or status}")
    return listing


def verify_archive(backend: Backend, entry: BackupEntry, key: bytes | None) -> str:
    """Check manifest, size, checksum, decryptability, compressed frames and TOC, reading the archive
    once; return a one-line verdict or raise BackupError."""
    precheck(entry, key)
    manifest = entry.manifest
    assert manifest is not None
    if entry.path.is_dir():
        if file_sha256(entry.path) != manifest.sha256:
            raise BackupError(f"{entry.path.name}: checksum mismatch: the archive is corrupted or was changed")
        listing = read_toc(backend, entry.path, None)
    else:
        listing = read_through(backend, entry, key if manifest.encrypted else None)
    decrypts = ", decrypts" if manifest.encrypted else ""
    entries = count_toc_entries(listing)
    return f"checksum ok, {entries} TOC entries{decrypts}, manifest {describe_authenticity(entry.authenticity)}"


def check_without_manifest(backend: Backend, entry: BackupEntry, key: bytes | None) -> str:
    """What can be checked of an archive with no manifest: every encrypted chunk authenticates, every
    compressed frame checks, and the TOC reads. The checksum cannot be checked, and the verdict says so."""
    from semantik_infra.encryption import is_encrypted

    encrypted = entry.path.is_file() and is_encrypted(entry.path)
    if encrypted and key is None:
        raise BackupError(f"{entry.path.name} is encrypted: set BACKUP_ENCRYPTION_KEY to its key")
    if entry.path.is_dir():
        listing = read_toc(backend, entry.path, None)
    else:
        listing = read_through(backend, entry, key if encrypted else None)
    return f"no manifest: checksum cannot be checked; {count_toc_entries(listing)} TOC entries readable"


# --- creating ------------------------------------------------------------------------------


def encryption_key(settings: Settings, encrypt: bool) -> bytes | None:
    """The parsed key when encrypting (or when a key is set for reading), else None."""
    if not encrypt:
        return None
    from semantik_infra.encryption import parse_key

    return parse_key(settings.backup.encryption_key.reveal())


def manifest_key_source(settings: Settings) -> bytes | None:
    """BACKUP_ENCRYPTION_KEY, parsed, when it is set: manifests are authenticated with a key derived
    from it (and archives decrypted with it); None when it is not set."""
    return encryption_key(settings, bool(settings.backup.encryption_key.reveal()))


def create_backup(
    settings: Settings,
    backend: Backend,
    *,
    fmt: str = CUSTOM,
    jobs: int = 1,
    encrypt: bool = False,
    include_globals: bool = False,
    dump_options: Sequence[str] = (),
    progress: Callable[[int], None] | None = None,
    report: Callable[..., None] = lambda *_a, **_k: None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BackupResult:
    """Dump the configured database into BACKUP_DIR atomically, verify it, and publish it with its
    manifest (manifest first, so an archive never appears without one).

    Interrupted (Ctrl-C, SIGTERM), it leaves nothing and says so; pg_dump is stopped inside the
    container too."""
    if fmt not in ARCHIVE_SUFFIX:
        raise ConfigError(f"--format {fmt!r}: use custom or directory")
    check_jobs(jobs)
    if jobs > 1 and fmt != DIRECTORY:
        raise ConfigError("--jobs works with --format directory only (a custom archive is written by one process)")
    if fmt == DIRECTORY and encrypt:
        raise ConfigError("--encrypt works with the custom format only (a directory archive is many files)")
    if include_globals and backend.name == "external":
        raise ConfigError("--include-globals needs the docker or native backend (roles belong to the whole server)")
    if fmt == DIRECTORY and backend.name == "docker":
        raise ConfigError("--format directory works only on the native and external backends: use --format custom")
    key = encryption_key(settings, encrypt)
    signing_key = manifest_key_source(settings)
    database = settings.database.database or "postgres"
    directory = prepare_backup_dir(settings.backup.directory)
    from semantik_infra.leftovers import cancel_orphans, new_tag, stop_tagged

    started = time.monotonic()
    created = clock()
    compression = _compression_for(settings.backup.compression, fmt)
    suffix = archive_suffix(compression, encrypted=key is not None) if fmt == CUSTOM else None
    final = directory / archive_name(database, created, fmt, suffix)
    tag = new_tag("backup")
    temp: Path | None = None
    written: list[Path] = []  # final names we created, to remove unless the archive gets its name
    published = False
    try:
        server_version, server_major, tables = server_facts(settings, database)
        cancel_orphans(settings, backend, report)  # the server answers: stop what killed tasks left running
        dump_version = client_version(backend, "pg_dump")
        if backend.name != "docker":
            check_pg_dump_version(dump_version, server_version, server_major)
        # Verified under its temporary name: only an archive pg_restore can read gets a final name.
        if fmt == CUSTOM:
            temp = temp_path(final)
            sha256, size, listing = _dump_custom(backend, temp, compression, key, progress, tag.text, dump_options)
        else:
            temp = final.with_name(f".{final.name}.{os.getpid()}{PARTIAL_SUFFIX}")
            sha256, size = _dump_directory(backend, temp, compression, jobs, tag.text)
            listing = read_toc(backend, temp, None)
        extra = _dump_globals(backend, final, written) if include_globals else None
        from semantik_infra.backends.native import parse_version

        manifest = BackupManifest(
            archive=final.name,
            database=database,
            format=fmt,
            sha256=sha256,
            size=size,
            compression=str(compression),
            encrypted=key is not None,
            key_fingerprint=None,
            server_version=server_version,
            pg_dump_version=parse_version(dump_version)[0],
            created=created.isoformat(),
            duration_s=round(time.monotonic() - started, 3),
            toc_entries=count_toc_entries(listing),
            tables=tables,
            backend=backend.name,
            globals_file=extra.name if extra else None,
        )
        if signing_key is not None:
            manifest = sign_manifest(manifest, signing_key)
        # The manifest first: killed between the two, the user sees no archive rather than an
        # archive that cannot be checked (the lone manifest is listed and pruned). Ctrl-C waits
        # until both have their names, so "no backup written" and "complete" are never both half true.
        with proc.signals_deferred():
            _publish_beside(final, MANIFEST_SUFFIX, written, lambda stream: stream.write(manifest.to_json().encode()))
            publish_archive(temp, final)
            published = True
    except BaseException as error:
        if not published:
            for path in written:
                path.unlink(missing_ok=True)
        if temp is not None:
            discard(temp)
        if backend.name == "docker":
            stop_tagged(settings, backend, tag)  # killing `docker exec` leaves pg_dump running inside
        if isinstance(error, KeyboardInterrupt):
            raise type(error)(f"the backup {final.name} was complete" if published else "no backup written") from None
        if isinstance(error, OSError):
            raise write_error(error, directory) from None
        raise
    return BackupResult(final, manifest, extra)


def temp_path(final: Path, suffix: str = "") -> Path:
    try:
        fd, name = tempfile.mkstemp(
            dir=final.parent, prefix=f".{final.name}{suffix}.{os.getpid()}.", suffix=PARTIAL_SUFFIX
        )
    except OSError as error:
        raise write_error(error, final.parent) from None
    os.close(fd)
    os.chmod(name, ARCHIVE_MODE)
    return Path(name)


def _publish_beside(
    final: Path, suffix: str, written: list[Path], write: Callable[[BinaryIO], Any], mode: int = 0o644
) -> Path:
    """Write `<final><suffix>` all-or-nothing (temp, fsync, no-clobber link), recording it in `written`."""
    target = final.with_name(final.name + suffix)
    temp = temp_path(final, suffix)
    try:
        os.chmod(temp, mode)
        with temp.open("wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        _publish_file(temp, target)
        written.append(target)
    except FileExistsError:
        raise BackupError(f"{target} already exists: refusing to overwrite it") from None
    finally:
        discard(temp)
    return target


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
        raise write_error(error, final.parent) from None
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


def _compression_for(configured: Compression, fmt: str) -> Compression:
    """What an archive of `fmt` is compressed with: BACKUP_COMPRESSION, except that a directory
    archive (many files, written by pg_dump's workers) uses pg_dump's own gzip instead of zstd."""
    from semantik_infra.archive import GZIP, ZSTD

    if fmt == DIRECTORY and configured.method == ZSTD:
        return Compression(GZIP, 6)
    return configured


class _Tee:
    """Writes every chunk to each sink in turn."""

    def __init__(self, *sinks: Any) -> None:
        self.sinks = sinks

    def write(self, data: bytes) -> int:
        for sink in self.sinks:
            sink.write(data)
        return len(data)


def _dump_custom(
    backend: Backend,
    temp: Path,
    compression: Compression,
    key: bytes | None,
    progress: Callable[[int], None] | None,
    tag: str,
    dump_options: Sequence[str] = (),
) -> tuple[str, int, str]:
    """pg_dump -Fc streamed through the archive pipeline (zstd, encryption, hashing) into the fsynced
    temp file, while `pg_restore --list` reads the table of contents from the same stream, so the
    archive is never read back; (sha256 on disk, size, TOC listing)."""
    argv = [*pg_dump_argv(CUSTOM, compression.pg_dump_level, 1, tag=tag), *dump_options]
    command = backend.client_command("pg_dump", argv)
    with temp.open("wb") as raw, proc.Feeder(backend.client_command("pg_restore", ["--list"])) as toc:
        writer = ArchiveWriter(raw, compression=compression, key=key)
        status, errors = proc.stream_to(command, _Tee(toc, writer), progress=progress)
        if status != 0:
            raise BackupError(f"pg_dump failed: {proc.last_line(errors) or f'exit status {status}'}")
        writer.finish()
        raw.flush()
        os.fsync(raw.fileno())
        toc_status, listing, toc_errors = toc.finish()
    if toc_status != 0:
        raise BackupError(f"pg_restore cannot read the new archive: {proc.last_line(toc_errors) or toc_status}")
    return writer.sha256, writer.size, listing


def _dump_directory(backend: Backend, temp: Path, compression: Compression, jobs: int, tag: str) -> tuple[str, int]:
    """pg_dump -Fd -j N into the temp directory beside the final one; (sha256, size)."""
    args = pg_dump_argv(DIRECTORY, compression.pg_dump_level, jobs, temp, tag=tag)
    result = proc.run(_local_tool(backend, "pg_dump", args), check=False)
    if result.returncode != 0:
        raise BackupError(f"pg_dump failed: {proc.last_line(result.stderr) or result.returncode}")
    os.chmod(temp, 0o700)  # pg_dump -Fd fsyncs its files itself
    size = sum(child.stat().st_size for child in temp.rglob("*") if child.is_file())
    return file_sha256(temp), size


def _dump_globals(backend: Backend, final: Path, written: list[Path]) -> Path:
    command = backend.client_command("pg_dumpall", ["--globals-only", "--no-password"], database="postgres")

    def write(stream: BinaryIO) -> None:
        status, errors = proc.stream_to(command, stream)
        if status != 0:
            raise BackupError(f"pg_dumpall --globals-only failed: {proc.last_line(errors) or status}")

    return _publish_beside(final, GLOBALS_SUFFIX, written, write, ARCHIVE_MODE)
