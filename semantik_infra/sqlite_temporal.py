"""Converters for the date and time columns of an SQLite import: timestamp with and without time
zone, date and time, from ISO-8601 text (with or without a zone; no zone means the source time
zone), unix seconds and Julian days. A timestamp(p) rounds as PostgreSQL does; a date never
silently drops a time of day. Pure functions, like sqlite_convert, whose `Converter` they extend."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta
from typing import ClassVar

from semantik_infra.pg_text import (
    JULIAN_RANGE,
    NULL,
    ConversionError,
    ParsedTimestamp,
    iso_utc_wall_fast,
    number_to_instant,
    parse_iso_time,
    parse_iso_timestamp,
    pg_time,
    pg_timestamp,
    round_to_precision,
)
from semantik_infra.sqlite_convert import Converter, storage_class

_INFINITIES = {"infinity": "infinity", "+infinity": "infinity", "-infinity": "-infinity"}


class _TemporalConverter(Converter):
    accepts: ClassVar[dict[str, str]] = {
        "text": "ISO-8601 text (T or space; Z, ±HH:MM or no zone)",
        "integer": "unix seconds",
        "real": "unix seconds, or a Julian day",
    }

    def describe(self, storage: str) -> str | None:
        text = super().describe(storage)
        if storage == "text" and text:
            zone = getattr(self.options.source_tz, "key", None) or str(self.options.source_tz)
            return f"{text}; no zone means {zone}"
        if storage == "real" and self.options.numeric_time != "auto":
            return "Julian day" if self.options.numeric_time == "julianday" else "unix seconds"
        if storage == "real":
            return f"Julian day if between {JULIAN_RANGE[0]} and {JULIAN_RANGE[1]}, else unix seconds"
        if storage == "integer" and self.options.numeric_time == "julianday":
            return "Julian day"
        return text

    def instant(self, value: object) -> datetime | str:
        """An aware datetime for the value, or 'infinity'/'-infinity'."""
        if isinstance(value, str):
            special = _INFINITIES.get(value.strip().lower())
            if special:
                return special
            parsed = parse_iso_timestamp(value)
            return self.from_parsed(parsed)
        if isinstance(value, int | float):
            return number_to_instant(value, self.options.numeric_time)
        raise ConversionError(f"{storage_class(value)} cannot become {self.target.display}")

    def fast_column(self, values: Sequence[object], suffix: str) -> list[str]:
        """The column path for timestamps: naive text in UTC, or text marked UTC, only needs reshaping."""
        precision = self.target.precision
        if self.options.source_tz is not UTC or (precision is not None and precision < 6):
            return super().column(values)
        if self.target.not_null and None in values:
            raise ConversionError("NULL")
        return [NULL if value is None else iso_utc_wall_fast(value) + suffix for value in values]  # type: ignore[arg-type]

    def from_parsed(self, parsed: ParsedTimestamp) -> datetime:
        """The instant a parsed text stands for (no zone: the source time zone)."""
        if parsed.zone is not None:
            return parsed.wall.replace(tzinfo=parsed.zone)
        return parsed.wall.replace(tzinfo=self.options.source_tz)


def _checked_utc(instant: datetime) -> datetime:
    try:
        return instant.astimezone(UTC)
    except OverflowError:
        raise ConversionError("lies outside the years 1-9999 once converted to UTC") from None


class TimestampTzConverter(_TemporalConverter):
    """timestamp with time zone: every value becomes an instant, written in UTC."""

    family = "timestamptz"

    def column(self, values: Sequence[object]) -> list[str]:
        return self.fast_column(values, "+00")

    def value(self, value: object) -> str:
        instant = self.instant(value)
        if isinstance(instant, str):
            return instant
        wall = _checked_utc(instant).replace(tzinfo=None)
        return pg_timestamp(round_to_precision(wall, self.target.precision)) + "+00"


class TimestampConverter(_TemporalConverter):
    """timestamp without time zone: wall-clock time in the source time zone (aware values converted)."""

    family = "timestamp"

    def column(self, values: Sequence[object]) -> list[str]:
        return self.fast_column(values, "")

    def value(self, value: object) -> str:
        if isinstance(value, str) and value.strip().lower() not in _INFINITIES:
            parsed = parse_iso_timestamp(value)
            if parsed.zone is None:
                return pg_timestamp(round_to_precision(parsed.wall, self.target.precision))
        instant = self.instant(value)
        if isinstance(instant, str):
            return instant
        try:
            local = instant.astimezone(self.options.source_tz)
        except OverflowError:
            raise ConversionError("lies outside the years 1-9999 in the source time zone") from None
        return pg_timestamp(round_to_precision(local.replace(tzinfo=None), self.target.precision))


class DateConverter(_TemporalConverter):
    """date: an ISO date, or a timestamp exactly at midnight (a time of day is never dropped)."""

    family = "date"
    accepts: ClassVar[dict[str, str]] = {
        "text": "ISO-8601 date, or a timestamp at midnight",
        "integer": "unix seconds at midnight",
        "real": "Julian day or unix seconds, at midnight",
    }

    def value(self, value: object) -> str:
        if isinstance(value, str):
            special = _INFINITIES.get(value.strip().lower())
            if special:
                return special
            wall = parse_iso_timestamp(value).wall
        else:
            instant = self.instant(value)
            assert isinstance(instant, datetime)
            try:
                wall = instant.astimezone(self.options.source_tz).replace(tzinfo=None)
            except OverflowError:
                raise ConversionError("lies outside the years 1-9999") from None
        if wall.time() != time(0):
            raise ConversionError("has a time of day, which a date column would drop")
        return wall.date().isoformat()


class TimeConverter(Converter):
    """time without time zone: 'HH:MM[:SS[.fff]]' text."""

    family = "time"
    accepts: ClassVar[dict[str, str]] = {"text": "'HH:MM[:SS[.ffffff]]' text"}

    def value(self, value: object) -> str:
        if not isinstance(value, str):
            return super().value(value)
        span = parse_iso_time(value)
        precision = self.target.precision
        if precision is not None and precision < 6:
            scale = 10 ** (6 - precision)
            span = timedelta(microseconds=(span // timedelta(microseconds=1) + scale // 2) // scale * scale)
        if span >= timedelta(hours=24):
            if span == timedelta(hours=24):
                return "24:00:00"
            raise ConversionError("has an invalid time of day")
        return pg_time((datetime.min + span).time())


TEMPORAL_FAMILIES: dict[str, type[Converter]] = {
    "timestamptz": TimestampTzConverter,
    "timestamp": TimestampConverter,
    "date": DateConverter,
    "time": TimeConverter,
}
