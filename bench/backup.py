"""Backup and restore speed on Semantik-shaped data, measured side by side in one run (medians of
interleaved runs; absolute figures beside each ratio):

- `inv postgres.backup` / bare `pg_dump -Fc -Z0` (reading the data out of the server; target <= 1.3)
- `inv postgres.backup` / bare `pg_dump -Fc` with its default gzip 6 (target <= 0.25)
- archive size / bare `pg_dump -Fc` archive size (target <= 1.10)
- `inv postgres.backup --encrypt` / `inv postgres.backup` (target <= 1.05)
- `inv postgres.restore latest --yes` / bare `createdb` + `pg_restore --single-transaction` of the
  gzip archive (target <= 1.05; verification and the swap included, dropping the replaced copy is
  not timed, as dropdb is not on the bare side); `--jobs 2` / bare `pg_restore -j 2` (target <= 1.0)
- `inv snapshot.save` + `inv snapshot.restore` / backup + restore (target >= 20x faster), when the
  snapshot tasks exist
- peak RSS of backup and restore at 1x and 4x the size (target: flat, <= 64 MiB)

    python bench/backup.py [--size 500] [--runs 3] [--no-large]

It starts a private native cluster in a temp dir, fills it with bench/semantik_data.py and
removes it afterwards. Timings are noisy on shared machines: read the ratios."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.semantik_data import fill  # noqa: E402
from tests.conftest import destroy_cluster, start_cluster  # noqa: E402


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int]:
    """Seconds and peak RSS (KiB, the process and its waited-for children) of one command."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - started
    if status != 0:
        errors = process.stderr.read().decode() if process.stderr else ""
        raise SystemExit(f"{' '.join(argv[:4])} failed (wait status {status}): {errors}")
    return elapsed, usage.ru_maxrss


class Bench:
    """The cluster, environments and commands of one run."""

    def __init__(self, size_mb: float) -> None:
        from semantik_infra.backends.native import find_server_binaries
        from semantik_infra.secrets import generate_encryption_key
        from semantik_infra.urls import libpq_environment

        self.cluster = start_cluster(password="bench-password-not-secret")
        self.bindir = find_server_binaries(None).bindir
        self.env = {**self.cluster.environ, "PYTHONPATH": str(REPO), "BACKUP_ENCRYPTION_KEY": generate_encryption_key()}
        self.pg_env = {**os.environ, **libpq_environment(self.cluster.settings.database)}
        self.work = self.cluster.project_dir / "bench"
        self.work.mkdir()
        self.inv = [sys.executable, "-m", "semantik_infra"]
        # What `pip install` does for an installed package (and scripts/onboard.sh for a checkout):
        # a task must not pay for compiling its modules (PYTHONDONTWRITEBYTECODE=1 is common).
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "semantik_infra")], check=True)
        self.tasks = subprocess.run([*self.inv, "--list"], env=self.env, capture_output=True, text=True).stdout
        self.fill(size_mb)

    def fill(self, size_mb: float) -> None:
        started = time.perf_counter()
        chunks = fill([str(self.bindir / "psql")], self.pg_env, size_mb)
        size = self.psql("SELECT pg_size_pretty(pg_database_size(current_database()))")
        print(f"database: {chunks} chunks, {size} (filled in {time.perf_counter() - started:.0f} s)", flush=True)

    def psql(self, query: str, database: str | None = None) -> str:
        argv = [str(self.bindir / "psql"), "-Atc", query] + (["-d", database] if database else [])
        return subprocess.run(argv, env=self.pg_env, check=True, capture_output=True, text=True).stdout.strip()

    def settle(self) -> None:
        # Each restore writes ~1 GB of WAL: without this, the checkpoint it triggers lands in
        # whichever run comes next, which is noise of the size of the ratios measured.
        self.psql("CHECKPOINT")

    def tool(self, name: str, *args: str) -> tuple[float, int]:
        self.settle()
        return timed([str(self.bindir / name), *args], self.pg_env, self.work)

    def task(self, *args: str, **extra_env: str) -> tuple[float, int]:
        self.settle()
        return timed([*self.inv, *args], {**self.env, **extra_env}, self.cluster.project_dir)

    def bare_restore(self, archive: Path, *options: str) -> float:
        # A bare restore into a new database is createdb, then pg_restore (ours creates its scratch database too).
        target = "bare_restore"
        self.settle()
        seconds = timed([str(self.bindir / "createdb"), target], self.pg_env, self.work)[0]
        restore = [str(self.bindir / "pg_restore"), "--no-owner", *options, "-d", target, str(archive)]
        seconds += timed(restore, self.pg_env, self.work)[0]
        self.tool("dropdb", target)
        return seconds

    def drop_kept_copies(self) -> None:
        for name in self.psql("SELECT datname FROM pg_database").split():
            if "_before_restore_" in name:
                self.tool("dropdb", name)

    def newest_archive(self) -> Path:
        archives = [p for p in (self.cluster.project_dir / "backups").iterdir() if ".dump" in p.name]
        return max(
            (p for p in archives if not p.name.startswith(".") and p.suffix != ".json"), key=lambda p: p.stat().st_mtime
        )

    def close(self) -> None:
        destroy_cluster(self.cluster)


def median(values: list[float]) -> float:
    return statistics.median(values)


