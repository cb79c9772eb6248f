"""pg_text reproduces PostgreSQL's own text output exactly: checked against a real server with many
generated values, since the import's verification compares these texts byte for byte."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal

import psycopg2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from semantik_infra.pg_text import (
    copy_escape,
    jsonb_text,
    pg_float4,
    pg_float8,
    pg_numeric,
    pg_timestamp,
    round_to_precision,
    to_float4,
)
from semantik_infra.sqlite_import import SESSION_OPTIONS
from tests.conftest import RunningCluster, native_cluster_only

# The importer talks SQL only: one local backend is enough.
pytestmark = [pytest.mark.integration, native_cluster_only]
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def cursor(pg_cluster: RunningCluster) -> Iterator[psycopg2.extensions.cursor]:
    connection = psycopg2.connect(**pg_cluster.settings.database.libpq_params(), options=SESSION_OPTIONS)
    connection.autocommit = True
    with connection.cursor() as cur:
        yield cur
    connection.close()


def server_texts(cursor, sql_type: str, texts: list[str]) -> list[str]:
    """PostgreSQL's output for each input text, via the type's input and output functions."""
    query = f"SELECT x::{sql_type}::text FROM unnest(%s::text[]) WITH ORDINALITY AS t(x, n) ORDER BY n"
    cursor.execute(query, (texts,))
    return [row[0] for row in cursor.fetchall()]


@SETTINGS
@given(st.lists(st.floats(allow_nan=True), min_size=1, max_size=50))
def test_double_precision_output(cursor, values):
    assert server_texts(cursor, "float8", [repr(v).replace("inf", "Infinity") for v in values]) == list(
        map(pg_float8, values)
    )


@SETTINGS
@given(st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=50))
def test_real_output(cursor, values):
    assert server_texts(cursor, "float4", [repr(v).replace("inf", "Infinity") for v in values]) == [
        pg_float4(to_float4(v)) for v in values
    ]


@SETTINGS
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, min_value=-3e38, max_value=3e38), max_size=30))
def test_doubles_round_to_real_as_postgresql_does(cursor, values):
    values = [v for v in values if v == 0 or abs(v) > 1.2e-38]
    # Our text for the double, read by PostgreSQL's float4 input, is the float4 we computed.
    assert server_texts(cursor, "float4", [pg_float8(v) for v in values]) == [pg_float4(to_float4(v)) for v in values]


@SETTINGS
@given(st.lists(st.decimals(allow_nan=True, allow_infinity=True), min_size=1, max_size=40))
def test_numeric_output(cursor, values):
    texts = [str(v).replace("sNaN", "NaN").replace("-NaN", "NaN") for v in values]
    assert server_texts(cursor, "numeric", texts) == [pg_numeric(Decimal(t)) for t in texts]


TIMESTAMPS = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 30))


@SETTINGS
@given(st.lists(TIMESTAMPS, min_size=1, max_size=40), st.sampled_from([None, 0, 1, 3, 5]))
def test_timestamp_output_and_precision(cursor, values, precision):
    sql_type = "timestamp" if precision is None else f"timestamp({precision})"
    texts = [v.isoformat(" ") for v in values]
    assert server_texts(cursor, sql_type, texts) == [pg_timestamp(round_to_precision(v, precision)) for v in values]
    zoned = [f"{t}+00" for t in texts]
    tz_type = "timestamptz" if precision is None else f"timestamptz({precision})"
    expected = [f"{pg_timestamp(round_to_precision(v, precision))}+00" for v in values]
    assert server_texts(cursor, tz_type, zoned) == expected


TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=15,
)


@SETTINGS
@given(st.lists(JSON, min_size=1, max_size=20), st.booleans())
def test_jsonb_output(cursor, documents, spaced):
    separators = (", ", ": ") if spaced else (",", ":")
    texts = [json.dumps(d, ensure_ascii=not spaced, separators=separators) for d in documents]
    assert server_texts(cursor, "jsonb", texts) == list(map(jsonb_text, texts))


def test_jsonb_numbers_duplicates_and_escapes(cursor):
    texts = [
        '{"a": 1, "a": 2, "bb": [1e2, 1.50, -0, -0.0, 1E-3, 12345678901234567890123]}',
        '"\\u00e9\\n\\u001f\\ud83d\\ude00"',
        '{"": {}, "é": [], "z": null, "aaa": true}',
        "  [ 1 ,\n 2 ]  ",
    ]
    assert server_texts(cursor, "jsonb", texts) == list(map(jsonb_text, texts))


@SETTINGS
@given(st.lists(TEXT, min_size=1, max_size=30))
def test_copy_text_escaping_matches_copy_to(cursor, values):
    cursor.execute("CREATE TEMP TABLE IF NOT EXISTS escapes (n int, v text)")
    cursor.execute("TRUNCATE escapes")
    data = "".join(f"{n}\t{copy_escape(v)}\n" for n, v in enumerate(values)).encode()
    cursor.copy_expert("COPY escapes FROM STDIN", io.BytesIO(data))
    out = io.BytesIO()
    cursor.copy_expert("COPY (SELECT * FROM escapes ORDER BY n) TO STDOUT", out)
    assert out.getvalue() == data


def test_char_n_copy_output_is_padded(cursor):
    cursor.execute("CREATE TEMP TABLE padded (v char(4))")
    cursor.execute("INSERT INTO padded VALUES ('ab')")
    out = io.BytesIO()
    cursor.copy_expert("COPY padded TO STDOUT", out)
    assert out.getvalue() == b"ab  \n"


def test_instants_near_the_ends_of_the_range(cursor):
    values = [datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999), datetime(1999, 12, 31, 23, 59, 59, 500000)]
    for precision in (None, 0, 2):
        sql_type = "timestamp" if precision is None else f"timestamp({precision})"
        for value in values:
            try:
                ours = pg_timestamp(round_to_precision(value, precision))
            except ValueError:
                continue  # rounds past year 9999: refused by the converter
            assert server_texts(cursor, sql_type, [value.isoformat(" ")]) == [ours]


def test_floats_whose_shortest_digits_python_and_postgresql_choose_differently(cursor):
    # Python's repr takes a decimal exactly on the rounding boundary; PostgreSQL's ryu does not.
    doubles = [4.929161490066066e16, 2.0**53 + 2, 1.7976931348623157e308, 2.0**1023, -(2.0**60)]
    assert server_texts(cursor, "float8", [repr(v) for v in doubles]) == list(map(pg_float8, doubles))
    reals = [3.4028234663852886e38, 16777218.0, 2.0**100, 1.1754943508222875e-38]
    assert server_texts(cursor, "float4", [repr(v) for v in reals]) == [pg_float4(to_float4(v)) for v in reals]
