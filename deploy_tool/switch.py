"""Mode changes across channels: `switch` (all must confirm, compare-and-swap, evidence gate for real)
and `pause` (any confirmation is enough, never blocked, bounded in time), and `status`.

Functions return an `Outcome`; the CLI prints it and writes the audit line.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from deploy_tool.channels import ChannelError, ChannelResult
from deploy_tool.modes import decide, evidence_gate


@dataclass
class Outcome:
    action: str  # "switch" or "pause"
    target: str
    result: str  # done, noop, refused, failed, partial
    reason: str = ""
    forced: bool = False
    evidence: str | None = None
    channels: list[ChannelResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result in ("done", "noop", "partial")

    def before(self) -> str | None:
        seen = {c.before for c in self.channels}
        return seen.pop() if len(seen) == 1 else ("mixed" if seen else None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action, "from": self.before(), "to": self.target, "result": self.result,
            "ok": self.ok, "reason": self.reason, "forced": self.forced, "evidence": self.evidence,
            "channels": [c.as_dict() for c in self.channels],
        }

    def audit_record(self, actor: str, reason: str) -> dict[str, Any]:
        """The audit line of this action (CONTRACT section 4), with what each channel saw."""
        record = self.as_dict()
        return {
            "event": "mode_switch", "action": record["action"], "from": record["from"], "to": record["to"],
            "channel": "+".join(c.channel for c in self.channels), "actor": actor, "reason": reason,
            "result": record["result"], "forced": record["forced"], "evidence": record["evidence"],
            "detail": record["reason"], "channels": record["channels"],
        }


def _read_all(channels: Sequence[Any]) -> tuple[dict[str, str | None], list[ChannelResult]]:
    modes: dict[str, str | None] = {}
    errors = []
    for channel in channels:
        try:
            modes[channel.name] = channel.read()
        except ChannelError as exc:
            errors.append(ChannelResult(channel.name, channel.target, error=f"cannot read the mode: {exc}"))
    return modes, errors


def switch(channels: Sequence[Any], target: str, *, force: bool, reason: str, actor: str, evidence_dir: str,
           max_evidence_age_s: float, after_read: Callable[[], None] | None = None) -> Outcome:
    """Change every channel to `target`; succeed only if every channel confirms."""
    if target == "paused":
        outcome = pause(channels, reason=reason, actor=actor)
        outcome.action = "switch"
        if outcome.result == "partial":
            outcome.result = "failed"
        return outcome
    modes, errors = _read_all(channels)
    if errors:
        return Outcome("switch", target, "failed", "could not read the current mode: nothing changed", channels=errors)
    outcome = Outcome("switch", target, "refused", channels=[
        ChannelResult(c.name, c.target, before=modes[c.name], after=modes[c.name]) for c in channels])
    decisions = {c.name: decide(modes[c.name], target, force) for c in channels}
    refused = [f"{name}: {d.reason}" for name, d in decisions.items() if not d.allowed]
    if refused:
        outcome.reason = "; ".join(refused)
        return outcome
    outcome.forced = any(d.forced for d in decisions.values())
    if all(d.noop for d in decisions.values()):
        outcome.result, outcome.reason = "noop", f"already {target} on every channel"
        for c in outcome.channels:
            c.ok = True
        return outcome
    if target == "real":
        gate = evidence_gate(evidence_dir, max_evidence_age_s)
        outcome.evidence = gate.evidence
        if not gate.ok:
            if not force:
                outcome.reason = f"evidence gate: {gate.reason} (or --force)"
                return outcome
            outcome.forced = True
            outcome.reason = f"forced past the evidence gate: {gate.reason}"
        else:
            outcome.reason = gate.reason
    if after_read is not None:
        after_read()  # a seam for tests: something may happen between the read and the write
    results = []
    for channel in channels:
        if decisions[channel.name].noop:
            results.append(ChannelResult(channel.name, channel.target, target, target, ok=True, note="already there"))
            continue
        results.append(channel.apply(target, modes[channel.name], reason, actor, cas=True))
    outcome.channels = results
    outcome.result = "done" if all(r.ok for r in results) else "failed"
    if outcome.result == "failed":
        problems = "; ".join(f"{r.channel}: {r.error}" for r in results if not r.ok)
        outcome.reason = f"{problems}" + ("" if not outcome.reason else f" ({outcome.reason})")
    return outcome


def pause(channels: Sequence[Any], *, reason: str, actor: str) -> Outcome:
    """Pause through every channel at once; done if all confirm, partial if some, failed if none."""
    results: list[ChannelResult | None] = [None] * len(channels)

    def run(index: int, channel: Any) -> None:
        try:
            results[index] = channel.apply("paused", None, reason, actor, cas=False)
        except Exception as exc:  # one channel's surprise must not cost the other its pause
            results[index] = ChannelResult(channel.name, channel.target, error=f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=run, args=(i, c), daemon=True) for i, c in enumerate(channels)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    done = [r if r is not None else ChannelResult(c.name, c.target, error="did not finish within 10 s")
            for r, c in zip(results, channels, strict=True)]
    confirmed = [r for r in done if r.ok]
    result = "done" if len(confirmed) == len(done) else ("partial" if confirmed else "failed")
    problems = "; ".join(f"{r.channel}: {r.error}" for r in done if not r.ok)
    return Outcome("pause", "paused", result, reason=problems, channels=done)


def status(channels: Sequence[Any], evidence_dir: str | None, max_evidence_age_s: float) -> dict[str, Any]:
    """The mode on each channel, whether they agree, and the newest evidence."""
    report: dict[str, Any] = {"channels": []}
    modes = set()
    for channel in channels:
        entry: dict[str, Any] = {"channel": channel.name, "target": channel.target}
        try:
            entry["mode"] = channel.read()
            modes.add(entry["mode"])
        except ChannelError as exc:
            entry["error"] = str(exc)
        report["channels"].append(entry)
    readable = [c for c in report["channels"] if "error" not in c]
    report["agree"] = len(modes) <= 1 and len(readable) == len(report["channels"])
    report["mode"] = modes.pop() if len(modes) == 1 and report["agree"] else None
    if evidence_dir:
        gate = evidence_gate(evidence_dir, max_evidence_age_s)
        doc = gate.doc or {}
        age = None
        if doc:
            try:
                from deploy_tool.units import parse_timestamp, utc_now

                age = round((utc_now() - parse_timestamp(doc.get("finished_at"))).total_seconds(), 1)
            except (ValueError, TypeError):
                age = None
        report["evidence"] = {
            "path": gate.evidence,
            "verdict": doc.get("verdict"),
            "finished_at": doc.get("finished_at"),
            "age_s": age,
            "gate_open": gate.ok,
            "gate": gate.reason,
        }
    report["ok"] = report["agree"] and bool(readable)
    return report
