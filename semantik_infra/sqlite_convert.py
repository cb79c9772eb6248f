"""Converting SQLite values into PostgreSQL's COPY text, exactly. One `Converter` per target
column type turns each value SQLite hands back (None, int, float, str, bytes) into the text field
COPY reads, or raises `ConversionError` saying why it cannot. The text produced is also the
canonical form of the converted value: byte for byte what PostgreSQL's own output (COPY TO, with
DateStyle ISO, TimeZone UTC, extra_float_digits 1, bytea_output hex) gives for the stored value,
so the import verifies a table by reading it back and comparing. Each converter has a fast path
over a whole column of a batch (`column`), allowed to give up by raising anything, and a careful
per-value path (`one`) that does every check; for valid values both give the same text. Pure
functions only: no database, no file."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, tzinfo
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import Any, ClassVar

from semantik_infra.pg_text import (
    NULL,
    ConversionError,
    check_json,
    copy_escape,
    copy_escape_many,
    jsonb_text,
    parse_json,
    pg_float4,
    pg_float8,
    pg_numeric,
    to_float4,
)

__all__ = ["NULL", "ConversionError"]

INT_RANGES = {"int2": (-(2**15), 2**15 - 1), "int4": (-(2**31), 2**31 - 1), "int8": (-(2**63), 2**63 - 1)}
# SQLite's storage classes, as `typeof()` names them.
STORAGE_CLASSES = ("null", "integer", "real", "text", "blob")
_INTEGER_TEXT = re.compile(r"\s*[+-]?\d+\s*\Z", re.ASCII)
_FLOAT_TEXT = re.compile(
    r"\s*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)\s*\Z", re.IGNORECASE | re.ASCII
)
_BOOLEANS = {"t": "t", "true": "t", "y": "t", "yes": "t", "on": "t", "1": "t"}
_BOOLEANS.update({"f": "f", "false": "f", "n": "f", "no": "f", "off": "f", "0": "f"})
# The exact forms seen in practice, looked up without any Python-level work per value.
_BOOLEAN_FAST: dict[Any, str] = {0: "f", 1: "t", None: NULL, **_BOOLEANS, "TRUE": "t", "FALSE": "f"}
_DECIMAL_TEXT = re.compile(
    r"\s*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|infinity|inf|nan)\s*\Z", re.IGNORECASE | re.ASCII
)
_DECIMALS = Context(prec=100_000, Emax=10**9, Emin=-(10**9))


def storage_class(value: object) -> str:
    """SQLite's name for the storage class of a value as sqlite3 returns it."""
    if value is None:
        return "null"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "real"
    if isinstance(value, str):
        return "text"
    return "blob"


@dataclass(frozen=True)
class ConversionOptions:
    """How ambiguous source values are read; the same for every column of an import."""

    source_tz: tzinfo = UTC
    numeric_time: str = "auto"
    decode_fallback: str | None = None


@dataclass(frozen=True)
class TargetType:
    """A PostgreSQL column type as the converters need it: the base type and its modifiers."""

    name: str  # pg_type.typname of the base type: int4, varchar, timestamptz, ...
    display: str  # format_type(): 'integer', 'character varying(20)'
    length: int | None = None  # varchar(n) / char(n)
    precision: int | None = None  # numeric(p, s), timestamp(p), time(p)
    scale: int | None = None
    labels: tuple[str, ...] = ()  # enum labels
    enum: bool = False
    not_null: bool = False


# ---------------------------------------------------------------------------------------------
# Converters


