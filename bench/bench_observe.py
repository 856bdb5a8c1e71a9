"""The observe readers on a 1 GB audit file against a 10 MB one with the same window.

Both files end with the same recent audit lines (2,400 intents); the big one has ~1 GB of older lines
before them. Reading the window must cost the same (goal: time ratio <= 1.2) with flat memory (peak
RSS ratio ~1.0), because the readers go backwards from the end and stop when the window is covered.
Each measurement runs in a fresh process, alternating small and big.

    .venv/bin/python bench/bench_observe.py [--big-mb 1024] [--repeat 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MEASURE = r"""
import json, resource, sys, time
from deploy_tool.probes.observe import observe
started = time.perf_counter()
o = observe(sys.argv[1], sys.argv[2], 600)
elapsed = time.perf_counter() - started
print(json.dumps({"s": elapsed, "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "intents": o.audit.order_intents, "scanned": o.audit.scanned}))
"""


def build(directory: Path, size_mb: int, now: dt.datetime) -> Path:
    directory.mkdir(parents=True)
    path = directory / f"audit-{now:%Y-%m-%d}.jsonl"
    old = now - dt.timedelta(hours=3)
    line = json.dumps({"ts": old.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "event": "order_result", "status": "filled",
                       "order_id": "x" * 40}) + "\n"
    chunk = (line * (1_048_576 // len(line) + 1)).encode()[:1_048_576]
    chunk = chunk[: chunk.rfind(b"\n") + 1]
    with open(path, "wb") as fh:
        for _ in range(size_mb):
            fh.write(chunk)
        for i in range(2400):  # in the window: an intent every 0.125 s over the last 5 of its 10 minutes
            moment = now - dt.timedelta(seconds=300 - i * 0.125)
            fh.write((json.dumps({"ts": moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                                  "event": "order_intent"}) + "\n").encode())
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big-mb", type=int, default=1024)
    parser.add_argument("--small-mb", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    now = dt.datetime.now(dt.timezone.utc)
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        small = build(Path(tmp) / "small", args.small_mb, now)
        big = build(Path(tmp) / "big", args.big_mb, now)
        print(f"files: {small.stat().st_size / 1e6:.0f} MB and {big.stat().st_size / 1e6:.0f} MB, same 10-minute tail")
        runs: dict[str, list[dict]] = {"small": [], "big": []}
        for _ in range(args.repeat):
            for name, path in (("small", small), ("big", big)):
                out = subprocess.run([sys.executable, "-c", MEASURE, str(path.parent), str(Path(tmp) / "none.csv")],
                                     capture_output=True, text=True, check=True).stdout
                runs[name].append(json.loads(out))
    t = {k: statistics.median(r["s"] for r in v) for k, v in runs.items()}
    rss = {k: max(r["rss_kb"] for r in v) for k, v in runs.items()}
    same = {r["intents"] for v in runs.values() for r in v} == {2400}
    print(f"window read: small {t['small'] * 1000:.1f} ms, big {t['big'] * 1000:.1f} ms (medians of {args.repeat}); "
          f"ratio {t['big'] / t['small']:.2f} (goal <= 1.2)")
    print(f"peak RSS: small {rss['small'] / 1024:.1f} MiB, big {rss['big'] / 1024:.1f} MiB; ratio {rss['big'] / rss['small']:.2f}")
    print(f"lines scanned per read: {runs['big'][0]['scanned']} (window 2400); both saw all 2400 intents: {same}")
    return 0 if same and t["big"] / t["small"] <= 1.2 else 1


if __name__ == "__main__":
    raise SystemExit(main())
