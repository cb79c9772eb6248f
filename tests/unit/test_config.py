"""The Settings loader: precedence, sources, SQLite fallback, validation and redaction."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from semantik_infra.config import describe_settings, load_settings
from semantik_infra.errors import ConfigError

SECRET = "Sup3r-s3cret-Pa55word"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "env").mkdir()
    return tmp_path


def write(path: Path, **values: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    return path


def load(project: Path, **environ: str):
    return load_settings(environ=environ, cwd=project)


def test_precedence_defaults_file_env_local_environment(project):
    assert load(project, POSTGRES_HOST="x").database.port == 5432  # built-in default
    write(project / "env" / ".env.defaults", POSTGRES_PORT="1001", POSTGRES_HOST="h")
    assert load(project).database.port == 1001
    write(project / ".env", POSTGRES_PORT="1002")
    assert load(project).database.port == 1002
    write(project / ".env.local", POSTGRES_PORT="1003")
    settings = load(project)
    assert settings.database.port == 1003 and settings.sources["POSTGRES_PORT"] == ".env.local"
    settings = load(project, POSTGRES_PORT="1004")
    assert settings.database.port == 1004 and settings.sources["POSTGRES_PORT"] == "environment"
    assert settings.sources["POSTGRES_HOST"] == "env/.env.defaults"
    assert settings.sources["DB_POOL_SIZE"] == "default"


def test_semantik_env_file_replaces_dot_env(project):
    write(project / ".env", POSTGRES_PORT="1002")
    other = write(project / ".env.docker", POSTGRES_PORT="2002", SEMANTIK_PG_BACKEND="docker")
    settings = load(project, SEMANTIK_ENV_FILE=str(other))
    assert settings.database.port == 2002 and settings.backend == "docker" and settings.env_file == other
    relative = load(project, SEMANTIK_ENV_FILE=".env.docker")
    assert relative.database.port == 2002


def test_database_url_wins_over_parts(project):
    write(project / ".env", POSTGRES_HOST="parts-host", DATABASE_URL="postgresql://u:pw@url-host:6000/urldb")
    settings = load(project)
    assert (settings.database.host, settings.database.port, settings.database.database) == ("url-host", 6000, "urldb")
    assert settings.database_source == "DATABASE_URL (.env)"


def test_sqlite_fallback_when_nothing_postgres_is_set(project):
    settings = load(project)
    assert settings.database.is_sqlite and not settings.postgres_configured
    assert settings.database.database == str(project / "data" / "semantik.db")
    assert "SQLite fallback" in settings.database_source
    assert "SQLite fallback" in describe_settings(settings)
    assert not load(project, POSTGRES_PASSWORD="x").database.is_sqlite


def test_project_dir_is_found_upwards(project):
    write(project / ".env", POSTGRES_PORT="1234")
    nested = project / "a" / "b"
    nested.mkdir(parents=True)
    assert load_settings(environ={}, cwd=nested).database.port == 1234
    assert load_settings(environ={"SEMANTIK_PROJECT_DIR": str(project)}, cwd=Path("/")).project_dir == project


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("POSTGRES_PORT", "abc", "POSTGRES_PORT='abc' in .env: not a port number (1-65535)"),
        ("POSTGRES_PORT", "0", "not a port number"),
        ("POSTGRES_PORT", "70000", "not a port number"),
        ("DB_POOL_SIZE", "many", "DB_POOL_SIZE='many' in .env: not a whole number from 1 to 10000"),
        ("DB_POOL_SIZE", "0", "not a whole number"),
        ("DB_MAX_OVERFLOW", "-1", "not a whole number"),
        ("DB_POOL_TIMEOUT", "nan", "not a number"),
        ("DB_POOL_PRE_PING", "maybe", "DB_POOL_PRE_PING='maybe' in .env: not a boolean (use true or false)"),
        ("BACKUP_ENCRYPT", "2", "not a boolean"),
        ("SEMANTIK_PG_BACKEND", "kubernetes", "must be one of: auto, docker, native, external"),
        ("POSTGRES_USER", "", "POSTGRES_USER='' in .env: must not be empty"),
        ("POSTGRES_DB", "", "must not be empty"),
        ("DATABASE_URL", "mysql://u:p@h/d", "DATABASE_URL in .env: unknown scheme"),
        ("DATABASE_URL", "nonsense", "DATABASE_URL in .env: not a URL"),
        ("BACKUP_COMPRESSION", "lz4", "use zstd:1-19, gzip:0-9 or none"),
    ],
)
def test_bad_values_name_variable_value_and_file(project, variable, value, message):
    write(project / ".env", POSTGRES_HOST="localhost", **{variable: value})
    with pytest.raises(ConfigError) as raised:
        load(project)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_bad_value_from_environment_says_environment(project):
    with pytest.raises(ConfigError, match="POSTGRES_PORT='x' in environment"):
        load(project, POSTGRES_PORT="x")


def test_secret_values_are_never_echoed_in_errors(project):
    write(project / ".env", DATABASE_URL=f"postgresql://u:{SECRET}@h:notaport/d")
    with pytest.raises(ConfigError) as raised:
        load(project)
    assert SECRET not in str(raised.value)


def test_missing_explicit_env_file(project):
    with pytest.raises(ConfigError, match=re.escape("SEMANTIK_ENV_FILE='nope.env': no such file")):
        load(project, SEMANTIK_ENV_FILE="nope.env")


def test_unreadable_env_files(project):
    (project / ".env").mkdir()
    with pytest.raises(ConfigError, match="is a directory, not an env file"):
        load(project)
    (project / ".env").rmdir()
    (project / ".env").write_bytes(b"POSTGRES_HOST=\xff\xfe\n")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load(project)


def test_settings_repr_and_description_hide_secrets(project):
    write(project / ".env", POSTGRES_PASSWORD=SECRET, BACKUP_ENCRYPTION_KEY="KEY" + SECRET)
    settings = load(project)
    assert settings.database.password.reveal() == SECRET
    for shown in (repr(settings), str(settings), describe_settings(settings)):
        assert SECRET not in shown
    assert "(set, hidden)" in describe_settings(settings)


def test_paths_and_compose_files(project):
    write(project / ".env", COMPOSE_FILES="docker-compose.yml:compose/extra.yml", BACKUP_DIR="/abs/backups")
    settings = load(project)
    assert settings.compose.files == (project / "docker-compose.yml", project / "compose" / "extra.yml")
    assert settings.backup.directory == Path("/abs/backups")
    assert settings.data_dir == project / "data" / "postgres"
