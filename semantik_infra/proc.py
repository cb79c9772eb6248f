"""Subprocesses, at the edge: every external program runs from an argv list (never a shell
string), secrets reach it only through its environment, output is streamed rather than buffered
when it can be large, and Ctrl-C stops the child cleanly before the interrupt propagates."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from semantik_infra.errors import BackendError

# How long a child gets to exit after Ctrl-C before it is terminated, then killed.
_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class Command:
    """A program to run: argv, extra environment (where secrets go), and optionally another user."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict, repr=False)
    user: str | None = None
    cwd: Path | None = None

    @property
    def name(self) -> str:
        """The program's base name, for messages."""
        return Path(self.argv[0]).name

    def popen_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for subprocess.Popen."""
        kwargs: dict[str, Any] = {"env": {**os.environ, **self.env}}
        if self.user is not None:
            # Dropping privileges in the child keeps the secret-free argv and lets root run
            # the PostgreSQL server, which refuses to run as root.
            kwargs.update(user=self.user, group=_primary_group(self.user), extra_groups=[])
            kwargs["cwd"] = self.cwd or Path("/")
        elif self.cwd is not None:
            kwargs["cwd"] = self.cwd
        return kwargs


def _primary_group(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


def spawn(command: Command, **popen: Any) -> subprocess.Popen[Any]:
    """Start `command`, turning a missing program into a BackendError."""
    try:
        return subprocess.Popen(list(command.argv), **command.popen_kwargs(), **popen)
    except FileNotFoundError:
        raise BackendError(f"{command.argv[0]}: program not found (is it installed and on PATH?)") from None
    except PermissionError:
        raise BackendError(f"{command.argv[0]}: not executable by this user") from None


def stop_child(process: subprocess.Popen[Any]) -> None:
    """Interrupt a child as Ctrl-C would, give it a grace period to exit, then terminate, then kill.

    The SIGINT is sent even though a terminal's Ctrl-C reached the child already: a SIGTERM (or a
    signal sent to this process alone) did not."""
    import signal

    def interrupt() -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)

    for signal_it in (interrupt, process.terminate, process.kill):
        with contextlib.suppress(ProcessLookupError):
            signal_it()
        try:
            process.wait(timeout=_GRACE_SECONDS)
            return
        except subprocess.TimeoutExpired:
            continue


def run(
    command: Command,
    *,
    check: bool = True,
    input_text: str | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run to completion capturing small text output; raise BackendError with stderr's last line on failure."""
    process = spawn(
        command,
        stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(input_text, timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_child(process)
        raise BackendError(f"{command.name} did not finish within {timeout:g} s") from None
    except BaseException:
        stop_child(process)
        raise
    result = subprocess.CompletedProcess(list(command.argv), process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise BackendError(f"{command.name} failed: {last_line(stderr) or f'exit status {result.returncode}'}")
    return result


def run_interactive(command: Command) -> int:
    """Run with the terminal attached (psql, logs --follow); return its exit status."""
    process = spawn(command)
    try:
        return process.wait()
    except KeyboardInterrupt:
        stop_child(process)
        raise


def stream_to(
    command: Command,
    sink: IO[bytes],
    *,
    chunk_size: int = 1 << 20,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, str]:
    """Copy the child's stdout into `sink` chunk by chunk; return (exit status, stderr text).

    `progress` is called with the running byte count after each chunk.
    """
    import tempfile

    with tempfile.TemporaryFile() as errors:
        process = spawn(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)
        assert process.stdout is not None
        try:
            written = 0
            while chunk := process.stdout.read(chunk_size):
                sink.write(chunk)
                written += len(chunk)
                if progress is not None:
                    progress(written)
            status = process.wait()
        except BaseException:
            stop_child(process)
            raise
        finally:
            process.stdout.close()
        errors.seek(0)
        return status, errors.read().decode("utf-8", "replace")


class Feeder:
    """A child reading what we write to its stdin, its output going to temporary files: for
    `pg_restore --list` reading the head of a stream that we are writing elsewhere as a whole.
    Writes stop quietly once the child stops reading; `finish()` returns (status, stdout, stderr)."""

    def __init__(self, command: Command) -> None:
        import tempfile

        self._out = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed in __exit__
        try:
            self._process = spawn(command, stdin=subprocess.PIPE, stdout=self._out, stderr=self._errors)
        except BaseException:
            self._close_files()
            raise
        self.reading = True

    def write(self, data: bytes) -> int:
        """Hand `data` to the child while it reads; afterwards, drop it."""
        if self.reading:
            try:
                self._process.stdin.write(data)  # type: ignore[union-attr]
            except BrokenPipeError:
                self.reading = False
        return len(data)

    def finish(self) -> tuple[int, str, str]:
        """Close its stdin, wait for it, and return (exit status, stdout text, stderr text)."""
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.close()  # type: ignore[union-attr]
        status = self._process.wait()
        self._out.seek(0)
        self._errors.seek(0)
        return status, self._out.read().decode("utf-8", "replace"), self._errors.read().decode("utf-8", "replace")

    def _close_files(self) -> None:
        self._out.close()
        self._errors.close()

    def __enter__(self) -> Feeder:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is not None:
            with contextlib.suppress(BrokenPipeError):
                self._process.stdin.close()  # type: ignore[union-attr]
            stop_child(self._process)
        self._close_files()


def feed_from(
    command: Command,
    source: IO[bytes],
    *,
    chunk_size: int = 1 << 20,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, str, str]:
    """Stream `source` into the child's stdin; return (exit status, stdout text, stderr text).

    Output goes to temporary files rather than pipes, so a chatty child never deadlocks us.
    `progress` is called with the running byte count after each chunk.
    """
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as errors:
        process = spawn(command, stdin=subprocess.PIPE, stdout=out, stderr=errors)
        assert process.stdin is not None
        try:
            try:
                fed = 0
                while chunk := source.read(chunk_size):
                    process.stdin.write(chunk)
                    fed += len(chunk)
                    if progress is not None:
                        progress(fed)
            except BrokenPipeError:
                pass  # the child stopped reading: its exit status says why
            finally:
                with contextlib.suppress(BrokenPipeError):
                    process.stdin.close()
            status = process.wait()
        except BaseException:
            stop_child(process)
            raise
        out.seek(0)
        errors.seek(0)
        return status, out.read().decode("utf-8", "replace"), errors.read().decode("utf-8", "replace")


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold back Ctrl-C and SIGTERM for a few quick steps that must happen together (a backup's
    manifest and archive getting their names); they take effect right after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def process_alive(pid: int) -> bool:
    """True if a process with this pid exists on this machine (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def last_line(text: str) -> str:
    """The last non-empty line of some output, stripped."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def as_argv(parts: Sequence[str | os.PathLike[str]]) -> tuple[str, ...]:
    """An argv tuple from strings and paths."""
    return tuple(os.fspath(part) for part in parts)
