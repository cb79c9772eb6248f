"""PostgreSQL's text forms, reproduced exactly in Python: COPY's text-format escaping and the
output of double precision, real, numeric, timestamp, time and jsonb (with DateStyle ISO,
TimeZone UTC, extra_float_digits 1), so a converted value can be compared byte for byte with what
PostgreSQL prints for the stored one; plus the readers for the date/time forms found in SQLite
files (ISO-8601 text, unix seconds, Julian days) and JSON validation as PostgreSQL's json type does
it. Pure functions; each is tested against a real server."""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, timezone, tzinfo
from decimal import Context, Decimal
from typing import Any

NULL = "\\N"
# Julian days of 0001-01-01 and 10000-01-01: a REAL in this range is read as a Julian day (`auto`).
JULIAN_RANGE = (1721425.5, 5373484.5)
NUMERIC_TIME_MODES = ("auto", "unixepoch", "julianday")
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PG_EPOCH = datetime(2000, 1, 1)
_JULIAN_MS_AT_UNIX_EPOCH = 210866760000000  # 2440587.5 days * 86,400,000 ms
_ESCAPES = (("\\", "\\\\"), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"), ("\b", "\\b"), ("\f", "\\f"), ("\v", "\\v"))
_ISO_TIMESTAMP = re.compile(
    r"\s*(\d{4})-(\d\d)-(\d\d)"
    r"(?:[Tt ](\d\d):(\d\d)(?::(\d\d)(?:[.,](\d+))?)?"
    r"\s*(?:([Zz]|UTC|GMT)|([+-])(\d\d)(?::?(\d\d))?)?)?\s*\Z",
    re.ASCII,
)
_ISO_TIME = re.compile(r"\s*(\d\d):(\d\d)(?::(\d\d)(?:[.,](\d+))?)?\s*\Z", re.ASCII)


# Exact arithmetic on any double's decimal expansion (at most 767 significant digits).
_EXACT = Context(prec=800)


class ConversionError(ValueError):
    """A value that cannot become the target type. The message says why and never holds the value."""


# ---------------------------------------------------------------------------------------------
# COPY text and PostgreSQL's output formats


def copy_escape(text: str) -> str:
    """Escape a text value for COPY's text format the way COPY TO writes it."""
    for raw, escaped in _ESCAPES:
        if raw in text:
            text = text.replace(raw, escaped)
    return text


def copy_escape_many(values: Sequence[str]) -> list[str]:
    """`copy_escape` over many values at C speed: join on NUL, escape once, split.

    Raises ValueError when a value itself holds a NUL (which no PostgreSQL text can store).
    """
    if not values:
        return []
    joined = "\x00".join(values)
    if joined.count("\x00") != len(values) - 1:
        raise ValueError("NUL in a value")
    return copy_escape(joined).split("\x00")


def _shortest_digits(text: str) -> tuple[str, str, int]:
    """(sign, digits without leading/trailing zeros, decimal exponent of the first digit) of a
    number written like Python's repr: '1.5', '1e+16', '-2.5e-07'."""
    sign = "-" if text.startswith("-") else ""
    mantissa, _, exponent = text.lstrip("-").partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    point = len(whole) + (int(exponent) if exponent else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    return sign, stripped.rstrip("0"), point - 1


def _pg_shortest(sign: str, digits: str, exponent: int, fixed_below: int) -> str:
    # PostgreSQL's ryu output: fixed notation for exponents -4 .. fixed_below-1, else d.ddde±XX.
    if -4 <= exponent < fixed_below:
        point = exponent + 1
        if point <= 0:
            return f"{sign}0.{'0' * -point}{digits}"
        if point >= len(digits):
            return sign + digits + "0" * (point - len(digits))
        return f"{sign}{digits[:point]}.{digits[point:]}"
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e{'+' if exponent >= 0 else '-'}{abs(exponent):02d}"


def _shortest_inside(magnitude: float, below: float, above: float, digits: int) -> str:
    """The shortest decimal (closest for its length) strictly between the midpoints to the
    neighbouring floats, as PostgreSQL's ryu prints: unlike Python's repr it never takes a value
    exactly on a midpoint, which becomes possible from 2**52 (2**23 for real) upwards."""
    exact = Decimal(magnitude)
    low = _EXACT.divide(_EXACT.add(exact, Decimal(below)), 2)
    # The largest float has no upper neighbour: PostgreSQL treats it as being as far as the lower one.
    above_exact = _EXACT.subtract(_EXACT.multiply(exact, 2), Decimal(below)) if math.isinf(above) else Decimal(above)
    high = _EXACT.divide(_EXACT.add(exact, above_exact), 2)
    for precision in range(1, digits + 1):
        text = f"{magnitude:.{precision - 1}e}"
        if low < Decimal(text) < high:
            return text
    raise AssertionError("no shortest representation")  # the exact digits always fit


def pg_float8(value: float) -> str:
    """double precision as PostgreSQL prints it (shortest exact digits, its notation)."""
    if value != value:
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    magnitude = abs(value)
    if 1e-4 <= magnitude < 1e15:
        # Python's repr agrees here, but for a trailing '.0'.
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    text = repr(magnitude)
    if magnitude >= 2.0**52:
        text = _shortest_inside(magnitude, math.nextafter(magnitude, 0), math.nextafter(magnitude, math.inf), 17)
    _sign, digits, exponent = _shortest_digits(text)
    return _pg_shortest("-" if value < 0 else "", digits, exponent, fixed_below=15)


def to_float4(value: float) -> float:
    """Round a double to single precision as PostgreSQL's float4 input would, or raise."""
    if value != value or math.isinf(value):
        return value
    try:
        rounded = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        rounded = math.inf
    if math.isinf(rounded):
        raise ConversionError("out of range for real")
    if rounded == 0 and value != 0:
        raise ConversionError("too close to zero for real")
    return rounded


def pg_float4(value: float) -> str:
    """real as PostgreSQL prints it: the shortest digits that read back as the same float4."""
    if value != value or math.isinf(value) or value == 0:
        return pg_float8(value)
    magnitude = abs(value)
    bits = struct.unpack("<I", struct.pack("<f", magnitude))[0]
    below, above = (struct.unpack("<f", struct.pack("<I", n))[0] for n in (bits - 1, bits + 1))
    text = _shortest_inside(magnitude, below, above, 9)
    _sign, digits, exponent = _shortest_digits(text)
    return _pg_shortest("-" if value < 0 else "", digits, exponent, fixed_below=6)


def pg_numeric(value: Decimal) -> str:
    """numeric as PostgreSQL prints it: plain notation, the value's own scale, no negative zero."""
    if value.is_nan():
        return "NaN"
    if value.is_infinite():
        return "-Infinity" if value < 0 else "Infinity"
    if value.is_zero() and value.is_signed():
        value = value.copy_abs()
    return format(value, "f")


def pg_timestamp(value: datetime) -> str:
    """A naive datetime as PostgreSQL prints a timestamp (ISO, fraction without trailing zeros)."""
    text = value.isoformat(" ")
    return text.rstrip("0") if value.microsecond else text


def round_to_precision(wall: datetime, precision: int | None) -> datetime:
    """Round to timestamp(p) the way PostgreSQL does: half away from zero, counted from 2000-01-01."""
    if precision is None or precision >= 6:
        return wall
    scale = 10 ** (6 - precision)
    micros = (wall - _PG_EPOCH) // timedelta(microseconds=1)
    magnitude = (abs(micros) + scale // 2) // scale * scale
    try:
        return _PG_EPOCH + timedelta(microseconds=magnitude if micros >= 0 else -magnitude)
    except OverflowError:
        raise ConversionError("lies outside the years 1-9999") from None


def pg_time(value: time) -> str:
    """A time of day as PostgreSQL prints it."""
    text = value.isoformat()
    return text.rstrip("0") if value.microsecond else text


# ---------------------------------------------------------------------------------------------
# JSON


class _Number(str):
    """A JSON number's own text, kept so no digit is lost or reformatted."""


class _Normalised(str):
    """An object already written in jsonb's output form."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _normal_number(text: str) -> str:
    if "." not in text and "e" not in text and "E" not in text:
        return "0" if text == "-0" else text
    return pg_numeric(Decimal(text))


def _normal_value(value: Any) -> str:
    kind = type(value)
    if kind is _Normalised:
        return value
    if kind is _Number:
        return _normal_number(value)
    if kind is str:
        return json.dumps(value, ensure_ascii=False)
    if kind is list:
        return "[" + ", ".join(map(_normal_value, value)) + "]"
    return "true" if value is True else "false" if value is False else "null"


def _normal_object(pairs: list[tuple[str, Any]]) -> _Normalised:
    # jsonb keeps the last of duplicate keys and orders keys by byte length, then bytes.
    members = dict(pairs)
    ordered = sorted(members, key=lambda key: (len(key.encode()), key.encode()))
    body = ", ".join(f"{json.dumps(key, ensure_ascii=False)}: {_normal_value(members[key])}" for key in ordered)
    return _Normalised("{" + body + "}")


_JSON = json.JSONDecoder(parse_int=str, parse_float=str, parse_constant=_reject_constant)
_JSONB = json.JSONDecoder(
    parse_int=_Number, parse_float=_Number, parse_constant=_reject_constant, object_pairs_hook=_normal_object
)


# Raises ValueError (or RecursionError) for text that is not JSON: the converters' fast path.
parse_json = _JSON.decode


def check_json(text: str) -> str:
    """Return `text` if it is valid JSON as PostgreSQL's json type reads it, else raise."""
    try:
        _JSON.decode(text)
    except (ValueError, RecursionError):
        raise ConversionError("text is not valid JSON") from None
    return text


def jsonb_text(text: str) -> str:
    """The text PostgreSQL's jsonb prints for a JSON document, or raise ConversionError."""
    try:
        normal = _normal_value(_JSONB.decode(text))
    except (ValueError, RecursionError):
        raise ConversionError("text is not valid JSON") from None
    if "\\u0000" in normal:
        raise ConversionError("JSON holds \\u0000, which jsonb cannot store")
    try:
        normal.encode()
    except UnicodeEncodeError:
        raise ConversionError("JSON holds an unpaired surrogate escape, which jsonb rejects") from None
    return normal


# ---------------------------------------------------------------------------------------------
# Dates and times


def _fraction_to_micros(digits: str | None) -> int:
    if not digits:
        return 0
    if len(digits) <= 6:
        return int(digits.ljust(6, "0"))
    # As PostgreSQL does: rint() of the fraction as a double, in microseconds.
    return round(float("0." + digits) * 1_000_000)


def _clock(hour: int, minute: int, second: int, micros: int) -> timedelta:
    # 24:00:00 and leap second :60 roll over, as PostgreSQL's input does.
    if hour > 24 or minute > 59 or second > 60 or (hour == 24 and (minute or second or micros)):
        raise ConversionError("has an invalid time of day")
    return timedelta(hours=hour, minutes=minute, seconds=second, microseconds=micros)


@dataclass(frozen=True)
class ParsedTimestamp:
    """An ISO-8601 text: its wall-clock time, its zone if written, whether it had a time part."""

    wall: datetime
    zone: tzinfo | None
    has_time: bool


def parse_iso_timestamp(text: str) -> ParsedTimestamp:
    """Parse 'YYYY-MM-DD[( |T)HH:MM[:SS[.fff]]][Z|±HH[:MM]]', or raise ConversionError."""
    match = _ISO_TIMESTAMP.match(text)
    if match is None:
        raise ConversionError("text is not an ISO-8601 date or timestamp")
    year, month, day, hour, minute, second, fraction, utc, sign, off_hours, off_minutes = match.groups()
    try:
        wall = datetime(int(year), int(month), int(day))
        if hour is not None:
            wall += _clock(int(hour), int(minute), int(second or 0), _fraction_to_micros(fraction))
    except ConversionError:
        raise
    except (ValueError, OverflowError):
        raise ConversionError("is not a valid calendar date and time") from None
    zone: tzinfo | None = None
    if utc:
        zone = UTC
    elif sign:
        offset = timedelta(hours=int(off_hours), minutes=int(off_minutes or 0))
        if offset >= timedelta(hours=16):
            raise ConversionError("has a time-zone offset beyond ±15:59")
        zone = UTC if not offset else timezone(-offset if sign == "-" else offset)
    return ParsedTimestamp(wall, zone, hour is not None)


def iso_utc_wall_fast(text: str) -> str:
    """PostgreSQL's text for the commonest ISO-8601 shapes in UTC — 'YYYY-MM-DD HH:MM:SS' with 'T' or
    space, an optional '.f' to '.ffffff', and no zone, 'Z' or '+00:00' — at C speed; raises
    ValueError (or IndexError) for anything else, which `parse_iso_timestamp` then reads."""
    if text[-1] == "Z":
        text = text[:-1]
    elif text.endswith("+00:00"):
        text = text[:-6]
    length = len(text)
    if text[10] not in " T" or (length != 19 and (length > 26 or length < 21 or text[19] != ".")):
        raise ValueError(text)
    datetime.fromisoformat(text)  # checks the digits, the calendar and the clock
    if length == 19:
        return text[:10] + " " + text[11:]
    fraction = text[20:].rstrip("0")
    return text[:10] + " " + text[11:19] + ("." + fraction if fraction else "")


def parse_iso_time(text: str) -> timedelta:
    """'HH:MM[:SS[.fff]]' as the time since midnight (up to 24:00:00), or raise ConversionError."""
    match = _ISO_TIME.match(text)
    if match is None:
        raise ConversionError("text is not a time of day (HH:MM[:SS[.ffffff]])")
    hour, minute, second, fraction = match.groups()
    span = _clock(int(hour), int(minute), int(second or 0), _fraction_to_micros(fraction))
    if span > timedelta(hours=24):
        raise ConversionError("has an invalid time of day")
    return span


def unix_seconds_to_instant(value: int | float) -> datetime:
    """Seconds since 1970-01-01 UTC (a REAL to the microsecond, as written) as an aware datetime."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConversionError("is not a finite number of seconds")
        micros = int(Decimal(repr(value)).scaleb(6).to_integral_value())  # half-even on the shortest digits
    else:
        micros = value * 1_000_000
    try:
        return _UNIX_EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise ConversionError("as unix seconds lies outside the years 1-9999") from None


def julian_day_to_instant(value: float) -> datetime:
    """A Julian day number as SQLite reads one: rounded to the millisecond, UTC."""
    if not math.isfinite(value) or value < 0:
        raise ConversionError("is not a valid Julian day")
    millis = int(value * 86400000.0 + 0.5) - _JULIAN_MS_AT_UNIX_EPOCH
    try:
        return _UNIX_EPOCH + timedelta(milliseconds=millis)
    except OverflowError:
        raise ConversionError("as a Julian day lies outside the years 1-9999") from None


def number_to_instant(value: int | float, mode: str) -> datetime:
    """A number in a date/time column: unix seconds or a Julian day, per `mode` (see NUMERIC_TIME_MODES)."""
    if mode == "julianday" or (
        mode == "auto" and isinstance(value, float) and JULIAN_RANGE[0] <= value < JULIAN_RANGE[1]
    ):
        return julian_day_to_instant(float(value))
    return unix_seconds_to_instant(value)
