"""Shared plumbing for the task modules: turning expected failures into one line and an exit
code, checked numeric flags (a bad value is one `error:` line, not Invoke's ValueError traceback),
quiet exits when the output pipe closes, loading the Settings once per task, and asking for
confirmation. Kept free of heavy imports so `inv --list` stays fast."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from invoke import Task
from invoke import task as invoke_task
from invoke.exceptions import Exit
from invoke.parser import Argument

from semantik_infra.errors import Cancelled, ConfigError, InfraError, Terminated

if TYPE_CHECKING:
    from semantik_infra.config import Settings

F = TypeVar("F", bound=Callable[..., Any])
# What a process killed by SIGPIPE exits with; we exit the same way, quietly, when stdout closes.
BROKEN_PIPE_EXIT = 141


class _CheckedArgument(Argument):
    """A numeric flag whose bad values (not a number, negative, nan) end the run with one line, exit 2."""

    def set_value(self, value: Any, cast: bool = True) -> None:
        if cast and self.kind in (int, float) and isinstance(value, str):
            super().set_value(_number(self.kind, value, f"--{self.names[0]}"), cast=False)
        else:
            super().set_value(value, cast)


def _number(kind: type, text: str, flag: str) -> int | float:
    what = "a whole number" if kind is int else "a number"
    try:
        number = kind(text.strip())
    except ValueError:
        number = None
    if number is None or (kind is float and not math.isfinite(number)) or number < 0:
        raise Exit(f"error: {flag}={text!r}: not {what} of 0 or more", code=ConfigError.exit_code)
    return number


class _OptionalPositional(Argument):
    """A positional argument that may be left out (the task then gets None). Invoke only has required
    positionals: its parser takes the next bare word for one whose value is None, and fails when the
    task's words end with it still None (in `complete_context`). Only that final check is told a
    value is there."""

    @property
    def value(self) -> Any:
        value = super().value
        if value is None and _called_from("complete_context"):
            return ""
        return value

    @value.setter
    def value(self, arg: Any) -> None:
        self.set_value(arg, cast=True)


def _called_from(name: str, depth: int = 6) -> bool:
    frame = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            return False
        if frame.f_code.co_name == name:
            return True
        frame = frame.f_back
    return False


class InfraTask(Task):
    """An Invoke task whose int/float flags are checked (see _CheckedArgument), and whose positional
    arguments with a None default may be left out (`inv postgres.drill [ARCHIVE]`)."""

    def get_arguments(self, ignore_unknown_help: bool | None = None) -> list[Argument]:
        """The task's arguments, numeric ones replaced by checked ones, optional positionals by ours."""
        import inspect

        defaults = {name: p.default for name, p in inspect.signature(self.body).parameters.items()}
        arguments = []
        for argument in super().get_arguments(ignore_unknown_help):
            if argument.positional and defaults.get(argument.name, inspect.Parameter.empty) is None:
                argument = _OptionalPositional(
                    names=argument.names, kind=str, default=None, help=argument.help, positional=True
                )
            elif argument.kind in (int, float):
                argument = _checked(argument)
            arguments.append(argument)
        return arguments


def _checked(argument: Argument) -> Argument:
    checked = _CheckedArgument(
        names=argument.names,
        kind=argument.kind,
        default=argument.default,
        help=argument.help,
        positional=argument.positional,
        optional=argument.optional,
        incrementable=argument.incrementable,
        attr_name=argument.attr_name,
    )
    return checked


task = functools.partial(invoke_task, klass=InfraTask)
"""`invoke.task` making InfraTasks: use it for every task in semantik_infra.tasks."""


def infra_task(body: F) -> F:
    """Wrap a task body: InfraError becomes 'error: …' on stderr and its exit code; Ctrl-C exits 130
    and SIGTERM 143, each with one line ('interrupted' / 'terminated', plus what was left, if said);
    declining a prompt exits 1 with 'cancelled: nothing was changed'; a closed stdout exits quietly."""

    @functools.wraps(body)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with _sigterm_as_interrupt():
                return body(*args, **kwargs)
        except Cancelled as cancelled:
            raise Exit(str(cancelled), code=cancelled.exit_code) from None
        except InfraError as error:
            raise Exit(f"error: {error}", code=error.exit_code) from None
        except KeyboardInterrupt as error:
            word, code = ("terminated", 143) if isinstance(error, Terminated) else ("interrupted", 130)
            detail = str(error)
            raise Exit(f"{word}: {detail}" if detail else word, code=code) from None
        except BrokenPipeError:
            if not stdout_closed():
                raise Exit("error: a pipe to a child process closed unexpectedly", code=1) from None
            raise Exit(code=BROKEN_PIPE_EXIT) from None

    return wrapper  # type: ignore[return-value]


def stdout_closed() -> bool:
    """True if stdout's reader went away (`| head`); then stdout is pointed at /dev/null so the
    interpreter's final flush stays quiet."""
    import select

    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):
        return False
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    if not any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0)):
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
    return True


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
    """The project directory and the env file `env.init` writes (it need not exist yet)."""
    from semantik_infra.config import env_file_chain, find_project_dir

    project_dir = find_project_dir(Path.cwd(), os.environ)
    return project_dir, env_file_chain(project_dir, os.environ, must_exist=False)[0]


def confirm(action: str, *, yes: bool) -> None:
    """Return if `--yes` was given or the user types 'yes' to `action`; otherwise raise Cancelled."""
    if yes:
        return
    if not sys.stdin or not sys.stdin.isatty():
        raise ConfigError(f"not confirmed: no terminal to ask on; pass --yes to {action}")
    try:
        answer = input(f"This will {action}. Type 'yes' to continue: ").strip()
    except EOFError:  # Ctrl-D
        print()
        answer = ""
    if answer != "yes":
        raise Cancelled("cancelled: nothing was changed")
