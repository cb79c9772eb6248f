"""`inv test.connection` (the seed's scripts/test_postgres_connection.py): ordered checks a
developer can trust — configuration, reachability (DNS, TCP), authentication, server facts, basic
operations in a temporary table, the connection pool (exhaustion, timeout, pre-ping recovery) and
latency — each a `CheckResult` with status, timing, facts and, on failure, a hint naming what to
fix. Rendering to human lines or JSON is pure; nothing here prints or reads the environment."""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from semantik_infra.config import Settings
from semantik_infra.database import classify, create_engine, first_line
from semantik_infra.errors import InfraError

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
LATENCY_ROUND_TRIPS = 50
# The diagnostic pool waits at most this long to prove that exhaustion times out.
POOL_TIMEOUT_PROBE = 1.0
# Connections PostgreSQL keeps for superusers, plus room for the test's own admin connection.
RESERVED_CONNECTIONS = 5


@dataclass
class CheckResult:
    """One check: its name, ok/warn/fail/skip, seconds taken, a summary, facts, and a hint."""

    name: str
    status: str
    seconds: float = 0.0
    summary: str = ""
    facts: dict[str, Any] = field(default_factory=dict)
    hint: str = ""


@dataclass
class ConnectionReport:
    """Every check in order, and the redacted URL they ran against."""

    url: str
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if no check failed."""
        return all(check.status != FAIL for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: the same facts as the human report."""
        return {"ok": self.ok, "url": self.url, "checks": [asdict(check) for check in self.checks]}


class CheckFailed(InfraError):
    """Raised inside a check to fail it with a cause and a hint."""

    def __init__(self, cause: str, hint: str = "", facts: dict[str, Any] | None = None) -> None:
        super().__init__(cause)
        self.hint = hint
        self.facts = facts or {}


Check = Callable[["_Context"], tuple[str, dict[str, Any]]]


@dataclass
class _Context:
    settings: Settings
    backend: str


def run_checks(settings: Settings, *, backend: str, quick: bool = False) -> ConnectionReport:
    """Run the checks in order; after a failure the rest are skipped (they would fail for the same reason)."""
    context = _Context(settings, backend)
    if settings.database.is_sqlite:
        steps: list[tuple[str, Check]] = [("configuration", _configuration), ("sqlite file", _sqlite_file)]
        if not quick:
            steps += [("basic operations", _basic_operations), ("latency", _latency)]
    else:
        steps = [("configuration", _configuration), ("reachability", _reachability), ("authentication", _authenticate)]
        if not quick:
            steps += [
                ("server facts", _server_facts),
                ("basic operations", _basic_operations),
                ("connection pool", _pool),
                ("latency", _latency),
            ]
    report = ConnectionReport(settings.database.redacted())
    failed = False
    for name, check in steps:
        if failed:
            report.checks.append(CheckResult(name, SKIP, summary="skipped after the failure above"))
            continue
        report.checks.append(_run_one(name, check, context))
        failed = report.checks[-1].status == FAIL
    return report


def _run_one(name: str, check: Check, context: _Context) -> CheckResult:
    started = time.monotonic()
    try:
        summary, facts = check(context)
        status = facts.pop("_status", OK)
        hint = facts.pop("_hint", "")
    except CheckFailed as failure:
        return CheckResult(name, FAIL, time.monotonic() - started, str(failure), failure.facts, failure.hint)
    except Exception as error:  # a driver error we did not foresee still becomes one clear line
        kind = classify(error)
        return CheckResult(name, FAIL, time.monotonic() - started, kind.cause, {}, _hint_for(kind.hint, context))
    return CheckResult(name, status, time.monotonic() - started, summary, facts, hint)


_URL_PARTS = {
    "POSTGRES_PASSWORD": "password",
    "POSTGRES_USER": "user",
    "POSTGRES_DB": "database name",
    "POSTGRES_HOST": "host",
    "POSTGRES_PORT": "port",
}


def _hint_for(variables: str, context: _Context) -> str:
    """'check POSTGRES_PORT', or, when a full URL is in force, 'check the port in DATABASE_URL (.env)'."""
    if not variables:
        return ""
    source = context.settings.database_source
    if source.startswith(("DATABASE_URL", "--url")):
        for name, part in _URL_PARTS.items():
            variables = variables.replace(name, f"the {part}")
        return f"check {variables} in {source}"
    return f"check {variables}"


def quick_check(settings: Settings) -> ConnectionReport:
    """Steps 1-3 (configuration, reachability, authentication), as `test.connection --quick`."""
    return run_checks(settings, backend=describe_backend(settings), quick=True)


def first_failure(report: ConnectionReport) -> CheckResult | None:
    """The check that failed, if any."""
    return next((check for check in report.checks if check.status == FAIL), None)


