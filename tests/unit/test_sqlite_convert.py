"""Converters from SQLite values to PostgreSQL COPY text: each conversion the import promises,
the errors for values that cannot convert, and the fast column path agreeing with the careful one."""

from __future__ import annotations

import math
import sqlite3
from datetime import UTC
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semantik_infra.pg_text import JULIAN_RANGE, NULL, ConversionError
from semantik_infra.sqlite_convert import ConversionOptions, TargetType, converter_for, is_secret_name

UTC_OPTIONS = ConversionOptions()


def convert(type_name: str, value: object, *, options: ConversionOptions = UTC_OPTIONS, **target: object) -> str:
    return converter_for(TargetType(type_name, target.pop("display", type_name), **target), options).one(value)


def refuses(type_name: str, value: object, match: str | None = None, **target: object) -> None:
    with pytest.raises(ConversionError, match=match):
        convert(type_name, value, **target)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1, "t"),
        (0, "f"),
        (1.0, "t"),
        ("1", "t"),
        ("0", "f"),
        ("true", "t"),
        ("FALSE", "f"),
        ("t", "t"),
        ("f", "f"),
        (" Yes ", "t"),
        ("off", "f"),
        (None, NULL),
    ],
)
def test_booleans_from_numbers_and_words(value, expected):
    assert convert("bool", value) == expected


@pytest.mark.parametrize("value", [2, -1, 0.5, "", "maybe", b"\x01"])
def test_values_that_are_not_booleans_are_errors(value):
    refuses("bool", value)


def test_null_into_not_null_is_an_error_and_empty_string_is_not_null():
    refuses("bool", None, "NOT NULL", not_null=True)
    assert convert("text", "") == ""
    assert convert("text", None) == NULL
    refuses("int4", "", "empty string")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-02T03:04:05Z", "2024-01-02 03:04:05+00"),
        ("2024-01-02 03:04:05", "2024-01-02 03:04:05+00"),
        ("2024-01-02t03:04:05.120", "2024-01-02 03:04:05.12+00"),
        ("2024-01-02T05:04:05+02:00", "2024-01-02 03:04:05+00"),
        ("2024-01-02T05:04:05+0200", "2024-01-02 03:04:05+00"),
        ("2024-01-01T22:04:05-05", "2024-01-02 03:04:05+00"),
        ("2024-01-02 03:04:05 UTC", "2024-01-02 03:04:05+00"),
        ("2024-01-02T03:04", "2024-01-02 03:04:00+00"),
        ("2024-01-02", "2024-01-02 00:00:00+00"),
        ("2024-01-02T03:04:05.1234567Z", "2024-01-02 03:04:05.123457+00"),
        ("2024-01-02T03:04:05.9999996Z", "2024-01-02 03:04:06+00"),
        ("2024-01-02 24:00:00", "2024-01-03 00:00:00+00"),
        ("2016-12-31 23:59:60", "2017-01-01 00:00:00+00"),
        (1700000000, "2023-11-14 22:13:20+00"),
        (1700000000.25, "2023-11-14 22:13:20.25+00"),
        (-86400, "1969-12-31 00:00:00+00"),
        (2460000.5, "2023-02-25 00:00:00+00"),
        (2460000.123456, "2023-02-24 14:57:46.598+00"),
        ("infinity", "infinity"),
        ("-Infinity", "-infinity"),
    ],
)
def test_timestamptz_from_iso_text_unix_seconds_and_julian_days(value, expected):
    assert convert("timestamptz", value) == expected


def test_naive_timestamps_take_the_source_time_zone():
    berlin = ConversionOptions(source_tz=ZoneInfo("Europe/Berlin"))
    assert convert("timestamptz", "2024-07-01 12:00:00", options=berlin) == "2024-07-01 10:00:00+00"
    assert convert("timestamptz", "2024-01-01 12:00:00", options=berlin) == "2024-01-01 11:00:00+00"
    assert convert("timestamptz", "2024-07-01T12:00:00Z", options=berlin) == "2024-07-01 12:00:00+00"
    # A naive target keeps the wall clock of the source zone; zoned values are converted to it.
    assert convert("timestamp", "2024-07-01 12:00:00", options=berlin) == "2024-07-01 12:00:00"
    assert convert("timestamp", "2024-07-01T12:00:00Z", options=berlin) == "2024-07-01 14:00:00"
    assert convert("timestamp", "2024-07-01T12:00:00+02:00") == "2024-07-01 10:00:00"
    assert convert("timestamp", 0) == "1970-01-01 00:00:00"


