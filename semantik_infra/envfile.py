"""Env files on disk: the strict parser (a subset of python-dotenv's syntax with the same meaning,
where any line it cannot read is an error naming the file and line, never the value), atomic 0600
writes (temp file + fsync + rename), editing KEY=value lines while keeping comments and order,
value quoting that reads back exactly, a 0600 `.bak` of every file it changes, refusing to write
through symlinks unless asked, and `init_env_file`, the logic behind `inv env.init` (fill in
missing secrets, never overwrite a line that holds anything without `force`). Callers that read,
decide and write hold the project lock (semantik_infra.locking) around all three."""

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
DEFAULT_EXAMPLE = ".env.example"
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
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def assigned_name(line: str) -> str | None:
    """The variable a `KEY=value` line assigns, or None for comments and blank lines."""
    match = _ASSIGNMENT.match(line)
    return match.group(1) if match else None


def set_values(text: str, values: Mapping[str, str]) -> str:
    """Set each KEY in `text` to its value, in place where it is assigned, else appended."""
    remaining = dict(values)
    lines = split_lines(text)
    if lines and lines[-1] == "":
        lines.pop()
    for index, line in enumerate(lines):
        name = assigned_name(line)
        if name in remaining:
            lines[index] = f"{name}={format_value(remaining.pop(name))}"
    lines.extend(f"{name}={format_value(value)}" for name, value in remaining.items())
    return "\n".join(lines) + "\n"


# --- parsing -------------------------------------------------------------------------------

_LINE_BREAK = re.compile(r"\r\n|\n|\r")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EXPORT = re.compile(r"export[ \t]+")
_INLINE_COMMENT = re.compile(r"\s+#.*")
# The escapes python-dotenv decodes inside double quotes; any other backslash stays as written.
_DOUBLE_QUOTE_ESCAPES = {
    "\\": "\\",
    "'": "'",
    '"': '"',
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}


