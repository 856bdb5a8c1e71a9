"""`gradual-deploy demo`: the runbook walked end to end against an in-process sandbox."""

from __future__ import annotations

import os
import shlex
import threading
import secrets
from pathlib import Path

from deploy_tool.units import utc_now


def _step(number: int, text: str) -> None:
    print(f"\n=== step {number}: {text}", flush=True)


def run_demo(base_dir: str) -> int:
    from deploy_tool.preflight import run_preflight
    from deploy_tool.sandbox import Sandbox

    workdir = Path(base_dir) / utc_now().strftime("%Y%m%dT%H%M%SZ")
    token_env = "GRADUAL_DEPLOY_DEMO_TOKEN"
    token = secrets.token_urlsafe(16)
    os.environ[token_env] = token  # the suite reads the token from the env var it is told about
    evidence_dir = Path(base_dir) / "evidence"
    with Sandbox(workdir, token=token, token_env=token_env) as sandbox:
        _step(1, "start the sandbox (exchange stand-in, admin API, control file, trades feed, backtest)")
        print(f"  exchange {sandbox.okx_url}, admin API {sandbox.admin_url} (token-protected),")
        print(f"  control file {sandbox.control_file}, trades {sandbox.database_url}")
        _step(2, "preflight: every go-live criterion, with evidence")
        result = run_preflight([*sandbox.preflight_args(), "--evidence-dir", str(evidence_dir), "-q"])
        print(f"\n  verdict: {(result.verdict or 'none').upper()}")
        print(f"  evidence (HTML): {result.html}")
        print(f"  evidence (JSON): {result.json}")
        if result.verdict != "pass":
            print("demo: the preflight did not pass against the sandbox; see the evidence above")
            return 1
        from deploy_tool.cli import main

        channels = ["--http-admin-url", sandbox.admin_url, "--control-file", str(sandbox.control_file),
                    "--admin-token-env", token_env, "--audit-dir", str(Path(base_dir) / "audit")]
        steps = [
            ("switch to mock: rehearse the whole chain", ["switch", "--to", "mock", *channels,
                                                          "--reason", "demo: rehearsal"]),
            ("switch to real: gated on the evidence just written", ["switch", "--to", "real", *channels,
                                                                    "--evidence-dir", str(evidence_dir),
                                                                    "--reason", "demo: go live small"]),
            ("pause: the emergency rollback drill", ["pause", *channels, "--reason", "demo: rollback drill"]),
            ("back to mock, then real again", ["switch", "--to", "mock", *channels, "--reason", "demo: after drill"]),
            (None, ["switch", "--to", "real", *channels, "--evidence-dir", str(evidence_dir),
                    "--reason", "demo: live again"]),
            ("watch: the observation period; the sandbox misbehaves after 2 s and watch rolls back by itself",
             ["watch", "--interval", "1s", "--duration", "30s", "--audit-dir", str(sandbox.audit_dir),
              "--risk-events-csv", str(sandbox.risk_events_csv), "--okx-base-url", sandbox.okx_url,
              "--database-url", sandbox.database_url, "--evidence-dir", str(evidence_dir), *channels[:6]]),
            ("status: every channel agrees", ["status", *channels[:6], "--evidence-dir", str(evidence_dir)]),
        ]
        number = 2
        for title, argv in steps:
            if title:
                number += 1
                _step(number, title)
            print("  $ gradual-deploy " + shlex.join(argv), flush=True)
            if argv[0] == "watch":
                print("  (in 2 s the sandbox writes a burst of risk events, as a misbehaving system would)", flush=True)
                assert sandbox.system is not None
                timer = threading.Timer(2.0, sandbox.system.set_fault, ["risk-burst"])
                timer.start()
                code = main(argv)
                timer.cancel()
                paused = sandbox.admin.mode == "paused" and '"paused"' in sandbox.control_file.read_text()
                if code != 1 or not paused:
                    print(f"demo: watch should have paused the sandbox (exit {code}, paused {paused})")
                    return 1
                continue
            code = main(argv)
            if code != 0:
                print(f"demo: step {number} failed with exit {code}")
                return 1
    print(f"\ndemo finished: preflight passed; mock -> real -> paused by hand and by watch, confirmed on both "
          f"channels; audit in {Path(base_dir) / 'audit'}")
    return 0
