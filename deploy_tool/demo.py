"""`gradual-deploy demo`: the runbook walked end to end against an in-process sandbox."""

from __future__ import annotations

import os
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
    print("\ndemo finished: the gate passed against the sandbox")
    return 0
