"""Trades-feed freshness: how old is the newest trade in the database?

One probe for PostgreSQL (psycopg2) and SQLite (stdlib) behind one `--database-url`. It fetches only
the newest value of the time column (ORDER BY col DESC LIMIT 1, a lookup with an index on the column),
under a connect timeout and a statement timeout, and computes the age in Python so that neither the
server's nor the session's time zone can shift it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

from deploy_tool import ProbeError
from deploy_tool.redact import mask_url
from deploy_tool.times import parse_timestamp

CONNECT_TIMEOUT_S = 5
# An indexed newest-row lookup takes well under 1 ms; an unindexed scan of 10 million rows ~0.4 s here.
# The gate must stop at the first, not wait out the second, and tell the operator to add the index.
STATEMENT_TIMEOUT_S = 0.25
CATALOG_TIMEOUT_MS = 5000
_TIME_NAME = re.compile(r"(^ts$|time|date|_at$|_ts$|^created|^updated|epoch)", re.IGNORECASE)
_TIME_TYPE = re.compile(r"(timestamp|date|time)", re.IGNORECASE)


class DatabaseUnreachable(ProbeError):
    """The database could not be connected to."""


class TableMissing(ProbeError):
    """The trades table does not exist."""


class ColumnMissing(ProbeError):
    """The time column does not exist in the trades table."""


class EmptyTable(ProbeError):
    """The trades table holds no timestamp at all."""


class QueryTimeout(ProbeError):
    """The newest-trade query ran past the statement timeout."""


@dataclass(frozen=True)
class Freshness:
    """The newest trade and its age at the moment of measuring."""

    target: str  # the database URL, password masked
    table: str
    column: str
    column_type: str
    newest: dt.datetime
    age_s: float  # negative when the newest trade lies in the future
    query_ms: float


def split_table(table: str) -> tuple[str | None, str]:
    """('schema', 'table') from 'schema.table', (None, 'table') from 'table'."""
    if not table or not table.strip():
        raise ProbeError("the trades table name is empty: set --trades-table")
    schema, dot, name = table.rpartition(".")
    return (schema or None, name) if dot else (None, table)


def probe_trades_freshness(
    database_url: str,
    table: str = "trades",
    column: str = "ts",
    *,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
    statement_timeout_s: float = STATEMENT_TIMEOUT_S,
    now: dt.datetime | None = None,
) -> Freshness:
    """Measure the age of the newest `column` value in `table`."""
    scheme = database_url.split(":", 1)[0].lower() if ":" in database_url else ""
    if scheme in ("postgresql", "postgres"):
        newest, column_type, query_ms = _newest_postgres(
            database_url, table, column, connect_timeout_s, statement_timeout_s
        )
    elif scheme == "sqlite":
        newest, column_type, query_ms = _newest_sqlite(
            database_url, table, column, connect_timeout_s, statement_timeout_s
        )
    else:
        raise ProbeError(
            f"unsupported database URL {mask_url(database_url)!r}: use postgresql://user:pass@host:5432/db "
            "or sqlite:///path/to/file.db"
        )
    try:
        newest_at = parse_timestamp(newest)
    except (ValueError, OverflowError, OSError) as exc:
        raise ProbeError(
            f"newest {table}.{column} value {str(newest)[:60]!r} ({column_type}) is not a timestamp: {exc}"
        ) from None
    now = now or dt.datetime.now(dt.timezone.utc)
    return Freshness(
        target=mask_url(database_url) or "",
        table=table,
        column=column,
        column_type=column_type,
        newest=newest_at,
        age_s=(now - newest_at).total_seconds(),
        query_ms=query_ms,
    )


def _time_like(columns: list[tuple[str, str]]) -> str:
    names = [f"{n} ({t})" for n, t in columns if _TIME_TYPE.search(t) or _TIME_NAME.search(n)]
    return ", ".join(names) if names else "none"


def _newest_postgres(url: str, table: str, column: str, connect_timeout_s: float, statement_timeout_s: float):
    import psycopg2
    import psycopg2.errors
    from psycopg2 import sql

    shown = mask_url(url)
    schema, name = split_table(table)
    timeout_ms = int(statement_timeout_s * 1000)
    try:
        conn = psycopg2.connect(
            url,
            connect_timeout=max(1, int(round(connect_timeout_s))),
            application_name="gradual-deploy-preflight",
            # Catalog look-ups get a fixed bound; the newest-trade query gets the configured one below.
            options=f"-c statement_timeout={CATALOG_TIMEOUT_MS} -c lock_timeout={CATALOG_TIMEOUT_MS}",
        )
    except psycopg2.Error as exc:
        reason = " ".join(str(exc).split())
        raise DatabaseUnreachable(f"cannot connect to {shown}: {reason}") from None
    try:
        conn.set_session(readonly=True, autocommit=True)
        with conn.cursor() as cur:
            qualified = sql.Identifier(schema, name) if schema else sql.Identifier(name)
            cur.execute("SELECT to_regclass(%s)::oid", (qualified.as_string(conn),))
            oid = cur.fetchone()[0]
            if oid is None:
                raise TableMissing(f"table {table} does not exist in {shown}: check --trades-table")
            cur.execute(
                "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                (oid,),
            )
            columns = [(n, t) for n, t in cur.fetchall()]
            types = dict(columns)
            if column not in types:
                raise ColumnMissing(
                    f"column {column} does not exist in table {table} ({shown}); time-like columns: "
                    f"{_time_like(columns)}: set --trades-time-column"
                )
            query = sql.SQL("SELECT {col} FROM {tbl} WHERE {col} IS NOT NULL ORDER BY {col} DESC LIMIT 1").format(
                col=sql.Identifier(column), tbl=qualified
            )
            # The lock timeout fires first, so that a locked table is told apart from a slow scan.
            cur.execute("SET statement_timeout = %s", (timeout_ms,))
            cur.execute("SET lock_timeout = %s", (max(1, timeout_ms * 4 // 5),))
            started = time.perf_counter()
            try:
                cur.execute(query)
            except psycopg2.errors.LockNotAvailable:
                raise QueryTimeout(
                    f"newest-trade query on {table}.{column} waited more than {statement_timeout_s:g} s for a "
                    f"lock ({shown}): another session holds an exclusive lock on {table}"
                ) from None
            except psycopg2.errors.QueryCanceled:
                raise QueryTimeout(
                    f"newest-trade query on {table}.{column} did not finish within the {statement_timeout_s:g} s "
                    f"statement timeout ({shown}): " + _index_hint(cur, oid, column, table)
                ) from None
            query_ms = (time.perf_counter() - started) * 1000
            row = cur.fetchone()
    except psycopg2.Error as exc:
        reason = " ".join(str(exc).split())
        raise ProbeError(f"query on {table}.{column} failed ({shown}): {reason}") from None
    finally:
        conn.close()
    if row is None:
        raise EmptyTable(f"table {table} has no rows with a {column} value ({shown}): the trades feed never wrote")
    return row[0], types[column], query_ms


def _index_hint(cur, oid: int, column: str, table: str) -> str:
    """Why the query was slow: no index leading with the column, or (with one) a loaded server."""
    try:
        cur.execute("SET statement_timeout = %s", (CATALOG_TIMEOUT_MS,))
        cur.execute(
            "SELECT count(*) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = i.indkey[0] WHERE i.indrelid = %s AND a.attname = %s",
            (oid, column),
        )
        indexed = cur.fetchone()[0] > 0
    except Exception:  # the hint is a courtesy; the timeout is the finding
        indexed = False
    if indexed:
        return f"{table} has an index on {column}, so the server is overloaded or the index is bloated"
    return f"{table} has no index on {column}; add one: CREATE INDEX ON {table} ({column})"


def sqlite_path(url: str) -> str:
    """The file path in sqlite:///relative.db or sqlite:////absolute.db."""
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise ProbeError(f"sqlite URL {url!r} has a host; use sqlite:///relative.db or sqlite:////abs/path.db")
    path = unquote(parts.path)
    path = path[1:] if path.startswith("/") else path
    if not path or path == ":memory:":
        raise ProbeError(f"sqlite URL {url!r} names no file: use sqlite:///path/to/file.db")
    return path


