"""Our reader of pg_dump's custom format against real pg_dump output: exact names and exact row
counts for uncompressed and gzip archives, and clear errors for damaged or foreign files."""

from __future__ import annotations

import io
import secrets
import subprocess
from collections.abc import Iterator

import psycopg2
import pytest

from semantik_infra.backends.native import NativeBackend
from semantik_infra.dumpfile import count_rows, qualified_name, read_toc
from semantik_infra.errors import BackupError
from tests.conftest import RunningCluster

# What this module tests is ours, not the server binaries': one local backend is enough.
pytestmark = [pytest.mark.integration, pytest.mark.native_only]

SCHEMA = r"""
CREATE TABLE t AS SELECT g, md5(g::text) AS m, E'line\nbreak\\.' AS x FROM generate_series(1, 3000) g;
CREATE TABLE empty (a int);
CREATE SCHEMA "my.schema";
CREATE TABLE "my.schema"."Weird ""Table"" Name" (v text);
INSERT INTO "my.schema"."Weird ""Table"" Name" VALUES (E'\\.'), ('.'), (E'a\\'), (NULL), (E'\n\\.\n');
SELECT lo_from_bytea(0, 'a large object');
"""
EXPECTED = {"public.t": 3000, "public.empty": 0, '"my.schema"."Weird ""Table"" Name"': 5}


@pytest.fixture(scope="module")
def dumps(pg_cluster: RunningCluster) -> Iterator[dict[str, bytes]]:
    database = f"d_{secrets.token_hex(4)}"
    admin = psycopg2.connect(**pg_cluster.settings.database.with_database("postgres").libpq_params())
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{database}"')
    connection = psycopg2.connect(**pg_cluster.settings.database.with_database(database).libpq_params())
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute(SCHEMA)
    connection.close()
    backend = NativeBackend(pg_cluster.settings)
    out = {}
    for level in ("0", "6"):
        command = backend.client_command("pg_dump", ["-Fc", "-Z", level], database=database)
        out[level] = subprocess.run(
            list(command.argv), env=command.popen_kwargs()["env"], capture_output=True, check=True
        ).stdout
    yield out
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE "{database}"')
    admin.close()


@pytest.mark.parametrize("level", ["0", "6"])
def test_exact_rows_and_names_from_the_archive(dumps: dict[str, bytes], level: str):
    dump, rows = count_rows(io.BytesIO(dumps[level]))
    assert dump.compression == ("none" if level == "0" else "gzip")
    counted = {qualified_name(entry): rows[dump_id] for dump_id, entry in dump.table_data().items()}
    assert counted == EXPECTED
    database = dump.entry("DATABASE")
    assert database is not None and "ENCODING = 'UTF8'" in (database.defn or "")


def test_toc_alone_reads_only_the_start(dumps: dict[str, bytes]):
    stream = io.BytesIO(dumps["0"])
    dump, _ = read_toc(stream)
    assert len(dump.table_data()) == 3
    assert stream.tell() < len(dumps["0"]) // 4


@pytest.mark.parametrize("cut", [10, 200, -50, -1])
def test_a_truncated_archive_is_a_clear_error(dumps: dict[str, bytes], cut: int):
    with pytest.raises(BackupError):
        count_rows(io.BytesIO(dumps["6"][:cut]))


def test_damaged_gzip_data_is_a_clear_error(dumps: dict[str, bytes]):
    data = bytearray(dumps["6"])
    data[len(data) - 300] ^= 0xFF
    with pytest.raises(BackupError):
        count_rows(io.BytesIO(bytes(data)))


@pytest.mark.parametrize("data", [b"", b"not a dump at all", b"PGDMP\x09\x00\x00"])
def test_foreign_files_are_refused(data: bytes):
    with pytest.raises(BackupError):
        count_rows(io.BytesIO(data))


class _Trickle:
    """A stream that hands out a few bytes per read, as a slow pipe may."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        self._data, self._at, self._step = data, 0, step

    def read(self, size: int = -1) -> bytes:
        piece = self._data[self._at : self._at + (self._step if size < 0 else min(self._step, size))]
        self._at += len(piece)
        return piece


def test_short_reads_from_a_pipe_or_decompressor_are_read_on(dumps: dict[str, bytes]):
    # Before, a stream handing out fewer bytes than asked read as a truncated archive.
    assert count_rows(_Trickle(dumps["0"]))[1] == count_rows(io.BytesIO(dumps["0"]))[1]  # type: ignore[arg-type]
    with pytest.raises(BackupError):
        count_rows(_Trickle(dumps["0"][:-50]))  # type: ignore[arg-type]
