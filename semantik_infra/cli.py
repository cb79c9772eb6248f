"""The `semantik-infra` console script: Invoke's Program over the same namespace as tasks.py, so
the tasks run from any directory of the project, not only where tasks.py is. Output piped into a
reader that stops early (`semantik-infra --help | head`) ends the run quietly, as for any Unix tool."""

from __future__ import annotations

import sys

from invoke import Program

from semantik_infra import __version__
from semantik_infra.tasks import namespace


class InfraProgram(Program):
    """Invoke's Program, quiet when stdout closes while it prints help, lists or versions."""

    def run(self, argv: list[str] | str | None = None, exit: bool = True) -> None:
        """Run as Invoke does; a closed stdout exits 141 (what SIGPIPE would) without a traceback."""
        from semantik_infra.tasks._common import BROKEN_PIPE_EXIT, stdout_closed

        try:
            super().run(argv, exit)
        except BrokenPipeError:
            if not stdout_closed():
                raise
            sys.exit(BROKEN_PIPE_EXIT)


program = InfraProgram(namespace=namespace, version=__version__, name="semantik-infra", binary="semantik-infra")


def main() -> None:
    """Entry point of the console script."""
    program.run()
