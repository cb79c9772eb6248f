"""`inv postgres.import-sqlite` against pgloader, side by side in one run, on a generated SQLite
database shaped like Semantik's pre-PostgreSQL data: collections, documents and chunks (text,
booleans stored as 0/1, ISO-8601 timestamps, JSON metadata, a BLOB column).

    python bench/import_sqlite.py [--rows 1000000] [--runs 1] [--keep DIR]

Both tools load the same file into their own empty database on one private native cluster (md5
authentication: Debian's pgloader 3.6 cannot do SCRAM), each creating the schema itself (ours with
--create-schema). pgloader runs with its defaults first; if that fails (Debian's build has a 1 GiB
heap, which a million chunks exhaust) it is run again with the workaround its users are told to
use, smaller prefetch and batches, and that run is the one timed. Printed: wall time of each and
the ratio (target: ours <= 1.0x pgloader's), peak RSS of each process, and, after reading every row
back, how many values differ from what the source means (a boolean 1 is true, a timestamp without
zone is UTC, JSON compares as JSON). Last, both import the test suite's fixture (every conversion
the import promises, a few rows each) and the rows that arrive are counted.
Timings are noisy on shared machines: read the ratio. Needs `apt-get install pgloader`."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import destroy_cluster, start_cluster  # noqa: E402

PASSWORD = "bench-password-not-secret"
SCHEMA = """
CREATE TABLE collections (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT,
    owner_id INTEGER NOT NULL,
    embedding_model TEXT NOT NULL,
    chunk_size INTEGER NOT NULL,
    is_public BOOLEAN NOT NULL DEFAULT 0,
    meta JSON,
    created_at DATETIME NOT NULL,
    updated_at DATETIME NOT NULL
);
CREATE TABLE documents (
    id TEXT PRIMARY KEY,
    collection_id TEXT NOT NULL REFERENCES collections (id),
    file_path TEXT NOT NULL,
    file_size INTEGER NOT NULL,
    mime_type TEXT,
    content_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    chunk_count INTEGER NOT NULL,
    is_deleted BOOLEAN NOT NULL DEFAULT 0,
    meta JSON,
    created_at DATETIME NOT NULL,
    updated_at DATETIME
);
CREATE INDEX ix_documents_collection_id ON documents (collection_id);
CREATE TABLE chunks (
    id INTEGER PRIMARY KEY,
    collection_id TEXT NOT NULL REFERENCES collections (id),
    document_id TEXT NOT NULL REFERENCES documents (id),
    chunk_index INTEGER NOT NULL,
    content TEXT NOT NULL,
    token_count INTEGER NOT NULL,
    start_offset INTEGER NOT NULL,
    is_embedded BOOLEAN NOT NULL DEFAULT 0,
    meta JSON,
    embedding BLOB,
    created_at DATETIME NOT NULL
);
CREATE INDEX ix_chunks_document_id ON chunks (document_id);
"""
_TEXT = "semantic search vector embedding chunk document collection query retrieval model token index score rerank"
WORDS = (_TEXT + " hybrid keyword context window passage paragraph qdrant postgres sqlite über naïve").split(" ")
BOOLEANS = {"is_public", "is_deleted", "is_embedded"}
TIMESTAMPS = {"created_at", "updated_at"}
JSONS = {"meta"}


def generate(path: Path, chunks: int, seed: int = 7) -> dict[str, int]:
    """Write the Semantik-shaped database; return its row counts."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1)
    connection = sqlite3.connect(path)
    connection.execute("PRAGMA journal_mode = OFF")
    connection.execute("PRAGMA synchronous = OFF")
    connection.executescript(SCHEMA)

    def stamp(offset: float) -> str:
        return (start + timedelta(seconds=offset)).isoformat(" ")  # as SQLAlchemy writes DateTime

    collection_ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(20)]
    connection.executemany(
        "INSERT INTO collections VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (cid, f"collection {n}", " ".join(rng.choices(WORDS, k=12)), 1 + n % 3, "Qwen/Qwen3-Embedding-0.6B",
             512, n % 2, json.dumps({"source": f"/data/{n}", "tags": rng.choices(WORDS, k=3)}),
             stamp(n * 3600), stamp(n * 3600 + 59.5))
            for n, cid in enumerate(collection_ids)
        ],
    )  # fmt: skip
    documents = max(1, chunks // 20)
    document_ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(documents)]

    def document_rows() -> Iterator[tuple]:
        for n, did in enumerate(document_ids):
            yield (
                did, collection_ids[n % 20], f"/data/docs/{n}/{rng.choice(WORDS)}.pdf", rng.randrange(1, 10**8),
                rng.choice(["application/pdf", "text/markdown", None]), hashlib.sha256(did.encode()).hexdigest(),
                rng.choice(["completed", "failed", "pending"]), 20, int(n % 17 == 0),
                json.dumps({"pages": rng.randrange(1, 400), "lang": rng.choice(["en", "de", "ja"])}),
                stamp(n * 7.25), stamp(n * 7.25 + 3) if n % 3 else None,
            )  # fmt: skip

    connection.executemany("INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", document_rows())

    def chunk_rows() -> Iterator[tuple]:
        for n in range(1, chunks + 1):
            document = (n - 1) // 20
            words = rng.choices(WORDS, k=rng.randrange(40, 140))
            content = " ".join(words)
            if n % 97 == 0:
                content += "\n\ttabs, newlines and a backslash \\ survive"
            yield (
                n, collection_ids[document % 20], document_ids[document], (n - 1) % 20, content, len(words),
                ((n - 1) % 20) * 1000, n % 5 != 0,
                json.dumps({"page": n % 300, "heading": rng.choice(WORDS), "score": round(rng.random(), 6)}),
                hashlib.sha256(n.to_bytes(8, "little")).digest() if n % 10 else None,
                stamp(n * 0.37 + rng.random()),
            )  # fmt: skip

    connection.executemany("INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", chunk_rows())
    connection.commit()
    connection.close()
    return {"collections": 20, "documents": documents, "chunks": chunks}


