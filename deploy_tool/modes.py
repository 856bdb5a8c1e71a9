"""The mode state machine and the evidence gate in front of `real` (CONTRACT section 4).

Pure decisions, no I/O besides reading the evidence: the channels that carry a change live in
`channels.py`, the orchestration in `switch.py`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from deploy_tool import MODES
from deploy_tool.units import format_age, parse_timestamp

ALLOWED = {("paused", "mock"), ("mock", "real"), ("real", "mock")}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""
    forced: bool = False
    noop: bool = False


def decide(current: str | None, target: str, force: bool = False) -> Decision:
    """May a channel in `current` (None: no mode yet) go to `target`?"""
    if target not in MODES:
        return Decision(False, f"unknown mode {target!r}: one of {', '.join(MODES)}")
    if target == "paused":
        return Decision(True, noop=current == "paused")
    if current == target:
        return Decision(True, "already in this mode", noop=True)
    if current is None:
        if target == "real":
            if force:
                return Decision(True, "no mode yet -> real forced", forced=True)
            return Decision(False, "no mode yet: go to mock first to rehearse, or --force")
        return Decision(True)
    if (current, target) in ALLOWED:
        return Decision(True)
    if force:
        return Decision(True, f"{current} -> {target} forced", forced=True)
    return Decision(False, f"{current} -> {target} is not allowed: rehearse in mock first (paused -> mock -> real), or --force")


@dataclass(frozen=True)
class Gate:
    ok: bool
    reason: str
    evidence: str | None = None  # the evidence file the decision rests on
    doc: dict | None = None  # its content


def evidence_gate(evidence_dir: str, max_age_s: float, now: dt.datetime | None = None) -> Gate:
    """Is the newest preflight evidence a fresh pass without a skipped required check?"""
    from deploy_tool.evidence import newest_evidence

    found = newest_evidence(evidence_dir)
    if found is None:
        return Gate(False, f"no preflight evidence in {evidence_dir}: run `gradual-deploy preflight` first")
    path, doc = found
    name = str(path)
    if doc.get("verdict") != "pass":
        return Gate(False, f"newest evidence {name} has verdict {doc.get('verdict')!r}, not pass", name, doc)
    try:
        finished = parse_timestamp(doc.get("finished_at"))
    except (ValueError, TypeError):
        return Gate(False, f"newest evidence {name} has no valid finished_at", name, doc)
    now = now or dt.datetime.now(dt.timezone.utc)
    age = (now - finished).total_seconds()
    if age > max_age_s:
        return Gate(False, f"newest evidence {name} is {format_age(age)} old, max {format_age(max_age_s)}: "
                           "run the preflight again", name, doc)
    if age < -60:
        return Gate(False, f"newest evidence {name} finished {format_age(-age)} in the future: check clocks", name, doc)
    skipped = [c.get("id") for c in doc.get("checks", []) if c.get("status") == "skipped" and c.get("required")]
    if skipped:
        return Gate(False, f"newest evidence {name} skipped required checks: {', '.join(map(str, skipped))}", name, doc)
    return Gate(True, f"newest evidence {Path(name).name}: pass, {format_age(age)} old", name, doc)
