"""`gradual-deploy ramp` against the sandbox as a real process: advance, resume after a crash, --force, every
refusal, the plan and status. Aborts, the CAS race and Ctrl+C are tested in-process on a fake clock in
`test_guard_clock.py`; no test here orders events by sleeping, it waits for what it needs with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from sandboxes import into_real

GD = [sys.executable, "-m", "deploy_tool"]


@pytest.fixture
def live(sandbox, run_suite):
    """The sandbox in real, with a fresh passing evidence (risk group included) in its evidence dir."""
    run = run_suite(evidence_dir=sandbox.evidence_dir)
    assert run.evidence["verdict"] == "pass", run.output
    return into_real(sandbox)


def channel_args(sandbox):
    return ["--http-admin-url", sandbox.admin_url, "--admin-token-env", sandbox.token_env,
            "--control-file", str(sandbox.control_file), "--audit-dir", str(sandbox.audit_dir)]


def gd(sandbox, *args, timeout=90):
    return subprocess.run(GD + list(args), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, sandbox.token_env: sandbox.token})


def ramp_args(sandbox, steps="0.5%,1%", hold="0.3s"):
    return ["ramp", *sandbox.watch_args(), *sandbox.gate_args(), "--steps", steps, "--hold", hold, "--interval", "0.1s"]


def read_until(proc, text, timeout=30.0):
    """The process's lines up to and including the first that holds `text`; fails after `timeout` seconds."""
    seen: list[str] = []
    found = threading.Event()

    def read():
        for line in proc.stdout:
            seen.append(line)
            if text in line:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not found.wait(0.05):
        if proc.poll() is not None or time.monotonic() > deadline:
            found.wait(1)  # what the reader still has buffered
            if found.is_set():
                break
            proc.kill()
            pytest.fail(f"no line with {text!r} (exit {proc.poll()}); seen:\n{''.join(seen)}")
    return seen


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


def test_a_ramp_killed_mid_step_holds_that_step_again(live, run_suite):
    # The first step lies below the allocation (0.5 %): the ramp goes on at 1 % at once, and its ten-minute
    # hold leaves all the time there is to kill it there, however slowly this test runs. A ramp to 2 % needs
    # evidence that checked 2 % (a flag alone does not raise the ceiling).
    wider = run_suite("--max-allocation", "0.02", evidence_dir=live.evidence_dir)
    assert wider.result.ret == 0, wider.output
    args = ramp_args(live, steps="0.3%,1%,2%", hold="10m") + ["--max-allocation", "0.02"]
    proc = subprocess.Popen(GD + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, live.token_env: live.token})
    seen = read_until(proc, "ramp step 2/3 (1%): allocation 0.5% -> 1% confirmed")
    proc.kill()  # SIGKILL: no handler runs, as in a crash or a lost host
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, seen
    assert "allocation 0.5% lies between steps: going on at 1%" in "".join(seen)
    assert live.admin.allocation == 0.01 and live.admin.mode == "real", proc.stderr.read()
    assert file_doc(live)["allocation"] == 0.01 and file_doc(live)["mode"] == "real"
    done = gd(live, *ramp_args(live, steps="0.3%,1%,2%"), "--max-allocation", "0.02")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "allocation 1% has no clean hold on record: holding it again" in done.stdout
    assert "ramp step 2/3 (1%): allocation already 1%" in done.stdout and "step 1/3 (0.3%):" not in done.stdout
    assert live.admin.allocation == 0.02
    assert [e["allocation"] for e in events(live, "ramp_step_held")] == [0.01, 0.02]


@pytest.mark.parametrize("setup,extra,phrase", [
    ("mock", [], "is in mock: a ramp starts only in real"),
    ("no-evidence", [], "evidence gate: no preflight evidence"),
    (None, ["--steps", "0.5%,2%"], "step(s) 2% above 1%, --max-allocation: a step above what the gate checked needs new evidence"),
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
    done = gd(live, *ramp_args(live, steps="0.5%,2%"), "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    assert live.admin.allocation == 0.02
    assert events(live, "ramp_start")[-1]["forced"] is True
    assert events(live, "ramp_step")[-1]["forced"] is True


def test_plan_and_status(live):
    done = gd(live, "ramp", "--steps", "0.5%,1%,2%,5%", "--hold", "2h", "--plan")
    assert done.returncode == 0
    assert "minimum time to full allocation 5%: 8h (4 step(s) left" in done.stdout
    assert "step 3: allocation 2%, hold 2h" in done.stdout
    ramped = gd(live, *ramp_args(live))
    assert ramped.returncode == 0, ramped.stdout + ramped.stderr
    done = gd(live, "ramp", "--http-admin-url", live.admin_url, "--admin-token-env", live.token_env, "--control-file",
              str(live.control_file), "--deploy-audit-dir", str(live.audit_dir), "--steps", "0.5%,1%,2%,5%",
              "--hold", "2h", "--plan")
    assert "done step 2: allocation 1%" in done.stdout and "minimum time to full allocation 5%: 4h" in done.stdout
    status = gd(live, "status", *channel_args(live), "--evidence-dir", str(live.evidence_dir), *live.gate_args())
    assert f"http {live.admin_url}: real, allocation 1%" in status.stdout
    assert f"file {live.control_file}: real, allocation 1%" in status.stdout
    assert "ramp: complete, allocation 1%" in status.stdout


def test_bad_steps_are_usage_errors(sandbox):
    for steps, phrase in (("1%,0.5%", "allocations that rise step by step"), ("5", "a share of capital above 0"),
                          ("", "one or more allocations")):
        done = gd(sandbox, "ramp", *sandbox.watch_args(), "--steps", steps)
        assert done.returncode == 2 and phrase in done.stderr, done.stderr


def test_a_flag_does_not_lift_the_ceiling_the_evidence_was_checked_against(live):
    """The evidence's run checked --max-allocation 1 %: a ramp given --max-allocation 0.5 (50 %) still stops at
    1 %, and only --force (audited as forced) goes above it."""
    done = gd(live, *ramp_args(live, steps="0.5%,50%"), "--max-allocation", "0.5")
    assert done.returncode == 1, done.stdout + done.stderr
    assert ("ramp: REFUSED: step(s) 50% above 1%, the max_allocation the evidence's preflight checked" in done.stdout)
    assert live.admin.allocation == 0.005 and file_doc(live).get("allocation") in (None, 0.005)
    (refused,) = events(live, "ramp_refused")
    assert "the max_allocation the evidence's preflight checked" in refused["reason"]
