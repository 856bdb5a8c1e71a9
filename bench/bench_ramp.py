"""`ramp` abort time: from the moment a breach is written to the moment every channel reads `paused` AND
the allocation is back at the first (stable) step.

A sandbox (in this process) runs in `real` at the first step; `gradual-deploy ramp` runs as its own process
and holds that step. At a moment between two rounds the simulated system writes a burst of risk events
(written at once, so that the time measured is the tool's, not the simulated losses' pace); both channels
are polled every 5 ms. Goal: restored <= interval + 1 s, printed as a ratio to the
goal, worst case over --repeat runs.

    .venv/bin/python bench/bench_ramp.py [--interval 1] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
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


def _restored(box: Sandbox) -> bool:
    doc = json.loads(box.control_file.read_text())
    return (box.admin.mode == "paused" and box.admin.allocation == 0.005 and doc["mode"] == "paused"
            and doc.get("allocation") == 0.005)


def one_run(interval: float, tmp: Path, index: int) -> float:
    with Sandbox(tmp / f"box{index}", token="bench", token_env="GD_BENCH_TOKEN", mode="real") as box:
        FileChannel(str(box.control_file)).apply("real", "paused", "bench", "bench")
        FileChannel(str(box.control_file)).apply_allocation(0.005, None, "bench", "bench")
        # A passing evidence for these channels, as the suite writes it (the gate itself is tested elsewhere).
        from deploy_tool.commands.preflight import run_preflight

        os.environ["GD_BENCH_TOKEN"] = "bench"
        result = run_preflight([*box.preflight_args(), "--evidence-dir", str(box.evidence_dir), "-q"])
        assert result.verdict == "pass", result
        env = {**os.environ, "GD_BENCH_TOKEN": "bench"}
        proc = subprocess.Popen([sys.executable, "-m", "deploy_tool", "ramp", *box.watch_args(), "--steps", "0.5%,1%",
                                 "--hold", "5m", "--interval", f"{interval}s"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            for line in proc.stdout:
                if line.startswith("round 1"):
                    assert " OK " in line, line
                    break
            time.sleep(random.uniform(0, interval))  # the breach lands anywhere between two rounds
            assert box.system is not None
            written = time.monotonic()
            box.system.set_fault("risk-burst")  # the breach is written at once, as bench_watch does
            while not _restored(box):
                if time.monotonic() - written > interval + 10:
                    raise RuntimeError("ramp did not pause and restore within interval + 10 s")
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
    print("breach -> paused and allocation restored, per run: " + ", ".join(f"{r:.2f} s" for r in reactions))
    print(f"median {statistics.median(reactions):.2f} s, worst {max(reactions):.2f} s with --interval {args.interval:g}s; "
          f"goal <= interval + 1 s = {goal:g} s: worst/goal {max(reactions) / goal:.2f}x, "
          f"worst/interval {max(reactions) / args.interval:.2f}x")
    return 0 if max(reactions) <= goal else 1


if __name__ == "__main__":
    raise SystemExit(main())
