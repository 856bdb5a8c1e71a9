"""The observe checks in the suite, and `gradual-deploy watch` against the sandbox as a real process: a clean
end, a breach, the JSON lines, Ctrl+C and the signals, a lost terminal, usage errors and secrets. The loop's
logic (round counting, cadence, the failure limit, every breach) is tested in-process on a fake clock in
`test_guard_clock.py`; no test here orders events by sleeping, it waits for what it needs with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from deploy_tool.modes.channels import FileChannel
from waiting import communicate_or_kill

GD = [sys.executable, "-m", "deploy_tool"]
OBSERVE_IDS = {"observe_audit_recent", "observe_audit_parseable", "observe_risk_events",
               "observe_order_failure_rate", "observe_risk_block_rate", "observe_signals", "observe_slippage",
               "observe_realized_pnl"}


def test_observe_checks_run_only_when_asked(run_suite, sandbox):
    for _ in range(3):  # a few ticks of the simulated trading system, beyond the one it starts with
        sandbox.system.tick()
    plain = run_suite()
    assert not OBSERVE_IDS & set(plain.statuses()), "a go-live preflight has nothing to observe yet"
    observed = run_suite("-m", "observe", *sandbox.observe_args())
    assert observed.result.ret == 0, observed.output
    assert observed.statuses("observe") == dict.fromkeys(OBSERVE_IDS, "passed")
    assert observed.evidence["thresholds"]["max_risk_events"] == 3
    both = run_suite("--observe", *sandbox.observe_args())
    assert both.result.ret == 0 and set(both.statuses()) >= OBSERVE_IDS | {"trades_fresh"}


def test_observe_failure_in_the_evidence(run_suite, sandbox):
    sandbox.system.set_fault("risk-burst")
    run = run_suite("-m", "observe", *sandbox.observe_args())
    assert run.result.ret == 1
    check = run.check("observe_risk_events")
    assert check["status"] == "failed" and check["measured"] >= 10 and check["threshold"] == 3
    assert "risk events in the last 10m" in check["message"] and "max 3" in check["message"]
    assert "observe_risk_events" in run.html


def _watch(sandbox, *extra, **popen):
    env = {**os.environ, sandbox.token_env: sandbox.token}
    return subprocess.Popen(GD + ["watch", *sandbox.watch_args(), *extra], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def _first_line(proc, timeout=30.0):
    """The process's first line of output, awaited at most `timeout` seconds (a hung watch fails the test)."""
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not got:
        proc.kill()
        pytest.fail(f"no line from the watch in {timeout:g} s")
    return got[0]


def _audit(sandbox):
    lines = []
    for path in sorted(sandbox.audit_dir.glob("deploy-*.jsonl")):
        lines += [json.loads(x) for x in path.read_text().splitlines()]
    return lines


def _to_mock(sandbox):
    sandbox.admin.change({"mode": "mock"})
    FileChannel(str(sandbox.control_file)).apply("mock", "paused", "test", "test")


def test_watch_without_breach_exits_0_and_leaves_the_mode(sandbox):
    _to_mock(sandbox)
    proc = _watch(sandbox, "--interval", "0.2s", "--duration", "1s")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    rounds = [line for line in out.splitlines() if line.startswith("round ")]
    # How many rounds fit in a second depends on the machine's load; the exact count on a given cadence is
    # tested on a fake clock (test_guard_clock.py). Here: every round clean, and printed, audited and counted alike.
    assert rounds and all(" OK " in r for r in rounds), out
    assert "left" in rounds[0] and "order failures 0.0%" in rounds[0]
    assert f"watch finished: no breach in 1s ({len(rounds)} rounds)" in out
    assert sandbox.admin.mode == "mock" and json.loads(sandbox.control_file.read_text())["mode"] == "mock"
    events = [a["event"] for a in _audit(sandbox)]
    assert events[0] == "watch_start" and events.count("watch_round") == len(rounds) and events[-1] == "watch_end"


def test_watch_breach_pauses_both_channels(sandbox):
    """One breach end to end; each fault and failure limit in-process (test_guard_clock.py)."""
    _to_mock(sandbox)
    sandbox.system.set_fault("risk-burst")
    proc = _watch(sandbox, "--interval", "0.5s", "--duration", "60s", "--failure-limit", "1",
                  "--data-latency-threshold", "1")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, out + err
    assert "FAIL (1/1) observe_risk_events" in out and "BREACH" in out and "pause: DONE" in out
    assert sandbox.admin.mode == "paused"
    assert json.loads(sandbox.control_file.read_text())["mode"] == "paused"
    audit = _audit(sandbox)
    breach = next(a for a in audit if a["event"] == "watch_breach")
    assert breach["pause"] == "done" and breach["measurements"] and breach["failures"]
    switch = next(a for a in audit if a["event"] == "mode_switch")
    assert switch["to"] == "paused" and switch["channel"] == "http+file" and switch["reason"].startswith("watch:")
    snapshot = json.loads(open(breach["evidence"]).read())
    assert snapshot["schema"] == "gradual-deploy/watch-breach/1" and snapshot["pause"]["result"] == "done"


