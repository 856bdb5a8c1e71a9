"""The evidence gate in front of `real`: is the newest preflight evidence a fresh pass?"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from deploy_tool.evidence import Evidence, newest
from deploy_tool.times import format_age, utc_now

CLOCK_TOLERANCE_S = 60.0


@dataclass(frozen=True)
class Gate:
    """The gate's decision and the evidence it rests on."""

    ok: bool
    reason: str
    path: str | None = None  # the evidence file the decision rests on
    evidence: Evidence | None = None
    age_s: float | None = None


def evidence_gate(evidence_dir: str, max_age_s: float, now: dt.datetime | None = None) -> Gate:
    """Is the newest preflight evidence a fresh pass without a skipped required check?"""
    found = newest(evidence_dir)
    if found is None:
        return Gate(False, f"no preflight evidence in {evidence_dir}: run `gradual-deploy preflight` first")
    path, evidence = found
    name = str(path)
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
    return Gate(True, f"newest evidence {Path(name).name}: pass, {format_age(age)} old", name, evidence, age)
