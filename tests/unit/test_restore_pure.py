"""Pure parts of restores: scratch and kept-copy names, the maintenance database."""

from __future__ import annotations

from datetime import UTC, datetime

from semantik_infra.restore import MAX_IDENTIFIER_BYTES, maintenance_database, pg_restore_argv, restore_names

WHEN = datetime(2026, 11, 25, 12, 0, 1, tzinfo=UTC)


def test_names_carry_the_database_and_time():
    assert restore_names("semantik", WHEN, set()) == (
        "semantik_restore_20261125120001",
        "semantik_before_restore_20261125120001",
    )


def test_names_avoid_databases_that_exist():
    taken = {"semantik_before_restore_20261125120001"}  # a restore finished within the same second
    scratch, previous = restore_names("semantik", WHEN, taken)
    assert (scratch, previous) == ("semantik_restore_20261125120001_2", "semantik_before_restore_20261125120001_2")


def test_long_names_are_shortened_to_what_postgresql_keeps():
    live = "ü" * 40  # 80 bytes: PostgreSQL would silently cut any name built from it
    for name in restore_names(live, WHEN, set()):
        assert len(name.encode()) <= MAX_IDENTIFIER_BYTES
        assert name.startswith("ü") and name.encode().decode() == name  # no broken character
    assert restore_names("x" * 63, WHEN, set())[1].endswith("_before_restore_20261125120001")


def test_a_session_never_sits_in_the_database_being_renamed():
    assert maintenance_database("semantik") == "postgres"
    assert maintenance_database("postgres") == "template1"


def test_pg_restore_argv():
    assert pg_restore_argv("d") == ["--no-owner", "--exit-on-error", "--dbname", "d", "--single-transaction"]
    parallel = pg_restore_argv("d", jobs=4, clean=True, privileges=False)
    assert parallel[-5:] == ["--no-privileges", "--clean", "--if-exists", "--jobs", "4"]
    assert "--single-transaction" not in parallel
