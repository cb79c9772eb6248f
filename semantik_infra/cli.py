"""The `semantik-infra` console script: Invoke's Program over the same namespace as tasks.py, so
the tasks run from any directory of the project, not only where tasks.py is."""

from __future__ import annotations

from invoke import Program

from semantik_infra import __version__
from semantik_infra.tasks import namespace

program = Program(namespace=namespace, version=__version__, name="semantik-infra", binary="semantik-infra")


def main() -> None:
    """Entry point of the console script."""
    program.run()
