"""The project lock: one OS file lock (`fcntl.flock` on `.semantik-infra.lock` in the project
directory) that serialises every read-modify-write of the env files and every first-time cluster
creation, so two terminals (or an IDE and a shell) never both generate secrets or both initialise
a cluster: the second process waits, then finds the work done. The lock is reentrant within one
process, dies with the process (no stale lock files to clean up), and is waited for, not polled."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from semantik_infra.errors import ConfigError

LOCK_NAME = ".semantik-infra.lock"

_held: dict[Path, tuple[int, int]] = {}  # lock file -> (fd, depth): reentrancy within this process
_guard = threading.Lock()


def lock_path(project_dir: Path) -> Path:
    """The lock file of a project."""
    return project_dir / LOCK_NAME


@contextlib.contextmanager
def project_lock(project_dir: Path, waiting: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the project's lock for the block; `waiting` is told once if another process holds it."""
    path = lock_path(project_dir)
    with _guard:
        if path in _held:
            fd, depth = _held[path]
            _held[path] = (fd, depth + 1)
            acquired_here = False
        else:
            acquired_here = True
    if acquired_here:
        fd = _acquire(path, waiting)
        with _guard:
            _held[path] = (fd, 1)
    try:
        yield
    finally:
        with _guard:
            fd, depth = _held[path]
            if depth > 1:
                _held[path] = (fd, depth - 1)
            else:
                del _held[path]
                os.close(fd)  # closing the descriptor releases the flock


def _acquire(path: Path, waiting: Callable[[str], None] | None) -> int:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise ConfigError(
            f"cannot open the lock file {path} ({error.strerror}): the project directory must be writable"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                waiting(f"waiting for another semantik-infra process in {path.parent} to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)  # Ctrl-C interrupts the wait
    except BaseException:
        os.close(fd)
        raise
    return fd
