"""Pure helpers of the native backend and the backend interface."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from semantik_infra.backends.base import BackendStatus, tail_lines
from semantik_infra.backends.native import parse_version, port_in_use, render_server_settings, unreachable_parent


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)", ("15.18", 15)),
        ("postgres (PostgreSQL) 16.2", ("16.2", 16)),
        ("postgres (PostgreSQL) 17beta1", ("17", 17)),
        ("something else", ("something else", None)),
    ],
)
def test_parse_version(text, expected):
    assert parse_version(text) == expected


def test_server_settings_listen_on_loopback_only():
    text = render_server_settings(6543)
    assert "listen_addresses = '127.0.0.1'" in text
    assert "port = 6543" in text
    assert "unix_socket_directories = ''" in text


def test_port_in_use_sees_a_listener():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert port_in_use(port)
    assert not port_in_use(port)


def test_unreachable_parent():
    base = Path(tempfile.mkdtemp())
    try:
        base.chmod(0o755)
        locked = base / "locked"
        target = locked / "inner" / "data"
        target.mkdir(parents=True)
        locked.chmod(0o700)
        other_uid = os.geteuid() + 12345
        assert unreachable_parent(target, other_uid, set()) == locked
        locked.chmod(0o711)
        assert unreachable_parent(target, other_uid, set()) is None
    finally:
        shutil.rmtree(base)


def test_tail_lines_reads_only_the_end(tmp_path):
    log = tmp_path / "log"
    log.write_text("".join(f"line {i}\n" for i in range(10_000)))
    assert tail_lines(log, 3) == ["line 9997", "line 9998", "line 9999"]
    assert tail_lines(log, 0) == []
    assert tail_lines(tmp_path / "missing", 5) == []


def test_status_lines_are_aligned():
    lines = BackendStatus("native", True, {"pid": "42", "data dir": "/x"}).lines()
    assert lines == ["backend:  native", "state:    running", "pid:      42", "data dir: /x"]
