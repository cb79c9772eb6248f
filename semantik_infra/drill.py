"""Restore drills: proof that a backup restores. A drill verifies an archive, counts the rows each
table holds in the archive's own data stream (not the manifest's planner estimates), restores it
into a throwaway database beside the live one (which it never touches), compares every table's
exact row count and every sequence with the archive, and drops the throwaway database, also when
interrupted. The outcome is recorded beside the archive (`<archive>.drill.json`), so listings and
the doctor can say when each backup was last proven and warn about stale or unproven ones."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

DRILL_SUFFIX = ".drill.json"
_SETVAL = re.compile(r"setval\('((?:[^']|'')+)',\s*(-?\d+),\s*(true|false)\)")
Reporter = Callable[[str, float | None], None]


@dataclass(frozen=True)
class DrillRecord:
    """The outcome of one drill, as recorded beside the archive."""

    archive: str
    drilled: str
    seconds: float
    ok: bool
    tables: int
    rows: int
    problems: list[str] = field(default_factory=list)

    @property
    def when(self) -> datetime:
        """When the drill ran."""
        return datetime.fromisoformat(self.drilled)

    def to_json(self) -> str:
        """The record as JSON."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


# --- pure ----------------------------------------------------------------------------------


def drill_path(archive: Path) -> Path:
    """Where an archive's drill record lives."""
    return archive.with_name(archive.name + DRILL_SUFFIX)


def parse_record(text: str) -> DrillRecord | None:
    """A drill record, or None when the file is not one (a damaged record proves nothing)."""
    try:
        data = json.loads(text)
        record = DrillRecord(**{key: data[key] for key in DrillRecord.__dataclass_fields__ if key in data})
        record.when  # noqa: B018 - validates the timestamp
    except (ValueError, TypeError, KeyError):
        return None
    return record


def read_record(archive: Path) -> DrillRecord | None:
    """The archive's last drill, or None if it was never drilled (or the record is unreadable)."""
    try:
        return parse_record(drill_path(archive).read_text(encoding="utf-8"))
    except OSError:
        return None


def expected_sequences(entries: list[Any]) -> dict[tuple[str, str], tuple[int, bool]]:
    """(schema, sequence) -> (value, is_called) from the archive's SEQUENCE SET entries."""
    found = {}
    for entry in entries:
        if entry.desc != "SEQUENCE SET":
            continue
        match = _SETVAL.search(entry.defn or "")
        if match:
            found[(entry.namespace or "", entry.tag)] = (int(match.group(2)), match.group(3) == "true")
    return found


def compare(
    archive_rows: dict[tuple[str, str], int],
    restored_rows: dict[tuple[str, str], int],
    archive_sequences: dict[tuple[str, str], tuple[int, bool]],
    restored_sequences: dict[tuple[str, str], tuple[int, bool]],
) -> list[str]:
    """Every difference between what the archive holds and what the restore produced, one line each."""
    from semantik_infra.dumpfile import quote_identifier

    def name(key: tuple[str, str]) -> str:
        return f"{quote_identifier(key[0])}.{quote_identifier(key[1])}"

    problems = []
    for key, rows in sorted(archive_rows.items()):
        got = restored_rows.get(key)
        if got is None:
            problems.append(f"table {name(key)}: {rows} rows in the archive, missing after the restore")
        elif got != rows:
            problems.append(f"table {name(key)}: {rows} rows in the archive, {got} after the restore")
    for key, (value, called) in sorted(archive_sequences.items()):
        got_seq = restored_sequences.get(key)
        if got_seq is None:
            problems.append(f"sequence {name(key)}: missing after the restore")
        elif got_seq != (value, called):
            problems.append(f"sequence {name(key)}: {value} in the archive, {got_seq[0]} after the restore")
    return problems


def staleness(
    newest_created: datetime | None, last_drill: DrillRecord | None, *, now: datetime, max_age_days: float
) -> list[str]:
    """Warnings about the newest backup: too old, never drilled, or its last drill failed."""
    if newest_created is None:
        return []
    warnings = []
    age = now - newest_created
    if age > timedelta(days=max_age_days):
        warnings.append(f"the newest backup is {age.days} days old (BACKUP_MAX_AGE_DAYS={max_age_days:g})")
    if last_drill is None:
        warnings.append("the newest backup was never drilled: run `inv postgres.drill latest`")
    elif not last_drill.ok:
        warnings.append(f"the newest backup's last drill failed ({last_drill.drilled}): run `inv postgres.drill`")
    return warnings


def write_record(archive: Path, record: DrillRecord) -> None:
    """Record a drill beside the archive, atomically."""
    from semantik_infra.envfile import atomic_writer

    with atomic_writer(drill_path(archive), mode=0o644) as stream:
        stream.write(record.to_json().encode())


def now_utc() -> datetime:
    """The current time, in UTC."""
    return datetime.now(UTC)
