"""Healthy-world preflight wall time as a paired ratio to a one-test pytest run with the same plugins loaded.

The world: the sandbox's exchange stand-in (with its read-only API key, so the account checks run too) and
admin API on loopback, a PostgreSQL trades table written just before each run, a fresh backtest summary, a
control file. Measured: `python -m pytest --pyargs preflight_tests ...` (the whole suite, signed evidence
and HTML report included) against `python -m pytest test_trivial.py --html ... --self-contained-html` (one
passing test, the same installed plugins autoloaded, a pytest-html report), both fresh processes. Every
iteration runs the two back to back (which goes first alternates) and takes the ratio preflight/trivial of
THAT pair; printed: the median of the paired ratios over --repeat iterations and their p90. Beside the wall
time, the same paired ratio of the two processes' CPU time (user + system, from the kernel's accounting of each
finished child): on a shared machine another job's load stretches wall time, and the CPU ratio says whether a
change moved the preflight's own work. The goal is on wall time.

The checks are counted from the evidence JSON each run wrote (its `checks` list), not assumed, and every run
must have exited 0 with verdict `pass`. Goal: paired median <= 1.5x. Exit 0 when met (and every run
passed), 1 when not.

    .venv/bin/python bench/bench_preflight.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, p90, scratch_database, timed  # noqa: E402

from deploy_tool.sandbox import Sandbox  # noqa: E402

try:
    import resource  # POSIX: the CPU time of finished children
except ImportError:  # pragma: no cover - Windows: wall time only
    resource = None  # type: ignore[assignment]

GOAL = 1.5
# Variables that would point the suite elsewhere than the sandbox: the bench names every target itself.
ENV_TARGETS = ("DATABASE_URL", "OKX_BASE_URL", "BACKTEST_SUMMARY", "EXEC_HTTP_ADMIN_URL", "EXEC_CONTROL_FILE",
               "EXEC_HTTP_ADMIN_ENABLED", "EXEC_HTTP_HOST", "EXEC_HTTP_PORT", "PYTEST_ADDOPTS", "PYTEST_PLUGINS")


def children_cpu() -> float:
    """User + system CPU seconds of every finished child process so far (0 where the platform cannot say)."""
    if resource is None:
        return 0.0
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def evidence_jsons(directory: Path) -> set[Path]:
    return {p for p in directory.glob("preflight-*.json") if not p.name.endswith(".intoto.json")}


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
        env = {k: v for k, v in os.environ.items() if k not in ENV_TARGETS}
        env |= {"GD_BENCH_TOKEN": "bench-token", **box.account_env()}
        args_pre = list(box.preflight_args())
        args_pre[args_pre.index("--database-url") + 1] = url
        evidence_dir = Path(tmp) / "ev"
        preflight = [sys.executable, "-m", "pytest", "--pyargs", "preflight_tests", "-p", "no:cacheprovider", "-q",
                     *args_pre, "--evidence-dir", str(evidence_dir)]
        baseline = [sys.executable, "-m", "pytest", str(trivial), "-p", "no:cacheprovider", "-q",
                    "--html", str(Path(tmp) / "trivial.html"), "--self-contained-html"]
        ratios: list[float] = []
        cpu_ratios: list[float] = []
        pre_times: list[float] = []
        base_times: list[float] = []
        counts: list[collections.Counter] = []
        failures: list[str] = []
        for i in range(args.repeat):
            conn.cursor().execute("INSERT INTO trades VALUES (now())")
            before = evidence_jsons(evidence_dir)
            pair: dict[str, float] = {}
            cpu: dict[str, float] = {}
            for which in (("preflight", "trivial") if i % 2 == 0 else ("trivial", "preflight")):
                used = children_cpu()
                took, done = timed(preflight if which == "preflight" else baseline, env=env, cwd=tmp)
                pair[which] = took
                cpu[which] = children_cpu() - used
                if done.returncode != 0:
                    failures.append(f"{which} run {i + 1} exit {done.returncode}: {done.stdout.strip()[-400:]}")
            # The evidence this run wrote: the one new JSON, the newest in the directory.
            new = sorted(evidence_jsons(evidence_dir) - before)
            if len(new) != 1:
                failures.append(f"preflight run {i + 1} wrote {len(new)} evidence JSON files, not 1: {new}")
            else:
                doc = json.loads(new[0].read_text())
                checks = doc.get("checks") or []
                counts.append(collections.Counter(c.get("status") for c in checks))
                if doc.get("verdict") != "pass":
                    failures.append(f"preflight run {i + 1}: verdict {doc.get('verdict')!r} in {new[0].name}; not "
                                    "passed: " + ", ".join(f"{c.get('id')} {c.get('status')}" for c in checks
                                                           if c.get("status") != "passed"))
            pre_times.append(pair["preflight"])
            base_times.append(pair["trivial"])
            ratios.append(pair["preflight"] / pair["trivial"])
            if cpu["trivial"] > 0:
                cpu_ratios.append(cpu["preflight"] / cpu["trivial"])
        conn.close()

    for failure in failures:
        print(f"FAILED: {failure}")
    shapes = sorted({(sum(c.values()), c["passed"], c["skipped"], c["failed"]) for c in counts})
    described = "; ".join(f"{total} checks ({passed} passed, {skipped} skipped, {failed} failed)"
                          for total, passed, skipped, failed in shapes) or "no evidence read"
    all_pass = not failures and len(counts) == args.repeat
    print(f"preflight (healthy world incl. PostgreSQL, per its evidence: {described}): median {median(pre_times):.3f} s "
          f"over {args.repeat} runs; every run exited 0 with verdict pass: {all_pass}")
    print(f"trivial pytest run with the same plugins (+ pytest-html report): median {median(base_times):.3f} s")
    m = median(ratios)
    met = m <= GOAL and all_pass
    print(f"preflight: {m:.2f}x of the trivial run (paired median over {len(ratios)}, p90 {p90(ratios):.2f}x); "
          f"goal <= {GOAL:.1f}x: {'met' if m <= GOAL else 'NOT MET'}")
    if cpu_ratios:
        print(f"preflight CPU time (user+sys): {median(cpu_ratios):.2f}x of the trivial run's (paired median over "
              f"{len(cpu_ratios)}, p90 {p90(cpu_ratios):.2f}x)")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