class Converter:
    """Turns SQLite values into COPY text for one target type. Subclasses implement `value`."""

    family = "text"
    # Storage class -> the conversion the plan shows; a class missing here cannot be converted.
    accepts: ClassVar[dict[str, str]] = {}

    def __init__(self, target: TargetType, options: ConversionOptions) -> None:
        self.target = target
        self.options = options

    def one(self, value: object) -> str:
        """The COPY text of one value, with every check; raises ConversionError."""
        if value is None:
            if self.target.not_null:
                raise ConversionError("is NULL but the column is NOT NULL")
            return NULL
        return self.value(value)

    def value(self, value: object) -> str:
        """The COPY text of a non-NULL value."""
        raise ConversionError(f"{storage_class(value)} cannot become {self.target.display}")

    def column(self, values: Sequence[object]) -> list[str]:
        """COPY text for a column of a batch; may raise anything, then the caller uses `one`."""
        if self.target.not_null and None in values:
            raise ConversionError("NULL")
        return [NULL if value is None else self.value(value) for value in values]

    def describe(self, storage: str) -> str | None:
        """What happens to values of this storage class, or None if they cannot be converted."""
        return self.accepts.get(storage)

    def text(self, value: object) -> str:
        """A text or BLOB value as a str: UTF-8, or the --decode-fallback encoding."""
        if isinstance(value, bytes):
            raw = value
        else:
            assert isinstance(value, str)
            try:
                value.encode()
                return value
            except UnicodeEncodeError:
                # sqlite3 hands text over with invalid bytes smuggled in as surrogates.
                raw = value.encode("utf-8", "surrogateescape")
        try:
            return raw.decode()
        except UnicodeDecodeError:
            if self.options.decode_fallback:
                try:
                    return raw.decode(self.options.decode_fallback)
                except UnicodeDecodeError:
                    pass
            what = "BLOB" if isinstance(value, bytes) else "TEXT"
            raise ConversionError(f"{what} is not valid UTF-8" + self._fallback_hint()) from None

    def _fallback_hint(self) -> str:
        if self.options.decode_fallback:
            return f" nor {self.options.decode_fallback}"
        return " (--decode-fallback cp1252 or latin-1 reads legacy text)"


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ConversionError("contains a NUL character, which PostgreSQL text cannot store")
    return text


class TextConverter(Converter):
    """text, varchar(n), char(n), citext, name: the text itself, length checked."""

    family = "text"
    accepts: ClassVar[dict[str, str]] = {
        "text": "text as is",
        "integer": "integer as decimal text",
        "real": "real in PostgreSQL's float8 notation",
        "blob": "BLOB decoded as UTF-8 text",
    }

    def _fit(self, text: str) -> str:
        length = self.target.length
        if length is None:
            return text
        if len(text) > length:
            if self.target.name != "bpchar" or text[length:].strip(" "):
                raise ConversionError(f"is longer than {length} characters")
            text = text[:length]
        return text.ljust(length) if self.target.name == "bpchar" else text

    def value(self, value: object) -> str:
        if isinstance(value, int):
            text = str(value)
        elif isinstance(value, float):
            text = pg_float8(value)
        else:
            text = self.text(value)
        return copy_escape(self._fit(_no_nul(text)))

    def column(self, values: Sequence[object]) -> list[str]:
        length = self.target.length
        pad = length if self.target.name == "bpchar" else None
        return _text_column(values, self.target.not_null, length, pad)


def _text_column(
    values: Sequence[object], not_null: bool, length: int | None = None, pad: int | None = None
) -> list[str]:
    """COPY text for a column of str values and NULLs, escaped in one pass; raises for anything else."""
    nulls = values.count(None) if isinstance(values, tuple | list) else 0
    if nulls and not_null:
        raise ConversionError("NULL")
    texts = [("" if value is None else value) for value in values] if nulls else values
    if set(map(type, texts)) != {str}:
        raise ConversionError("not all text")
    if length is not None and max(map(len, texts)) > length:  # type: ignore[arg-type]
        raise ConversionError("too long")
    if pad is not None:
        texts = [text.ljust(pad) for text in texts]  # type: ignore[attr-defined]
    out = copy_escape_many(texts)  # type: ignore[arg-type]
    if nulls:
        for index, value in enumerate(values):
            if value is None:
                out[index] = NULL
    return out


