"""The trades-freshness probe against a real PostgreSQL (own database per test) and real SQLite files."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time

import pytest

from deploy_tool.criteria import trades_fresh
from deploy_tool.settings import defaults
from deploy_tool.probes.freshness import (
    ColumnMissing,
    DatabaseUnreachable,
    EmptyTable,
    QueryTimeout,
    TableMissing,
    probe_trades_freshness,
)

UTC = dt.timezone.utc


def verdict(freshness, threshold_s):
    """(ok, message) of the trades_fresh criterion."""
    criterion = trades_fresh(freshness, defaults(data_latency_threshold=threshold_s))
    return criterion.ok, criterion.message


def _now() -> dt.datetime:
    return dt.datetime.now(UTC)


# --- PostgreSQL -------------------------------------------------------------------------------------

PG_CASES = {
    # column type -> SQL expression for "now minus 2 seconds", as the feed would store it
    "timestamptz": "now() - interval '2 seconds'",
    "timestamp": "(now() at time zone 'UTC') - interval '2 seconds'",
    "bigint_s": "floor(extract(epoch from now()) - 2)::bigint",
    "bigint_ms": "floor((extract(epoch from now()) - 2) * 1000)::bigint",
    "bigint_us": "floor((extract(epoch from now()) - 2) * 1000000)::bigint",
    "double": "extract(epoch from now())::double precision - 2",
    "numeric": "(extract(epoch from now()) - 2)::numeric",
    "text_iso_z": "to_char((now() - interval '2 seconds') at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
    "text_iso_naive": "to_char((now() - interval '2 seconds') at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS')",
}
PG_TYPES = {
    "timestamptz": "timestamptz", "timestamp": "timestamp without time zone", "bigint_s": "bigint",
    "bigint_ms": "bigint", "bigint_us": "bigint", "double": "double precision", "numeric": "numeric",
    "text_iso_z": "text", "text_iso_naive": "text",
}


@pytest.mark.postgres
@pytest.mark.parametrize("kind", list(PG_CASES))
@pytest.mark.parametrize("session_tz", ["UTC", "Asia/Shanghai", "America/New_York"])
def test_postgres_age_is_right_for_every_column_type_and_time_zone(pg_url, pg_conn, kind, session_tz):
    with pg_conn.cursor() as cur:
        dbname = pg_url.rsplit("/", 1)[1]
        # The server/session time zone must not shift naive UTC timestamps or timestamptz values.
        cur.execute(f'ALTER DATABASE "{dbname}" SET timezone TO %s', (session_tz,))
        cur.execute(f"CREATE TABLE trades (id serial, ts {PG_TYPES[kind]})")
        cur.execute(f"INSERT INTO trades (ts) SELECT {PG_CASES[kind]}")
        cur.execute("INSERT INTO trades (ts) SELECT NULL")
    fresh = probe_trades_freshness(pg_url, "trades", "ts")
    assert 1.0 <= fresh.age_s < 4.0, (kind, session_tz, fresh)
    ok, message = verdict(fresh, 5)
    assert ok and "newest trade is" in message


@pytest.mark.postgres
def test_postgres_stale_future_empty_missing(pg_url, pg_conn):
    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE trades (id serial, ts timestamptz, created_at timestamptz, px numeric)")
    with pytest.raises(EmptyTable, match="table trades has no rows with a ts value"):
        probe_trades_freshness(pg_url)
    with pytest.raises(TableMissing, match="table fills does not exist"):
        probe_trades_freshness(pg_url, "fills")
    with pytest.raises(ColumnMissing, match=r"column time does not exist in table trades .*time-like columns: ts \(timestamp with time zone\), created_at \(timestamp with time zone\)"):
        probe_trades_freshness(pg_url, "trades", "time")
    with pg_conn.cursor() as cur:
        cur.execute("INSERT INTO trades (ts) VALUES (now() - interval '1 hour')")
    ok, message = verdict(probe_trades_freshness(pg_url), 5)
    assert not ok and "60 min old" in message and "threshold 5 s" in message
    with pg_conn.cursor() as cur:
        cur.execute("INSERT INTO trades (ts) VALUES (now() + interval '30 seconds')")
    fresh = probe_trades_freshness(pg_url)
    ok, message = verdict(fresh, 5)
    assert not ok and fresh.age_s < -25 and "in the future" in message


@pytest.mark.postgres
def test_postgres_quoted_and_schema_qualified_names(pg_url, pg_conn):
    with pg_conn.cursor() as cur:
        cur.execute('CREATE SCHEMA feed')
        cur.execute('CREATE TABLE feed."Trades ""x""" ("Time Stamp" timestamptz)')
        cur.execute('INSERT INTO feed."Trades ""x""" VALUES (now())')
    fresh = probe_trades_freshness(pg_url, 'feed.Trades "x"', "Time Stamp")
    assert fresh.age_s < 2
    with pytest.raises(TableMissing):
        probe_trades_freshness(pg_url, "trades; DROP TABLE feed.x", "ts")


