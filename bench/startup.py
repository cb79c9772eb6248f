"""How much `inv --list` costs over bare Invoke: runs `inv --list` on this repo's tasks.py and on a
tasks.py with one trivial task, interleaved, and prints the ratio of the medians (target <= 1.3).
Also the console script (`python -m semantik_infra --list`) against `python -m invoke --list`.
Timings on shared machines are noisy: read the ratio, not the absolute numbers."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNS = 15


def timed(argv: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as empty:
        Path(empty, "tasks.py").write_text("from invoke import task\n\n\n@task\ndef hello(c):\n    pass\n")
        pairs = {
            "inv --list (tasks.py)": ([sys.executable, "-m", "invoke", "--list"], REPO),
            "inv --list (empty tasks)": ([sys.executable, "-m", "invoke", "--list"], Path(empty)),
            "semantik-infra --list": ([sys.executable, "-m", "semantik_infra", "--list"], REPO),
        }
        samples: dict[str, list[float]] = {name: [] for name in pairs}
        for _ in range(RUNS):
            for name, (argv, cwd) in pairs.items():
                samples[name].append(timed(argv, cwd))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    base = medians["inv --list (empty tasks)"]
    for name, median in medians.items():
        print(f"{name:28} ratio to bare Invoke {median / base:5.2f}")
    ratio = medians["inv --list (tasks.py)"] / base
    print(f"inv --list / bare Invoke = {ratio:.2f} (target <= 1.3): {'ok' if ratio <= 1.3 else 'OVER'}")


if __name__ == "__main__":
    main()
