"""Env files: quoting that python-dotenv reads back, atomic 0600 writes, and env.init's rules."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from dotenv import dotenv_values
from hypothesis import given, settings
from hypothesis import strategies as st

from semantik_infra import envfile
from semantik_infra.envfile import atomic_writer, format_value, prepare_env_file, set_values, write_text_atomic
from semantik_infra.errors import ConfigError
from semantik_infra.secrets import DEFAULT_PASSWORD_LENGTH, URL_SAFE_ALPHABET, entropy_bits, generate_password

REPO = Path(__file__).resolve().parents[2]


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"), max_size=40))
def test_format_value_round_trips_through_dotenv(value):
    parsed = dotenv_values(stream=io.StringIO(f"K={format_value(value)}\n"), interpolate=False)
    assert parsed["K"] == value


def test_hostile_value_round_trips():
    value = "p@ss:w/rd#%?&'\" $HOME \\"
    assert dotenv_values(stream=io.StringIO(f"K={format_value(value)}\n"), interpolate=False)["K"] == value


def test_set_values_keeps_comments_and_order():
    text = "# comment\nA=1\nexport B=2\n\nC=3\n"
    assert set_values(text, {"B": "two", "D": "4"}) == "# comment\nA=1\nB=two\n\nC=3\nD=4\n"


def test_atomic_write_mode_and_failure_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / ".env"
    write_text_atomic(target, "OLD=1\n")
    assert target.stat().st_mode & 0o777 == 0o600

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(envfile.os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_text_atomic(target, "NEW=1\n")
    assert target.read_text() == "OLD=1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".env"]


def test_atomic_writer_interrupted_midway(tmp_path):
    target = tmp_path / "f"
    target.write_text("before")
    with pytest.raises(KeyboardInterrupt), atomic_writer(target) as stream:
        stream.write(b"half")
        raise KeyboardInterrupt
    assert target.read_text() == "before" and len(list(tmp_path.iterdir())) == 1


@pytest.fixture
def project(tmp_path):
    (tmp_path / "env").mkdir()
    (tmp_path / "env" / ".env.example").write_text((REPO / "env" / ".env.example").read_text())
    return tmp_path


def values(path: Path) -> dict[str, str]:
    return {k: v or "" for k, v in dotenv_values(path, interpolate=False).items()}


def test_init_creates_with_secrets_and_mode(project):
    result = prepare_env_file(project, project / ".env")
    assert result.created and set(result.generated) == {"POSTGRES_PASSWORD", "BACKUP_ENCRYPTION_KEY"}
    written = values(project / ".env")
    assert len(written["POSTGRES_PASSWORD"]) == DEFAULT_PASSWORD_LENGTH
    assert set(written["POSTGRES_PASSWORD"]) <= set(URL_SAFE_ALPHABET)
    assert (project / ".env").stat().st_mode & 0o777 == 0o600
    assert "# --- Connection pool" in (project / ".env").read_text()  # comments kept


def test_init_is_idempotent_and_never_overwrites_without_force(project):
    prepare_env_file(project, project / ".env")
    before = (project / ".env").read_bytes()
    again = prepare_env_file(project, project / ".env")
    assert not again.changed and (project / ".env").read_bytes() == before
    forced = prepare_env_file(project, project / ".env", force=True)
    assert forced.backup is not None and forced.backup.read_bytes() == before
    assert forced.backup.stat().st_mode & 0o777 == 0o600
    assert values(project / ".env")["POSTGRES_PASSWORD"] != values(forced.backup)["POSTGRES_PASSWORD"]


def test_init_fills_only_missing_secrets(project):
    (project / ".env").write_text("POSTGRES_PASSWORD=keep-me-please-0123456789\nPOSTGRES_PORT=6000\n")
    result = prepare_env_file(project, project / ".env")
    assert result.generated == ("BACKUP_ENCRYPTION_KEY",)
    written = values(project / ".env")
    assert written["POSTGRES_PASSWORD"] == "keep-me-please-0123456789" and written["POSTGRES_PORT"] == "6000"


def test_init_tightens_a_readable_file(project):
    prepare_env_file(project, project / ".env")
    os.chmod(project / ".env", 0o644)
    result = prepare_env_file(project, project / ".env")
    assert result.mode_fixed and (project / ".env").stat().st_mode & 0o777 == 0o600


def test_init_without_example(tmp_path):
    with pytest.raises(ConfigError, match="example env file not found"):
        envfile.init_env_file(tmp_path / ".env", tmp_path / "missing", {})


def test_password_entropy_and_length_limits():
    assert entropy_bits(DEFAULT_PASSWORD_LENGTH) >= 256
    assert len({generate_password() for _ in range(50)}) == 50
    assert len(generate_password(64)) == 64
    with pytest.raises(ConfigError, match="too short"):
        generate_password(8)
