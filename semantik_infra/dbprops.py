"""Database-level properties an archive carries, so a restore brings back the same database:
encoding, locale provider, locale and ICU locale (from its CREATE DATABASE), and the statements
pg_restore runs only with --create (ALTER DATABASE … SET / CONNECTION LIMIT, COMMENT ON DATABASE,
SECURITY LABEL, GRANT/REVOKE … ON DATABASE, ALTER ROLE … IN DATABASE … SET). They are read from
the SQL of the archive's table of contents (or, for a directory archive, `pg_restore --create
--schema-only` output) with a small SQL tokenizer (quotes, comments, dollar quoting, psql
meta-commands) and rewritten for another database name (pure functions), then used to
create a restore's scratch database and re-applied to it before the swap (the edges, at the end)."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semantik_infra import proc
from semantik_infra.errors import BackupError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from semantik_infra.backends.base import Backend
    from semantik_infra.config import Settings
    from semantik_infra.dumpfile import TocEntry

# Kinds of statement to re-apply; "privileges" and "role settings" name roles the server may lack.
SETTINGS, COMMENT, LABEL, PRIVILEGES, ROLE_SETTINGS = (
    "settings",
    "comment",
    "security label",
    "privileges",
    "role settings",
)
# CREATE DATABASE options copied to the scratch database; the rest (OWNER, TEMPLATE, OID,
# STRATEGY, …) describe how the original was made, not what it is.
COPIED_OPTIONS = (
    "ENCODING",
    "LOCALE_PROVIDER",
    "LOCALE",
    "LC_COLLATE",
    "LC_CTYPE",
    "ICU_LOCALE",
    "ICU_RULES",
    "BUILTIN_LOCALE",
    "TABLESPACE",
)

# A word: a letter, underscore or any non-ASCII character, then those, digits and $. Written as
# negated ASCII classes: a class with the range \u0080-\uffff costs 8 ms to compile, at every start.
_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<line_comment>--[^\n]*)
  | (?P<meta>\\[^\n]*)
  | (?P<string>[EeNnBbXx]?'(?:[^']|'')*')
  | (?P<qident>"(?:[^"]|"")*")
  | (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z0-9_]*)?\$)
  | (?P<word>[^\x00-\x40\x5b-\x5e\x60\x7b-\x7f][^\x00-\x23\x25-\x2f\x3a-\x40\x5b-\x5e\x60\x7b-\x7f]*)
  | (?P<number>\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
# E'…' strings let a backslash escape the quote: 'it\'s'.
_ESCAPE_STRING = re.compile(r"[Ee]'(?:[^'\\]|\\.|'')*'", re.DOTALL)


@dataclass(frozen=True)
class Token:
    """One SQL token: its kind (word, qident, string, number, other), text and position."""

    kind: str
    text: str
    start: int
    end: int

    @property
    def identifier(self) -> str | None:
        """The identifier this token names (case-folded if bare), or None if it is not one."""
        if self.kind == "qident":
            return self.text[1:-1].replace('""', '"')
        if self.kind == "word":
            return self.text.lower()
        return None

    def is_word(self, *words: str) -> bool:
        """True if this is a bare word equal (case-insensitively) to one of `words`."""
        return self.kind == "word" and self.text.upper() in words


@dataclass(frozen=True)
class Statement:
    """One SQL statement (without its semicolon) and its tokens."""

    text: str
    tokens: tuple[Token, ...]


def split_statements(sql: str) -> list[Statement]:
    """The statements of a SQL script, split at semicolons outside quotes, comments and bodies."""
    statements: list[Statement] = []
    tokens: list[Token] = []
    position = 0
    while position < len(sql):
        token, position = _next_token(sql, position)
        if token is None:
            continue
        if token.kind == "other" and token.text == ";":
            if tokens:
                statements.append(Statement(sql[tokens[0].start : tokens[-1].end], tuple(tokens)))
            tokens = []
        else:
            tokens.append(token)
    if tokens:
        statements.append(Statement(sql[tokens[0].start : tokens[-1].end], tuple(tokens)))
    return statements


def _next_token(sql: str, position: int) -> tuple[Token | None, int]:
    if sql.startswith("/*", position):
        return None, _block_comment_end(sql, position)
    escaped = _ESCAPE_STRING.match(sql, position)
    if escaped:
        return Token("string", escaped.group(), position, escaped.end()), escaped.end()
    match = _TOKEN.match(sql, position)
    assert match is not None  # `other` matches any character
    kind = match.lastgroup if match.lastgroup != "tag" else "dollar"
    if kind == "dollar":
        # A dollar-quoted body runs to the same tag; unterminated, it runs to the end.
        closing = sql.find(match.group(), match.end())
        end = len(sql) if closing < 0 else closing + len(match.group())
        return Token("string", sql[position:end], position, end), end
    if kind in ("space", "line_comment", "meta"):
        # psql meta-commands (\connect, \restrict) run to the end of their line.
        return None, match.end()
    return Token(kind or "other", match.group(), position, match.end()), match.end()


def _block_comment_end(sql: str, position: int) -> int:
    depth, index = 0, position
    while index < len(sql):
        if sql.startswith("/*", index):
            depth, index = depth + 1, index + 2
        elif sql.startswith("*/", index):
            depth, index = depth - 1, index + 2
            if depth == 0:
                return index
        else:
            index += 1
    return len(sql)


def quote_ident(name: str) -> str:
    """A double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class DatabaseStatement:
    """A statement about the archived database, with the place its name goes."""

    kind: str
    before: str
    after: str

    def sql_for(self, database: str) -> str:
        """The statement about `database` instead."""
        return f"{self.before}{quote_ident(database)}{self.after}"