class OpaqueConverter(TextConverter):
    """Types this tool does not parse (arrays, inet, interval, ...): the text goes to PostgreSQL,
    which parses it; verification compares PostgreSQL's text output with that text."""

    family = "opaque"
    accepts: ClassVar[dict[str, str]] = {
        "text": "text passed to PostgreSQL's parser",
        "integer": "integer as decimal text, parsed by PostgreSQL",
        "real": "real as text, parsed by PostgreSQL",
    }

    def value(self, value: object) -> str:
        if isinstance(value, bytes):
            raise ConversionError(f"blob cannot become {self.target.display}")
        return super().value(value)


class EnumConverter(TextConverter):
    """Enum types: the text must be one of the labels."""

    family = "enum"
    accepts: ClassVar[dict[str, str]] = {"text": "text that is one of the enum's labels"}

    def __init__(self, target: TargetType, options: ConversionOptions) -> None:
        super().__init__(target, options)
        self.labels = frozenset(target.labels)

    def value(self, value: object) -> str:
        if not isinstance(value, str) or self.text(value) not in self.labels:
            raise ConversionError(f"is not one of the labels of {self.target.display}")
        return copy_escape(value)

    def column(self, values: Sequence[object]) -> list[str]:
        if not {value for value in values if value is not None} <= self.labels:
            raise ConversionError("not a label")
        return super().column(values)


class IntegerConverter(Converter):
    """smallint, integer, bigint: whole numbers in range."""

    family = "integer"
    accepts: ClassVar[dict[str, str]] = {
        "integer": "integer, range-checked",
        "real": "real with no fraction",
        "text": "decimal integer text",
    }

    def __init__(self, target: TargetType, options: ConversionOptions) -> None:
        super().__init__(target, options)
        self.low, self.high = INT_RANGES[target.name]

    def value(self, value: object) -> str:
        if isinstance(value, float):
            if not value.is_integer():
                raise ConversionError("real has a fraction" if math.isfinite(value) else "is not finite")
            value = int(value)
        elif isinstance(value, str):
            if not _INTEGER_TEXT.match(value):
                raise ConversionError("text is not a whole number" if value.strip() else "is an empty string")
            value = int(value)
        if not isinstance(value, int):
            return super().value(value)
        if not self.low <= value <= self.high:
            raise ConversionError(f"is out of range for {self.target.display}")
        return str(value)

    def column(self, values: Sequence[object]) -> list[str]:
        present = [value for value in values if value is not None]
        if len(present) != len(values) and self.target.not_null:
            raise ConversionError("NULL")
        if present and (
            set(map(type, present)) != {int} or min(present) < self.low or max(present) > self.high  # type: ignore[type-var]
        ):
            raise ConversionError("slow path")
        return (
            list(map(str, values)) if len(present) == len(values) else [NULL if v is None else str(v) for v in values]
        )


class BooleanConverter(Converter):
    """boolean from 0/1, 0.0/1.0, and the words PostgreSQL reads ('true', 't', 'yes', '1', ...)."""

    family = "boolean"
    accepts: ClassVar[dict[str, str]] = {
        "integer": "0/1 → false/true",
        "real": "0.0/1.0 → false/true",
        "text": "'true'/'false', 't'/'f', 'yes'/'no', 'on'/'off', '1'/'0' (any case)",
    }

    def value(self, value: object) -> str:
        if isinstance(value, int | float):
            if value in (0, 1):
                return "t" if value else "f"
            raise ConversionError("is a number other than 0 or 1")
        if isinstance(value, str):
            word = _BOOLEANS.get(value.strip().lower())
            if word is None:
                raise ConversionError("text is not a boolean word" if value.strip() else "is an empty string")
            return word
        return super().value(value)

    def column(self, values: Sequence[object]) -> list[str]:
        if self.target.not_null and None in values:
            raise ConversionError("NULL")
        return list(map(_BOOLEAN_FAST.__getitem__, values))