def _quote_sqlite(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _newest_sqlite(url: str, table: str, column: str, connect_timeout_s: float, statement_timeout_s: float):
    path = sqlite_path(url)
    if not os.path.exists(path):
        raise DatabaseUnreachable(f"SQLite database {path} does not exist: check --database-url")
    import sqlite3  # only a SQLite trades database pays for it

    from deploy_tool import fileops

    try:  # SQLite opens a FIFO or a device and waits on it: a watch round must never wait on a file
        fileops.check_regular(path)
    except OSError as exc:
        raise DatabaseUnreachable(f"SQLite database {path} cannot be used: {exc}") from None
    schema, name = split_table(table)
    try:
        conn = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True, timeout=connect_timeout_s)
    except sqlite3.Error as exc:
        raise DatabaseUnreachable(f"cannot open SQLite database {path}: {exc}") from None
    deadline = time.monotonic() + statement_timeout_s
    conn.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
    prefix = f"{_quote_sqlite(schema)}." if schema else ""
    try:
        master = f"{prefix}sqlite_master"
        found = conn.execute(
            f"SELECT 1 FROM {master} WHERE type IN ('table', 'view') AND name = ?", (name,)
        ).fetchone()
        if not found:
            raise TableMissing(f"table {table} does not exist in SQLite database {path}: check --trades-table")
        columns = [
            (row[1], row[2] or "")
            for row in conn.execute(f"PRAGMA {prefix}table_info({_quote_sqlite(name)})").fetchall()
        ]
        types = dict(columns)
        if column not in types:
            raise ColumnMissing(
                f"column {column} does not exist in table {table} (SQLite {path}); time-like columns: "
                f"{_time_like(columns)}: set --trades-time-column"
            )
        qcol = _quote_sqlite(column)
        started = time.perf_counter()
        row = conn.execute(
            f"SELECT {qcol} FROM {prefix}{_quote_sqlite(name)} WHERE {qcol} IS NOT NULL ORDER BY {qcol} DESC LIMIT 1"
        ).fetchone()
        query_ms = (time.perf_counter() - started) * 1000
    except sqlite3.OperationalError as exc:
        if "interrupted" in str(exc):
            raise QueryTimeout(
                f"newest-trade query on {table}.{column} did not finish within {statement_timeout_s:g} s "
                f"(SQLite {path}): add an index: CREATE INDEX ON {table} ({column})"
            ) from None
        if "locked" in str(exc):
            raise QueryTimeout(f"SQLite database {path} stayed locked for {connect_timeout_s:g} s") from None
        raise ProbeError(f"query on {table}.{column} failed (SQLite {path}): {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise ProbeError(f"SQLite database {path} cannot be read: {exc}") from None
    finally:
        conn.close()
    if row is None:
        raise EmptyTable(f"table {table} has no rows with a {column} value (SQLite {path}): the trades feed never wrote")
    return row[0], types[column] or "untyped", query_ms
