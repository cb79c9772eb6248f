"""Subprocess plumbing that needs no server: holding signals back for steps that belong together."""

from __future__ import annotations

import os
import signal

import pytest

from semantik_infra.proc import process_alive, signals_deferred


def test_ctrl_c_waits_until_the_deferred_steps_are_done():
    done = []
    with pytest.raises(KeyboardInterrupt), signals_deferred():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("both names published")
    assert done == ["both names published"]


def test_process_alive():
    assert process_alive(os.getpid())
    assert not process_alive(2**22 + 12345)  # above pid_max on Linux