def line(label: str, ours: float, base: float, target: str, unit: str = "s") -> None:
    print(f"  {label:<58} {ours / base:6.3f}  ({ours:.2f} {unit} / {base:.2f} {unit}; target {target})", flush=True)


def measure(bench: Bench, runs: int) -> None:
    """Every ratio at the current size."""
    s: dict[str, list[float]] = {}
    gzip_archive, raw_archive = bench.work / "bare.dump", bench.work / "raw.dump"
    for _ in range(runs):
        s.setdefault("pg_dump -Z0", []).append(bench.tool("pg_dump", "-Fc", "-Z0", "-f", str(raw_archive))[0])
        s.setdefault("pg_dump", []).append(bench.tool("pg_dump", "-Fc", "-f", str(gzip_archive))[0])
        s.setdefault("backup --encrypt", []).append(bench.task("postgres.backup", "--encrypt")[0])
        s.setdefault("backup zstd:2", []).append(bench.task("postgres.backup", BACKUP_COMPRESSION="zstd:2")[0])
        level2 = bench.newest_archive().stat().st_size
        s.setdefault("backup", []).append(bench.task("postgres.backup")[0])
    ours = bench.newest_archive()
    sizes = {"ours": ours.stat().st_size, "pg_dump": gzip_archive.stat().st_size}
    print(f"backup ({runs} interleaved runs, medians; {os.cpu_count()} cores):")
    line("inv postgres.backup / pg_dump -Fc -Z0", median(s["backup"]), median(s["pg_dump -Z0"]), "<= 1.3")
    line("inv postgres.backup / pg_dump -Fc (gzip 6)", median(s["backup"]), median(s["pg_dump"]), "<= 0.25")
    line("archive size / pg_dump -Fc archive size", sizes["ours"] / 2**20, sizes["pg_dump"] / 2**20, "<= 1.10", "MiB")
    line(
        "inv postgres.backup --encrypt / inv postgres.backup",
        median(s["backup --encrypt"]),
        median(s["backup"]),
        "<= 1.05",
    )
    # Not targets: how much of the backup is zstd level 3's CPU on this machine's cores.
    zstd2, z0 = median(s["backup zstd:2"]), median(s["pg_dump -Z0"])
    line("  BACKUP_COMPRESSION=zstd:2: backup / pg_dump -Fc -Z0", zstd2, z0, "none")
    line("  BACKUP_COMPRESSION=zstd:2: size / pg_dump -Fc size", level2 / 2**20, sizes["pg_dump"] / 2**20, "-", "MiB")
    # Restore the plain archive: make it the newest.
    bench.task("postgres.backup")
    for _ in range(runs):
        s.setdefault("pg_restore -1", []).append(bench.bare_restore(gzip_archive, "--single-transaction"))
        s.setdefault("restore", []).append(bench.task("postgres.restore", "latest", "--yes")[0])
        bench.drop_kept_copies()
        s.setdefault("pg_restore -j 2", []).append(bench.bare_restore(gzip_archive, "--jobs", "2"))
        s.setdefault("restore --jobs 2", []).append(bench.task("postgres.restore", "latest", "--yes", "--jobs", "2")[0])
        bench.drop_kept_copies()
    print("restore:")
    line(
        "inv postgres.restore / pg_restore --single-transaction (gzip)",
        median(s["restore"]),
        median(s["pg_restore -1"]),
        "<= 1.05",
    )
    line(
        "inv postgres.restore --jobs 2 / pg_restore -j 2 (gzip)",
        median(s["restore --jobs 2"]),
        median(s["pg_restore -j 2"]),
        "<= 1.0",
    )
    if "snapshot.save" in bench.tasks:
        for run in range(runs):
            name = f"bench{run}"
            s.setdefault("snapshot", []).append(
                bench.task("snapshot.save", name)[0] + bench.task("snapshot.restore", name, "--yes")[0]
            )
            bench.task("snapshot.drop", name, "--yes")
        backup_restore = median(s["backup"]) + median(s["restore"])
        snapshot = median(s["snapshot"])
        print("snapshots:")
        print(
            f"  backup + restore / snapshot.save + snapshot.restore         {backup_restore / snapshot:6.1f}x"
            f"  ({backup_restore:.2f} s / {snapshot:.2f} s; target >= 20x)",
            flush=True,
        )


def peak_rss(bench: Bench) -> tuple[int, int]:
    """Peak RSS (KiB) of one backup and one restore."""
    backup = bench.task("postgres.backup")[1]
    restore = bench.task("postgres.restore", "latest", "--yes")[1]
    bench.drop_kept_copies()
    return backup, restore


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=float, default=500, help="database size in MB (default 500)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-large", action="store_true", help="skip the 4x size run for the RSS check")
    args = parser.parse_args()
    bench = Bench(args.size)
    try:
        measure(bench, args.runs)
        rss = {1: peak_rss(bench)}
        if not args.no_large:
            bench.fill(args.size * 4)
            rss[4] = peak_rss(bench)
        for factor, (backup, restore) in rss.items():
            print(
                f"peak RSS at {factor}x ({args.size * factor:.0f} MB): backup {backup / 1024:.0f} MiB,"
                f" restore {restore / 1024:.0f} MiB (target: flat, <= 64 MiB)"
            )
    finally:
        bench.close()
        shutil.rmtree(bench.work, ignore_errors=True)


if __name__ == "__main__":
    main()
