"""The connection manager (the seed's postgres_database.py): SQLAlchemy 2.x engines built from
Settings (pool, timeouts, PostgreSQL connect arguments, SQLite pragmas), connecting with retries
only for transient errors (exponential backoff with full jitter, each retry logged with the
redacted URL), a `session_scope` that commits or rolls back, a health check, and the async engine
factory. Driver errors are classified here, so callers and diagnostics agree on what they mean."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from semantik_infra.config import Settings
from semantik_infra.errors import ConfigError, DatabaseError
from semantik_infra.urls import DatabaseURL, to_async, to_sync

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.ext.asyncio import AsyncEngine
    from sqlalchemy.orm import Session

log = logging.getLogger("semantik_infra.database")

TRANSIENT, PERMANENT = "transient", "permanent"


@dataclass(frozen=True)
class ErrorKind:
    """What a connection error means: transient or permanent, a short cause, and the variable to fix."""

    retry: str
    cause: str
    hint: str = ""


# SQLSTATE → meaning. 57P03: the server is starting or shutting down; 53300: too many connections.
_BY_SQLSTATE = {
    "57P03": ErrorKind(TRANSIENT, "the server is starting up or shutting down"),
    "53300": ErrorKind(TRANSIENT, "the server has too many connections", "lower DB_POOL_SIZE/DB_MAX_OVERFLOW"),
    # With password authentication the server answers an unknown role exactly like a wrong password.
    "28P01": ErrorKind(PERMANENT, "wrong password, or no such role", "POSTGRES_PASSWORD and POSTGRES_USER"),
    "3D000": ErrorKind(PERMANENT, "the database does not exist", "POSTGRES_DB"),
}
# What the server says about a database with ALLOW_CONNECTIONS off.
CLOSED_DATABASE_MARKER = "is not currently accepting connections"


def closed_database_cause(database: str = "") -> str:
    """Why a database refuses connections, and the fix: only an interrupted restore's swap closes it."""
    name = f"database {database}" if database else "the database"
    return (
        f"{name} does not accept connections (ALLOW_CONNECTIONS is off, as an interrupted restore leaves it):"
        " run `inv postgres.up` to reopen it"
    )


# Connection-level failures carry no SQLSTATE: recognise them by libpq's message text.
_BY_MESSAGE = (
    (CLOSED_DATABASE_MARKER, ErrorKind(PERMANENT, closed_database_cause())),
    (
        "password authentication failed",
        ErrorKind(PERMANENT, "wrong password, or no such role", "POSTGRES_PASSWORD and POSTGRES_USER"),
    ),
    ("no password supplied", ErrorKind(PERMANENT, "no password was sent", "POSTGRES_PASSWORD")),
    ("no pg_hba.conf entry", ErrorKind(PERMANENT, "pg_hba.conf rejects this host/user/database", "pg_hba.conf")),
    ("role", ErrorKind(PERMANENT, "the role does not exist", "POSTGRES_USER")),
    ("database", ErrorKind(PERMANENT, "the database does not exist", "POSTGRES_DB")),
    ("ssl required", ErrorKind(PERMANENT, "the server requires SSL", "sslmode=require in DATABASE_URL")),
    ("ssl is not enabled", ErrorKind(PERMANENT, "the server does not support SSL", "sslmode in DATABASE_URL")),
    ("server does not support ssl", ErrorKind(PERMANENT, "the server does not support SSL", "sslmode")),
    ("could not translate host name", ErrorKind(PERMANENT, "the host name is unknown", "POSTGRES_HOST")),
    ("connection refused", ErrorKind(TRANSIENT, "nothing is listening on that host and port", "POSTGRES_PORT")),
    ("timeout expired", ErrorKind(TRANSIENT, "the connection timed out", "POSTGRES_HOST")),
    ("the database system is starting up", ErrorKind(TRANSIENT, "the server is starting up")),
    ("the database system is shutting down", ErrorKind(TRANSIENT, "the server is shutting down")),
    ("too many clients", ErrorKind(TRANSIENT, "the server has too many connections")),
    ("server closed the connection unexpectedly", ErrorKind(TRANSIENT, "the server closed the connection")),
)


def classify(error: BaseException) -> ErrorKind:
    """Whether a driver error is worth retrying, with its cause and the variable to fix."""
    original = getattr(error, "orig", None) or error
    code = getattr(original, "pgcode", None)
    if code in _BY_SQLSTATE:
        return _BY_SQLSTATE[code]
    message = str(original).lower()
    for marker, kind in _BY_MESSAGE:
        if marker in message and (marker not in ("role", "database") or "does not exist" in message):
            return kind
    if code and code.startswith("28"):
        return ErrorKind(PERMANENT, "authentication was rejected", "POSTGRES_USER/POSTGRES_PASSWORD")
    return ErrorKind(PERMANENT, first_line(str(original)) or type(original).__name__)


