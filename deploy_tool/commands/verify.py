"""`gradual-deploy verify`: an auditor's offline check of one archived evidence with the public key.

It verifies the DSSE signature against the pinned keys, reads the run from the signed statement (never
from the plain JSON), recomputes the verdict and the manifest of required checks, and, for each file the
auditor holds (`--subject`), that it hashes like one of the statement's subjects. No network, no channel.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from deploy_tool.evidence import ATTESTATION_SUFFIX, Evidence, EvidenceError, attestation_path
from deploy_tool.times import format_age, iso_utc, utc_now


@dataclass
class Report:
    """What `verify` found; `ok` only when every part verified."""

    evidence: str
    signer: str | None = None
    run_id: str | None = None
    subjects: list[dict[str, Any]] = field(default_factory=list)
    verdict: str | None = None
    complete: bool = False
    targets: dict[str, Any] = field(default_factory=dict)
    finished_at: str | None = None
    age_s: float | None = None
    matched: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.signer is not None and self.verdict == "pass" and self.complete

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "evidence": self.evidence, "run_id": self.run_id, "signer": self.signer,
                "subjects": self.subjects,
                "verdict": self.verdict, "complete": self.complete, "targets": self.targets,
                "finished_at": self.finished_at, "age_s": self.age_s, "matched": self.matched,
                "problems": self.problems}


def verify_evidence(path: str, trusted_keys: str, given: Sequence[str] = (), now: dt.datetime | None = None) -> Report:
    """Verify the evidence at `path` (its .intoto.json, or the plain JSON beside it) offline."""
    from deploy_tool.attest import subject_problems
    from deploy_tool.modes.gate import RERUN, Unverified, belongs_to, complete_run, incomplete, read_signed, selected

    plain = path.endswith(".json") and not path.endswith(ATTESTATION_SUFFIX)
    envelope_path = attestation_path(path) if plain else Path(path)
    report = Report(str(envelope_path))
    try:
        evidence, keyid = read_signed(envelope_path, trusted_keys)
    except Unverified as exc:
        report.problems.append(f"{envelope_path.name} {exc}")
        return report
    report.signer = keyid
    report.run_id = evidence.run_id
    report.subjects = evidence.subjects
    report.verdict = evidence.verdict
    if plain:  # the envelope beside a JSON must be that run's, not another run's copied over it
        from deploy_tool import fileops

        try:
            beside: Any = json.loads(fileops.read_text(path))
        except (OSError, ValueError, RecursionError) as exc:
            report.problems.append(f"{path} cannot be read: {exc}: give a preflight-*.json that can, or its "
                                   ".intoto.json alone")
            beside = {}
        other = belongs_to(evidence, Path(path), beside.get("run_id") if isinstance(beside, dict) else None)
        if other:
            report.problems.append(f"{envelope_path.name} is the signature of another run: {other}; or verify "
                                   f"{envelope_path.name} alone, as that other run")
    if evidence.declared_verdict != evidence.verdict:
        report.problems.append(f"the evidence says {evidence.declared_verdict!r}, its checks say {evidence.verdict!r}: "
                               f"it contradicts itself and proves nothing; {RERUN}")
    lacking = incomplete(evidence)
    report.complete = lacking is None
    if lacking:
        # the failed checks of a FAIL have their own fix, below; what was left out, here
        left_out = selected(evidence) or evidence.skips_requested or evidence.verdict == "pass"
        report.problems.append(f"not a complete go-live run: {lacking}"
                               + (f": {complete_run(evidence, 'verify the new evidence')}" if left_out else ""))
    if evidence.verdict != "pass":
        failed = [c.id for c in evidence.checks if c.status == "failed"]
        report.problems.append("the verdict is FAIL" + (f" (failed: {', '.join(failed[:5])}"
                                                        + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
                                                        + ")" if failed else "")
                               + f": fix what failed (each failed check says how), then {RERUN}")
    report.targets = evidence.targets
    report.finished_at = iso_utc(evidence.finished_at)
    report.age_s = ((now or utc_now()) - evidence.finished_at).total_seconds()
    problems, matched = subject_problems(evidence.subjects, given)
    report.problems.extend(problems)
    report.matched = matched
    return report


def report_lines(report: Report) -> list[str]:
    head = "VERIFIED" if report.ok else "NOT VERIFIED"
    lines = [f"verify {report.evidence}: {head}"]
    lines.append(f"  signer   : {report.signer or 'none that is trusted'}")
    if report.run_id:
        lines.append(f"  run      : {report.run_id}")
    for item in report.subjects:
        digest = item.get("digest") or {}
        role = (item.get("annotations") or {}).get("role", "")
        shown = ", ".join(f"{k}:{v}" for k, v in digest.items())
        name = "" if item.get("name") == role else f" {item.get('name')}"
        lines.append(f"  subject  : {role}{name} {shown}")
    for line in report.matched:
        lines.append(f"  matches  : {line}")
    if report.verdict is not None:
        lines.append(f"  verdict  : {report.verdict.upper()}" + ("" if report.complete else " (not a complete run)"))
    for key, value in report.targets.items():
        lines.append(f"  target   : {key} = {value}")
    if report.finished_at is not None and report.age_s is not None:
        lines.append(f"  finished : {report.finished_at} ({format_age(report.age_s)} ago)")
    for problem in report.problems:
        lines.append(f"  problem  : {problem}")
    return lines
