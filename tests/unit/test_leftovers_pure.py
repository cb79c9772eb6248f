"""Pure parts of what interrupted backups and restores leave behind: recognising scratch and
kept databases by name, the tags our client processes carry, and conninfo quoting."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from semantik_infra.leftovers import (
    KEPT,
    SCRATCH,
    ClientTag,
    classify_leftover,
    conninfo,
    new_tag,
    parse_tag,
    restore_lock_key,
)
from semantik_infra.restore import restore_names

WHEN = datetime(2026, 11, 25, 12, 0, 1, tzinfo=UTC)


def test_scratch_and_kept_databases_are_recognised_by_name():
    for live in ("semantik", "ü" * 40, "x" * 63, "my.db"):
        scratch, kept = restore_names(live, WHEN, set())
        assert classify_leftover(live, scratch) == SCRATCH
        assert classify_leftover(live, kept) == KEPT
        again = restore_names(live, WHEN, {scratch, kept})
        assert [classify_leftover(live, name) for name in again] == [SCRATCH, KEPT]
    assert classify_leftover("semantik", "semantik") is None
    assert classify_leftover("semantik", "other_restore_20261125120001") is None
    assert classify_leftover("semantik", "semantik_restore_notes") is None
    # Another database whose name starts like ours is not ours.
    assert classify_leftover("sem", "semantik_restore_20261125120001") is None


def test_tags_carry_operation_host_and_pid():
    tag = new_tag("backup")
    assert tag.pid == os.getpid() and tag.operation == "backup"
    assert len(tag.text) <= 63 and parse_tag(tag.text) == tag
    assert parse_tag("psql") is None and parse_tag("semantik-infra.backup.x") is None
    assert ClientTag("restore", "abcdef", 12, "0123abcd").text == "semantik-infra.restore.abcdef.12.0123abcd"


def test_conninfo_quotes_what_needs_it():
    assert conninfo(application_name="semantik-infra.backup.a.1.b") == "application_name='semantik-infra.backup.a.1.b'"
    assert conninfo(dbname="it's a \\ db") == r"dbname='it\'s a \\ db'"


def test_restore_lock_keys_are_stable_signed_bigints():
    key = restore_lock_key("semantik")
    assert key == restore_lock_key("semantik") != restore_lock_key("other")
    assert -(2**63) <= key < 2**63
    assert restore_lock_key("semantik", scratch=True) != key  # the scratch lock is another lock
