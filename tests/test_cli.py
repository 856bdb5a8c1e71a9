"""The `gradual-deploy` command as operators run it: real processes, real exit codes."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from waiting import communicate_or_kill


GD = [sys.executable, "-m", "deploy_tool"]


def _run(args, cwd, env=None, timeout=120):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(GD + args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def test_preflight_accepts_the_runbooks_command_line(sandbox, tmp_path):
    # The seed runbook's exact command, with the exchange and database from the environment.
    seed = ["preflight", "--http-admin-url", sandbox.admin_url, "--backtest-summary", str(sandbox.backtest_summary),
            "--min-sharpe", "0.2", "--min-winrate", "0.5", "--max-drawdown", "0.05",
            "--data-latency-threshold", "5", "--control-file", str(sandbox.control_file),
            "--admin-token-env", sandbox.token_env]
    env = {"OKX_BASE_URL": sandbox.okx_url, "DATABASE_URL": sandbox.database_url, sandbox.token_env: sandbox.token,
           **sandbox.account_env()}
    done = _run(seed, tmp_path, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "gradual-deploy preflight: verdict PASS (exit 0)" in done.stdout
    html = next((tmp_path / "data" / "evidence").glob("preflight-*.html"))
    assert f"evidence (HTML): data/evidence/{html.name}" in done.stdout
    doc = json.loads(html.with_suffix(".json").read_text())
    assert doc["verdict"] == "pass" and not [s for s in doc["skipped"] if s["required"]]
    assert [s["id"] for s in doc["skipped"]] == ["secrets_not_in_code"], "the runbook's line gives no --scan-path"

    failing = _run([*seed, "--min-sharpe", "5", "--skip-db-check"], tmp_path, env)
    assert failing.returncode == 1
    assert "verdict FAIL (exit 1)" in failing.stdout

    usage = _run(["preflight", "--min-winrate", "55"], tmp_path, env)
    assert usage.returncode == 4
    assert "invalid --min-winrate '55' from the command line" in usage.stderr
    assert "Traceback" not in usage.stderr + usage.stdout


def test_version_and_usage_errors(tmp_path):
    done = _run(["--version"], tmp_path)
    assert done.returncode == 0 and done.stdout.startswith("gradual-deploy 0.")
    done = _run(["launch"], tmp_path)
    assert done.returncode == 2 and "invalid choice: 'launch'" in done.stderr
    done = _run([], tmp_path)
    assert done.returncode == 2


def test_demo_walks_the_runbook_and_exits_0(tmp_path):
    done = subprocess.run([str(Path(sys.executable).parent / "gradual-deploy"), "demo"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verdict: PASS" in done.stdout
    for line in ("switch paused -> mock: DONE", "switch mock -> real: DONE", "pause: DONE", "BREACH after 1 failing round"):
        assert line in done.stdout
    assert done.stdout.count(" confirmed (version") == 14, "both channels confirm each of the seven mode changes"
    assert "ramp step 1/2 (0.5%): held clean" in done.stdout and "ramp step 2/2 (1%): allocation 0.5% -> 1% confirmed" in done.stdout
    assert "RAMP ABORT at step 2 (1%)" in done.stdout and "allocation back to 0.5%: DONE" in done.stdout
    assert ": paused, allocation 0.5%" in done.stdout
    assert "demo finished" in done.stdout
    # every step audits into data/demo/audit, watch too (its --deploy-audit-dir), not beside the system's audit
    audit = sorted((tmp_path / "data" / "demo").glob("**/deploy-*.jsonl"))
    assert [p.parent for p in audit] == [tmp_path / "data" / "demo" / "audit"]
    changes = sorted((json.loads(x) for f in audit for x in f.read_text().splitlines()), key=lambda c: c["ts"])
    changes = [(c["action"], c["to"], c["result"]) for c in changes if c["event"] == "mode_switch"]
    assert changes == [("switch", "mock", "done"), ("switch", "real", "done"), ("pause", "paused", "done"),
                       ("switch", "mock", "done"), ("switch", "real", "done"), ("pause", "paused", "done"),
                       ("switch", "mock", "done"), ("switch", "real", "done"), ("pause", "paused", "done")]
    folder = tmp_path / "data" / "demo" / "evidence"
    evidence = [p for p in folder.glob("preflight-*.json") if not p.name.endswith(".intoto.json")]
    assert len(evidence) == 1 and json.loads(evidence[0].read_text())["verdict"] == "pass"
    # the demo signs its evidence, and it is that signed run which opened real
    assert [p.name for p in folder.glob("preflight-*.intoto.json")] == [f"{evidence[0].stem}.intoto.json"]
    opened = [c for f in audit for c in map(json.loads, f.read_text().splitlines())
              if c["event"] == "mode_switch" and c["to"] == "real"]
    assert opened and all(c["evidence_signer"] and not c["forced"] for c in opened)


def test_sandbox_runs_in_the_foreground_and_points_the_suite_at_itself(tmp_path):
    proc = subprocess.Popen(GD + ["sandbox", "--dir", str(tmp_path / "box")], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if line.strip().startswith("gradual-deploy ramp approve"):
                break
        assert lines[-1].strip().startswith("gradual-deploy ramp approve"), lines
        commands = [shlex.split(line) for line in lines if line.strip().startswith("gradual-deploy ")]
        (command,) = [c for c in commands if c[1] == "preflight"]
        done = _run(command[1:], tmp_path)  # as printed
        assert done.returncode == 0, done.stdout + done.stderr
        # the sandbox keeps its evidence and audit in its own --dir: never the production data/evidence
        assert list((tmp_path / "box" / "evidence").glob("preflight-*.json"))
        assert not (tmp_path / "data").exists()
        for printed in commands:
            for flag in ("--evidence-dir", "--audit-dir", "--deploy-audit-dir"):
                if flag in printed:
                    assert printed[printed.index(flag) + 1].startswith(str(tmp_path / "box")), (flag, printed)
        assert all("--evidence-dir" in c for c in commands if c[1] in ("switch", "ramp", "watch") and "approve" not in c)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = communicate_or_kill(proc, 30, "the sandbox to stop on Ctrl+C")
    assert proc.returncode == 0, err
    assert "sandbox stopped" in out


def test_an_unknown_fault_is_a_usage_error(tmp_path):
    done = subprocess.run(GD + ["sandbox", "--dir", str(tmp_path), "--misbehave", "meltdown"], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert "unknown fault 'meltdown': one of none, failing-orders, risk-burst, stall-feed, silence, slippage, losses" in done.stderr
