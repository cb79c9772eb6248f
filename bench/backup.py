"""Backup/restore overhead, measured side by side in one run on a pgbench database:

- bare `pg_dump -Fc` vs `inv postgres.backup` (target ratio <= 1.05)
- bare `pg_dump -Fc` vs `inv postgres.backup --encrypt` (target <= 1.15)
- bare `pg_restore` vs `inv postgres.restore` (target <= 1.10, verification, row counts and the
  swap included; dropping the replaced database is not timed, as dropdb is not on the bare side)
- peak RSS of the backup process at scale S and 4*S (target: flat)

    python bench/backup.py [--scale 20] [--runs 3]

Scale 1 is about 15 MB of data. It starts a private native cluster in a temp dir and removes it.
Timings are noisy on shared machines: read the ratios, medians of interleaved runs."""

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


def drop_kept_copies(pg_env: dict[str, str], bindir: Path) -> None:
    """Drop the `<db>_before_restore_*` databases restores keep."""
    listing = subprocess.run(
        [str(bindir / "psql"), "-d", "postgres", "-Atc", "SELECT datname FROM pg_database"],
        env=pg_env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    for name in listing:
        if "_before_restore_" in name:
            subprocess.run([str(bindir / "dropdb"), name], env=pg_env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    cluster = start_cluster(password="bench-password-not-secret")
    bindir = Path("/usr/lib/postgresql/15/bin")
    env = {**cluster.environ, "PYTHONPATH": str(REPO), "BACKUP_COMPRESSION": "6"}
    from semantik_infra.secrets import generate_encryption_key
    from semantik_infra.urls import libpq_environment

    env["BACKUP_ENCRYPTION_KEY"] = generate_encryption_key()
    pg_env = {**os.environ, **libpq_environment(cluster.settings.database)}
    work = cluster.project_dir / "bench"
    work.mkdir()
    inv = [sys.executable, "-m", "semantik_infra"]
    try:
        rss: dict[int, int] = {}
        for scale in (max(1, args.scale // 4), args.scale):
            subprocess.run(
                [str(bindir / "pgbench"), "-i", "-q", "-s", str(scale)], env=pg_env, check=True, capture_output=True
            )
            samples: dict[str, list[float]] = {"pg_dump": [], "backup": [], "backup --encrypt": []}
            peak = 0
            for _ in range(args.runs if scale == args.scale else 1):
                bare = work / "bare.dump"
                samples["pg_dump"].append(
                    timed([str(bindir / "pg_dump"), "-Fc", "-Z6", "-f", str(bare)], pg_env, work)[0]
                )
                seconds, kib = timed([*inv, "postgres.backup"], env, cluster.project_dir)
                samples["backup"].append(seconds)
                peak = max(peak, kib)
                samples["backup --encrypt"].append(
                    timed([*inv, "postgres.backup", "--encrypt"], env, cluster.project_dir)[0]
                )
            rss[scale] = peak
            size = bare.stat().st_size / 2**20
            if scale != args.scale:
                continue
            base = statistics.median(samples["pg_dump"])
            print(f"scale {scale}: archive {size:.0f} MiB, {args.runs} interleaved runs, medians")
            print(
                f"  inv postgres.backup           / pg_dump -Fc = {statistics.median(samples['backup']) / base:.3f}"
                " (target <= 1.05)"
            )
            print(
                f"  inv postgres.backup --encrypt / pg_dump -Fc = "
                f"{statistics.median(samples['backup --encrypt']) / base:.3f} (target <= 1.15)"
            )
            restores: dict[str, list[float]] = {"pg_restore": [], "restore": []}
            for run in range(args.runs):
                target = f"bare_restore_{run}"
                subprocess.run([str(bindir / "createdb"), target], env=pg_env, check=True)
                restores["pg_restore"].append(
                    timed(
                        [str(bindir / "pg_restore"), "--no-owner", "--single-transaction", "-d", target, str(bare)],
                        pg_env,
                        work,
                    )[0]
                )
                subprocess.run([str(bindir / "dropdb"), target], env=pg_env, check=True)
                # Like dropdb above, dropping the replaced database is outside the timing.
                restores["restore"].append(
                    timed([*inv, "postgres.restore", "latest", "--yes"], env, cluster.project_dir)[0]
                )
                drop_kept_copies(pg_env, bindir)
            ratio = statistics.median(restores["restore"]) / statistics.median(restores["pg_restore"])
            print(f"  inv postgres.restore          / pg_restore  = {ratio:.3f} (target <= 1.10, swap included)")
        small, large = sorted(rss)
        print(
            f"  peak RSS of the backup process: scale {small}: {rss[small] / 1024:.0f} MiB,"
            f" scale {large}: {rss[large] / 1024:.0f} MiB, ratio {rss[large] / rss[small]:.2f} (target: flat, ~1.0)"
        )
    finally:
        destroy_cluster(cluster)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