class _LineError(Exception):
    def __init__(self, what: str, name: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.name = name


def split_lines(text: str) -> list[str]:
    """Lines as python-dotenv sees them: split at \\r\\n, \\n or \\r only."""
    return _LINE_BREAK.split(text)


def parse_env_text(text: str, source: str) -> dict[str, str]:
    """NAME -> value for every assignment in an env file's text.

    Any line that is not blank, a comment or a well-formed assignment is a ConfigError naming
    `source`, the line number and what is wrong; the line's content never appears in it, since it
    may hold a secret. A name assigned twice is an error too: which one wins is not obvious.
    """
    values: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    for number, line in enumerate(split_lines(text.removeprefix("\ufeff")), 1):
        try:
            parsed = parse_line(line)
        except _LineError as error:
            where = f"{error.name}: " if error.name else ""
            raise ConfigError(f"{source}: line {number}: {where}{error.what} (the line is not shown)") from None
        if parsed is None:
            continue
        name, value = parsed
        if name in first_seen:
            raise ConfigError(
                f"{source}: line {number}: {name} is assigned again (first on line {first_seen[name]}): keep one"
            )
        first_seen[name] = number
        values[name] = value
    return values


def parse_line(line: str) -> tuple[str, str] | None:
    """(name, value) of one assignment line, None for blank and comment lines; _LineError otherwise."""
    body = line.strip()
    if not body or body.startswith("#"):
        return None
    export = _EXPORT.match(body)
    if export:
        body = body[export.end() :]
    name, equals, rest = body.partition("=")
    if not equals:
        raise _LineError("no '=' on this line (expected NAME=value, or # for a comment)")
    name = name.rstrip()
    if not _NAME.fullmatch(name):
        raise _LineError("the text before '=' is not a variable name (letters, digits and _; no leading digit)")
    value_text = rest.lstrip(" \t")
    if value_text[:1] in ("'", '"'):
        value, end = _scan_quoted(value_text, name)
        tail = value_text[end:].strip()
        if tail and not tail.startswith("#"):
            raise _LineError("unexpected text after the closing quote (quote the whole value)", name)
        return name, value
    if value_text.startswith("#") and value_text != rest:
        return name, ""  # `NAME= # comment`: an empty value and a comment, as python-dotenv reads it
    return name, _INLINE_COMMENT.sub("", value_text).rstrip()


def _scan_quoted(text: str, name: str) -> tuple[str, int]:
    quote = text[0]
    out: list[str] = []
    index = 1
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            following = text[index + 1]
            if quote == '"' and following in _DOUBLE_QUOTE_ESCAPES:
                out.append(_DOUBLE_QUOTE_ESCAPES[following])
            elif quote == "'" and following in ("\\", "'"):
                out.append(following)
            else:
                out.append(char + following)
            index += 2
            continue
        if char == quote:
            return "".join(out), index + 1
        out.append(char)
        index += 1
    raise _LineError(f"the value's opening {quote} is never closed on this line", name)


def read_env_text(path: Path) -> str:
    """An env file's text, with every way reading it can fail turned into a ConfigError."""
    try:
        return path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not an env file") from None
    except PermissionError:
        raise ConfigError(f"{path}: not readable by this user (check its owner and mode)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror})") from None


def read_env_values(path: Path) -> dict[str, str]:
    """Parse one env file strictly (see parse_env_text)."""
    return parse_env_text(read_env_text(path), str(path))


# --- writing -------------------------------------------------------------------------------


def writable_target(path: Path, *, follow_symlinks: bool = False) -> Path:
    """The file to write for `path`: itself, or a symlink's target only when asked to follow it."""
    if not path.is_symlink():
        return path
    target = Path(os.path.realpath(path))
    if not follow_symlinks:
        raise ConfigError(
            f"{path} is a symbolic link to {target}: refusing to replace it with a regular file"
            " (`inv env.init --follow-symlinks` writes to the link's target instead)"
        )
    return target


def keep_backup(path: Path, text: str) -> Path:
    """Save `text` (the file's current content) as `<name>.<UTC time>.bak` beside it, mode 0600."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for attempt in range(1000):
        suffix = "" if attempt == 0 else f"-{attempt}"
        candidate = path.with_name(f"{path.name}.{stamp}{suffix}.bak")
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, SECRET_FILE_MODE)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as stream:
                stream.write(text.encode("utf-8"))
                stream.flush()
                os.fsync(stream.fileno())
        except BaseException:
            candidate.unlink(missing_ok=True)
            raise
        fsync_directory(path.parent)
        return candidate
    raise ConfigError(f"{path}: too many backups made this second; try again")


def backups_of(path: Path) -> list[Path]:
    """Backups `keep_backup` made of `path`, oldest first."""
    return sorted(path.parent.glob(f"{glob_escape(path.name)}.*.bak"))


def glob_escape(name: str) -> str:
    """`name` with glob metacharacters escaped."""
    return re.sub(r"([*?\[])", r"[\1]", name)


@dataclass(frozen=True)
class EnvUpdate:
    """What a write to an env file did: the names it set and the backup of the old file."""

    path: Path
    changed: tuple[str, ...]
    backup: Path | None


def update_env_file(path: Path, values: Mapping[str, str], *, follow_symlinks: bool = False) -> EnvUpdate:
    """Set `values` in an existing env file (only those that differ), keeping a backup when it changes.

    The caller holds the project lock across reading what it decides on and this write.
    """
    target = writable_target(path, follow_symlinks=follow_symlinks)
    text = read_env_text(target)
    current = parse_env_text(text, str(target))
    changed = {name: value for name, value in values.items() if current.get(name) != value}
    if not changed:
        return EnvUpdate(target, (), None)
    backup = keep_backup(target, text)
    write_text_atomic(target, set_values(text, changed))
    return EnvUpdate(target, tuple(changed), backup)


# --- env.init ------------------------------------------------------------------------------


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
    follow_symlinks: bool = False,
) -> InitResult:
    """Create or complete `target` from `example`, generating every empty secret in `generators`.

    A line that holds anything is kept unless `force`; a file that does not parse is an error,
    never replaced. Whenever an existing file changes, its old content is kept as a 0600 backup.
    """
    path = writable_target(target, follow_symlinks=follow_symlinks)
    created = not path.exists()
    if created:
        if not example.is_file():
            raise ConfigError(f"{example}: example env file not found (it ships in the repository's env/ folder)")
        text = read_env_text(example)
        current = parse_env_text(text, str(example))
    else:
        text = read_env_text(path)
        current = parse_env_text(text, str(path))
    to_generate = [name for name in generators if force or not current.get(name)]
    backup = None
    mode_fixed = False
    if to_generate or created:
        new_text = set_values(text, {name: generators[name]() for name in to_generate})
        if not created:
            backup = keep_backup(path, text)
        write_text_atomic(path, new_text)
    elif path.stat().st_mode & 0o077:
        os.chmod(path, SECRET_FILE_MODE)
        mode_fixed = True
    return InitResult(path, created, tuple(to_generate), backup, mode_fixed)


def example_names(project_dir: Path) -> list[str]:
    """The example env files on offer, for messages."""
    names: set[str] = set()
    for base in (project_dir, Path(__file__).resolve().parents[1]):
        names.update(p.name for p in (base / "env").glob(".env*.example"))
    return sorted(names)


def find_example(project_dir: Path, name: str = DEFAULT_EXAMPLE) -> Path:
    """The example env file: the project's env/ folder, else the one beside this package's checkout."""
    for base in (project_dir, Path(__file__).resolve().parents[1]):
        candidate = base / "env" / name
        if candidate.is_file():
            return candidate
    offered = ", ".join(example_names(project_dir)) or "none"
    raise ConfigError(f"--example {name}: no such file in env/ (examples: {offered})")


def variant_conflicts(project_dir: Path, example: Path, current: Mapping[str, str]) -> list[str]:
    """Settings that make `example` a variant (where it differs from .env.example) and that `current` lacks.

    ['SEMANTIK_PG_BACKEND=docker (the file has auto)'] for the Docker variant over a plain .env.
    """
    base = read_env_values(find_example(project_dir, DEFAULT_EXAMPLE))
    variant = read_env_values(example)
    return [
        f"{name}={value} (the file has {current.get(name) or 'nothing'})"
        for name, value in variant.items()
        if value and base.get(name) != value and current.get(name) != value
    ]


def prepare_env_file(
    project_dir: Path,
    target: Path,
    *,
    force: bool = False,
    password_length: int | None = None,
    example_name: str = DEFAULT_EXAMPLE,
    follow_symlinks: bool = False,
    waiting: Callable[[str], None] | None = None,
) -> InitResult:
    """`inv env.init`: create or complete the env file, generating POSTGRES_PASSWORD and BACKUP_ENCRYPTION_KEY.

    Runs under the project lock, so concurrent runs generate the secrets once.
    """
    from semantik_infra.locking import project_lock
    from semantik_infra.secrets import DEFAULT_PASSWORD_LENGTH, generate_encryption_key, generate_password

    length = password_length or DEFAULT_PASSWORD_LENGTH
    generate_password(length)  # validate the length before touching any file
    generators = {
        "POSTGRES_PASSWORD": lambda: generate_password(length),
        "BACKUP_ENCRYPTION_KEY": generate_encryption_key,
    }
    example = find_example(project_dir, example_name)
    with project_lock(project_dir, waiting):
        path = writable_target(target, follow_symlinks=follow_symlinks)
        if path.exists() and example_name != DEFAULT_EXAMPLE:
            conflicts = variant_conflicts(project_dir, example, read_env_values(path))
            if conflicts:
                raise ConfigError(
                    f"{target} already exists and is not the {example_name} variant: it needs"
                    f" {', '.join(conflicts)}. Edit that line, or keep a separate file:"
                    f" SEMANTIK_ENV_FILE={example_name.removesuffix('.example')} inv env.init --example {example_name}"
                )
        return init_env_file(target, example, generators, force=force, follow_symlinks=follow_symlinks)
