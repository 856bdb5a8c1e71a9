"""`watch` reaction time: from the moment a breach is written to the moment the mode reads `paused`.

A sandbox (in this process) runs in `real`; `gradual-deploy watch` runs as its own process. At a moment
between two rounds the sandbox writes a burst of risk events; the admin API's mode is polled every 5 ms.
Goal: reaction <= interval + 1 s. Reported per run and as the worst case over --repeat runs.

    .venv/bin/python bench/bench_watch.py [--interval 1] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from deploy_tool.modes.channels import FileChannel
from deploy_tool.sandbox import Sandbox


def one_run(interval: float, tmp: Path, index: int) -> float:
    with Sandbox(tmp / f"box{index}", token="bench", token_env="GD_BENCH_TOKEN", mode="real") as box:
        FileChannel(str(box.control_file)).apply("real", "paused", "bench", "bench")
        env = {**os.environ, "GD_BENCH_TOKEN": "bench"}
        proc = subprocess.Popen([sys.executable, "-m", "deploy_tool", "watch", *box.watch_args(),
                                 "--interval", f"{interval}s", "--duration", "5m"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            first = proc.stdout.readline()
            assert first.startswith("round 1") and " OK " in first, first
            time.sleep(random.uniform(0, interval))  # the breach lands anywhere between two rounds
            written = time.monotonic()
            box.system.set_fault("risk-burst")
            while box.admin.mode != "paused":
                if time.monotonic() - written > interval + 10:
                    raise RuntimeError("watch did not pause within interval + 10 s")
                time.sleep(0.005)
            reaction = time.monotonic() - written
            proc.wait(timeout=30)
            assert proc.returncode == 1
            return reaction
        finally:
            if proc.poll() is None:
                proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        reactions = [one_run(args.interval, Path(tmp), i) for i in range(args.repeat)]
    goal = args.interval + 1
    print("reaction per run: " + ", ".join(f"{r:.2f} s" for r in reactions))
    print(f"median {statistics.median(reactions):.2f} s, worst {max(reactions):.2f} s with --interval {args.interval:g}s; "
          f"goal <= {goal:g} s: worst/goal {max(reactions) / goal:.2f}x")
    return 0 if max(reactions) <= goal else 1


if __name__ == "__main__":
    raise SystemExit(main())
