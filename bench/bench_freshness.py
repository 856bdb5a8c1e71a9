"""The freshness probe on a 10-million-row PostgreSQL trades table.

With an index on the time column the probe is a lookup (goal: <= 50 ms). Without it the query must end
at the statement timeout with a hint to add the index, instead of scanning for as long as it takes.

    .venv/bin/python bench/bench_freshness.py [--rows 10000000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, scratch_database  # noqa: E402

from deploy_tool.probes.freshness import STATEMENT_TIMEOUT_S, QueryTimeout, probe_trades_freshness  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    import psycopg2

    with scratch_database() as url:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        cur = conn.cursor()
        started = time.perf_counter()
        cur.execute("CREATE TABLE trades (id bigint, inst_id text, px double precision, ts timestamptz)")
        cur.execute(
            "INSERT INTO trades SELECT i, 'BTC-USDT', 60000 + (i %% 1000), now() - (%s - i) * interval '1 millisecond' "
            "FROM generate_series(1, %s) AS i",
            (args.rows, args.rows),
        )
        cur.execute("ANALYZE trades")
        print(f"built {args.rows:,} rows in {time.perf_counter() - started:.1f} s")

        # Without the index: the probe must stop at the statement timeout.
        started = time.perf_counter()
        try:
            probe_trades_freshness(url)
            unindexed = f"finished without hitting the {STATEMENT_TIMEOUT_S:g} s statement timeout (goal missed)"
            ok_timeout = False
        except QueryTimeout as exc:
            unindexed = f"QueryTimeout after {time.perf_counter() - started:.2f} s: {exc}"
            ok_timeout = "CREATE INDEX ON trades (ts)" in str(exc)
        print(f"without index: {unindexed}")

        cur.execute("CREATE INDEX ON trades (ts)")
        cur.execute("ANALYZE trades")
        probe_trades_freshness(url)  # warm the connection path and the cache once
        totals, queries = [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            fresh = probe_trades_freshness(url)
            totals.append((time.perf_counter() - started) * 1000)
            queries.append(fresh.query_ms)
        total, query = median(totals), median(queries)
        print(f"with index: probe median {total:.1f} ms (connect + catalog + query), query alone {query:.2f} ms, "
              f"over {args.repeat} runs; goal <= 50 ms: ratio {total / 50:.2f}x of the goal")
        conn.close()
    return 0 if ok_timeout and total <= 50 else 1


if __name__ == "__main__":
    raise SystemExit(main())