# --- the checks ----------------------------------------------------------------------------


def _configuration(context: _Context) -> tuple[str, dict[str, Any]]:
    settings = context.settings
    url = settings.database
    facts: dict[str, Any] = {"url": url.redacted(), "source": settings.database_source, "backend": context.backend}
    if not url.is_sqlite and not settings.database_source.startswith(("DATABASE_URL", "--url")):
        for name in ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"):
            facts[f"{name} from"] = settings.sources.get(name, "default")
    if url.is_sqlite:
        return f"SQLite fallback {url.database} ({settings.database_source})", facts
    if not url.password:
        facts["_status"] = WARN
        facts["_hint"] = "POSTGRES_PASSWORD is empty: run `inv env.init`"
    return f"{url.redacted()} from {settings.database_source}, backend {context.backend}", facts


def _reachability(context: _Context) -> tuple[str, dict[str, Any]]:
    url = context.settings.database
    host, port = url.host or "localhost", url.port or 5432
    timeout = float(context.settings.connect_timeout)
    try:
        addresses = sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})
    except socket.gaierror as error:
        raise CheckFailed(f"host {host!r} is unknown ({error.strerror})", _hint_for("POSTGRES_HOST", context)) from None
    facts: dict[str, Any] = {"host": host, "port": port, "addresses": addresses}
    outcomes = []
    for address in addresses:
        try:
            with socket.create_connection((address, port), timeout=timeout):
                facts["connected_to"] = address
                return f"{host}:{port} accepts TCP connections ({address})", facts
        except ConnectionRefusedError:
            outcomes.append("refused")
        except TimeoutError:
            outcomes.append("timed out")
        except OSError as error:
            outcomes.append(error.strerror or "unreachable")
    if all(outcome == "refused" for outcome in outcomes):
        raise CheckFailed(
            f"nothing is listening on {host}:{port} (connection refused)",
            f"start the server (`inv postgres.up`) or {_hint_for('POSTGRES_PORT', context)}",
            facts,
        )
    if "timed out" in outcomes:
        raise CheckFailed(
            f"connecting to {host}:{port} timed out after {timeout:g} s",
            f"a firewall or a wrong address: {_hint_for('POSTGRES_HOST', context)}",
            facts,
        )
    raise CheckFailed(f"{host}:{port} is unreachable ({', '.join(outcomes)})", _hint_for("POSTGRES_HOST", context))


def _connect(context: _Context) -> Any:
    import psycopg2

    settings = context.settings
    # The URL's own parameters (application_name, …) win over these defaults.
    params = {
        "connect_timeout": str(settings.connect_timeout),
        "application_name": settings.application_name,
        **settings.database.libpq_params(),
    }
    return psycopg2.connect(**params)


def _authenticate(context: _Context) -> tuple[str, dict[str, Any]]:
    import psycopg2

    url = context.settings.database
    try:
        connection = _connect(context)
    except psycopg2.Error as error:
        kind = classify(error)
        facts = {"error": _scrub(first_line(str(error)), url)}
        raise CheckFailed(kind.cause, _hint_for(kind.hint, context), facts) from None
    connection.close()
    return f"logged in as {url.username} to database {url.database}", {"user": url.username, "database": url.database}


def _scrub(text: str, url: Any) -> str:
    password = url.password.reveal()
    return text.replace(password, "***") if password else text


def _server_facts(context: _Context) -> tuple[str, dict[str, Any]]:
    connection = _connect(context)
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT current_setting('server_version'), current_setting('server_encoding'),"
                " current_setting('TimeZone'), current_setting('max_connections')::int,"
                " (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),"
                " COALESCE((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false),"
                " pg_database_size(current_database())"
            )
            version, encoding, timezone, max_connections, current, ssl, size = cursor.fetchone()
    finally:
        connection.close()
    from semantik_infra.console import format_bytes

    facts = {
        "version": version,
        "encoding": encoding,
        "timezone": timezone,
        "max_connections": max_connections,
        "current_connections": current,
        "ssl": bool(ssl),
        "database_size_bytes": size,
    }
    summary = (
        f"PostgreSQL {version}, {encoding}, timezone {timezone}, {current}/{max_connections} connections,"
        f" SSL {'on' if ssl else 'off'}, {format_bytes(size)}"
    )
    if encoding != "UTF8":
        facts["_status"] = WARN
        facts["_hint"] = "Semantik stores unicode text: create the database with ENCODING 'UTF8'"
    return summary, facts