@pytest.mark.postgres
def test_postgres_locked_table_fails_fast_at_the_statement_timeout(pg_url, pg_conn):
    import psycopg2

    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE trades (ts timestamptz)")
        cur.execute("INSERT INTO trades VALUES (now())")
    locker = psycopg2.connect(pg_url)
    try:
        locker.cursor().execute("LOCK TABLE trades IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(QueryTimeout, match=r"waited more than 0.5 s for a lock .*another session holds an exclusive lock on trades"):
            probe_trades_freshness(pg_url, statement_timeout_s=0.5)
        assert time.monotonic() - started < 3
    finally:
        locker.rollback()
        locker.close()


@pytest.mark.postgres
def test_postgres_unreachable_names_target_without_password(pg_server):
    with pytest.raises(DatabaseUnreachable) as info:
        probe_trades_freshness("postgresql://app:CANARY-pw-7731@127.0.0.1:9/prod", connect_timeout_s=2)
    text = str(info.value)
    assert "cannot connect to postgresql://app:***@127.0.0.1:9/prod" in text
    assert "CANARY-pw-7731" not in text


# --- SQLite -----------------------------------------------------------------------------------------


def _sqlite(tmp_path, decl: str, *values) -> str:
    path = tmp_path / "feed.db"
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE trades (id INTEGER PRIMARY KEY, ts {decl}, px REAL)")
    conn.executemany("INSERT INTO trades (ts) VALUES (?)", [(v,) for v in values])
    conn.commit()
    conn.close()
    return f"sqlite:///{path}"


@pytest.mark.parametrize(
    "decl,value",
    [
        ("INTEGER", lambda t: int(t)),
        ("INTEGER", lambda t: int(t * 1000)),
        ("INTEGER", lambda t: int(t * 1_000_000)),
        ("REAL", lambda t: t),
        ("TEXT", lambda t: dt.datetime.fromtimestamp(t, UTC).isoformat()),
        ("TEXT", lambda t: dt.datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
        ("TEXT", lambda t: dt.datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")),
        ("", lambda t: int(t * 1000)),
    ],
)
def test_sqlite_age_for_every_encoding(tmp_path, decl, value):
    url = _sqlite(tmp_path, decl, value(time.time() - 100), value(time.time() - 2))
    fresh = probe_trades_freshness(url)
    assert 1.0 <= fresh.age_s < 4.0


def test_sqlite_bad_inputs(tmp_path):
    with pytest.raises(DatabaseUnreachable, match="does not exist"):
        probe_trades_freshness(f"sqlite:///{tmp_path}/missing.db")
    assert not (tmp_path / "missing.db").exists(), "the probe must never create a database"
    url = _sqlite(tmp_path, "INTEGER")
    with pytest.raises(EmptyTable):
        probe_trades_freshness(url)
    with pytest.raises(TableMissing):
        probe_trades_freshness(url, "fills")
    with pytest.raises(ColumnMissing, match=r"time-like columns: ts \(INTEGER\)"):
        probe_trades_freshness(url, "trades", "timestamp")
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 100)
    with pytest.raises(Exception, match="cannot be read|not a database"):
        probe_trades_freshness(f"sqlite:///{tmp_path}/junk.db")


def test_sqlite_huge_unindexed_scan_ends_at_the_statement_timeout(tmp_path):
    path = tmp_path / "big.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE trades (ts INTEGER)")
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000) "
        "INSERT INTO trades SELECT 1700000000000 + i FROM n"
    )
    conn.commit()
    conn.close()
    with pytest.raises(QueryTimeout, match="add an index"):
        probe_trades_freshness(f"sqlite:///{path}", statement_timeout_s=0.001)


def test_sqlite_reads_while_the_feed_writes(tmp_path):
    from deploy_tool.sandbox import TradesFeed

    feed = TradesFeed(tmp_path / "live.db", interval=0.01).start()
    try:
        ages = [probe_trades_freshness(f"sqlite:///{tmp_path}/live.db").age_s for _ in range(30)]
    finally:
        feed.stop()
    assert max(ages) < 1


def test_unsupported_url_is_explained():
    from deploy_tool import ProbeError

    with pytest.raises(ProbeError, match="use postgresql://user:pass@host:5432/db or sqlite:///"):
        probe_trades_freshness("mysql://u:p@h/db")


@pytest.mark.postgres
def test_postgres_unindexed_table_times_out_with_an_index_hint(pg_url, pg_conn):
    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE trades (id bigint, ts timestamptz)")
        cur.execute("INSERT INTO trades SELECT i, now() - i * interval '1 ms' FROM generate_series(1, 300000) i")
        cur.execute("ANALYZE trades")
    with pytest.raises(QueryTimeout, match=r"has no index on ts; add one: CREATE INDEX ON trades \(ts\)"):
        probe_trades_freshness(pg_url, statement_timeout_s=0.001)
    with pg_conn.cursor() as cur:
        cur.execute("CREATE INDEX ON trades (ts)")
    fresh = probe_trades_freshness(pg_url)  # the default statement timeout is plenty for a lookup
    assert fresh.age_s < 60 and fresh.query_ms < 250
