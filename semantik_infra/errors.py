"""The exception hierarchy. Every message is user-facing: one line saying what went wrong,
why, and which variable, file or command fixes it. Tasks turn these into an exit code and that
line, never a traceback; nothing here may carry a secret."""

from __future__ import annotations


class InfraError(Exception):
    """Base of every expected failure; ``exit_code`` is what the task exits with."""

    exit_code = 1


class ConfigError(InfraError):
    """A setting, env file or argument is missing or invalid."""

    exit_code = 2


class BackendError(InfraError):
    """The database backend (docker, native, external) could not do what was asked."""


class BackupError(InfraError):
    """A backup, verification or restore failed; the user's data is untouched."""


class DatabaseError(InfraError):
    """Connecting to or querying the database failed."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `timeout`, `docker stop`, a CI runner), raised where Ctrl-C would be so the
    same cleanup runs; tasks exit 143 instead of 130. Like Ctrl-C, its message may say what the
    interruption left behind."""
