"""The strict env-file parser: what python-dotenv reads it reads the same; what python-dotenv skips
with a warning (a stray quote, a line without '='), it refuses with file and line, never the value."""

from __future__ import annotations

import io

import pytest
from dotenv import dotenv_values
from hypothesis import given, settings
from hypothesis import strategies as st

from semantik_infra.envfile import format_value, parse_env_text, set_values
from semantik_infra.errors import ConfigError

SECRET = "s3cr3t-Value-that-must-not-leak"


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40))
def test_every_written_value_reads_back_exactly(value):
    text = f"K={format_value(value)}\n"
    assert parse_env_text(text, ".env") == {"K": value}
    assert dotenv_values(stream=io.StringIO(text), interpolate=False)["K"] == value


@pytest.mark.parametrize(
    "line",
    [
        "K=plain",
        "export K=exported",
        "K = spaced ",
        "K=value # a comment",
        "K=with#hash",
        "K= # only a comment",
        "K=",
        "K=''",
        'K=""',
        "K='single $HOME \\n kept'",
        "K='it\\'s'",
        'K="double \\" \\n \\t \\\\ \\x kept"',
        'K="quoted"  # comment',
        "  K=indented",
        "K=a'b\"c",
        "K=https://user:pw@host:5432/db?sslmode=require",
    ],
)
def test_reads_what_python_dotenv_reads(line):
    ours = parse_env_text(f"# comment\n\n{line}\r\n", ".env")
    theirs = dotenv_values(stream=io.StringIO(f"# comment\n\n{line}\r\n"), interpolate=False)
    assert ours == {k: v or "" for k, v in theirs.items()}


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (f"BACKUP_ENCRYPTION_KEY='{SECRET}", "BACKUP_ENCRYPTION_KEY: the value's opening ' is never closed"),
        (f'POSTGRES_PASSWORD="{SECRET}', "POSTGRES_PASSWORD: the value's opening \" is never closed"),
        (f"POSTGRES_PASSWORD='{SECRET}' trailing", "POSTGRES_PASSWORD: unexpected text after the closing quote"),
        (SECRET, "no '=' on this line"),
        (f"{SECRET}-not a name={SECRET}", "is not a variable name"),
        (f"1ABC={SECRET}", "is not a variable name"),
    ],
)
def test_a_line_that_does_not_parse_is_an_error_naming_file_and_line_never_the_value(line, problem):
    text = "# settings\nPOSTGRES_PORT=5432\n" + line + "\nOTHER=1\n"
    with pytest.raises(ConfigError) as caught:
        parse_env_text(text, "/p/.env")
    message = str(caught.value)
    assert message.startswith("/p/.env: line 3: ") and problem in message
    assert SECRET not in message


def test_a_name_assigned_twice_is_an_error():
    with pytest.raises(ConfigError, match=r"\.env: line 3: POSTGRES_PASSWORD is assigned again \(first on line 1\)"):
        parse_env_text("POSTGRES_PASSWORD=a\nX=1\nPOSTGRES_PASSWORD=b\n", ".env")


def test_set_values_replaces_only_the_named_lines_and_keeps_crlf_files_readable():
    text = "# c\r\nA=1\r\nexport B=2\r\n"
    updated = set_values(text, {"B": "two words", "C": "3"})
    assert parse_env_text(updated, ".env") == {"A": "1", "B": "two words", "C": "3"}
    assert updated.startswith("# c\nA=1\n")