def measured(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int, int, str]:
    """Seconds, peak RSS (KiB), exit status and output of one command."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage.ru_maxrss, process.returncode, output


def allow_md5(cluster) -> None:  # type: ignore[no-untyped-def]
    """pgloader 3.6 speaks md5, not SCRAM: switch this private cluster's authentication."""
    import psycopg2

    hba = cluster.settings.data_dir / "pg_hba.conf"
    hba.write_text(hba.read_text().replace("scram-sha-256", "md5"))
    connection = psycopg2.connect(**cluster.settings.database.libpq_params())
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("ALTER SYSTEM SET password_encryption = 'md5'")
        cursor.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)
        cursor.execute("SET password_encryption = 'md5'")
        cursor.execute("ALTER ROLE semantik PASSWORD %s", (PASSWORD,))
    connection.close()


def expected(column: str, value: object) -> object:
    """What a source value means once in PostgreSQL."""
    if value is None:
        return None
    if column in BOOLEANS:
        return bool(value)
    if column in TIMESTAMPS:
        return datetime.fromisoformat(str(value)).replace(tzinfo=UTC)
    if column in JSONS:
        return json.loads(str(value))
    return value


def same(column: str, want: object, got: object) -> bool:
    """Whether PostgreSQL holds what the source means (JSON as JSON, text or not)."""
    if isinstance(got, memoryview):
        got = bytes(got)
    if column in JSONS and isinstance(got, str):
        try:
            got = json.loads(got)
        except ValueError:
            return False
    if isinstance(got, datetime) and got.tzinfo is None and isinstance(want, datetime):
        return False  # a naive timestamp: which instant it is depends on a setting
    return got == want and type(got) is type(want)


