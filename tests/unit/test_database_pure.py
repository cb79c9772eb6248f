"""Retry classification, backoff bounds and latency statistics: pure logic, real driver errors."""

from __future__ import annotations

import random

import psycopg2
import pytest

from semantik_infra.database import PERMANENT, TRANSIENT, backoff_delays, classify
from semantik_infra.diagnostics import latency_summary


def _driver_error(message: str) -> psycopg2.OperationalError:
    return psycopg2.OperationalError(message)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ('connection to server at "127.0.0.1", port 1 failed: Connection refused', TRANSIENT),
        ("FATAL:  the database system is starting up", TRANSIENT),
        ("FATAL:  sorry, too many clients already", TRANSIENT),
        ("timeout expired", TRANSIENT),
        ('FATAL:  password authentication failed for user "x"', PERMANENT),
        ('FATAL:  database "nope" does not exist', PERMANENT),
        ('FATAL:  role "nope" does not exist', PERMANENT),
        ('FATAL:  no pg_hba.conf entry for host "1.2.3.4", user "x", database "y", no encryption', PERMANENT),
        ('could not translate host name "nohost" to address', PERMANENT),
        ("server does not support SSL, but SSL was required", PERMANENT),
    ],
)
def test_classify_by_message(message, expected):
    assert classify(_driver_error(message)).retry == expected


def test_classify_names_the_variable_to_fix():
    assert classify(_driver_error('FATAL:  database "nope" does not exist')).hint == "POSTGRES_DB"
    assert "POSTGRES_PASSWORD" in classify(_driver_error("password authentication failed for user")).hint
    assert classify(_driver_error("Connection refused")).hint == "POSTGRES_PORT"


def test_backoff_is_bounded_and_grows():
    rng = random.Random(7)
    delays = backoff_delays(8, 0.5, 4.0, rng)
    assert len(delays) == 7
    caps = [min(4.0, 0.5 * 2**n) for n in range(7)]
    assert all(0 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    many = [backoff_delays(6, 0.1, 1.0, random.Random(seed))[-1] for seed in range(200)]
    assert max(many) <= 1.0 and max(many) > 0.5  # full jitter reaches near the cap
    assert backoff_delays(1, 1.0, 1.0) == []


def test_latency_summary():
    samples = [float(i) for i in range(1, 101)]
    assert latency_summary(samples) == {"p50": 50.5, "p95": 95.0, "max": 100.0}
    assert latency_summary([3.0]) == {"p50": 3.0, "p95": 3.0, "max": 3.0}


def test_a_database_closed_by_an_interrupted_swap_says_how_to_reopen_it():
    kind = classify(_driver_error('FATAL:  database "semantik" is not currently accepting connections'))
    assert kind.retry == PERMANENT and "ALLOW_CONNECTIONS" in kind.cause and "inv postgres.up" in kind.cause