def test_numeric_time_modes():
    unix = ConversionOptions(numeric_time="unixepoch")
    julian = ConversionOptions(numeric_time="julianday")
    assert convert("timestamptz", 2460000.5, options=unix) == "1970-01-29 11:20:00.5+00"
    assert convert("timestamptz", 2460000, options=julian) == "2023-02-24 12:00:00+00"
    assert convert("timestamptz", 1.5e9) == "2017-07-14 02:40:00+00"  # outside the Julian range: unix seconds


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("yesterday", "ISO-8601"),
        ("", "ISO-8601"),
        ("2024-02-30", "calendar"),
        ("2024-01-02x03:04", "ISO-8601"),
        ("2024-01-02T25:00", "time of day"),
        ("2024-01-02T03:04+16:00", "offset"),
        ("1700000000", "ISO-8601"),
        (b"2024", "blob"),
        (1e20, "outside the years"),
        (float("inf"), "finite"),
    ],
)
def test_values_that_are_not_timestamps_are_errors(value, match):
    refuses("timestamptz", value, match)


def test_dates_keep_the_day_and_never_drop_a_time_of_day():
    assert convert("date", "2024-01-02") == "2024-01-02"
    assert convert("date", "2024-01-02T00:00:00") == "2024-01-02"
    assert convert("date", "2024-01-02T00:00:00+05:00") == "2024-01-02"
    assert convert("date", 1704153600) == "2024-01-02"
    assert convert("date", 2460000.5) == "2023-02-25"
    refuses("date", "2024-01-02 10:00", "time of day")
    refuses("date", 1704153601, "time of day")


def test_times_of_day():
    assert convert("time", "10:30") == "10:30:00"
    assert convert("time", "10:30:00.500") == "10:30:00.5"
    assert convert("time", "24:00:00") == "24:00:00"
    assert convert("time", "23:59:59.7", precision=0) == "24:00:00"
    refuses("time", "10:60", "time of day")
    refuses("time", 36000)


def test_timestamp_precision_rounds_as_postgresql_does():
    assert convert("timestamp", "2024-01-02 03:04:05.5", precision=0) == "2024-01-02 03:04:06"
    assert convert("timestamp", "2024-01-02 03:04:05.1234", precision=3) == "2024-01-02 03:04:05.123"
    # Before 2000-01-01 PostgreSQL rounds half away from its epoch: towards the past.
    assert convert("timestamp", "1999-12-31 23:59:59.5", precision=0) == "1999-12-31 23:59:59"
    assert convert("timestamptz", "2024-01-02 03:04:05.0005", precision=3) == "2024-01-02 03:04:05.001+00"


@pytest.mark.parametrize(
    ("type_name", "value", "expected"),
    [
        ("int8", 2**62, str(2**62)),
        ("int4", 2**31 - 1, str(2**31 - 1)),
        ("int4", 3.0, "3"),
        ("int2", " -42 ", "-42"),
        ("int8", "007", "7"),
    ],
)
def test_integers(type_name, value, expected):
    assert convert(type_name, value) == expected


@pytest.mark.parametrize(
    ("type_name", "value", "match"),
    [
        ("int4", 2**31, "out of range"),
        ("int2", -(2**15) - 1, "out of range"),
        ("int4", 3.5, "fraction"),
        ("int4", float("nan"), "finite"),
        ("int4", "1.0", "whole number"),
        ("int4", "٣", "whole number"),
        ("int4", "1_000", "whole number"),
        ("int8", b"\x01", "blob"),
    ],
)
def test_values_that_are_not_integers_are_errors(type_name, value, match):
    refuses(type_name, value, match)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.1, "0.1"),
        (1.0, "1"),
        (-0.0, "-0"),
        (1e15, "1e+15"),
        (123456789012345.0, "123456789012345"),
        (1.5e-5, "1.5e-05"),
        (1e300, "1e+300"),
        (5e-324, "5e-324"),
        (float("inf"), "Infinity"),
        (float("-inf"), "-Infinity"),
        ("NaN", "NaN"),
        ("-inf", "-Infinity"),
        (" 2.5e3 ", "2500"),
        (2**53, "9.007199254740992e+15"),
    ],
)
def test_double_precision(value, expected):
    assert convert("float8", value) == expected


def test_double_precision_refuses_what_it_cannot_hold_exactly():
    refuses("float8", 2**53 + 1, "exactly")
    refuses("float8", "1e400", "out of range")
    refuses("float8", "1_0", "not a number")
    refuses("float8", "", "empty")


def test_real_rounds_to_single_precision():
    assert convert("float4", 0.1) == "0.1"
    assert convert("float4", 1e6) == "1e+06"
    assert convert("float4", 123456.0) == "123456"
    assert convert("float4", 1 / 3) == "0.33333334"
    refuses("float4", 1e39, "out of range")
    refuses("float4", 1e-50, "too close to zero")