def _basic_operations(context: _Context) -> tuple[str, dict[str, Any]]:
    import sqlalchemy

    text = sqlalchemy.text
    engine = create_engine(context.settings, poolclass=sqlalchemy.pool.NullPool)
    sample = "Zürich ✓ 東京 🚀"
    document = {"name": sample, "tags": ["a", "ü"], "n": 3}
    json_type = "TEXT" if engine.dialect.name == "sqlite" else "JSONB"
    try:
        with engine.connect() as connection:
            # A temporary table vanishes with the connection: nothing is left in the database.
            connection.execute(
                text(f"CREATE TEMPORARY TABLE semantik_conn_test (id INTEGER PRIMARY KEY, label TEXT, doc {json_type})")
            )
            rows = [{"id": i, "label": f"row {i}", "doc": None} for i in range(100)]
            connection.execute(text("INSERT INTO semantik_conn_test (id, label, doc) VALUES (:id, :label, :doc)"), rows)
            count = connection.execute(text("SELECT count(*) FROM semantik_conn_test")).scalar()
            if count != 100:
                raise CheckFailed(f"inserted 100 rows but read back {count}")
            connection.execute(text("UPDATE semantik_conn_test SET label = 'updated' WHERE id < 10"))
            connection.execute(text("DELETE FROM semantik_conn_test WHERE id >= 50"))
            connection.commit()
            remaining = connection.execute(
                text("SELECT count(*), sum(CASE WHEN label = 'updated' THEN 1 ELSE 0 END) FROM semantik_conn_test")
            ).one()
            if tuple(remaining) != (50, 10):
                raise CheckFailed(f"update/delete gave {tuple(remaining)} rows/updated, expected (50, 10)")
            connection.commit()
            transaction = connection.begin()
            connection.execute(text("INSERT INTO semantik_conn_test (id, label) VALUES (999, 'rolled back')"))
            transaction.rollback()
            if connection.execute(text("SELECT count(*) FROM semantik_conn_test WHERE id = 999")).scalar():
                raise CheckFailed("a rolled-back insert is visible: transactions are not isolated")
            import json

            connection.execute(
                text("INSERT INTO semantik_conn_test (id, label, doc) VALUES (1000, :label, :doc)"),
                {"label": sample, "doc": json.dumps(document, ensure_ascii=False)},
            )
            label, doc = connection.execute(text("SELECT label, doc FROM semantik_conn_test WHERE id = 1000")).one()
            if label != sample or (json.loads(doc) if isinstance(doc, str) else doc) != document:
                raise CheckFailed("unicode text or JSON did not round-trip unchanged", "check the database encoding")
            connection.rollback()
    finally:
        engine.dispose()
    return "create, batch insert, select, update, delete, rollback, unicode/JSON round trip", {"rows": 100}


