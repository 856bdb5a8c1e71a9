"""`gradual-deploy demo`: the runbook walked end to end against an in-process sandbox.

Each step calls the library function its command calls (`run_preflight`, `switch`, `pause`, `watch`,
`ramp`, `status`) and prints the command an operator would type for it.
"""

from __future__ import annotations

import os
import secrets
import shlex
import threading
import time
from pathlib import Path

from deploy_tool.commands.preflight import run_preflight
from deploy_tool.commands.ramp import ramp
from deploy_tool.commands.render import outcome_lines, status_lines
from deploy_tool.commands.watch import WatchConfig, watch
from deploy_tool.audit import actor, host
from deploy_tool.modes.change import pause, status, switch
from deploy_tool.modes.channels import build_channels
from deploy_tool.modes.gate import GateConfig
from deploy_tool.redact import Redactor
from deploy_tool.sandbox import SANDBOX_CAPITAL, Sandbox
from deploy_tool.settings import defaults
from deploy_tool.times import utc_now


def _step(number: int, text: str) -> None:
    print(f"\n=== step {number}: {text}", flush=True)


def _typed(*argv: str) -> None:
    print("  $ gradual-deploy " + shlex.join(argv), flush=True)


def run_demo(base_dir: str) -> int:
    workdir = Path(base_dir) / utc_now().strftime("%Y%m%dT%H%M%SZ")
    token_env = "GRADUAL_DEPLOY_DEMO_TOKEN"
    token = secrets.token_urlsafe(16)
    os.environ[token_env] = token  # the suite reads the token from the env var it is told about
    evidence_dir = Path(base_dir) / "evidence"
    audit_dir = Path(base_dir) / "audit"
    who = f"{actor()}@{host()}"
    with Sandbox(workdir, token=token, token_env=token_env) as sandbox:
        os.environ.update(sandbox.account_env())  # the sandbox's own API key, for the account checks
        redactor = Redactor.from_environ()
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

        channel_args = ["--http-admin-url", sandbox.admin_url, "--control-file", str(sandbox.control_file),
                        "--admin-token-env", token_env]
        audit_args = ["--audit-dir", str(audit_dir)]
        settings = defaults(http_admin_url=sandbox.admin_url, control_file=str(sandbox.control_file),
                            admin_token_env=token_env, evidence_dir=str(evidence_dir), deploy_audit_dir=str(audit_dir),
                            okx_base_url=sandbox.okx_url, database_url=sandbox.database_url,
                            trusted_keys=str(sandbox.trusted_keys))
        channels = build_channels(settings)
        gate = GateConfig.from_settings(settings)

        def change(target: str, reason: str) -> bool:
            extra = ["--evidence-dir", str(evidence_dir), *sandbox.gate_args()] if target == "real" else []
            _typed("switch", "--to", target, *channel_args, *audit_args, *extra, "--reason", reason)
            outcome = switch(channels, target, force=False, reason=reason, actor=who, gate=gate,
                             audit_dir=str(audit_dir))
            print("\n".join(outcome_lines(outcome)))
            return outcome.result == "done"

        _step(3, "switch to mock: rehearse the whole chain")
        if not change("mock", "demo: rehearsal"):
            return _failed(3)
        _step(4, "switch to real: gated on the evidence just written")
        if not change("real", "demo: go live small"):
            return _failed(4)
        _step(5, "pause: the emergency rollback drill")
        _typed("pause", *channel_args, *audit_args, "--reason", "demo: rollback drill")
        outcome = pause(build_channels(settings, pause=True), reason="demo: rollback drill", actor=who,
                        audit_dir=str(audit_dir))
        print("\n".join(outcome_lines(outcome)))
        if outcome.result != "done":
            return _failed(5)
        _step(6, "back to mock, then real again")
        if not change("mock", "demo: after drill") or not change("real", "demo: live again"):
            return _failed(6)

        _step(7, "watch: the observation period; the sandbox misbehaves after 2 s and watch rolls back by itself")
        watch_settings = settings.replace(
            audit_dir=str(sandbox.audit_dir), risk_events_csv=str(sandbox.risk_events_csv),
            okx_base_url=sandbox.okx_url, database_url=sandbox.database_url, capital=SANDBOX_CAPITAL, interval=1.0,
            duration=30.0)
        _typed("watch", "--interval", "1s", "--duration", "30s", *sandbox.observe_args(), "--okx-base-url",
               sandbox.okx_url, "--database-url", sandbox.database_url, "--evidence-dir", str(evidence_dir),
               "--deploy-audit-dir", str(audit_dir), *channel_args)
        print("  (in 2 s the sandbox writes a burst of risk events, as a misbehaving system would)", flush=True)
        assert sandbox.system is not None
        timer = threading.Timer(2.0, sandbox.system.set_fault, ["risk-burst"])
        timer.start()
        cfg = WatchConfig(watch_settings, actor=who, redactor=watch_settings.redactor())
        code = watch(cfg, build_channels(watch_settings, pause=True), emit=lambda line: print(redactor.scrub(line), flush=True))
        timer.cancel()
        paused = sandbox.admin.mode == "paused" and '"paused"' in sandbox.control_file.read_text()
        if code != 1 or not paused:
            print(f"demo: watch should have paused the sandbox (exit {code}, paused {paused})")
            return 1

        _step(8, "after the investigation: back to mock, then real")
        if not change("mock", "demo: after the breach") or not change("real", "demo: live again, small"):
            return _failed(8)

        _step(9, "ramp: raise the allocation 0.5% -> 1%, each step held under watch; losses at 1% abort it")
        ramp_settings = watch_settings.replace(steps=(0.005, 0.01), hold=3.0, interval=0.5, observe_window=2.0)
        _typed("ramp", "--steps", "0.5%,1%", "--hold", "3s", "--interval", "0.5s", "--observe-window", "2s",
               *sandbox.observe_args(), "--okx-base-url", sandbox.okx_url, "--database-url", sandbox.database_url,
               "--evidence-dir", str(evidence_dir), "--trusted-keys", str(sandbox.trusted_keys),
               "--deploy-audit-dir", str(audit_dir), *channel_args)
        print("  (when the allocation reaches 1 %, the sandbox starts losing 0.5 % of capital per fill)", flush=True)
        time.sleep(2.5)  # the risk burst above ages out of the 2 s window
        injector = threading.Thread(target=_lose_at, args=(sandbox, 0.01), daemon=True)
        injector.start()
        code = ramp(WatchConfig(ramp_settings, actor=who, redactor=ramp_settings.redactor()), channels,
                    emit=lambda line: print(redactor.scrub(line), flush=True))
        back = sandbox.admin.allocation == 0.005 and sandbox.admin.mode == "paused"
        if code != 1 or not back:
            print(f"demo: the ramp should have aborted to 0.5 % and paused (exit {code}, "
                  f"allocation {sandbox.admin.allocation}, mode {sandbox.admin.mode})")
            return 1

        _step(10, "status: every channel agrees; allocation back at the stable step")
        _typed("status", *channel_args, "--evidence-dir", str(evidence_dir), *sandbox.gate_args())
        report = status(channels, gate, str(audit_dir))
        print("\n".join(status_lines(report)))
        if not report["ok"]:
            return _failed(10)
    print(f"\ndemo finished: preflight passed; mock -> real -> paused by hand and by watch; a ramp that advanced "
          f"once and rolled back to 0.5 % on losses; confirmed on both channels; audit in {audit_dir}")
    return 0


def _lose_at(sandbox: Sandbox, allocation: float, timeout_s: float = 30.0) -> None:
    """Make the sandbox lose money once its allocation reaches `allocation`: the fault the ramp must catch."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sandbox.admin.allocation is not None and abs(sandbox.admin.allocation - allocation) < 1e-12:
            assert sandbox.system is not None
            sandbox.system.set_fault("losses")
            return
        time.sleep(0.05)


def _failed(number: int) -> int:
    print(f"demo: step {number} failed")
    return 1
