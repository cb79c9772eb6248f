"""Drill logic without a server: sequences from SEQUENCE SET entries, comparisons naming the table
and both counts, staleness warnings, and records that refuse to be half-read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from semantik_infra.drill import DrillRecord, compare, expected_sequences, parse_record, staleness

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)


def _entry(desc: str, namespace: str, tag: str, defn: str) -> SimpleNamespace:
    return SimpleNamespace(desc=desc, namespace=namespace, tag=tag, defn=defn)


def test_sequences_come_from_setval_calls():
    entries = [
        _entry(
            "SEQUENCE SET", "public", "docs_id_seq", "SELECT pg_catalog.setval('public.docs_id_seq', 5000, true);\n"
        ),
        _entry("SEQUENCE SET", "my.s", "it's", "SELECT pg_catalog.setval('\"my.s\".\"it''s\"', 1, false);\n"),
        _entry("TABLE DATA", "public", "docs", ""),
    ]
    assert expected_sequences(entries) == {("public", "docs_id_seq"): (5000, True), ("my.s", "it's"): (1, False)}


def test_compare_names_table_and_both_counts():
    problems = compare(
        {("public", "a"): 10, ("my.schema", 'We"ird'): 3, ("public", "gone"): 1},
        {("public", "a"): 10, ("my.schema", 'We"ird'): 2},
        {("public", "s"): (7, True)},
        {("public", "s"): (9, True)},
    )
    assert problems == [
        'table "my.schema"."We""ird": 3 rows in the archive, 2 after the restore',
        "table public.gone: 1 rows in the archive, missing after the restore",
        "sequence public.s: 7 in the archive, 9 after the restore",
    ]
    assert compare({("public", "a"): 1}, {("public", "a"): 1}, {}, {}) == []


def test_staleness_warns_about_age_missing_and_failed_drills():
    fresh = NOW - timedelta(days=1)
    ok = DrillRecord("a.dump", NOW.isoformat(), 1.0, True, 2, 10)
    failed = DrillRecord("a.dump", NOW.isoformat(), 1.0, False, 2, 10, ["x"])
    assert staleness(fresh, ok, now=NOW, max_age_days=7) == []
    assert staleness(None, None, now=NOW, max_age_days=7) == []
    old = staleness(NOW - timedelta(days=9), ok, now=NOW, max_age_days=7)
    assert len(old) == 1 and "9 days old" in old[0]
    assert "never drilled" in staleness(fresh, None, now=NOW, max_age_days=7)[0]
    assert "failed" in staleness(fresh, failed, now=NOW, max_age_days=7)[0]


def test_records_round_trip_and_damaged_ones_prove_nothing():
    record = DrillRecord("a.dump", NOW.isoformat(), 1.5, True, 3, 42)
    assert parse_record(record.to_json()) == record
    for text in ("", "{}", "[1]", '{"archive": "a"}', record.to_json().replace(NOW.isoformat(), "yesterday")):
        assert parse_record(text) is None