def count_differences(dsn: dict[str, str], source: Path) -> tuple[int, int, dict[str, int], dict[str, str]]:
    """(values compared, values differing, differing per column, PostgreSQL type per column)."""
    import psycopg2

    connection = psycopg2.connect(**dsn, options="-c TimeZone=UTC")
    sqlite = sqlite3.connect(source)
    compared = differing = 0
    by_column: dict[str, int] = {}
    types: dict[str, str] = {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'public'"
        )
        types = {f"{t}.{c}": d for t, c, d in cursor.fetchall()}
    for table in ("collections", "documents", "chunks"):
        columns = [row[1] for row in sqlite.execute(f"PRAGMA table_info({table})")]
        order = "id" if table == "chunks" else 'id COLLATE "C"'
        cursor = connection.cursor(name=f"read_{table}")
        cursor.itersize = 20_000
        cursor.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")
        source_rows = sqlite.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY id")
        for source_row, target_row in zip(source_rows, cursor, strict=False):
            for column, want, got in zip(columns, source_row, target_row, strict=True):
                compared += 1
                if not same(column, expected(column, want), got):
                    differing += 1
                    by_column[f"{table}.{column}"] = by_column.get(f"{table}.{column}", 0) + 1
        cursor.close()
        with connection.cursor() as count:
            count.execute(f"SELECT count(*) FROM {table}")
            missing = sqlite.execute(f"SELECT count(*) FROM {table}").fetchone()[0] - count.fetchone()[0]
        if missing:
            differing += missing * len(columns)
            by_column[f"{table} (missing rows x columns)"] = missing * len(columns)
    connection.close()
    sqlite.close()
    return compared, differing, by_column, types