def _pool(context: _Context) -> tuple[str, dict[str, Any]]:
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    settings = context.settings
    pool_size, overflow = settings.pool.size, settings.pool.max_overflow
    admin = _connect(context)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute("SELECT current_setting('max_connections')::int - (SELECT count(*) FROM pg_stat_activity)")
            free = int(cursor.fetchone()[0]) - RESERVED_CONNECTIONS
        facts: dict[str, Any] = {"configured_pool_size": pool_size, "configured_max_overflow": overflow}
        status, hint = OK, ""
        if pool_size + overflow > free:
            # Exhausting the full configured pool would starve other users of a dev server.
            status = WARN
            hint = f"DB_POOL_SIZE + DB_MAX_OVERFLOW ({pool_size + overflow}) exceeds the {free} free server connections"
            pool_size = max(1, min(pool_size, free // 2))
            overflow = max(0, min(overflow, free - pool_size))
        probe_timeout = min(settings.pool.timeout, POOL_TIMEOUT_PROBE)
        facts.update(tested_pool_size=pool_size, tested_max_overflow=overflow, tested_timeout_s=probe_timeout)
        engine = create_engine(
            settings, pool_size=pool_size, max_overflow=overflow, pool_timeout=probe_timeout, pool_pre_ping=True
        )
        held = []
        latencies = []
        try:
            for _ in range(pool_size + overflow):
                started = time.monotonic()
                held.append(engine.connect())
                latencies.append(time.monotonic() - started)
            started = time.monotonic()
            try:
                held.append(engine.connect())
            except PoolTimeout:
                waited = time.monotonic() - started
            else:
                raise CheckFailed(f"checkout {pool_size + overflow + 1} did not time out: the pool is not bounded")
            facts["exhausted_checkout_waited_s"] = round(waited, 3)
            if waited < probe_timeout * 0.8:
                raise CheckFailed(f"the exhausted pool gave up after {waited:.2f} s, expected {probe_timeout:g} s")
            for connection in held:
                connection.close()
            held.clear()
            facts["pre_ping"] = _pre_ping_recovers(engine, admin)
        finally:
            for connection in held:
                connection.close()
            engine.dispose()
    finally:
        admin.close()
    facts["checkout_latency_ms"] = {
        "p50": round(statistics.median(latencies) * 1000, 2),
        "max": round(max(latencies) * 1000, 2),
    }
    if not settings.pool.pre_ping:
        status, hint = WARN, "DB_POOL_PRE_PING is off: a connection the server dropped surfaces as an error in the app"
    facts["_status"], facts["_hint"] = status, hint
    summary = (
        f"{pool_size} + {overflow} overflow checked out, checkout {pool_size + overflow + 1} timed out"
        f" after {facts['exhausted_checkout_waited_s']:g} s, pre-ping recovered a terminated connection,"
        f" checkout p50 {facts['checkout_latency_ms']['p50']} ms"
    )
    return summary, facts


def _pre_ping_recovers(engine: Any, admin: Any) -> str:
    import sqlalchemy

    with engine.connect() as connection:
        victim = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    with admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", (victim,))
        # Termination is asynchronous: wait until the backend is gone so pre-ping really meets a dead socket.
        for _ in range(50):
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (victim,))
            if cursor.fetchone()[0] == 0:
                break
            time.sleep(0.02)
    with engine.connect() as connection:
        new_pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        connection.execute(sqlalchemy.text("SELECT 1"))
    if new_pid == victim:
        raise CheckFailed("pre-ping handed out the terminated connection again")
    return f"terminated backend {victim}; the pool replaced it with {new_pid}"


def _latency(context: _Context) -> tuple[str, dict[str, Any]]:
    import sqlalchemy

    engine = create_engine(context.settings, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            samples = []
            for _ in range(LATENCY_ROUND_TRIPS):
                started = time.monotonic()
                connection.exec_driver_sql("SELECT 1")
                samples.append((time.monotonic() - started) * 1000)
    finally:
        engine.dispose()
    summary_stats = latency_summary(samples)
    return (
        f"{LATENCY_ROUND_TRIPS} round trips: p50 {summary_stats['p50']} ms, p95 {summary_stats['p95']} ms,"
        f" max {summary_stats['max']} ms"
    ), {"round_trips": LATENCY_ROUND_TRIPS, "ms": summary_stats}


def latency_summary(samples_ms: list[float]) -> dict[str, float]:
    """p50, p95 and max of latency samples in milliseconds, rounded to 0.01 ms."""
    ordered = sorted(samples_ms)
    p95_index = max(0, min(len(ordered) - 1, round(0.95 * len(ordered)) - 1))
    return {
        "p50": round(statistics.median(ordered), 2),
        "p95": round(ordered[p95_index], 2),
        "max": round(ordered[-1], 2),
    }


def _sqlite_file(context: _Context) -> tuple[str, dict[str, Any]]:
    path = Path(context.settings.database.database or "")
    directory = path.parent
    if not directory.exists():
        raise CheckFailed(f"{directory} does not exist", f"create it or set SQLITE_PATH (now {path})")
    facts = {"path": str(path), "exists": path.exists()}
    from semantik_infra.database import health_check

    health = health_check(create_engine(context.settings))
    if not health.ok:
        raise CheckFailed(f"cannot open {path}: {health.error}", "check the file's permissions or SQLITE_PATH")
    facts["version"] = health.server_version
    return f"{path} opens ({health.server_version})", facts


# --- rendering -----------------------------------------------------------------------------


def render_human(report: ConnectionReport) -> list[str]:
    """One status line per check, with a `fix:` line under failures and warnings."""
    from semantik_infra.console import status_line

    lines = []
    for number, check in enumerate(report.checks, 1):
        timing = check.seconds if check.status != SKIP else None
        lines.append(status_line(check.status, f"{number} {check.name}: {check.summary}", timing))
        if check.hint and check.status in (FAIL, WARN):
            lines.append(f"    fix: {check.hint}")
    verdict = "all checks passed" if report.ok else "a check failed"
    lines.append(f"{verdict} against {report.url}")
    return lines


def run_checks_for(settings: Settings, *, url: str | None = None, quick: bool = False) -> ConnectionReport:
    """Run the checks against the configured database, or against `url` (from --url) instead."""
    from dataclasses import replace

    if url is not None:
        from semantik_infra.urls import parse_url

        settings = replace(settings, database=parse_url(url, variable="--url", source="the command line"))
        settings = replace(settings, database_source="--url (command line)")
    return run_checks(settings, backend=describe_backend(settings), quick=quick)


def describe_backend(settings: Settings) -> str:
    """The backend name for the report, resolving `auto` without failing the test over it."""
    if settings.database.is_sqlite:
        return "sqlite (no server)"
    if settings.backend != "auto":
        return settings.backend
    from semantik_infra.backends import resolve_auto

    try:
        return f"auto → {resolve_auto(settings)}"
    except InfraError:
        return "auto (none available here)"
