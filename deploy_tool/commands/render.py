"""How outcomes and reports read on a terminal: lines of text, printed by the CLI and the demo alike.

Every line carries what a server or a file said (an error, a mode, a note) and is returned sanitised: a
control character is written out (`\\x1b`), never sent to the terminal, whoever prints the line."""

from __future__ import annotations

from typing import Any

from deploy_tool.modes.change import Outcome
from deploy_tool.redact import sanitise
from deploy_tool.times import format_age


def outcome_lines(outcome: Outcome) -> list[str]:
    """What a switch or pause did, channel by channel, for stdout."""
    verb = "pause" if outcome.action == "pause" else f"switch {outcome.before()} -> {outcome.target}"
    lines = [f"{verb}: {outcome.result.upper()}" + (" (forced)" if outcome.forced else "")]
    for c in outcome.channels:
        if outcome.result == "refused":
            lines.append(f"  {c.channel:<4} {c.target}: {c.before or 'no mode yet'} (unchanged)")
        elif c.ok:
            version = f" (version {c.version})" if c.version is not None else ""
            lines.append(f"  {c.channel:<4} {c.target}: {c.before} -> {c.after} confirmed{version}"
                         + (f"; {c.note}" if c.note else ""))
        else:
            lines.append(f"  {c.channel:<4} {c.target}: FAILED: {c.error}")
    if outcome.reason and outcome.result != "done":
        lines.append(f"  reason: {outcome.reason}")
    elif outcome.reason:
        lines.append(f"  {outcome.reason}")
    if outcome.audit:
        lines.append(f"  audit: {outcome.audit}")
    return _sanitised(lines)


def warning_lines(outcome: Outcome) -> list[str]:
    """What must be said loudly, on stderr: a pause some channel did not confirm, a lost audit line."""
    lines = []
    if outcome.action == "pause" and outcome.result != "done":
        ok = [c.channel for c in outcome.channels if c.ok]
        for c in outcome.channels:
            if not c.ok:
                lines.append(f"WARNING: pause through {c.channel} ({c.target}) FAILED: {c.error}")
        if ok:
            lines.append(f"WARNING: paused through {', '.join(ok)} only: check the trading system")
        else:
            lines.append("WARNING: NO CHANNEL CONFIRMED THE PAUSE: stop the trading system by hand")
    if outcome.audit_error:
        lines.append(f"gradual-deploy: WARNING: {outcome.audit_error}")
    return _sanitised(lines)


def status_lines(report: dict[str, Any]) -> list[str]:
    """The mode on each channel and the state of the gate, for stdout."""
    lines = []
    for entry in report["channels"]:
        shown = entry.get("mode") if "error" not in entry else f"UNREADABLE: {entry['error']}"
        if entry.get("missing"):
            shown = ("NO SUCH FILE: check --control-file (or EXEC_CONTROL_FILE), where the trading system reads its "
                     "mode; a new deployment: `gradual-deploy switch --to mock` creates it")
        line = f"{entry['channel']:<4} {entry['target']}: {shown if shown is not None else 'no mode yet'}"
        if "allocation" in entry and not entry.get("missing"):
            line += f", allocation {_pct(entry['allocation'])}"
        elif "allocation_error" in entry:
            line += f", allocation unknown ({entry['allocation_error']})"
        lines.append(line)
    if not report["agree"]:
        lines.append("WARNING: the channels disagree or one cannot be read")
    ramp = report.get("ramp")
    if ramp and ramp.get("event") == "ramp_waiting":
        needs = ramp.get("needs") or []
        how = " and ".join(("the --confirm-url to answer HTTP 200" if n == "confirm-url" else
                            f"`gradual-deploy ramp approve --deploy-audit-dir {_quoted(report.get('audit_dir'))}`")
                        for n in needs)
        lines.append(f"ramp: WAITING before {ramp.get('for')} ({ramp.get('reason')}), since {ramp.get('ts', '?')} "
                     f"(--wait-id {ramp.get('wait_id')}): waiting for {how or 'a confirmation'}")
    elif ramp and ramp.get("event") == "ramp_approved":
        lines.append(f"ramp: approved by {ramp.get('actor')} before {ramp.get('for')} ({ramp.get('ts', '?')}): "
                     "the ramp goes on at its next round")
    elif ramp and ramp.get("event") == "ramp_confirmed":
        lines.append(f"ramp: confirmed ({ramp.get('by')}) ({ramp.get('ts', '?')})")
    elif ramp:
        what = {"ramp_start": "started", "ramp_step": "set step", "ramp_step_held": "held step",
                "ramp_abort": "ABORTED at step", "ramp_stopped": "stopped at step", "ramp_done": "complete"}
        step = f" {ramp['step']}" if "step" in ramp else ""
        shown = (f", allocation {_pct(ramp.get('allocation'))}" if ramp.get("allocation") is not None
                 else "")
        lines.append(f"ramp: {what.get(ramp['event'], ramp['event'])}{step}{shown} ({ramp.get('ts', '?')})")
    evidence = report.get("evidence")
    if evidence:
        verdict = evidence["verdict"] or "none"
        # The age is read from the signed envelope: without a verified one there is none to tell.
        age = (f"{format_age(evidence['age_s'])} old" if evidence["age_s"] is not None
               else "age not read (only a verified signed envelope dates the evidence)")
        found = f"{evidence['path']}: verdict {verdict}, {age}" if evidence["path"] else "none"
        lines.append(f"evidence: {found}; "
                     + ("the gate would let `switch --to real` through" if evidence["gate_open"]
                        else "the gate is closed to `switch --to real`")
                     + f" (whatever the mode is now): {evidence['gate']}")
    return _sanitised(lines)


def _sanitised(lines: list[str]) -> list[str]:
    return [sanitise(line) for line in lines]


def _pct(value: Any) -> str:
    return "none" if value is None else f"{float(value) * 100:g}%"


def _quoted(path: Any) -> str:
    import shlex

    return shlex.quote(str(path)) if path else "DIR"
