"""The embedded backend against the native one, measured side by side in one run:

- first `inv postgres.up` on a fresh project (initdb + start + database), embedded / native
  (target <= 1.2)
- `inv postgres.up` on an existing, stopped cluster: how long after the server first accepts a
  connection the task returns (polled from here every few ms; target <= 0.5 s), on both
- `inv postgres.up` when the server already runs, on both
- as root, the one-time copy of the binaries for a `postgres` user who cannot read the venv

    python bench/embedded.py [--runs 5]

Each run uses fresh project directories with private clusters on free ports, removed afterwards.
Timings are noisy on shared machines: read the ratios, medians of interleaved runs."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from semantik_infra.config import load_settings  # noqa: E402
from tests.conftest import cluster_environ, free_port, make_project_dir  # noqa: E402

BACKENDS = ("native", "embedded")


def task(args: list[str], env: dict[str, str], cwd: Path) -> float:
    """Seconds one `python -m semantik_infra ARGS` takes; fails loudly."""
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "semantik_infra", *args], env=env, cwd=cwd, capture_output=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {result.stderr.decode().strip()}")
    return time.perf_counter() - started


def up_after_accepting(env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """(total seconds of `up`, seconds from the first accepted connection to `up` returning)."""
    import psycopg2

    params = load_settings(environ=env, cwd=cwd).database.with_database("postgres").libpq_params()
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "semantik_infra", "postgres.up"], env=env, cwd=cwd, stdout=subprocess.DEVNULL
    )
    accepted = None
    while process.poll() is None:
        if accepted is None:
            try:
                psycopg2.connect(**params, connect_timeout="1").close()
                accepted = time.perf_counter()
            except psycopg2.OperationalError:
                time.sleep(0.005)
        else:
            time.sleep(0.002)
    ended = time.perf_counter()
    if process.returncode != 0:
        raise SystemExit("postgres.up failed on an existing cluster")
    return ended - started, ended - (accepted or ended)


def copy_seconds() -> float | None:
    """Seconds to copy the wheel's binaries into an empty cache (what root pays once), or None if not root."""
    if os.geteuid() != 0:
        return None
    from semantik_infra.backends.embedded import cached_copy, find_install

    cache = Path(tempfile.mkdtemp(prefix="semantik-bench-cache-"))
    try:
        cache.chmod(0o755)
        install = find_install(load_settings(environ={}, cwd=cache))
        started = time.perf_counter()
        cached_copy(install, cache / "c", "postgres")
        return time.perf_counter() - started
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    first: dict[str, list[float]] = {name: [] for name in BACKENDS}
    restart: dict[str, list[float]] = {name: [] for name in BACKENDS}
    after_accept: dict[str, list[float]] = {name: [] for name in BACKENDS}
    running: dict[str, list[float]] = {name: [] for name in BACKENDS}
    versions = {}
    for _ in range(args.runs):
        for name in BACKENDS:
            project = make_project_dir("semantik-bench-")
            env = {**cluster_environ(project, free_port(), "bench-password-not-secret", name), "PYTHONPATH": str(REPO)}
            try:
                first[name].append(task(["postgres.up"], env, project))
                running[name].append(task(["postgres.up"], env, project))
                task(["postgres.down"], env, project)
                total, tail = up_after_accepting(env, project)
                restart[name].append(total)
                after_accept[name].append(tail)
                versions[name] = (project / "data" / "postgres" / "PG_VERSION").read_text().strip()
            finally:
                subprocess.run(
                    [sys.executable, "-m", "semantik_infra", "postgres.reset", "--yes"],
                    env=env,
                    cwd=project,
                    capture_output=True,
                )
                shutil.rmtree(project, ignore_errors=True)
    median = {name: statistics.median(first[name]) for name in BACKENDS}
    ratio = median["embedded"] / median["native"]
    print(f"{args.runs} interleaved runs, medians (native: PostgreSQL {versions['native']},", end=" ")
    print(f"embedded: PostgreSQL {versions['embedded']})")
    print(
        f"  first postgres.up  embedded {median['embedded']:.2f} s / native {median['native']:.2f} s"
        f" = {ratio:.2f} (target <= 1.2): {'ok' if ratio <= 1.2 else 'OVER'}"
    )
    for name in BACKENDS:
        tail = statistics.median(after_accept[name])
        print(
            f"  {name:8} up on a stopped cluster {statistics.median(restart[name]):.2f} s, returns {tail:.3f} s after"
            f" the server accepts connections (target <= 0.5): {'ok' if tail <= 0.5 else 'OVER'};"
            f" up when running {statistics.median(running[name]):.2f} s"
        )
    copied = copy_seconds()
    if copied is not None:
        print(f"  one-time copy of the binaries for the postgres user: {copied:.2f} s")


if __name__ == "__main__":
    main()
