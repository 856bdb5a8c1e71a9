"""`ramp` abort time, worst case over the round's phase: from the moment a breach is written during a raised
step to the moment EVERY channel reads `paused` AND BOTH channels' allocation is back at the first (stable)
step.

Per phase, a fresh sandbox (in this process) runs in `real` with the allocation at 0.5 % on both channels,
and a passing signed preflight evidence for it is written first (`gradual-deploy preflight` with
`Sandbox.preflight_args()`, as its own process). Then `gradual-deploy ramp --json --steps 0.5%,1%` runs as
its own process with `--hold` and `--interval` from the command line, `Sandbox.watch_args()` and
`Sandbox.gate_args()` (its exchange, trades database and trusted keys). Step 1 (0.5 %) is held once, then the
ramp really raises the allocation: the bench waits for the `step 2/2 ... confirmed` line and checks that the
admin API and the control file both read allocation 0.01 (1 %) and mode `real`. Once the `watch_round`
record of step 2's first passing round (normally its round 1) is read, the bench waits `phase` seconds and
writes the breach (`set_fault("risk-burst")`: ten drawdown_limit events into the risk-events CSV and the
audit, at once). The phases are evenly spaced over [0, --interval): --phases 16 gives 0, 1/16, ..., 15/16 of
the interval, so a breach lands in every part of the round cycle; phase 0 is just after a round has read its
inputs (the worst window). --hold (4 s by default) leaves step 2 rounds to spare after the last phase.
Measured from just before the write to the first poll (every 2 ms) at which the admin API's mode AND the
control file's mode read `paused` AND the admin API's allocation AND the control file's `allocation` read
0.005; the ramp must then exit 1 with a `ramp_abort` record.

Goal: worst <= --interval (1.0 s at the default --interval 1s). Printed: each phase's reaction, the median,
the worst and worst/goal, and how long after a round began (its record's `ts`) its line was read (as in
bench_watch.py: the part of the cycle phase 0 cannot reach). Exit 0 when met, 1 when not.

    .venv/bin/python bench/bench_ramp.py [--interval 1] [--hold 4] [--phases 16]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Lines, control_doc, json_record, line_lag, phase_sweep, poll_until  # noqa: E402

from deploy_tool.modes.channels import FileChannel  # noqa: E402
from deploy_tool.sandbox import Sandbox  # noqa: E402

# The admin token: random, so that no path holds it (the tool masks a secret wherever it occurs, the
# evidence's file names included; a short word such as "bench" in the temp dir's name would be masked).
TOKEN = secrets.token_hex(16)

STABLE, RAISED = 0.005, 0.01
GIVE_UP_S = 15.0  # a reaction slower than --interval + this is recorded as none at all


def _state(box: Sandbox) -> tuple[str | None, float | None, str | None, float | None]:
    """(admin mode, admin allocation, file mode, file allocation), as each channel holds them now."""
    doc = control_doc(box.control_file) or {}
    return box.admin.mode, box.admin.allocation, doc.get("mode"), doc.get("allocation")


def _same(a: float | None, b: float) -> bool:
    return a is not None and abs(a - b) < 1e-12


def _reads(box: Sandbox, mode: str, allocation: float) -> bool:
    admin_mode, admin_alloc, file_mode, file_alloc = _state(box)
    return (admin_mode == mode and file_mode == mode and _same(admin_alloc, allocation)
            and _same(file_alloc, allocation))


def _passing_evidence(box: Sandbox, env: dict[str, str]) -> None:
    """A fresh, signed, passing preflight for this sandbox in its evidence dir (what the ramp's gate wants)."""
    done = subprocess.run([sys.executable, "-m", "deploy_tool", "preflight", *box.preflight_args(),
                           "--evidence-dir", str(box.evidence_dir), "-q"],
                          env=env, cwd=box.workdir, capture_output=True, text=True, timeout=120)
    found = sorted(p for p in box.evidence_dir.glob("preflight-*.json") if not p.name.endswith(".intoto.json"))
    verdict = json.loads(found[-1].read_text()).get("verdict") if found else None
    if done.returncode != 0 or verdict != "pass":
        raise RuntimeError(f"preflight for the ramp: exit {done.returncode}, verdict {verdict}:\n{done.stdout[-1500:]}")


def one_phase(interval: float, hold: float, phase: float, workdir: Path) -> tuple[float | None, float, float | None, str, int]:
    """(seconds from the write to paused and restored everywhere, or None; the phase really placed; the anchor
    round's line lag; a failure note, "" when none; the anchor round's number within step 2)."""
    with Sandbox(workdir, token=TOKEN, token_env="GD_BENCH_TOKEN", mode="real") as box:
        assert box.system is not None
        env = {**os.environ, "GD_BENCH_TOKEN": TOKEN}
        FileChannel(str(box.control_file)).apply_allocation(STABLE, None, "bench: the stable step", "bench")
        assert _reads(box, "real", STABLE), _state(box)
        _passing_evidence(box, env)
        proc = subprocess.Popen([sys.executable, "-m", "deploy_tool", "ramp", *box.watch_args(), *box.gate_args(),
                                 "--json", "--steps", "0.5%,1%", "--hold", f"{hold:g}s", "--interval", f"{interval}s"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            lines = Lines(proc)
            lines.wait_for(lambda text: "step 2/2" in text and "confirmed" in text, timeout=30 + 2 * hold)
            if not _reads(box, "real", RAISED):
                raise RuntimeError(f"step 2 confirmed but the channels read {_state(box)}, not real at 1 % on both")
            # Step 2's first passing round (normally its round 1) is the phase's zero.
            anchored_at, line = lines.wait_for(
                lambda text: (json_record(text) or {}).get("event") == "watch_round"
                and json_record(text).get("ramp_step") == 2 and json_record(text).get("ok") is True,
                timeout=10 + 3 * interval)
            record = json_record(line)
            lag = line_lag(record, anchored_at)
            if not _reads(box, "real", RAISED):
                raise RuntimeError(f"not real at 1 % on both channels at step 2's round {record['round']}: {_state(box)}")
            time.sleep(max(0.0, anchored_at + phase - time.monotonic()))
            written = time.monotonic()
            box.system.set_fault("risk-burst")  # the breach, written at once into the risk CSV and the audit
            reaction = poll_until(lambda: _reads(box, "paused", STABLE), written, interval + GIVE_UP_S)
            note = "" if reaction is not None else f"not paused at 0.5 % everywhere within {interval + GIVE_UP_S:g} s: {_state(box)}"
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                code = None
            aborted = any((json_record(text) or {}).get("event") == "ramp_abort" for text in _drain(lines))
            if reaction is not None and (code != 1 or not aborted):
                note = f"ramp exit {code}, ramp_abort record {'seen' if aborted else 'NOT seen'}"
            return reaction, written - anchored_at, lag, note, int(record["round"])
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _drain(lines: Lines) -> list[str]:
    """Every line the ended process printed after the ones already waited for."""
    try:
        lines.wait_for(lambda text: False, timeout=5)
    except RuntimeError:
        pass
    return lines.seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--hold", type=float, default=4.0, help="seconds each step holds (default 4)")
    parser.add_argument("--phases", type=int, default=16)
    args = parser.parse_args()
    if args.hold < 3 * args.interval:
        parser.error("--hold must be at least 3 intervals: the breach lands after step 2's first round, and "
                     "the rounds that must see it have to fall within step 2's hold")
    with tempfile.TemporaryDirectory(prefix="gd-bench-ramp-") as tmp:
        ok = phase_sweep(args.phases, args.interval,
                         lambda index, phase: one_phase(args.interval, args.hold, phase, Path(tmp) / f"box{index}"),
                         "the line of step 2's round {anchor}", "admin API AND control file read paused with allocation back at 0.5 % (raised at 1 %)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
