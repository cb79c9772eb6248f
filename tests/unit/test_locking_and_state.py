"""The project lock (reentrant in one process, exclusive across processes) and the pure parts of
recorded state: which values the user chose, per-clone compose names, the next free port."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from semantik_infra.config import check_compose_project, load_settings
from semantik_infra.locking import lock_path, project_lock
from semantik_infra.rotation import scram_verifier
from semantik_infra.setup_state import clone_project_name, free_port, user_chose

PROBE = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("free")
except BlockingIOError:
    print("held")
"""


def _probe(path: Path) -> str:
    return subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True).stdout.strip()


def test_the_lock_is_reentrant_here_and_exclusive_for_other_processes(tmp_path):
    with project_lock(tmp_path):
        with project_lock(tmp_path):
            assert _probe(lock_path(tmp_path)) == "held"
        assert _probe(lock_path(tmp_path)) == "held"  # the outer hold still counts
    assert _probe(lock_path(tmp_path)) == "free"
    assert lock_path(tmp_path).stat().st_mode & 0o777 == 0o600


def test_user_chose_means_environment_or_a_value_other_than_the_examples(tmp_path):
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / ".env.example").touch()
    (tmp_path / ".env").write_text("POSTGRES_PORT=5432\nCOMPOSE_PROJECT_NAME=mine\n")
    settings = load_settings(environ={}, cwd=tmp_path)
    assert not user_chose(settings, "POSTGRES_PORT") and user_chose(settings, "COMPOSE_PROJECT_NAME")
    assert user_chose(load_settings(environ={"POSTGRES_PORT": "5432"}, cwd=tmp_path), "POSTGRES_PORT")


def test_clone_project_names_are_valid_stable_and_differ_between_clones(tmp_path):
    one, two = tmp_path / "a" / "Semantik Clone", tmp_path / "b" / "Semantik Clone"
    name = clone_project_name(one)
    assert name == clone_project_name(one) and name != clone_project_name(two)
    assert name.startswith("semantik-semantik-clone-") and check_compose_project(name, "test") == name


def test_free_port_skips_a_port_in_use():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        assert free_port(taken) > taken


def test_scram_verifier_has_postgres_format():
    verifier = scram_verifier("secret", salt=b"0123456789abcdef")
    assert verifier.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$")
    assert verifier == scram_verifier("secret", salt=b"0123456789abcdef")
    assert verifier != scram_verifier("secret")
