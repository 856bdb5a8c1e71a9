"""The evidence gate in front of `real`: is the newest preflight evidence a fresh, complete pass, made
against the very channels being switched?

Every rule refuses with the reason; none can be satisfied by a document's say-so alone: the verdict is
recomputed from the checks, each required group must be there with every check passed, the document's
own `skipped` list counts, and its targets must be this deployment's.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from deploy_tool import fileops
from deploy_tool.evidence import REQUIRED_GROUPS, Evidence, newest
from deploy_tool.times import format_age, utc_now

if TYPE_CHECKING:
    from deploy_tool.modes.channels import Channel

CLOCK_TOLERANCE_S = 60.0


@dataclass(frozen=True)
class Gate:
    """The gate's decision and the evidence it rests on."""

    ok: bool
    reason: str
    path: str | None = None  # the evidence file the decision rests on
    evidence: Evidence | None = None
    age_s: float | None = None


def _incomplete(evidence: Evidence) -> str | None:
    """Why the evidence does not show every required group measured and passed, or None."""
    problems = []
    for group in REQUIRED_GROUPS:
        checks = [c for c in evidence.checks if c.marker == group]
        if not checks:
            problems.append(f"no {group} check ran")
            continue
        bad = [f"{c.id} {c.status}" for c in checks if c.status != "passed"]
        if bad:
            problems.append(f"{group}: {', '.join(bad)}")
    declared = [str(s.get("id")) for s in evidence.declared_skipped
                if s.get("required") or s.get("marker") in REQUIRED_GROUPS]
    if declared:
        problems.append(f"its skipped list names required checks: {', '.join(declared)}")
    if evidence.skips_requested:
        problems.append(f"required checks skipped on request: {', '.join(evidence.skips_requested)}")
    return "; ".join(problems) or None


def _foreign(evidence: Evidence, channels: Sequence[Channel]) -> str | None:
    """Why the evidence was not made against these channels, or None."""
    problems = []
    for channel in channels:
        if channel.name == "http":
            seen = str(evidence.targets.get("http_admin_url") or "").rstrip("/")
            if seen != channel.target.rstrip("/"):
                problems.append(f"it checked the admin API {seen or 'not at all'}, this switch goes through "
                                f"{channel.target}")
        elif channel.name == "file":
            seen = str(evidence.targets.get("control_file") or "")
            if not seen or not fileops.same_path(seen, channel.target):
                problems.append(f"it checked the control file {seen or 'not at all'}, this switch writes "
                                f"{channel.target}")
    return "; ".join(problems) or None


def evidence_gate(evidence_dir: str, max_age_s: float, now: dt.datetime | None = None,
                  channels: Sequence[Channel] = ()) -> Gate:
    """Is the newest preflight evidence a fresh, complete pass, made against `channels` (when given)?"""
    found = newest(evidence_dir)
    if found is None:
        return Gate(False, f"no preflight evidence in {evidence_dir}: run `gradual-deploy preflight` first")
    name = str(found.path)
    if found.evidence is None:
        return Gate(False, f"newest evidence {name} {found.error}: run the preflight again", name)
    evidence = found.evidence
    age = ((now or utc_now()) - evidence.finished_at).total_seconds()

    def refuse(reason: str) -> Gate:
        return Gate(False, f"newest evidence {name} {reason}", name, evidence, age)

    if evidence.declared_verdict != "pass":
        return refuse(f"has verdict {evidence.declared_verdict!r}, not pass")
    if evidence.verdict != "pass":  # a document that says pass over checks that do not
        failed = [c.id for c in evidence.checks if c.status == "failed"]
        return refuse("says pass but " + (f"holds failed checks: {', '.join(failed)}" if failed
                                          else "holds no passed check"))
    if age > max_age_s:
        return refuse(f"is {format_age(age)} old, max {format_age(max_age_s)}: run the preflight again")
    if age < -CLOCK_TOLERANCE_S:
        return refuse(f"finished {format_age(-age)} in the future: check clocks")
    skipped = [c.id for c in evidence.skipped if c.required]
    if skipped:
        return refuse(f"skipped required checks: {', '.join(skipped)}")
    incomplete = _incomplete(evidence)
    if incomplete:
        return refuse(f"is not a complete go-live pass ({incomplete}): run the whole suite "
                      "(`gradual-deploy preflight`) without skips")
    foreign = _foreign(evidence, channels)
    if foreign:
        return refuse(f"was made against another deployment ({foreign}): run the preflight against the "
                      "channels you switch")
    return Gate(True, f"newest evidence {Path(name).name}: pass, {format_age(age)} old", name, evidence, age)