def test_watch_json_lines(sandbox):
    proc = _watch(sandbox, "--interval", "0.2s", "--duration", "0.4s", "--json")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert records[0]["event"] == "watch_round" and "measurements" in records[0]
    assert records[-1] == {"event": "watch_end", "result": "no_breach", "rounds": len(records) - 1,
                           "outcomes": {"pass": len(records) - 1}}


def test_ctrl_c_stops_cleanly_and_leaves_the_mode(sandbox):
    _to_mock(sandbox)
    proc = _watch(sandbox, "--interval", "1s", "--duration", "10m")
    first = _first_line(proc)
    assert first.startswith("round 1"), first
    proc.send_signal(signal.SIGINT)
    out, err = communicate_or_kill(proc, 30, "watch to stop on Ctrl+C")
    assert proc.returncode == 130, out + err
    assert "watch stopped by Ctrl+C" in out and "Traceback" not in err
    assert sandbox.admin.mode == "mock" and json.loads(sandbox.control_file.read_text())["mode"] == "mock"
    assert _audit(sandbox)[-1]["event"] == "watch_stopped"


def test_watch_usage_errors(sandbox, tmp_path):
    args = [a for a in sandbox.watch_args()]
    i = args.index("--database-url")
    del args[i:i + 2]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(GD + ["watch", *args], capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 2
    assert "watch checks the trades feed: give --database-url URL (or DATABASE_URL); or --skip-db-check" in done.stderr
    done = subprocess.run(GD + ["watch", *sandbox.watch_args(), "--max-order-failure-rate", "20"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "invalid --max-order-failure-rate '20' from the command line" in done.stderr


def test_watch_output_audit_and_snapshot_hold_no_secret(sandbox, tmp_path):
    canary = "CANARY-watchpass-6c1d"
    args = [a for a in sandbox.watch_args()]
    args[args.index("--database-url") + 1] = f"postgresql://app:{canary}@127.0.0.1:9/prod"
    env = {**os.environ, sandbox.token_env: sandbox.token, "OKX_SECRET_KEY": "CANARY-okxsecret-77aa"}
    done = subprocess.run(GD + ["watch", *args, "--interval", "0.5s", "--duration", "30s"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot connect to postgresql://app:***@127.0.0.1:9/prod" in done.stdout
    texts = [done.stdout, done.stderr] + [p.read_text() for p in sandbox.audit_dir.glob("deploy-*.jsonl")]
    texts += [p.read_text() for p in sandbox.evidence_dir.glob("watch-breach-*.json")]
    assert len(texts) == 4
    for text in texts:
        assert canary not in text and "CANARY-okxsecret-77aa" not in text and sandbox.token not in text


def test_watch_judges_the_same_criteria_as_the_suite(sandbox):
    """One judge per check: a watch round yields exactly the suite's okx, db and observe check ids."""
    import re
    from pathlib import Path

    import preflight_tests
    from deploy_tool.analysis import WatchConfig, measure_round
    from deploy_tool.settings import defaults

    suite = Path(preflight_tests.__file__).parent
    names = set()
    for group in ("okx", "db", "observe"):
        names |= set(re.findall(r"^def test_(\w+)\(", (suite / f"test_{group}.py").read_text(), re.M))
    settings = defaults(okx_base_url=sandbox.okx_url, database_url=sandbox.database_url,
                        audit_dir=str(sandbox.audit_dir), risk_events_csv=str(sandbox.risk_events_csv))
    found = measure_round(1, WatchConfig(settings)).checks
    assert {c.id for c in found} == names
    latency = next(c for c in found if c.id == "okx_public_time_latency")
    assert latency.threshold == settings.api_latency_threshold_ms and latency.unit == "ms"


def _paused_on_both(sandbox):
    return sandbox.admin.mode == "paused" and json.loads(sandbox.control_file.read_text())["mode"] == "paused"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_watch_killed_by_a_signal_pauses_first(sandbox, sig):
    _to_mock(sandbox)
    proc = _watch(sandbox, "--interval", "0.5s", "--duration", "10m")
    assert _first_line(proc).startswith("round 1")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, out + err
    assert f"watch ended before its duration (terminated by {sig.name})" in err and "pause DONE" in err
    assert _paused_on_both(sandbox)
    stopped = [a for a in _audit(sandbox) if a["event"] == "watch_stopped"]
    assert stopped and stopped[-1]["pause"] == "done"


def test_watch_whose_output_is_gone_pauses_before_it_ends(sandbox):
    _to_mock(sandbox)
    proc = _watch(sandbox, "--interval", "0.3s", "--duration", "10m")
    assert _first_line(proc).startswith("round 1")
    proc.stdout.close()  # the terminal or the pipe it printed to is gone: the next line cannot be written
    proc.wait(timeout=30)
    assert proc.returncode == 1
    assert _paused_on_both(sandbox)
    assert "BrokenPipeError" in [a for a in _audit(sandbox) if a["event"] == "watch_stopped"][-1]["reason"]
