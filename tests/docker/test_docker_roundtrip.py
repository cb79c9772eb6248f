"""Issue 12 on the docker backend: backups and restores round-trip exactly, table by table, for
every BACKUP_COMPRESSION (zstd:3, gzip:6, none), each plain and encrypted, and an archive made by
a bare `pg_dump -Fc` inside the container (no manifest, pg_dump's own gzip) still restores. One
container serves the module: the data is created once, and each case backs it up, changes it,
restores the archive by its path and drills it, comparing per-table checksums taken in psql."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from semantik_infra.archive import archive_suffix, parse_compression
from semantik_infra.manifest import manifest_path
from semantik_infra.secrets import generate_encryption_key
from tests.conftest import archive_files
from tests.docker.conftest import DockerProject, _docker_project, project_container

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# Text that breaks naive COPY or escaping (newline, tab, carriage return, backslashes, COPY's own
# "\N" and "\." markers, quotes, unicode beyond the BMP), JSON with the same, bytes 0x00-0xff,
# NULLs next to empty strings, arrays, numerics, timestamps, a quoted schema and table name, an
# owned bigserial sequence, a standalone sequence and an empty table.
SCHEMA = r"""
CREATE TABLE notes (
    id int PRIMARY KEY,
    body text,
    meta jsonb,
    blob bytea,
    tags text[],
    amount numeric(12, 4),
    at timestamptz
);
INSERT INTO notes
SELECT g,
       CASE WHEN g % 7 = 0 THEN NULL
            WHEN g % 11 = 0 THEN ''
            ELSE 'line ' || g || chr(10) || 'tab' || chr(9) || 'cr' || chr(13) || ' back\slash \N \. \\ '
                 || '''quoted'' "double" Zoë 東京 ✓ 🐘 ' || repeat('x', g % 50) END,
       CASE WHEN g % 5 = 0 THEN NULL
            ELSE jsonb_build_object('n', g, 'text', 'q " b \ nl' || chr(10) || 'ü', 'list',
                                    jsonb_build_array(1, 'ß', NULL, g::numeric / 7)) END,
       CASE WHEN g % 3 = 0 THEN NULL
            ELSE decode(md5(g::text) || '00ff5c0a0d092c7c', 'hex') END,
       ARRAY['a,b', 'c"d', NULL, 'é' || g],
       g * 1.2345,
       timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute 1.5 seconds'
FROM generate_series(1, 3000) g;
UPDATE notes SET blob = (SELECT string_agg(set_byte('\x00'::bytea, 0, b), ''::bytea) FROM generate_series(0, 255) b)
WHERE id = 1;
CREATE SCHEMA "odd schema";
CREATE TABLE "odd schema"."Item ""q"" x" (id bigserial PRIMARY KEY, label text NOT NULL, payload bytea);
INSERT INTO "odd schema"."Item ""q"" x" (label, payload)
SELECT 'item ' || g || E'\t✓', CASE WHEN g % 2 = 0 THEN decode(repeat(md5(g::text), 20), 'hex') END
FROM generate_series(1, 200) g;
CREATE TABLE empty_table (a int, b text);
CREATE SEQUENCE ticket_seq START 1000 INCREMENT 7;
SELECT nextval('ticket_seq') FROM generate_series(1, 3);
"""

ITEM = '"odd schema"."Item ""q"" x"'
# Each line is "sum:<name>=<rows>:<md5 of every row, in id order>" (or the sequence's state), so
# the values are read back from psql's aligned output without depending on its layout.
CHECKSUMS = f"""
SELECT 'sum:' || name || '=' || value FROM (VALUES
  ('notes', (SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY id)), '-') FROM notes t)),
  ('item', (SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY id)), '-') FROM {ITEM} t)),
  ('empty', (SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY a)), '-') FROM empty_table t)),
  ('ticket_seq', (SELECT last_value || ',' || is_called FROM ticket_seq)),
  ('item_seq', (SELECT last_value || ',' || is_called FROM "odd schema"."Item ""q"" x_id_seq"))
) AS v(name, value) ORDER BY name
"""
CHANGE = f"""
UPDATE notes SET body = 'changed', meta = '{{}}', blob = NULL WHERE id % 2 = 0;
DELETE FROM notes WHERE id % 3 = 0;
DELETE FROM {ITEM} WHERE id < 10;
INSERT INTO empty_table VALUES (1, 'not empty any more');
SELECT setval('ticket_seq', 5);
"""

# The file name a user with only standard tools reads the archive by (issue 12's table).
SUFFIXES = {
    ("zstd:3", False): ".dump.zst",
    ("zstd:3", True): ".dump.zst.enc",
    ("gzip:6", False): ".dump",
    ("gzip:6", True): ".dump.enc",
    ("none", False): ".dump",
    ("none", True): ".dump.enc",
}
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True)
class Seeded:
    """The module's docker project and the checksums of the data it was seeded with."""

    project: DockerProject
    checksums: dict[str, str]


def _ok(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for fragment in fragments:
        assert fragment in output, output
    assert "Traceback" not in output, output
    return output


def _run(p: DockerProject, *args: str, expect: tuple[str, ...] = ()) -> str:
    """Run a task that must succeed and print `expect`, and never print a secret."""
    output = _ok(p.run(*args), *expect)
    assert p.password not in output
    assert p.environ["BACKUP_ENCRYPTION_KEY"] not in output
    return output


def _checksums(p: DockerProject) -> dict[str, str]:
    output = _run(p, "postgres.shell", "-c", CHECKSUMS)
    found = dict(re.findall(r"sum:([a-z_]+)=(\S+)", output))
    assert set(found) == {"notes", "item", "empty", "ticket_seq", "item_seq"}, output
    return found


def _pg_dump_compression(header: bytes) -> str:
    """What a custom-format archive's header says pg_dump compressed its data with: `gzip` or
    `none` (read independently of the product: a sign byte and `int_size` little-endian bytes before
    archive version 1.15, an algorithm byte from 1.15 on)."""
    assert header[:5] == b"PGDMP", f"not a pg_dump custom archive: {header[:16]!r}"
    minor, int_size, fmt = header[6], header[8], header[10]
    assert fmt == 1, f"not the custom format: {fmt}"
    if minor >= 15:
        return {0: "none", 1: "gzip"}.get(header[11], f"algorithm {header[11]}")
    level = int.from_bytes(header[12 : 12 + int_size], "little")
    return "gzip" if level != 0 else "none"


def _inner_header(archive: Path, compression: str) -> bytes:
    """The first bytes of the pg_dump archive inside an unencrypted backup."""
    with archive.open("rb") as raw:
        if compression.startswith("zstd"):
            import zstandard

            assert raw.read(4) == ZSTD_MAGIC, f"{archive.name} is not a zstd frame"
            raw.seek(0)
            return zstandard.ZstdDecompressor().stream_reader(raw).read(32)
        return raw.read(32)


@pytest.fixture(scope="module")
def seeded(test_image: str) -> Iterator[Seeded]:
    """One container for the module, with a backup key in its environment and the data created once."""
    for project in _docker_project(test_image, {"BACKUP_ENCRYPTION_KEY": generate_encryption_key()}):
        _run(project, "postgres.up")
        _run(project, "postgres.shell", "-c", SCHEMA)
        checksums = _checksums(project)
        assert checksums["notes"].startswith("3000:") and checksums["item"].startswith("200:"), checksums
        assert checksums["empty"] == "0:-" and checksums["ticket_seq"] == "1014,true", checksums
        yield Seeded(project, checksums)


def _change_and_check(seeded: Seeded) -> None:
    """Change every table and the sequence, so a restore has something to undo."""
    p = seeded.project
    _run(p, "postgres.shell", "-c", CHANGE)
    changed = _checksums(p)
    differing = {name for name in changed if changed[name] != seeded.checksums[name]}
    assert differing == {"notes", "item", "empty", "ticket_seq"}, changed


def _starts_from_the_seeded_data(seeded: Seeded) -> None:
    assert _checksums(seeded.project) == seeded.checksums, "an earlier case left the data changed"


@pytest.mark.parametrize(
    ("compression", "encrypt"),
    [
        pytest.param(compression, encrypt, id=f"{compression}-{'encrypted' if encrypt else 'plain'}")
        for compression in ("zstd:3", "gzip:6", "none")
        for encrypt in (False, True)
    ],
)
def test_every_compression_round_trips_exactly_on_docker(seeded: Seeded, compression: str, encrypt: bool):
    p = seeded.project
    _starts_from_the_seeded_data(seeded)
    before = set(archive_files(p.project_dir / "backups"))
    backup = p.run("postgres.backup", *(["--encrypt"] if encrypt else []), BACKUP_COMPRESSION=compression)
    _ok(backup, "backed up semantik", *([", encrypted"] if encrypt else []))
    [archive] = set(archive_files(p.project_dir / "backups")) - before

    suffix = SUFFIXES[(compression, encrypt)]
    assert archive_suffix(parse_compression(compression), encrypted=encrypt) == suffix
    assert archive.name.endswith(suffix), f"{archive.name} should end in {suffix}"
    assert archive.stat().st_mode & 0o777 == 0o600
    manifest = json.loads(manifest_path(archive).read_text())
    assert (manifest["compression"], manifest["encrypted"], manifest["backend"]) == (compression, encrypt, "docker")
    assert manifest["archive"] == archive.name and manifest["size"] == archive.stat().st_size
    assert set(manifest["tables"]) == {"public.notes", "public.empty_table", ITEM}, manifest["tables"]
    if encrypt:
        head = archive.read_bytes()[:8]
        assert not head.startswith((b"PGDMP", ZSTD_MAGIC)), f"{archive.name} is not opaque: {head!r}"
    else:
        # zstd wraps an uncompressed dump; gzip is pg_dump's own; none is neither.
        expected = "gzip" if compression.startswith("gzip") else "none"
        assert _pg_dump_compression(_inner_header(archive, compression)) == expected

    _change_and_check(seeded)
    _run(p, "postgres.restore", str(archive), "--yes", expect=("checksum ok", "(3 tables)", f"restored {archive.name}"))
    assert _checksums(p) == seeded.checksums, f"{compression} {'encrypted' if encrypt else 'plain'}"
    _run(p, "postgres.drill", str(archive), expect=("checksum ok", "exactly as archived", "3200 rows"))
    assert _checksums(p) == seeded.checksums  # a drill never touches the live database


def test_an_archive_from_bare_pg_dump_in_the_container_still_restores(seeded: Seeded):
    p = seeded.project
    _starts_from_the_seeded_data(seeded)
    dumped = project_container(p).exec_run(
        ["pg_dump", "-Fc", "-U", "semantik", "-d", "semantik"], environment={"PGPASSWORD": p.password}, demux=True
    )
    stdout, stderr = dumped.output
    assert dumped.exit_code == 0, stderr
    archive = p.project_dir / "semantik.dump"  # named as a user would, outside BACKUP_DIR, no manifest
    archive.write_bytes(stdout)
    assert _pg_dump_compression(stdout[:32]) == "gzip"  # pg_dump -Fc compresses by default
    assert not manifest_path(archive).exists()

    _change_and_check(seeded)
    # Without a manifest the restore names no table count; the drill below counts the archive's rows.
    _run(p, "postgres.restore", str(archive), "--yes", expect=("has no manifest", "restored semantik.dump"))
    assert _checksums(p) == seeded.checksums
    _run(p, "postgres.drill", str(archive), expect=("no manifest: checksum not checked", "3 tables, 3200 rows"))
    assert _checksums(p) == seeded.checksums