@pytest.mark.parametrize(
    ("value", "precision", "scale", "expected"),
    [
        (1.005, 5, 2, "1.01"),
        (-1.005, 5, 2, "-1.01"),
        ("123.456", 5, 2, "123.46"),
        (2, 5, 2, "2.00"),
        ("1e3", None, None, "1000"),
        ("1.50", None, None, "1.50"),
        (0.1, None, None, "0.1"),
        ("-0.0", None, None, "0.0"),
        ("NaN", None, None, "NaN"),
        (float("inf"), None, None, "Infinity"),
        (12345678901234567890, None, None, "12345678901234567890"),
    ],
)
def test_numeric(value, precision, scale, expected):
    assert convert("numeric", value, precision=precision, scale=scale) == expected


def test_numeric_refuses_values_beyond_its_precision():
    refuses("numeric", 1000, "does not fit", precision=5, scale=2, display="numeric(5,2)")
    refuses("numeric", "12e", "not a number")


def test_text_is_escaped_for_copy_and_checked():
    assert convert("text", "a\tb\\c\nd\re\bf\fg\vh") == "a\\tb\\\\c\\nd\\re\\bf\\fg\\vh"
    assert convert("text", 5) == "5"
    assert convert("text", 0.5) == "0.5"
    assert convert("text", b"caf\xc3\xa9") == "café"
    refuses("text", "a\x00b", "NUL")
    refuses("varchar", "abcd", "longer than 3", length=3)
    assert convert("varchar", "abc", length=3) == "abc"
    assert convert("bpchar", "ab", length=4) == "ab  "
    assert convert("bpchar", "ab   ", length=4) == "ab  "
    refuses("bpchar", "abcde", "longer", length=4)


def test_text_that_is_not_utf8_is_an_error_unless_a_fallback_is_given():
    latin = b"caf\xe9".decode("utf-8", "surrogateescape")  # how sqlite3 hands such text over
    refuses("text", latin, "not valid UTF-8")
    assert convert("text", latin, options=ConversionOptions(decode_fallback="cp1252")) == "café"
    assert convert("bytea", latin) == "\\\\x636166e9"  # into bytea the original bytes survive
    undefined = b"\x81".decode("utf-8", "surrogateescape")  # not a cp1252 character
    with pytest.raises(ConversionError, match="nor cp1252"):
        convert("text", undefined, options=ConversionOptions(decode_fallback="cp1252"))


def test_bytea_json_jsonb_uuid_enum():
    assert convert("bytea", b"\x00\x01\xff") == "\\\\x0001ff"
    assert convert("bytea", b"") == "\\\\x"
    assert convert("json", '{"b": 1,  "a": "x\\n"}') == '{"b": 1,  "a": "x\\\\n"}'
    assert convert("json", 5) == "5"
    assert convert("jsonb", '{"b":1,"aa":2,"a":[1.0,1e2,-0,"é"],"b":3}') == '{"a": [1.0, 100, 0, "é"], "b": 3, "aa": 2}'
    assert convert("jsonb", '"\\u001f"') == '"\\\\u001f"'
    for bad in ("{", "NaN", '{"a": Infinity}', "", "[1,]", "'a'", "[" * 100_000):
        refuses("json", bad, "not valid JSON")
    refuses("json", float("nan"), "not finite")
    refuses("jsonb", '"\\u0000"', "u0000")
    refuses("jsonb", '"\\ud800"', "surrogate")
    assert convert("uuid", "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11") == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert convert("uuid", "{a0eebc999c0b4ef8bb6d6bb9bd380a11}") == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert convert("uuid", bytes(range(16))) == "00010203-0405-0607-0809-0a0b0c0d0e0f"
    refuses("uuid", "not-a-uuid", "UUID")
    mood = converter_for(TargetType("mood", "mood", labels=("happy", "sad"), enum=True), UTC_OPTIONS)
    assert mood.one("sad") == "sad"
    with pytest.raises(ConversionError, match="labels"):
        mood.one("angry")
    assert convert("inet", "10.0.0.1") == "10.0.0.1"  # a type this tool does not parse: PostgreSQL will


def test_describe_says_which_storage_classes_convert():
    boolean = converter_for(TargetType("bool", "boolean"), UTC_OPTIONS)
    assert "0/1" in boolean.describe("integer")
    assert boolean.describe("blob") is None
    assert "UTC" in converter_for(TargetType("timestamptz", "timestamptz"), UTC_OPTIONS).describe("text")


