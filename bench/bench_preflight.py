"""Healthy-world preflight wall time against a trivial pytest run with the same plugins loaded.

The world: the sandbox's exchange stand-in and admin API on loopback, a PostgreSQL trades table, a fresh
backtest summary, a control file. Both commands run as fresh processes, alternating, and the ratio of
their medians is printed (goal <= 2.0x). Ratios measured in one run, because these machines are noisy.

    .venv/bin/python bench/bench_preflight.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, scratch_database, wall  # noqa: E402

from deploy_tool.sandbox import Sandbox  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    import psycopg2

    with tempfile.TemporaryDirectory() as tmp, scratch_database() as url, \
            Sandbox(Path(tmp) / "box", token="bench-token", token_env="GD_BENCH_TOKEN") as box:
        conn = psycopg2.connect(url)
        conn.autocommit = True
        conn.cursor().execute("CREATE TABLE trades (ts timestamptz)")
        trivial = Path(tmp) / "test_trivial.py"
        trivial.write_text("def test_trivial():\n    assert True\n")
        env = {**os.environ, "GD_BENCH_TOKEN": "bench-token"}
        args_pre = [a for a in box.preflight_args()]
        args_pre[args_pre.index("--database-url") + 1] = url
        preflight = [sys.executable, "-m", "pytest", "--pyargs", "preflight_tests", "-p", "no:cacheprovider", "-q",
                     *args_pre, "--evidence-dir", str(Path(tmp) / "ev")]
        baseline = [sys.executable, "-m", "pytest", str(trivial), "-p", "no:cacheprovider", "-q",
                    "--html", str(Path(tmp) / "trivial.html"), "--self-contained-html"]
        pre_times, base_times = [], []
        for _ in range(args.repeat):
            conn.cursor().execute("INSERT INTO trades VALUES (now())")
            pre_times.append(wall(preflight, env=env, cwd=tmp))
            base_times.append(wall(baseline, env=env, cwd=tmp))
        conn.close()
        verdicts = sorted({p.read_text().count('"verdict": "pass"') for p in (Path(tmp) / "ev").glob("*.json")})
    pre, base = median(pre_times), median(base_times)
    print(f"preflight (healthy world, 14 checks incl. PostgreSQL): median {pre:.3f} s over {args.repeat} runs")
    print(f"trivial pytest run with the same plugins (+ pytest-html report): median {base:.3f} s")
    print(f"ratio {pre / base:.2f}x (goal <= 2.0x); every preflight passed: {verdicts == [1]}")
    return 0 if pre / base <= 2.0 and verdicts == [1] else 1


if __name__ == "__main__":
    raise SystemExit(main())