class FloatConverter(Converter):
    """double precision and real: numbers exactly (real rounds to single precision, as PostgreSQL)."""

    family = "float"
    accepts: ClassVar[dict[str, str]] = {
        "real": "real as is",
        "integer": "integer, if double precision holds it exactly",
        "text": "decimal text, 'NaN', 'Infinity', '-Infinity'",
    }

    def __init__(self, target: TargetType, options: ConversionOptions) -> None:
        super().__init__(target, options)
        self.single = target.name == "float4"

    def value(self, value: object) -> str:
        if isinstance(value, int):
            number = float(value)
            if int(number) != value:
                raise ConversionError("integer is too large for double precision to hold exactly")
        elif isinstance(value, float):
            number = value
        elif isinstance(value, str):
            if not _FLOAT_TEXT.match(value):
                raise ConversionError("text is not a number" if value.strip() else "is an empty string")
            number = float(value)
            if math.isinf(number) and "inf" not in value.lower():
                raise ConversionError(f"is out of range for {self.target.display}")
        else:
            return super().value(value)
        return pg_float4(to_float4(number)) if self.single else pg_float8(number)

    def column(self, values: Sequence[object]) -> list[str]:
        if self.single or not {type(value) for value in values} <= {float, type(None)}:
            raise ConversionError("slow path")
        if self.target.not_null and None in values:
            raise ConversionError("NULL")
        return [NULL if value is None else pg_float8(value) for value in values]  # type: ignore[arg-type]


class NumericConverter(Converter):
    """numeric(p, s): exact decimals; rounded to the scale half away from zero, as PostgreSQL does."""

    family = "numeric"
    accepts: ClassVar[dict[str, str]] = {
        "integer": "integer exactly",
        "real": "real by its shortest exact decimal digits",
        "text": "decimal text",
    }

    def value(self, value: object) -> str:
        if isinstance(value, int):
            number = Decimal(value)
        elif isinstance(value, float):
            number = Decimal(repr(value)) if math.isfinite(value) else Decimal(str(value))
        elif isinstance(value, str):
            if not _DECIMAL_TEXT.match(value):
                raise ConversionError("text is not a number" if value.strip() else "is an empty string")
            number = Decimal(value.strip())
        else:
            return super().value(value)
        return pg_numeric(self._fit(number))

    def _fit(self, number: Decimal) -> Decimal:
        precision, scale = self.target.precision, self.target.scale
        if precision is None or number.is_nan():
            return number
        if number.is_infinite():
            raise ConversionError(f"infinity does not fit {self.target.display}")
        if scale is not None:
            try:
                number = number.quantize(Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP, context=_DECIMALS)
            except InvalidOperation:
                raise ConversionError(f"does not fit {self.target.display}") from None
        integer_digits = max(number.adjusted() + 1, 0) if not number.is_zero() else 0
        if integer_digits > precision - (scale or 0):
            raise ConversionError(f"does not fit {self.target.display}")
        return number


class BinaryConverter(Converter):
    """bytea: BLOB bytes as they are; text as its UTF-8 bytes."""

    family = "bytea"
    accepts: ClassVar[dict[str, str]] = {"blob": "bytes as is", "text": "the text's UTF-8 bytes"}

    def value(self, value: object) -> str:
        if isinstance(value, bytes):
            return "\\\\x" + value.hex()
        if isinstance(value, str):
            return "\\\\x" + value.encode("utf-8", "surrogateescape").hex()
        return super().value(value)

    def column(self, values: Sequence[object]) -> list[str]:
        if not {type(value) for value in values} <= ({bytes} if self.target.not_null else {bytes, type(None)}):
            raise ConversionError("slow path")
        return [NULL if value is None else "\\\\x" + value.hex() for value in values]  # type: ignore[union-attr]