@dataclass(frozen=True)
class DatabaseProperties:
    """What an archive says about its database: its name, CREATE options and statements to re-apply."""

    name: str
    create_options: tuple[tuple[str, str], ...]
    statements: tuple[DatabaseStatement, ...]

    def option(self, name: str) -> str | None:
        """One CREATE DATABASE option's SQL text, if the archive has it."""
        return next((value for key, value in self.create_options if key == name), None)


def parse_database_properties(sql: str) -> DatabaseProperties | None:
    """The archived database's properties from `pg_restore --create --schema-only` output, or None
    when the archive has no DATABASE entry (pg_dump before 11 wrote none without --create)."""
    statements = split_statements(sql)
    created = next((s for s in statements if _starts(s, "CREATE", "DATABASE") and len(s.tokens) > 2), None)
    if created is None or created.tokens[2].identifier is None:
        return None
    name = created.tokens[2].identifier
    found = []
    for statement in statements:
        kind, index = _about_database(statement, name)
        if kind is not None:
            target = statement.tokens[index]
            before = statement.text[: target.start - statement.tokens[0].start]
            after = statement.text[target.end - statement.tokens[0].start :]
            found.append(DatabaseStatement(kind, before, after))
    return DatabaseProperties(name, _create_options(created.tokens[3:]), tuple(found))


def _starts(statement: Statement, *words: str) -> bool:
    tokens = statement.tokens
    return len(tokens) >= len(words) and all(token.is_word(word) for token, word in zip(tokens, words, strict=False))


def _about_database(statement: Statement, name: str) -> tuple[str | None, int]:
    """(kind, index of the database name token) for a statement to re-apply, else (None, -1)."""
    tokens = statement.tokens
    at = next(
        (
            index + 1
            for index, token in enumerate(tokens[:-1])
            if token.is_word("DATABASE") and tokens[index + 1].identifier == name
        ),
        -1,
    )
    if at < 0:
        return None, -1
    if _starts(statement, "ALTER", "DATABASE") and at == 2:
        rest = [token.text.upper() for token in tokens[3:5]]
        # Ownership goes to the restoring user (--no-owner), the name stays ours, and closing
        # the database to connections would lock the app out.
        if rest[:2] == ["OWNER", "TO"] or rest[:2] == ["RENAME", "TO"] or rest[:1] == ["ALLOW_CONNECTIONS"]:
            return None, -1
        if rest[:2] == ["WITH", "ALLOW_CONNECTIONS"]:
            return None, -1
        return SETTINGS, at
    if _starts(statement, "COMMENT", "ON", "DATABASE") and at == 3:
        return COMMENT, at
    if _starts(statement, "SECURITY", "LABEL"):
        return LABEL, at
    if tokens[0].is_word("GRANT", "REVOKE"):
        return PRIVILEGES, at
    if _starts(statement, "ALTER") and tokens[1].is_word("ROLE", "USER") and tokens[at - 2].is_word("IN"):
        return ROLE_SETTINGS, at
    return None, -1


def _create_options(tokens: tuple[Token, ...]) -> tuple[tuple[str, str], ...]:
    options = []
    index = 1 if tokens and tokens[0].is_word("WITH") else 0
    while index < len(tokens):
        key = tokens[index]
        index += 1
        if index < len(tokens) and tokens[index].text == "=":
            index += 1
        if index >= len(tokens):
            break
        value = tokens[index]
        index += 1
        if key.kind == "word" and key.text.upper() in COPIED_OPTIONS:
            options.append((key.text.upper(), value.text))
    return tuple(options)


def create_database_sql(name: str, properties: DatabaseProperties | None) -> str:
    """CREATE DATABASE for a scratch database: the archive's encoding and locale, or (without
    properties) UTF8 with the server's default locale."""
    options = properties.create_options if properties else (("ENCODING", "'UTF8'"),)
    rendered = "".join(f" {key} = {value}" for key, value in options)
    return f"CREATE DATABASE {quote_ident(name)} WITH TEMPLATE = template0{rendered}"


