"""URL building, quoting with hostile passwords, conversion and redaction."""

from __future__ import annotations

import psycopg2.extensions
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from semantik_infra.errors import ConfigError
from semantik_infra.urls import Secret, build_postgres_url, libpq_environment, parse_url, to_async, to_sync

HOSTILE = "p@ss:w/rd#%?&'\" "
text_parts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=30)


def url_with(password: str, user: str = "semantik", database: str = "semantik"):
    return build_postgres_url(host="localhost", port=5432, database=database, username=user, password=Secret(password))


def test_hostile_password_round_trips_through_sqlalchemy_and_libpq():
    rendered = url_with(HOSTILE).render(hide_password=False)
    assert make_url(rendered).password == HOSTILE
    assert psycopg2.extensions.parse_dsn(rendered)["password"] == HOSTILE
    assert parse_url(rendered).password.reveal() == HOSTILE


@settings(max_examples=200, deadline=None)
@given(password=text_parts, user=text_parts, database=text_parts)
def test_any_parts_round_trip(password, user, database):
    url = url_with(password, user, database)
    rendered = url.render(hide_password=False)
    parsed = parse_url(rendered)
    assert (parsed.username, parsed.password.reveal(), parsed.database) == (user, password, database)
    alchemy = make_url(rendered)
    assert (alchemy.username, alchemy.password, alchemy.database) == (user, password, database)
    libpq = psycopg2.extensions.parse_dsn(rendered)
    assert (libpq["user"], libpq["password"], libpq["dbname"]) == (user, password, database)


@settings(max_examples=100, deadline=None)
@given(password=text_parts)
def test_password_never_in_repr_or_str(password):
    url = url_with(password * 3 + "Q7")  # long enough not to occur by chance in the rest of the URL
    secret = password * 3 + "Q7"
    for shown in (repr(url), str(url), url.redacted(), repr(url.password), str(url.password)):
        assert secret not in shown


def test_redacted_form():
    assert url_with(HOSTILE).redacted() == "postgresql://semantik:***@localhost:5432/semantik"
    assert str(url_with("")) == "postgresql://semantik@localhost:5432/semantik"


@pytest.mark.parametrize(
    ("given_url", "sync", "async_"),
    [
        ("postgresql://u:p@h:5/d", "postgresql+psycopg2://u:p@h:5/d", "postgresql+asyncpg://u:p@h:5/d"),
        ("postgres://u:p@h:5/d", "postgresql+psycopg2://u:p@h:5/d", "postgresql+asyncpg://u:p@h:5/d"),
        ("postgresql+psycopg2://u:p@h:5/d", "postgresql+psycopg2://u:p@h:5/d", "postgresql+asyncpg://u:p@h:5/d"),
        (
            "postgresql://u:p@h:5/d?sslmode=require&connect_timeout=3&application_name=x",
            "postgresql+psycopg2://u:p@h:5/d?sslmode=require&connect_timeout=3&application_name=x",
            "postgresql+asyncpg://u:p@h:5/d?ssl=require&timeout=3&application_name=x",
        ),
        ("sqlite:///data/x.db", "sqlite:///data/x.db", "sqlite+aiosqlite:///data/x.db"),
        ("sqlite:////abs/x.db", "sqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
    ],
)
def test_sync_async_conversion_round_trips(given_url, sync, async_):
    url = parse_url(given_url)
    assert to_sync(url).render(hide_password=False) == sync
    assert to_async(url).render(hide_password=False) == async_
    assert to_sync(to_async(url)) == to_sync(url)
    assert to_async(parse_url(async_)) == to_async(url)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not a url", "not a URL"),
        ("mysql://u:p@h/d", "unknown scheme 'mysql://'"),
        ("postgresql://u:p@h:abc/d", "port is not a number"),
        ("postgresql://u:p@h:70000/d", "port is not a number"),
        ("postgresql://u:p@h:5432/", "no database name"),
        ("postgresql://u:pa#ss@h/d", "unquoted '#'"),
        ("postgresql://u:p@[::1/d", "unclosed '['"),
        ("sqlite://relative.db", "three slashes"),
    ],
)
def test_malformed_urls_name_the_variable_and_source(text, message):
    with pytest.raises(ConfigError) as raised:
        parse_url(text, variable="DATABASE_URL", source=".env")
    assert str(raised.value).startswith("DATABASE_URL in .env: ")
    assert message in str(raised.value)
    assert "pa#ss" not in str(raised.value) and ":p@" not in str(raised.value)


def test_ipv6_host_and_libpq_environment():
    url = parse_url("postgresql://u:s3cret@[::1]:6543/db?sslmode=disable")
    assert url.host == "::1" and url.port == 6543
    assert url.render(hide_password=False) == "postgresql://u:s3cret@[::1]:6543/db?sslmode=disable"
    env = libpq_environment(url)
    assert env == {
        "PGHOST": "::1",
        "PGPORT": "6543",
        "PGUSER": "u",
        "PGDATABASE": "db",
        "PGPASSWORD": "s3cret",
        "PGSSLMODE": "disable",
    }
