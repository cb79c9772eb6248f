"""The loader's pure parts: line digests, the reject file, naming PostgreSQL's refusals without their
values, batch sizing and the sending thread."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from semantik_infra.errors import ConfigError
from semantik_infra.sqlite_load import (
    LineDigest,
    RejectFile,
    _BatchSizes,
    _Sender,
    copy_error_position,
    json_value,
    postgres_reason,
    shown,
)


def digest(lines: list[bytes]) -> LineDigest:
    result = LineDigest()
    result.add(lines)
    return result


@given(st.lists(st.binary(max_size=30), max_size=30), st.randoms())
def test_digest_ignores_order_but_not_content(lines, random):
    shuffled = list(lines)
    random.shuffle(shuffled)
    assert digest(lines) == digest(shuffled)
    if lines:
        changed = [*lines[:-1], lines[-1] + b"x"]
        assert digest(lines) != digest(changed)
        assert digest(lines) != digest([*lines, lines[0]])  # a duplicated row counts


@dataclass
class FakeDiag:
    context: str | None = None
    message_primary: str | None = None
    constraint_name: str | None = None
    column_name: str | None = None


@dataclass
class FakeError:
    pgcode: str
    diag: FakeDiag


def test_copy_errors_name_the_line_and_column_and_reasons_hide_values():
    syntax = FakeError(
        "22P02", FakeDiag('COPY kinds, line 7, column doc: "{broken"', "invalid input syntax for type json")
    )
    assert copy_error_position(syntax) == (7, "doc")
    assert copy_error_position(FakeError("23505", FakeDiag("COPY kinds, line 12"))) == (12, None)
    assert copy_error_position(FakeError("23502", FakeDiag(None, column_name="name"))) == (None, "name")
    assert postgres_reason(syntax, True) == "PostgreSQL refused it: invalid input syntax for type json"
    assert postgres_reason(syntax, False) == "PostgreSQL refused it (SQLSTATE 22P02)"
    unique = FakeError("23505", FakeDiag(constraint_name="kinds_token_key", message_primary="duplicate key"))
    assert postgres_reason(unique, True) == "PostgreSQL refused it: duplicate key for unique constraint kinds_token_key"


def test_values_are_shown_short_and_safe():
    assert shown("x" * 100) == repr("x" * 40) + "…"
    assert shown(b"\x00\x01") == "x'0001' (2 bytes)"
    assert shown(b"caf\xe9".decode("utf-8", "surrogateescape")) == repr("caf\\xe9")
    assert shown(5) == "5"


def test_json_values_keep_what_json_cannot_say():
    assert json_value(b"\x00") == {"blob_base64": "AA=="}
    assert json_value(float("inf")) == {"real": "inf"}
    assert json_value(b"\xe9".decode("utf-8", "surrogateescape")) == {"text_base64": "6Q=="}
    assert json_value("é") == "é" and json_value(None) is None and json_value(1.5) == 1.5


def test_reject_file_is_private_published_only_when_asked_and_never_overwrites(tmp_path: Path):
    path = tmp_path / "rejects.jsonl"
    rejects = RejectFile(path)
    rejects.publish()
    assert not path.exists()  # no rejects, no file
    rejects.write("t", 3, "c", "why", {"c": b"\x01", "d": "x"})
    assert not path.exists() and len(list(tmp_path.iterdir())) == 1
    rejects.publish()
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text()) == {
        "table": "t",
        "row": 3,
        "column": "c",
        "reason": "why",
        "values": {"c": {"blob_base64": "AQ=="}, "d": "x"},
    }
    with pytest.raises(ConfigError, match="exists already"):
        RejectFile(path)
    with pytest.raises(ConfigError, match="no such directory"):
        RejectFile(tmp_path / "missing" / "r.jsonl")
    discarded = RejectFile(tmp_path / "other.jsonl")
    discarded.write("t", 1, None, "why", {})
    discarded.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rejects.jsonl"]


def test_batches_keep_to_a_byte_budget():
    sizes = _BatchSizes(1000, first=10, most=500)
    assert next(sizes) == 10
    sizes.observe(size=2000, rows=10)  # 200 bytes a row
    assert next(sizes) == 5
    sizes.observe(size=10, rows=10)
    assert next(sizes) == 500
    sizes.observe(size=10**9, rows=1)
    assert next(sizes) == 1


def test_sender_sends_in_order_and_hands_back_its_failure():
    sent: list[list[bytes]] = []
    with _Sender(lambda lines, rows: sent.append(lines)) as sender:
        for n in range(5):
            sender.put([str(n).encode()], [])
    assert sent == [[b"0"], [b"1"], [b"2"], [b"3"], [b"4"]]

    def fail(lines, rows):
        raise RuntimeError("server gone")

    with pytest.raises(RuntimeError, match="server gone"), _Sender(fail) as sender:
        sender.put([b"x"], [])
        sender.put([b"y"], [])
        sender.put([b"z"], [])


def test_sender_stops_after_the_current_batch_when_the_caller_fails():
    started, release, sent = threading.Event(), threading.Event(), []

    def slow(lines, rows):
        started.set()
        release.wait(5)
        sent.append(lines)

    with pytest.raises(KeyboardInterrupt), _Sender(slow) as sender:
        sender.put([b"1"], [])
        sender.put([b"2"], [])  # queued behind the one being sent
        started.wait(5)
        threading.Timer(0.2, release.set).start()  # batch 1 finishes after the interrupt
        raise KeyboardInterrupt
    assert sent == [[b"1"]]
