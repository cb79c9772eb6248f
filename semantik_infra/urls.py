"""Database URLs: parsing, building with every part quoted, sync/async driver conversion and the
redacted form used for display. A `DatabaseURL` holds its password as a `Secret`, so printing,
logging or raising with one never shows the password; `render(hide_password=False)` is the one
way to get a connectable string. Pure functions only: nothing here touches the network."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qsl, quote, unquote, urlencode

from semantik_infra.errors import ConfigError

REDACTED = "***"

# Drivers we accept, mapped to the dialect they belong to.
_DIALECTS = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "postgresql+psycopg2": "postgresql",
    "postgresql+psycopg": "postgresql",
    "postgresql+asyncpg": "postgresql",
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite",
    "sqlite+aiosqlite": "sqlite",
}
_SYNC_DRIVER = {"postgresql": "postgresql+psycopg2", "sqlite": "sqlite"}
_ASYNC_DRIVER = {"postgresql": "postgresql+asyncpg", "sqlite": "sqlite+aiosqlite"}
# asyncpg names some libpq connection parameters differently; translate both ways.
_LIBPQ_TO_ASYNCPG = {"sslmode": "ssl", "connect_timeout": "timeout"}
_ASYNCPG_TO_LIBPQ = {v: k for k, v in _LIBPQ_TO_ASYNCPG.items()}
# Query parameters checked here rather than by libpq at connect time, so a bad one is a config error.
_WHOLE_NUMBER_PARAMS = {
    "connect_timeout": (1, 3600),
    "keepalives": (0, 1),
    "keepalives_idle": (0, 2_147_483_647),
    "keepalives_interval": (0, 2_147_483_647),
    "keepalives_count": (0, 2_147_483_647),
    "tcp_user_timeout": (0, 2_147_483_647),
    "sslcompression": (0, 1),
}
_CHOICE_PARAMS = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "gssencmode": ("disable", "prefer", "require"),
    "channel_binding": ("disable", "prefer", "require"),
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby", "prefer-standby"),
    "load_balance_hosts": ("disable", "random"),
}
# libpq parameters that have an environment variable, so client tools (psql, pg_dump) get them too.
_LIBPQ_ENVIRONMENT = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "passfile": "PGPASSFILE",
    "require_auth": "PGREQUIREAUTH",
    "channel_binding": "PGCHANNELBINDING",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "client_encoding": "PGCLIENTENCODING",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "sslmode": "PGSSLMODE",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "requiressl": "PGREQUIRESSL",
    "sslcompression": "PGSSLCOMPRESSION",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcertmode": "PGSSLCERTMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "requirepeer": "PGREQUIREPEER",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "gsslib": "PGGSSLIB",
    "gssdelegation": "PGGSSDELEGATION",
    "service": "PGSERVICE",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
}


@dataclass(frozen=True)
class Secret:
    """A string that never shows itself in repr/str; call `reveal()` where the value is needed."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        """Return the secret value itself."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})" if self._value else "Secret('')"

    __str__ = __repr__


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed database URL; the password is a `Secret`, so repr() and str() are safe to print."""

    drivername: str
    username: str | None = None
    password: Secret = Secret("")
    host: str | None = None
    port: int | None = None
    database: str | None = None
    query: tuple[tuple[str, str], ...] = ()

    @property
    def dialect(self) -> str:
        """'postgresql' or 'sqlite'."""
        return _DIALECTS[self.drivername]

    @property
    def is_sqlite(self) -> bool:
        """True for the SQLite fallback."""
        return self.dialect == "sqlite"

    def render(self, *, hide_password: bool = True) -> str:
        """The URL as text, every part percent-quoted; the password is masked unless asked for."""
        if self.is_sqlite:
            return f"{self.drivername}:///{self.database}" if self.database else f"{self.drivername}://"
        userinfo = ""
        if self.username:
            userinfo = quote(self.username, safe="")
            if self.password:
                shown = REDACTED if hide_password else quote(self.password.reveal(), safe="")
                userinfo += f":{shown}"
            userinfo += "@"
        host = self.host or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{self.port}" if self.port is not None else ""
        database = quote(self.database or "", safe="")
        text = f"{self.drivername}://{userinfo}{host}{port}/{database}"
        if self.query:
            text += "?" + urlencode(self.query, quote_via=quote)
        return text

    def redacted(self) -> str:
        """The URL for display: everything but the password."""
        return self.render(hide_password=True)

    def __str__(self) -> str:
        return self.redacted()

    def with_driver(self, drivername: str) -> DatabaseURL:
        """The same URL with another driver of the same dialect."""
        if _DIALECTS.get(drivername) != self.dialect:
            raise ValueError(f"{drivername} is not a {self.dialect} driver")
        return replace(self, drivername=drivername)

    def with_database(self, database: str) -> DatabaseURL:
        """The same server and credentials, another database."""
        return replace(self, database=database)

    def libpq_params(self) -> dict[str, str]:
        """Keyword arguments for psycopg2.connect (password included: pass them, never print them).

        Every query parameter is included but connect_timeout: callers pass their own timeout
        (Settings.connect_timeout, which the URL's connect_timeout sets), and a second value for
        the same keyword would be a TypeError.
        """
        params = {
            "host": self.host or "",
            "port": str(self.port or 5432),
            "user": self.username or "",
            "password": self.password.reveal(),
            "dbname": self.database or "",
        }
        params.update((_ASYNCPG_TO_LIBPQ.get(k, k), v) for k, v in self.query)
        params.pop("connect_timeout", None)
        return {k: v for k, v in params.items() if v}

    @property
    def connect_timeout(self) -> int | None:
        """The URL's connect_timeout (or asyncpg's timeout) in seconds, if it has one."""
        for key, value in self.query:
            if _ASYNCPG_TO_LIBPQ.get(key, key) == "connect_timeout":
                return int(value)
        return None

    def query_dict(self) -> dict[str, str]:
        """The query parameters as a dict (last one wins)."""
        return dict(self.query)


def parse_url(text: str, *, variable: str = "DATABASE_URL", source: str = "environment") -> DatabaseURL:
    """Parse a database URL, raising ConfigError that names the variable and its source."""
    where = f"{variable} in {source}"
    scheme, sep, rest = text.strip().partition("://")
    if not sep:
        raise ConfigError(f"{where}: not a URL (expected postgresql://USER:PASSWORD@HOST:PORT/DB or sqlite:///PATH)")
    scheme = scheme.lower()
    if scheme not in _DIALECTS:
        known = ", ".join(sorted(_DIALECTS))
        raise ConfigError(f"{where}: unknown scheme '{scheme}://' (use one of: {known})")
    drivername = "postgresql" if scheme == "postgres" else scheme
    if _DIALECTS[scheme] == "sqlite":
        path = rest.split("?", 1)[0]
        if path and not path.startswith("/"):
            raise ConfigError(f"{where}: a SQLite URL needs three slashes: sqlite:///relative.db or sqlite:////abs.db")
        return DatabaseURL(drivername=drivername, database=unquote(path[1:]) or None)

    rest, _, fragment = rest.partition("#")
    if fragment:
        raise ConfigError(f"{where}: has an unquoted '#': percent-encode special characters in the password (%23)")
    rest, _, query_text = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    username = password = None
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        username = unquote(user_text) or None
        password = unquote(password_text) if colon else None
    host, port = _split_host_port(hostport, where)
    if "/" in path:
        raise ConfigError(f"{where}: the database name contains '/': percent-encode special characters (%2F)")
    database = unquote(path) if slash else ""
    if not database:
        raise ConfigError(f"{where}: no database name (expected postgresql://USER:PASSWORD@HOST:PORT/DB)")
    query = tuple(parse_qsl(query_text, keep_blank_values=True))
    check_query(query, where)
    return DatabaseURL(
        drivername=drivername,
        username=username,
        password=Secret(password or ""),
        host=host or None,
        port=port,
        database=database,
        query=query,
    )


def check_query(query: tuple[tuple[str, str], ...], where: str) -> None:
    """Raise ConfigError for a query parameter libpq does not know or a value it would reject.

    asyncpg's spellings (ssl, timeout) count as the libpq parameters they stand for.
    """
    if not query:
        return
    from psycopg2 import ProgrammingError
    from psycopg2.extensions import make_dsn, parse_dsn

    for key, value in query:
        name = _ASYNCPG_TO_LIBPQ.get(key, key)
        label = key if name == key else f"{key} ({name})"
        if name in ("password", "user", "dbname", "port"):
            raise ConfigError(f"{where}: put the {name} in the URL itself, not in ?{key}=")
        if "\0" in value:
            raise ConfigError(f"{where}: ?{key}= holds a NUL character")
        try:
            parse_dsn(make_dsn(**{name: value}))
        except ProgrammingError:
            raise ConfigError(f"{where}: ?{key}= is not a libpq connection parameter") from None
        if name in _WHOLE_NUMBER_PARAMS:
            low, high = _WHOLE_NUMBER_PARAMS[name]
            if not re.fullmatch(r"\s*[0-9]+\s*", value) or not low <= int(value) <= high:
                raise ConfigError(f"{where}: {label}={value!r} is not a whole number from {low} to {high}")
        if name in _CHOICE_PARAMS and value not in _CHOICE_PARAMS[name]:
            raise ConfigError(f"{where}: {label}={value!r} must be one of: {', '.join(_CHOICE_PARAMS[name])}")


def _split_host_port(hostport: str, where: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        host, bracket, tail = hostport[1:].partition("]")
        if not bracket:
            raise ConfigError(f"{where}: unclosed '[' in an IPv6 host")
        port_text = tail[1:] if tail.startswith(":") else None
        if tail and port_text is None:
            raise ConfigError(f"{where}: unexpected text after the IPv6 host")
    else:
        host, colon, port_text_raw = hostport.partition(":")
        port_text = port_text_raw if colon else None
    if port_text is None or port_text == "":
        return unquote(host), None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        # Unquoted '@', ':' or '/' in a password end up here; say how to fix that too.
        raise ConfigError(
            f"{where}: the port is not a number from 1 to 65535"
            " (if the password has special characters, percent-encode them)"
        )
    return unquote(host), int(port_text)


def build_postgres_url(
    *, host: str, port: int, database: str, username: str, password: Secret, query: tuple[tuple[str, str], ...] = ()
) -> DatabaseURL:
    """A PostgreSQL URL from its parts (the POSTGRES_* variables)."""
    return DatabaseURL("postgresql", username, password, host, port, database, query)


def sqlite_url(path: str) -> DatabaseURL:
    """The SQLite URL Semantik used before PostgreSQL."""
    return DatabaseURL("sqlite", database=path)


def to_sync(url: DatabaseURL) -> DatabaseURL:
    """The URL for the synchronous driver (psycopg2, sqlite3), query names in libpq spelling."""
    query = tuple((_ASYNCPG_TO_LIBPQ.get(k, k), v) for k, v in url.query) if url.dialect == "postgresql" else url.query
    return replace(url, drivername=_SYNC_DRIVER[url.dialect], query=query)


def to_async(url: DatabaseURL) -> DatabaseURL:
    """The URL for the asyncio driver (asyncpg, aiosqlite), query names in that driver's spelling."""
    query = tuple((_LIBPQ_TO_ASYNCPG.get(k, k), v) for k, v in url.query) if url.dialect == "postgresql" else url.query
    return replace(url, drivername=_ASYNC_DRIVER[url.dialect], query=query)


def libpq_environment(url: DatabaseURL) -> dict[str, str]:
    """PG* environment variables that point libpq tools (psql, pg_dump) at this URL.

    The password travels here, in the child's environment, never on its command line.
    """
    env = {
        "PGHOST": url.host or "",
        "PGPORT": str(url.port or 5432),
        "PGUSER": url.username or "",
        "PGDATABASE": url.database or "",
    }
    if url.password:
        env["PGPASSWORD"] = url.password.reveal()
    for key, value in url.query:
        variable = _LIBPQ_ENVIRONMENT.get(_ASYNCPG_TO_LIBPQ.get(key, key))
        if variable:
            env[variable] = value
    return {k: v for k, v in env.items() if v}