def properties_from_toc(entries: Iterable[TocEntry]) -> DatabaseProperties | None:
    """The archived database's properties from its table of contents: the SQL of the DATABASE and
    DATABASE PROPERTIES entries and of the comment, security labels and privileges whose tag names
    the database, which is what `pg_restore --create` prints of them."""
    wanted = ("DATABASE", "DATABASE PROPERTIES")
    sql = "\n".join(
        entry.defn for entry in entries if entry.defn and (entry.desc in wanted or entry.tag.startswith("DATABASE "))
    )
    return parse_database_properties(sql)


# --- the edges: reading an archive, creating and altering databases -------------------------------


def read_database_properties(backend: Backend, archive: Path, key: bytes | None) -> DatabaseProperties | None:
    """The archived database's encoding, locale and database-level statements: from the table of
    contents at the head of a single-file archive (read here, without a process), else from
    `pg_restore --create --schema-only`."""
    from semantik_infra.archive import open_archive
    from semantik_infra.dumpfile import read_toc

    if archive.is_file():
        try:
            with open_archive(archive, key=key) as source:
                return properties_from_toc(read_toc(source)[0].entries)
        except BackupError:
            pass  # a format we do not read: pg_restore judges it below
    args = ["--create", "--schema-only", "--file", "-"]
    if archive.is_dir():
        result = proc.run(backend.client_command("pg_restore", [*args, str(archive)]), check=False, timeout=600)
        status, schema, errors = result.returncode, result.stdout, result.stderr
    else:
        with open_archive(archive, key=key) as source:
            status, schema, errors = proc.feed_from(backend.client_command("pg_restore", args), source)
    if status != 0:
        raise BackupError(f"{archive.name}: pg_restore cannot read its schema: {proc.last_line(errors) or status}")
    return parse_database_properties(schema)


def create_scratch_database(
    settings: Settings, name: str, properties: DatabaseProperties | None, connection: Any = None
) -> None:
    """CREATE DATABASE `name` with the archive's encoding and locale (or the server's defaults without
    `properties`); one line saying what the configured user lacks, or which locale the server lacks.
    Runs on `connection` (an autocommit admin session) when given."""
    import psycopg2
    from psycopg2 import sql

    from semantik_infra.database import first_line
    from semantik_infra.restore import admin_session, database_exists

    with admin_session(settings, name, connection) as session:
        try:
            with session.cursor() as cursor:
                if database_exists(cursor, name):
                    raise BackupError(f"database {name} already exists: another restore is running, or drop it")
                cursor.execute(sql.SQL(create_database_sql(name, properties)))
        except psycopg2.errors.InsufficientPrivilege as error:
            raise BackupError(
                f"cannot create the scratch database {name} ({first_line(str(error))}):"
                " the configured user needs CREATEDB, or use --in-place"
            ) from None
        except psycopg2.Error as error:
            if properties is None:
                raise BackupError(f"cannot create the scratch database {name} ({first_line(str(error))})") from None
            locale = ", ".join(f"{key} {value}" for key, value in properties.create_options)
            raise BackupError(
                f"cannot create the scratch database {name} with the archive's {locale} ({first_line(str(error))}):"
                " install that locale on the server, or pass --server-locale to use the server's default"
            ) from None


def apply_database_properties(
    settings: Settings,
    database: str,
    properties: DatabaseProperties,
    *,
    privileges: bool = True,
    connection: Any = None,
) -> list[str]:
    """Run the archive's database-level statements (settings, comment, GRANTs, per-role settings)
    against `database` in one transaction (on `connection`, an autocommit admin session, when
    given); the kinds applied."""
    import psycopg2

    from semantik_infra.database import first_line
    from semantik_infra.restore import admin_session

    statements = [s for s in properties.statements if privileges or s.kind not in (PRIVILEGES, ROLE_SETTINGS)]
    if not statements:
        return []
    with admin_session(settings, database, connection) as session, session.cursor() as cursor:
        cursor.execute("BEGIN")
        try:
            for statement in statements:
                try:
                    cursor.execute(statement.sql_for(database))
                except psycopg2.Error as error:
                    privileged = statement.kind in (PRIVILEGES, ROLE_SETTINGS)
                    raise BackupError(
                        f"cannot re-apply the archived database's {statement.kind} to {database}"
                        f" ({first_line(str(error))})"
                        + (": create the role, or pass --no-privileges" if privileged else "")
                    ) from None
            cursor.execute("COMMIT")
        except BaseException:
            # A shared session must not stay in the failed transaction.
            with contextlib.suppress(psycopg2.Error):
                cursor.execute("ROLLBACK")
            raise
    return list(dict.fromkeys(statement.kind for statement in statements))
