"""Task plumbing: SIGTERM is handled exactly like Ctrl-C (every cleanup runs, one line, exit 143)."""

from __future__ import annotations

import os
import signal
import time

import pytest
from invoke.exceptions import Exit

from semantik_infra.tasks._common import infra_task


def test_sigterm_runs_cleanup_and_exits_143_with_one_line():
    cleaned = []

    @infra_task
    def body() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        finally:
            cleaned.append(True)

    with pytest.raises(Exit) as caught:
        body()
    assert (caught.value.code, caught.value.message, cleaned) == (143, "terminated", [True])
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # put back once the task is done


def test_an_interruption_can_say_what_it_left():
    @infra_task
    def body() -> None:
        raise KeyboardInterrupt("scratch database x dropped, semantik unchanged")

    with pytest.raises(Exit) as caught:
        body()
    assert caught.value.code == 130
    assert caught.value.message == "interrupted: scratch database x dropped, semantik unchanged"