def fixture_comparison(cluster, admin, work: Path) -> None:  # type: ignore[no-untyped-def]
    """Both tools on the test suite's fixture (every conversion the import promises): rows arriving."""
    import psycopg2

    from tests.integration.test_sqlite_import import build_sqlite

    source = build_sqlite(work / "fixture.db")
    for tool in ("ours", "pgloader"):
        database = f"fixture_{tool}"
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {database}")
            cursor.execute(f"CREATE DATABASE {database}")
        if tool == "ours":
            env = {
                **cluster.environ,
                "PYTHONPATH": str(REPO),
                "POSTGRES_DB": database,
                "SEMANTIK_PG_BACKEND": "external",
            }
            argv = [sys.executable, "-m", "semantik_infra", "postgres.import-sqlite", str(source), "--create-schema",
                    "--decode-fallback", "cp1252"]  # fmt: skip
        else:
            env = {**os.environ, "PGPASSWORD": PASSWORD}
            argv = ["pgloader", f"sqlite://{source}", f"postgresql://semantik@127.0.0.1:{cluster.port}/{database}"]
        _, _, status, output = measured(argv, env, work)
        connection = psycopg2.connect(**cluster.settings.database.with_database(database).libpq_params())
        with connection.cursor() as cursor:
            arrived = []
            for table in ("collections", "kinds", "tags"):
                cursor.execute(f"SELECT count(*) FROM {table}")
                arrived.append(f"{table} {cursor.fetchone()[0]}")
            cursor.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f'")
            keys = cursor.fetchone()[0]
            cursor.execute("SELECT data_type FROM information_schema.columns WHERE column_name = 'ratio'")
            ratio = cursor.fetchone()[0]
        connection.close()
        errors = sum("ERROR" in line for line in output.splitlines())
        print(f"fixture, {tool}: exit {status}, rows {', '.join(arrived)} (of 2, 8, 3), {keys} of 2 foreign keys,"
              f" REAL as {ratio}, {errors} ERROR lines")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000, help="chunks to generate (documents: rows/20)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="keep the generated SQLite file here (reused if present)")
    args = parser.parse_args()
    if shutil.which("pgloader") is None:
        raise SystemExit("pgloader is not installed: apt-get install -y pgloader")

    work = Path(tempfile.mkdtemp(prefix="bench-import-"))
    work.chmod(0o755)
    source = args.keep or work / "semantik.db"
    if not source.exists():
        started = time.perf_counter()
        counts = generate(source, args.rows)
        print(f"generated {source} ({source.stat().st_size / 2**20:.0f} MiB, {counts}) in"
              f" {time.perf_counter() - started:.1f} s")  # fmt: skip
    cluster = start_cluster(password=PASSWORD)
    try:
        allow_md5(cluster)
        import psycopg2

        admin = psycopg2.connect(**cluster.settings.database.libpq_params())
        admin.autocommit = True
        results: dict[str, list[tuple[float, int]]] = {"ours": [], "pgloader": []}
        outputs: dict[str, str] = {}
        pgloader_options: list[str] = []
        for run in range(args.runs):
            for tool in ("pgloader", "ours") if run % 2 else ("ours", "pgloader"):
                database = f"bench_{tool}"
                while True:
                    with admin.cursor() as cursor:
                        cursor.execute(f"DROP DATABASE IF EXISTS {database}")
                        cursor.execute(f"CREATE DATABASE {database}")
                    if tool == "ours":
                        env = {**cluster.environ, "PYTHONPATH": str(REPO), "POSTGRES_DB": database,
                               "SEMANTIK_PG_BACKEND": "external"}  # fmt: skip
                        argv = [sys.executable, "-m", "semantik_infra", "postgres.import-sqlite", str(source),
                                "--create-schema"]  # fmt: skip
                    else:
                        # The password reaches pgloader through PGPASSWORD, never its command line.
                        env = {**os.environ, "PGPASSWORD": PASSWORD}
                        target = f"postgresql://semantik@127.0.0.1:{cluster.port}/{database}"
                        argv = ["pgloader", *pgloader_options, f"sqlite://{source}", target]
                    seconds, rss, status, output = measured(argv, env, work)
                    label = f"{tool} {' '.join(pgloader_options)}" if tool == "pgloader" else tool
                    if status == 0:
                        break
                    reason = next((line for line in output.splitlines() if "exhausted" in line), output[-300:])
                    print(f"run {run + 1}: {label} FAILED after {seconds:.1f} s (exit {status}): {reason.strip()}")
                    if tool == "ours" or pgloader_options:
                        raise SystemExit(output[-3000:])
                    pgloader_options = ["--with", "prefetch rows = 10000", "--with", "batch rows = 5000"]
                results[tool].append((seconds, rss))
                outputs[tool] = output
                print(f"run {run + 1}: {label:8s} {seconds:7.1f} s, peak RSS {rss / 1024:6.0f} MiB", flush=True)
        ours = sorted(s for s, _ in results["ours"])[len(results["ours"]) // 2]
        theirs = sorted(s for s, _ in results["pgloader"])[len(results["pgloader"]) // 2]
        print()
        print(f"time      ours {ours:.1f} s, pgloader {theirs:.1f} s: ratio {ours / theirs:.2f}x (target <= 1.0x)")
        print(
            f"peak RSS  ours {max(r for _, r in results['ours']) / 1024:.0f} MiB,"
            f" pgloader {max(r for _, r in results['pgloader']) / 1024:.0f} MiB"
        )
        for tool in ("ours", "pgloader"):
            dsn = cluster.settings.database.with_database(f"bench_{tool}").libpq_params()
            compared, differing, by_column, types = count_differences(dsn, source)
            detail = ", ".join(f"{name}: {n}" for name, n in sorted(by_column.items())) or "none"
            print(f"values differing from the source, {tool}: {differing} of {compared} ({detail})")
            if by_column:
                print("  types:", ", ".join(f"{name} {types.get(name, '?')}" for name in sorted(by_column)))
        print()
        fixture_comparison(cluster, admin, work)
        print("\nours:\n" + outputs["ours"].strip())
        print("\npgloader's summary:\n" + "\n".join(outputs["pgloader"].strip().splitlines()[-14:]))
        admin.close()
    finally:
        destroy_cluster(cluster)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