def first_line(text: str) -> str:
    """The first non-empty line of a driver message."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def backoff_delays(attempts: int, initial: float, maximum: float, rng: random.Random | None = None) -> list[float]:
    """Sleeps between `attempts` tries: full jitter over min(maximum, initial * 2**n)."""
    rng = rng or random.Random()
    return [rng.uniform(0, min(maximum, initial * 2**n)) for n in range(max(0, attempts - 1))]


def connect_args(settings: Settings, url: DatabaseURL) -> dict[str, Any]:
    """Driver arguments for the URL's dialect, from the settings."""
    if url.is_sqlite:
        # Several threads of the app share the file; SQLAlchemy's pool guards access.
        return {"check_same_thread": False}
    options = ["-c timezone=UTC"]  # timestamps come back in UTC whatever the server's zone
    if settings.statement_timeout_ms:
        # A runaway query fails instead of holding locks and a pool slot forever.
        options.append(f"-c statement_timeout={settings.statement_timeout_ms}")
    return {
        # Names Semantik's connections in pg_stat_activity and the server log.
        "application_name": settings.application_name,
        # Bounds how long a dead host can hang a connection attempt.
        "connect_timeout": settings.connect_timeout,
        # Keepalives notice a silently dropped peer (NAT, laptop sleep) within about a minute.
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "options": " ".join(options),
    }


def create_engine(settings: Settings, url: DatabaseURL | None = None, **overrides: Any) -> Engine:
    """A SQLAlchemy engine with the configured pool; SQLite gets foreign keys and WAL."""
    import sqlalchemy

    url = to_sync(url or settings.database)
    if url.is_sqlite:
        engine = sqlalchemy.create_engine(
            url.render(hide_password=False), connect_args=connect_args(settings, url), **overrides
        )
        sqlalchemy.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    options: dict[str, Any] = {
        "pool_size": settings.pool.size,
        "max_overflow": settings.pool.max_overflow,
        "pool_timeout": settings.pool.timeout,
        "pool_recycle": settings.pool.recycle,
        "pool_pre_ping": settings.pool.pre_ping,
        "connect_args": connect_args(settings, url),
        # Logging the URL would log the password; SQLAlchemy's own repr hides it, but be explicit.
        "hide_parameters": True,
    }
    options.update(overrides)
    if "poolclass" in overrides:
        # A pool without a queue (NullPool) takes no size or timeout.
        for key in ("pool_size", "max_overflow", "pool_timeout"):
            options.pop(key, None)
    return sqlalchemy.create_engine(url.render(hide_password=False), **options)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # Foreign keys are off by default in SQLite; WAL lets readers work while one writer writes.
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def connect_with_retry(
    engine: Engine,
    settings: Settings,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> Connection:
    """Open a connection, retrying transient failures with backoff; raise DatabaseError otherwise."""
    from sqlalchemy.exc import DBAPIError

    delays = backoff_delays(settings.retry.attempts, settings.retry.initial_delay, settings.retry.max_delay, rng)
    redacted = settings.database.redacted()
    for attempt in range(1, settings.retry.attempts + 1):
        try:
            return engine.connect()
        except DBAPIError as error:
            kind = classify(error)
            if kind.retry == PERMANENT or attempt == settings.retry.attempts:
                hint = f" (check {kind.hint})" if kind.hint else ""
                tries = f" after {attempt} attempts" if attempt > 1 else ""
                raise DatabaseError(f"cannot connect to {redacted}{tries}: {kind.cause}{hint}") from None
            delay = delays[attempt - 1]
            log.warning(
                "connecting to %s failed (%s); retry %d/%d in %.2f s",
                redacted,
                kind.cause,
                attempt,
                settings.retry.attempts - 1,
                delay,
            )
            sleep(delay)
    raise AssertionError("unreachable")


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A Session that commits on success, rolls back on error, and always closes."""
    from sqlalchemy.orm import Session

    session = Session(engine)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@dataclass(frozen=True)
class Health:
    """Result of `health_check`: ok, latency in seconds, server version, error (redacted)."""

    ok: bool
    latency: float
    server_version: str = ""
    error: str = ""


def health_check(engine: Engine) -> Health:
    """Run SELECT 1 and read the server version; never raises for connection problems."""
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    started = time.monotonic()
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
            if engine.dialect.name == "sqlite":
                version = "SQLite " + str(connection.exec_driver_sql("SELECT sqlite_version()").scalar())
            else:
                version = "PostgreSQL " + str(connection.exec_driver_sql("SHOW server_version").scalar())
    except SQLAlchemyError as error:
        return Health(False, time.monotonic() - started, error=classify(error).cause)
    return Health(True, time.monotonic() - started, version)


def create_async_engine(settings: Settings, url: DatabaseURL | None = None) -> AsyncEngine:
    """An asyncio engine (asyncpg / aiosqlite) with the same pool settings."""
    import importlib.util

    url = to_async(url or settings.database)
    driver = "aiosqlite" if url.is_sqlite else "asyncpg"
    if importlib.util.find_spec(driver) is None:
        raise ConfigError(f"the async engine needs {driver}: pip install 'semantik-infra[async]'")
    from sqlalchemy.ext.asyncio import create_async_engine as _create

    if url.is_sqlite:
        return _create(url.render(hide_password=False))
    return _create(
        url.render(hide_password=False),
        pool_size=settings.pool.size,
        max_overflow=settings.pool.max_overflow,
        pool_timeout=settings.pool.timeout,
        pool_recycle=settings.pool.recycle,
        pool_pre_ping=settings.pool.pre_ping,
        connect_args={"server_settings": {"application_name": settings.application_name, "timezone": "UTC"}},
    )
