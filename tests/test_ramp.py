"""`gradual-deploy ramp` against the sandbox as a real process: advance, abort, resume after a crash,
a CAS race on the allocation, every refusal, the plan and status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

GD = [sys.executable, "-m", "deploy_tool"]


@pytest.fixture
def live(sandbox, run_suite):
    """The sandbox in real, with a fresh passing evidence (risk group included) in its evidence dir."""
    run = run_suite(evidence_dir=sandbox.evidence_dir)
    assert run.evidence["verdict"] == "pass", run.output
    for target in ("mock", "real"):
        done = gd(sandbox, "switch", "--to", target, *channel_args(sandbox), "--evidence-dir", str(sandbox.evidence_dir))
        assert done.returncode == 0, done.stdout + done.stderr
    return sandbox


def channel_args(sandbox):
    return ["--http-admin-url", sandbox.admin_url, "--admin-token-env", sandbox.token_env,
            "--control-file", str(sandbox.control_file), "--audit-dir", str(sandbox.audit_dir)]


def gd(sandbox, *args, timeout=90):
    return subprocess.run(GD + list(args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, sandbox.token_env: sandbox.token})


def ramp_args(sandbox, steps="0.5%,1%", hold="1.5s"):
    return ["ramp", *sandbox.watch_args(), "--steps", steps, "--hold", hold, "--interval", "0.5s"]


def file_doc(sandbox):
    return json.loads(sandbox.control_file.read_text())


def events(sandbox, *names):
    lines = [json.loads(x) for f in sorted(sandbox.audit_dir.glob("deploy-*.jsonl")) for x in f.read_text().splitlines()]
    return [line for line in lines if not names or line["event"] in names]


def test_a_clean_ramp_advances_to_full_allocation(live):
    done = gd(live, *ramp_args(live))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "allocation 0.5% has no clean hold on record: holding it again" in done.stdout
    assert "ramp step 2/2 (1%): allocation 0.5% -> 1% confirmed on http, file" in done.stdout
    assert "ramp complete: allocation 1%" in done.stdout
    assert live.admin.allocation == 0.01 and file_doc(live)["allocation"] == 0.01
    assert file_doc(live)["mode"] == "real", "an allocation write keeps the mode"
    held = [e["allocation"] for e in events(live, "ramp_step_held")]
    assert held == [0.005, 0.01]
    again = gd(live, *ramp_args(live))
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_a_breach_pauses_and_goes_back_to_the_stable_allocation(live):
    proc = subprocess.Popen(GD + ramp_args(live, hold="30s"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, live.token_env: live.token})
    time.sleep(1.0)
    live.system.set_fault("losses")  # each fill loses 0.5 % of capital: the daily limit of 2 % falls in a second
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 1, out + err
    assert "RAMP ABORT at step 1 (0.5%)" in out and "observe_realized_pnl" in out
    assert "pause: DONE; allocation back to 0.5%: DONE" in out
    assert live.admin.mode == "paused" and live.admin.allocation == 0.005
    assert file_doc(live)["mode"] == "paused" and file_doc(live)["allocation"] == 0.005
    (abort,) = events(live, "ramp_abort")
    assert abort["pause"] == "done" and abort["restore"] == "done" and "observe_realized_pnl" in abort["failures"]
    snapshot = json.loads(open(abort["evidence"]).read())
    assert snapshot["schema"] == "gradual-deploy/ramp-abort/1" and snapshot["stable_allocation"] == 0.005


def test_an_abort_on_a_later_step_restores_the_first(live):
    proc = subprocess.Popen(GD + ramp_args(live, steps="0.5%,1%", hold="4s") + ["--max-slippage-bps", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, live.token_env: live.token})
    for line in proc.stdout:
        if "ramp step 2/2 (1%): allocation 0.5% -> 1% confirmed" in line:
            live.system.set_fault("slippage")  # fills 80 bps off the intended price
            break
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 1, out + err
    assert "RAMP ABORT at step 2 (1%)" in out and "observe_slippage" in out
    assert live.admin.allocation == 0.005 and file_doc(live)["allocation"] == 0.005
    assert live.admin.mode == "paused"


def test_a_ramp_killed_mid_step_holds_that_step_again(live):
    proc = subprocess.Popen(GD + ramp_args(live, steps="0.5%,1%,2%", hold="1.5s") + ["--max-allocation", "0.02"],
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, live.token_env: live.token})
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "ramp step 2/3 (1%): allocation 0.5% -> 1% confirmed" in line:
            proc.kill()  # SIGKILL: no handler runs, as in a crash or a lost host
            break
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, seen
    assert live.admin.allocation == 0.01 and live.admin.mode == "real", proc.stderr.read()
    done = gd(live, *ramp_args(live, steps="0.5%,1%,2%", hold="1s"), "--max-allocation", "0.02")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "allocation 1% has no clean hold on record: holding it again" in done.stdout
    assert "ramp step 2/3 (1%): allocation already 1%" in done.stdout
    assert live.admin.allocation == 0.02
    assert [e["allocation"] for e in events(live, "ramp_step_held")] == [0.005, 0.01, 0.02]


def test_a_concurrent_allocation_change_stops_the_ramp_without_overwriting(live):
    proc = subprocess.Popen(GD + ramp_args(live, steps="0.5%,1%", hold="1.5s"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, live.token_env: live.token})
    for line in proc.stdout:
        if "ramp step 1/2 (0.5%)" in line and "holding" in line:
            live.admin.allocate({"allocation": 0.003, "actor": "risk desk"})  # someone lowers it meanwhile
            break
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == 1, out + err
    assert "ramp: STOPPED at step 2/2 (1%)" in out and "HTTP 409, allocation is now 0.003" in out
    assert live.admin.allocation == 0.003, "the concurrent change stands"


@pytest.mark.parametrize("setup,extra,phrase", [
    ("mock", [], "is in mock: a ramp starts only in real"),
    ("no-evidence", [], "evidence gate: no preflight evidence"),
    (None, ["--steps", "0.5%,2%"], "step(s) 2% above --max-allocation 1%: lower them, or --force"),
    ("disagree", [], "the channels disagree on the allocation (http 0.5%, file 0.7%)"),
])
def test_refusals(live, tmp_path, setup, extra, phrase):
    args = ramp_args(live)
    if setup == "mock":
        gd(live, "switch", "--to", "mock", *channel_args(live))
    if setup == "no-evidence":
        args[args.index("--evidence-dir") + 1] = str(tmp_path / "none")
    if setup == "disagree":
        doc = file_doc(live)
        live.control_file.write_text(json.dumps({**doc, "allocation": 0.007}))
    done = gd(live, *args, *extra)
    assert done.returncode == 1 and "ramp: REFUSED: " in done.stdout and phrase in done.stdout, done.stdout + done.stderr
    assert phrase.split(":")[0] in events(live, "ramp_refused")[-1]["reason"]
    assert live.admin.allocation == 0.005


def test_force_allows_a_step_above_the_maximum_and_is_audited(live):
    done = gd(live, *ramp_args(live, steps="0.5%,2%", hold="1s"), "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    assert live.admin.allocation == 0.02
    assert events(live, "ramp_start")[-1]["forced"] is True
    assert events(live, "ramp_step")[-1]["forced"] is True


def test_plan_and_status(live):
    done = gd(live, "ramp", "--steps", "0.5%,1%,2%,5%", "--hold", "2h", "--plan")
    assert done.returncode == 0
    assert "minimum time to full allocation 5%: 8h (4 step(s) left" in done.stdout
    assert "step 3: allocation 2%, hold 2h" in done.stdout
    gd(live, *ramp_args(live))
    done = gd(live, "ramp", "--http-admin-url", live.admin_url, "--admin-token-env", live.token_env, "--control-file",
              str(live.control_file), "--deploy-audit-dir", str(live.audit_dir), "--steps", "0.5%,1%,2%,5%",
              "--hold", "2h", "--plan")
    assert "done step 2: allocation 1%" in done.stdout and "minimum time to full allocation 5%: 4h" in done.stdout
    status = gd(live, "status", *channel_args(live))
    assert f"http {live.admin_url}: real, allocation 1%" in status.stdout
    assert f"file {live.control_file}: real, allocation 1%" in status.stdout
    assert "ramp: complete, allocation 1%" in status.stdout


def test_bad_steps_are_usage_errors(sandbox):
    for steps, phrase in (("1%,0.5%", "allocations that rise step by step"), ("5", "a share of capital above 0"),
                          ("", "one or more allocations")):
        done = gd(sandbox, "ramp", *sandbox.watch_args(), "--steps", steps)
        assert done.returncode == 2 and phrase in done.stderr, done.stderr
