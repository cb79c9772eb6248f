"""Human output: one status line per step with a mark and its duration, and a `Timer` to measure
steps. Everything the tasks print goes through here or through `print`; secrets never reach it
because the objects passed in redact themselves."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _marks(stream: TextIO) -> dict[str, str]:
    encoding = (getattr(stream, "encoding", None) or "ascii").lower()
    if "utf" in encoding:
        return {"ok": "✓", "warn": "!", "fail": "✗", "info": "·", "skip": "–"}
    return {"ok": "[ok]", "warn": "[warn]", "fail": "[fail]", "info": "-", "skip": "[skip]"}


def status_line(status: str, text: str, seconds: float | None = None, stream: TextIO | None = None) -> str:
    """Format one line: a mark for ok/warn/fail/info, the text and, if given, the duration."""
    mark = _marks(stream or sys.stdout).get(status, status)
    timing = f" ({format_duration(seconds)})" if seconds is not None else ""
    return f"{mark} {text}{timing}"


def step(text: str, seconds: float | None = None, status: str = "ok") -> None:
    """Print one status line to stdout."""
    print(status_line(status, text, seconds), flush=True)


def format_duration(seconds: float) -> str:
    """'12 ms', '3.4 s' or '2 min 05 s'."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def format_bytes(count: float) -> str:
    """Human-readable size: '512 B', '1.5 MiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


class Timer:
    """Measure elapsed wall time: `with Timer() as t: ...; t.seconds`."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self._end: float | None = None

    def __enter__(self) -> Timer:
        self.start = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self._end = time.monotonic()

    @property
    def seconds(self) -> float:
        """Seconds since start (or between start and exit)."""
        return (self._end or time.monotonic()) - self.start


class Progress:
    """A one-line byte counter (of `total`, if known) rewritten in place on a terminal (at most 4 times a second)."""

    def __init__(self, label: str, stream: TextIO | None = None, total: int | None = None) -> None:
        self.label = label
        self.total = total
        self.stream = stream or sys.stdout
        self.enabled = self.stream.isatty()
        self.start = time.monotonic()
        self._last = 0.0

    def update(self, count: int) -> None:
        """Show `count` bytes so far with the elapsed time."""
        now = time.monotonic()
        if not self.enabled or now - self._last < 0.25:
            return
        self._last = now
        of = f" of {format_bytes(self.total)}" if self.total else ""
        self.stream.write(f"\r{self.label}: {format_bytes(count)}{of} in {format_duration(now - self.start)}   ")
        self.stream.flush()

    def done(self) -> None:
        """Clear the progress line."""
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()