class JsonConverter(Converter):
    """json: the text as written, after checking it is valid JSON (invalid JSON is an error, not NULL)."""

    family = "json"
    # Whether the column path checks JSON too (set once PostgreSQL refused a value of the column).
    validate = False
    accepts: ClassVar[dict[str, str]] = {
        "text": "JSON text, validated, kept as written",
        "integer": "a JSON number",
        "real": "a JSON number (NaN and infinities are not JSON)",
        "blob": "UTF-8 JSON text, validated",
    }

    def document(self, value: object) -> str:
        """The JSON text of a value, checked."""
        if isinstance(value, bool):
            raise ConversionError("unexpected boolean")
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ConversionError("is not finite, so not JSON")
            return repr(value)
        if isinstance(value, str | bytes):
            return check_json(_no_nul(self.text(value)))
        raise ConversionError(f"{storage_class(value)} cannot become {self.target.display}")

    def value(self, value: object) -> str:
        return copy_escape(self.document(value))

    def column(self, values: Sequence[object]) -> list[str]:
        # PostgreSQL's json input checks every value as COPY reads it (the row is still named by its
        # line), so checking here too would only double the work, until a value was refused.
        if self.validate:
            for value in values:
                if value is not None:
                    parse_json(value)  # type: ignore[arg-type]
        return _text_column(values, self.target.not_null)


class JsonbConverter(JsonConverter):
    """jsonb: the JSON text normalised exactly as jsonb stores it (key order, spacing, numbers)."""

    family = "jsonb"
    accepts: ClassVar[dict[str, str]] = {
        "text": "JSON text, validated, normalised as jsonb stores it",
        "integer": "a JSON number",
        "real": "a JSON number (NaN and infinities are not JSON)",
        "blob": "UTF-8 JSON text, validated",
    }

    def value(self, value: object) -> str:
        return copy_escape(jsonb_text(self.document(value)))

    def column(self, values: Sequence[object]) -> list[str]:
        raise ConversionError("slow path")


class UuidConverter(Converter):
    """uuid from its text forms or a 16-byte BLOB."""

    family = "uuid"
    accepts: ClassVar[dict[str, str]] = {
        "text": "UUID text (any case, with or without hyphens/braces)",
        "blob": "16 bytes",
    }

    def value(self, value: object) -> str:
        try:
            if isinstance(value, str):
                return str(uuid.UUID(value.strip()))
            if isinstance(value, bytes):
                return str(uuid.UUID(bytes=value))
        except ValueError:
            raise ConversionError("is not a UUID") from None
        return super().value(value)


_FAMILIES: dict[str, type[Converter]] = {
    "int2": IntegerConverter,
    "int4": IntegerConverter,
    "int8": IntegerConverter,
    "bool": BooleanConverter,
    "float4": FloatConverter,
    "float8": FloatConverter,
    "numeric": NumericConverter,
    "text": TextConverter,
    "varchar": TextConverter,
    "bpchar": TextConverter,
    "citext": TextConverter,
    "name": TextConverter,
    "bytea": BinaryConverter,
    "json": JsonConverter,
    "jsonb": JsonbConverter,
    "uuid": UuidConverter,
}


def converter_for(target: TargetType, options: ConversionOptions) -> Converter:
    """The converter for a target column type (types this tool does not parse pass as text)."""
    from semantik_infra.sqlite_temporal import TEMPORAL_FAMILIES

    if target.enum:
        return EnumConverter(target, options)
    family = _FAMILIES.get(target.name) or TEMPORAL_FAMILIES.get(target.name) or OpaqueConverter
    return family(target, options)


def is_secret_name(name: str) -> bool:
    """Whether a column's name suggests its values must never be shown."""
    return _SECRET_NAME.search(name) is not None


_SECRET_NAME = re.compile(r"pass|pwd|secret|token|key|credential|salt|auth|session|cookie|otp|private", re.IGNORECASE)
