"""`watch` reaction time, worst case over the round's phase: from the moment a breach is written into the
trading system's risk events and audit to the moment EVERY channel reads `paused`.

Per phase, a fresh sandbox (in this process) runs in `real` and `gradual-deploy watch --json` (as `python -m
deploy_tool`, with `Sandbox.watch_args()` and its default --failure-limit) runs as its own process against
it. Once the `watch_round` record of round 2 (or of the first passing round after it) is read from its
stdout, the bench waits `phase` seconds and then writes the breach (`set_fault("risk-burst")`: ten
drawdown_limit events into the risk-events CSV and the audit, at once). The phases are evenly spaced over
[0, --interval): --phases 16 gives 0, 1/16, ..., 15/16 of the interval, so a breach lands in every part of
the round cycle; phase 0 is just after a round has read its inputs (the worst window). Measured from just
before the write to the first poll (every 2 ms) at which the admin API's mode AND the control file's mode
both read `paused`; the watch must then exit 1.

Goal: worst <= --interval (1.0 s at the default --interval 1s). Printed: each phase's reaction, the median,
the worst and worst/goal, and how long after a round began (its record's `ts`) its line was read: phase 0 is
that long after the round started reading, and a breach written inside that window could take up to that much
longer than the worst printed. Exit 0 when met, 1 when not.

    .venv/bin/python bench/bench_watch.py [--interval 1] [--phases 16]
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Lines, control_doc, json_record, line_lag, phase_sweep, poll_until  # noqa: E402

from deploy_tool.sandbox import Sandbox  # noqa: E402

# The admin token: random, so that no path holds it (the tool masks a secret wherever it occurs, the
# evidence's file names included; a short word such as "bench" in the temp dir's name would be masked).
TOKEN = secrets.token_hex(16)

ANCHOR_ROUND = 2  # the first round after the start-up one: its line is the phase's zero
GIVE_UP_S = 15.0  # a reaction slower than --interval + this is recorded as none at all


def one_phase(interval: float, phase: float, workdir: Path) -> tuple[float | None, float, float | None, str, int]:
    """(seconds from the write to every channel paused, or None; the phase really placed; the anchor round's
    line lag; a failure note, "" when none; the anchor round's number)."""
    with Sandbox(workdir, token=TOKEN, token_env="GD_BENCH_TOKEN", mode="real") as box:
        assert box.system is not None

        def modes() -> tuple[str | None, str | None]:
            return box.admin.mode, (control_doc(box.control_file) or {}).get("mode")

        assert modes() == ("real", "real"), modes()
        env = {**os.environ, "GD_BENCH_TOKEN": TOKEN}
        proc = subprocess.Popen([sys.executable, "-m", "deploy_tool", "watch", *box.watch_args(), "--json",
                                 "--interval", f"{interval}s", "--duration", "5m"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            lines = Lines(proc)
            # The first passing round from round ANCHOR_ROUND on (an inconclusive or failing one is no zero).
            anchored_at, line = lines.wait_for(
                lambda text: (json_record(text) or {}).get("event") == "watch_round"
                and json_record(text)["round"] >= ANCHOR_ROUND and json_record(text).get("ok") is True,
                timeout=30 + 5 * interval)
            record = json_record(line)
            lag = line_lag(record, anchored_at)
            if modes() != ("real", "real"):
                raise RuntimeError(f"not in real on both channels at round {record['round']}: {modes()}")
            time.sleep(max(0.0, anchored_at + phase - time.monotonic()))
            written = time.monotonic()
            box.system.set_fault("risk-burst")  # the breach, written at once into the risk CSV and the audit
            reaction = poll_until(lambda: modes() == ("paused", "paused"), written, interval + GIVE_UP_S)
            note = "" if reaction is not None else f"not every channel paused within {interval + GIVE_UP_S:g} s: {modes()}"
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                code = None
            if reaction is not None and code != 1:
                note = f"watch exit {code}, not 1"
            return reaction, written - anchored_at, lag, note, int(record["round"])
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--phases", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gd-bench-watch-") as tmp:
        ok = phase_sweep(args.phases, args.interval,
                         lambda index, phase: one_phase(args.interval, phase, Path(tmp) / f"box{index}"),
                         "round {anchor}'s line", "admin API AND control file read paused")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
