"""Env files on disk: atomic 0600 writes (temp file + fsync + rename), editing KEY=value lines
while keeping comments and order, value quoting that python-dotenv reads back exactly, and
`init_env_file`, the logic behind `inv env.init` (fill in missing secrets, never overwrite one
without `force`, keep a backup when forced)."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from semantik_infra.errors import ConfigError

SECRET_FILE_MODE = 0o600
_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_./:@+,=-]*")
_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


@contextmanager
def atomic_writer(path: Path, mode: int = SECRET_FILE_MODE) -> Iterator[BinaryIO]:
    """Write `path` all-or-nothing: a temp file beside it, fsynced, then renamed over it.

    On any error (or Ctrl-C) the temp file is removed and the old file stays as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: Path, text: str, mode: int = SECRET_FILE_MODE) -> None:
    """Replace `path` with `text` atomically, with the given mode (0600 by default)."""
    with atomic_writer(path, mode) as stream:
        stream.write(text.encode("utf-8"))


def format_value(value: str) -> str:
    """Quote a value so python-dotenv reads back exactly `value`."""
    if _PLAIN_VALUE.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def assigned_name(line: str) -> str | None:
    """The variable a `KEY=value` line assigns, or None for comments and blank lines."""
    match = _ASSIGNMENT.match(line)
    return match.group(1) if match else None


def set_values(text: str, values: Mapping[str, str]) -> str:
    """Set each KEY in `text` to its value, in place where it is assigned, else appended."""
    remaining = dict(values)
    lines = text.splitlines()
    for index, line in enumerate(lines):
        name = assigned_name(line)
        if name in remaining:
            lines[index] = f"{name}={format_value(remaining.pop(name))}"
    lines.extend(f"{name}={format_value(value)}" for name, value in remaining.items())
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class InitResult:
    """What `init_env_file` did: the file, the variables it generated, and any backup it kept."""

    path: Path
    created: bool
    generated: tuple[str, ...]
    backup: Path | None
    mode_fixed: bool

    @property
    def changed(self) -> bool:
        """True if anything on disk changed."""
        return self.created or bool(self.generated) or self.mode_fixed


def init_env_file(
    target: Path,
    example: Path,
    generators: Mapping[str, Callable[[], str]],
    *,
    force: bool = False,
    read_values: Callable[[Path], Mapping[str, str]],
) -> InitResult:
    """Create or complete `target` from `example`, generating every empty secret in `generators`.

    Existing secrets are kept unless `force`; then they are regenerated and the old file is
    kept beside it as a 0600 backup.
    """
    created = not target.exists()
    if created:
        if not example.is_file():
            raise ConfigError(f"{example}: example env file not found (it ships in the repository's env/ folder)")
        text = example.read_text(encoding="utf-8")
        current: Mapping[str, str] = read_values(example)
    else:
        text = target.read_text(encoding="utf-8")
        current = read_values(target)
    to_generate = [name for name in generators if force or not current.get(name)]
    backup = None
    if force and not created and any(current.get(name) for name in to_generate):
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        backup = target.with_name(f"{target.name}.{stamp}.bak")
        write_text_atomic(backup, text)
    mode_fixed = False
    if to_generate or created:
        write_text_atomic(target, set_values(text, {name: generators[name]() for name in to_generate}))
    elif target.stat().st_mode & 0o077:
        os.chmod(target, SECRET_FILE_MODE)
        mode_fixed = True
    return InitResult(target, created, tuple(to_generate), backup, mode_fixed)


def find_example(project_dir: Path, name: str = ".env.example") -> Path:
    """The example env file: the project's env/ folder, else the one beside this package's checkout."""
    for base in (project_dir, Path(__file__).resolve().parents[1]):
        candidate = base / "env" / name
        if candidate.is_file():
            return candidate
    return project_dir / "env" / name


def prepare_env_file(
    project_dir: Path,
    target: Path,
    *,
    force: bool = False,
    password_length: int | None = None,
    example_name: str = ".env.example",
) -> InitResult:
    """`inv env.init`: create or complete the env file, generating POSTGRES_PASSWORD and BACKUP_ENCRYPTION_KEY."""
    from semantik_infra.config import read_env_file
    from semantik_infra.secrets import DEFAULT_PASSWORD_LENGTH, generate_encryption_key, generate_password

    length = password_length or DEFAULT_PASSWORD_LENGTH
    generate_password(length)  # validate the length before touching any file
    generators = {
        "POSTGRES_PASSWORD": lambda: generate_password(length),
        "BACKUP_ENCRYPTION_KEY": generate_encryption_key,
    }
    example = find_example(project_dir, example_name)
    return init_env_file(target, example, generators, force=force, read_values=read_env_file)
