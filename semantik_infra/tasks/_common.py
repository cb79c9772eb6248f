"""Shared plumbing for the task modules: turning expected failures into one line and an exit
code, loading the Settings once per task, and asking for confirmation. Kept free of heavy
imports so `inv --list` stays fast."""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from invoke.exceptions import Exit

from semantik_infra.errors import ConfigError, InfraError, Terminated

if TYPE_CHECKING:
    from semantik_infra.config import Settings

F = TypeVar("F", bound=Callable[..., Any])


def infra_task(body: F) -> F:
    """Wrap a task body: InfraError becomes 'error: …' on stderr and its exit code; Ctrl-C exits 130
    and SIGTERM 143, each with one line ('interrupted' / 'terminated', plus what was left, if said)."""

    @functools.wraps(body)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with _sigterm_as_interrupt():
                return body(*args, **kwargs)
        except InfraError as error:
            raise Exit(f"error: {error}", code=error.exit_code) from None
        except KeyboardInterrupt as error:
            word, code = ("terminated", 143) if isinstance(error, Terminated) else ("interrupted", 130)
            detail = str(error)
            raise Exit(f"{word}: {detail}" if detail else word, code=code) from None

    return wrapper  # type: ignore[return-value]


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While a task runs, SIGTERM raises Terminated (a KeyboardInterrupt) in the main thread, so every
    cleanup Ctrl-C runs runs too; a second SIGTERM is ignored so that cleanup can finish."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(_signum: int, _frame: object) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def load() -> Settings:
    """The Settings for this task run, from env files and the process environment."""
    from semantik_infra.config import load_settings

    return load_settings()


def env_target() -> tuple[Path, Path]:
    """The project directory and the env file `env.init` writes, without validating settings."""
    import os

    from semantik_infra.config import env_file_chain, find_project_dir

    project_dir = find_project_dir(Path.cwd(), os.environ)
    return project_dir, env_file_chain(project_dir, os.environ)[0]


def confirm(action: str, *, yes: bool) -> None:
    """Return if `--yes` was given or the user types 'yes' to `action`; otherwise raise ConfigError."""
    if yes:
        return
    if not sys.stdin or not sys.stdin.isatty():
        raise ConfigError(f"not confirmed: no terminal to ask on; pass --yes to {action}")
    answer = input(f"This will {action}. Type 'yes' to continue: ").strip()
    if answer != "yes":
        raise ConfigError("cancelled: nothing was changed")