def test_secret_looking_column_names():
    assert all(map(is_secret_name, ["password", "api_key", "refresh_token", "Secret", "password_hash", "salt"]))
    assert not any(map(is_secret_name, ["name", "content", "created_at", "chunk_index", "metadata"]))


# --- the fast column path agrees with the careful per-value path ------------------------------

SQLITE_VALUES = st.one_of(
    st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.sampled_from([0, 1, "true", "f", "1", "{}", "[1, 2]", "2024-01-02 03:04:05", "é\t\\", "", "\x00"]),
    st.text(),
    st.binary(),
    st.binary().map(lambda raw: raw.decode("utf-8", "surrogateescape")),
    st.datetimes().map(lambda moment: moment.isoformat(" ")),
    st.datetimes().map(lambda moment: moment.isoformat() + "Z"),
    st.datetimes().map(lambda moment: moment.isoformat(timespec="milliseconds") + "+00:00"),
    st.sampled_from(["2024-01-02 24:00:00", "2024-01-02T10:00:60", "2024-01-02 10:00:00.1234567", "2024-01-02 10:00"]),
)
TARGETS = [
    TargetType("text", "text"),
    TargetType("varchar", "varchar(5)", length=5),
    TargetType("bpchar", "char(3)", length=3),
    TargetType("int4", "integer"),
    TargetType("int8", "bigint", not_null=True),
    TargetType("bool", "boolean"),
    TargetType("float8", "double precision"),
    TargetType("float4", "real"),
    TargetType("bytea", "bytea"),
    TargetType("json", "json"),
    TargetType("jsonb", "jsonb"),
    TargetType("timestamptz", "timestamptz"),
    TargetType("timestamp", "timestamp"),
    TargetType("timestamp", "timestamp(3)", precision=3),
    TargetType("inet", "inet"),
    TargetType("mood", "mood", labels=("a", "é"), enum=True),
]


@settings(max_examples=300, deadline=None)
@given(values=st.lists(SQLITE_VALUES, max_size=8), index=st.integers(0, len(TARGETS) - 1))
def test_fast_column_path_agrees_with_careful_path(values, index):
    converter = converter_for(TARGETS[index], UTC_OPTIONS)
    converter.validate = True  # json: as after PostgreSQL refused a value (see the test below)
    careful: list[str | None] = []
    for value in values:
        try:
            text = converter.one(value)
        except ConversionError:
            careful.append(None)
            continue
        text.encode()  # the careful path never lets invalid UTF-8 or a NUL through
        assert "\x00" not in text
        careful.append(text)
    try:
        fast = converter.column(tuple(values))
    except Exception:
        return  # the loader then uses the careful path
    for fast_text, careful_text in zip(fast, careful, strict=True):
        if careful_text is None:
            # Only text the loader's UTF-8 encoding refuses may slip through the fast path.
            with pytest.raises(UnicodeEncodeError):
                fast_text.encode()
        else:
            assert fast_text == careful_text


def test_json_column_path_leaves_checking_to_postgresql_until_told_otherwise():
    converter = converter_for(TargetType("json", "json"), UTC_OPTIONS)
    assert converter.column(("{broken", None)) == ["{broken", NULL]  # COPY's json input refuses it, naming the line
    converter.validate = True
    with pytest.raises(ValueError):
        converter.column(("{broken", None))
    with pytest.raises(ConversionError, match="not valid JSON"):
        converter.one("{broken")


@given(st.floats(allow_nan=False))
def test_double_precision_text_reads_back_as_the_same_double(value):
    text = convert("float8", value)
    parsed = float(text.replace("Infinity", "inf"))
    assert parsed == value and math.copysign(1, parsed) == math.copysign(1, value)


@given(st.floats(min_value=JULIAN_RANGE[0], max_value=JULIAN_RANGE[1] - 1))
def test_julian_days_read_as_sqlite_reads_them(value):
    with sqlite3.connect(":memory:") as connection:
        expected = connection.execute("SELECT strftime('%Y-%m-%d %H:%M:%f', ?)", (value,)).fetchone()[0]
    text = convert("timestamp", value)
    seconds = text[17:]
    assert text[:17] == expected[:17] and float(seconds or 0) == float(expected[17:])


@given(st.datetimes(timezones=st.just(UTC)))
def test_iso_text_of_any_instant_converts_to_that_instant(moment):
    m = moment
    fraction = f".{m.microsecond:06d}".rstrip("0") if m.microsecond else ""
    expected = f"{m.year:04d}-{m.month:02d}-{m.day:02d} {m.hour:02d}:{m.minute:02d}:{m.second:02d}{fraction}+00"
    assert convert("timestamptz", moment.isoformat()) == expected
    assert convert("timestamptz", moment.isoformat().replace("+00:00", "Z")) == expected
