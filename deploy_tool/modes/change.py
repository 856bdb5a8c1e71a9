"""Mode changes across channels, each audited: `switch` (all must confirm, compare-and-swap, evidence gate
for real), `pause` (any confirmation is enough, never blocked, bounded in time), and `status`.

Functions return an `Outcome` (or a status report); the CLI prints them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

Scrub = Callable[[Any], Any]

from deploy_tool import audit
from deploy_tool.modes.channels import Channel, ChannelError, ChannelResult
from deploy_tool.modes.machine import decide
from deploy_tool.times import iso_utc

if TYPE_CHECKING:
    from deploy_tool.modes.gate import GateConfig

PAUSE_JOIN_S = 10.0


@dataclass
class Outcome:
    """What one switch or pause did on each channel, and where its audit line went."""

    action: str  # "switch" or "pause"
    target: str
    result: str  # done, noop, refused, failed, partial, unconfirmed (written where no system is known to read)
    reason: str = ""
    forced: bool = False
    evidence: str | None = None
    evidence_run: str | None = None  # run id of the evidence that opened real
    evidence_signer: str | None = None  # key id that signed it
    channels: list[ChannelResult] = field(default_factory=list)
    audit: str | None = None  # the audit file the line went to
    audit_error: str | None = None

    @property
    def ok(self) -> bool:
        return self.result in ("done", "noop", "partial")

    def before(self) -> str | None:
        seen = {c.before for c in self.channels}
        return seen.pop() if len(seen) == 1 else ("mixed" if seen else None)

    def as_dict(self) -> dict[str, Any]:
        record = {
            "action": self.action, "from": self.before(), "to": self.target, "result": self.result,
            "ok": self.ok, "reason": self.reason, "forced": self.forced, "evidence": self.evidence,
            "channels": [c.as_dict() for c in self.channels],
        }
        if self.audit:
            record["audit"] = self.audit
        if self.audit_error:
            record["audit_error"] = self.audit_error
        return record

    def audit_record(self, actor: str, reason: str) -> dict[str, Any]:
        """The audit line of this action (CONTRACT section 4), with what each channel saw."""
        return {
            "event": "mode_switch", "action": self.action, "from": self.before(), "to": self.target,
            "channel": "+".join(c.channel for c in self.channels), "actor": actor, "reason": reason,
            "result": self.result, "forced": self.forced, "evidence": self.evidence,
            "evidence_run": self.evidence_run, "evidence_signer": self.evidence_signer,
            "detail": self.reason, "channels": [c.as_dict() for c in self.channels],
        }

    def write_audit(self, audit_dir: str | None, actor: str, reason: str, scrub: Scrub | None = None) -> Outcome:
        """Append this outcome's audit line; a failure to do so is kept, never raised."""
        if audit_dir is None:
            return self
        record = self.audit_record(actor, reason)
        try:
            self.audit = audit.append(audit_dir, scrub(record) if scrub else record)
        except audit.AuditError as exc:
            self.audit_error = str(exc)
        return self


def _read_all(channels: Sequence[Channel]) -> tuple[dict[str, str | None], list[ChannelResult]]:
    modes: dict[str, str | None] = {}
    errors = []
    for channel in channels:
        try:
            modes[channel.name] = channel.read()
        except ChannelError as exc:
            errors.append(ChannelResult(channel.name, channel.target, error=f"cannot read the mode: {exc}"))
    return modes, errors


def switch(channels: Sequence[Channel], target: str, *, force: bool, reason: str, actor: str, gate: GateConfig,
           audit_dir: str | None = None, scrub: Scrub | None = None) -> Outcome:
    """Change every channel to `target`; succeed only if every channel confirms. Audited in audit_dir.
    `real` needs the evidence gate open (`gate` says where the evidence is and what it must match)."""
    return _switch(channels, target, force=force, reason=reason, actor=actor, gate_cfg=gate
                   ).write_audit(audit_dir, actor, reason, scrub)


def _switch(channels: Sequence[Channel], target: str, *, force: bool, reason: str, actor: str,
            gate_cfg: GateConfig) -> Outcome:
    if target == "paused":
        outcome = _pause(channels, reason=reason, actor=actor)
        outcome.action = "switch"
        if outcome.result in ("partial", "unconfirmed"):
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
        from deploy_tool.modes.gate import evidence_gate, mark_used  # not on the path of `pause`

        gate = evidence_gate(gate_cfg, channels=channels)
        outcome.evidence = gate.path
        outcome.evidence_signer = gate.signer
        outcome.evidence_run = gate.evidence.run_id if gate.evidence else None
        if not gate.ok:
            if not force:
                outcome.reason = f"evidence gate: {gate.reason} (or --force)"
                return outcome
            outcome.forced = True
            outcome.reason = f"forced past the evidence gate: {gate.reason}"
        else:
            outcome.forced = outcome.forced or gate.forced
            outcome.reason = gate.reason
    results = []
    for channel in channels:
        if decisions[channel.name].noop:
            results.append(ChannelResult(channel.name, channel.target, target, target, ok=True, note="already there"))
            continue
        results.append(channel.apply(target, modes[channel.name], reason, actor, cas=True))
    outcome.channels = results
    outcome.result = "done" if all(r.ok for r in results) else "failed"
    if target == "real" and outcome.result == "done" and gate.ok:  # a forced switch uses up no run
        problem = mark_used(gate, channels, gate_cfg.evidence_dir)
        if problem:
            outcome.reason = f"{outcome.reason}; WARNING: {problem}"
    if outcome.result == "failed":
        problems = "; ".join(f"{r.channel}: {r.error}" for r in results if not r.ok)
        outcome.reason = f"{problems}" + ("" if not outcome.reason else f" ({outcome.reason})")
    return outcome


def pause(channels: Sequence[Channel], *, reason: str, actor: str, audit_dir: str | None = None,
          scrub: Scrub | None = None) -> Outcome:
    """Pause through every channel at once; done if all confirm, partial if some, failed if none. Audited."""
    return _pause(channels, reason=reason, actor=actor).write_audit(audit_dir, actor, reason, scrub)


def _pause(channels: Sequence[Channel], *, reason: str, actor: str) -> Outcome:
    results: list[ChannelResult | None] = [None] * len(channels)

    def run(index: int, channel: Channel) -> None:
        try:
            results[index] = channel.apply("paused", None, reason, actor, cas=False)
        except Exception as exc:  # one channel's surprise must not cost the other its pause
            results[index] = ChannelResult(channel.name, channel.target, error=f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=run, args=(i, c), daemon=True) for i, c in enumerate(channels)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=PAUSE_JOIN_S)
    done = [r if r is not None else ChannelResult(c.name, c.target, error=f"did not finish within {PAUSE_JOIN_S:g} s")
            for r, c in zip(results, channels, strict=True)]
    confirmed = [r for r in done if r.ok]
    written = [r for r in done if r.created and r.after == "paused"]
    result = ("done" if len(confirmed) == len(done) else "partial" if confirmed
              else "unconfirmed" if written else "failed")
    problems = "; ".join(f"{r.channel}: {r.error}" for r in done if not r.ok)
    return Outcome("pause", "paused", result, reason=problems, channels=done)


RAMP_PROGRESS = ("ramp_start", "ramp_step", "ramp_step_held", "ramp_abort", "ramp_stopped", "ramp_done",
                 "ramp_waiting", "ramp_confirmed", "ramp_approved")


def status(channels: Sequence[Channel], gate_cfg: GateConfig | None, audit_dir: str | None = None) -> dict[str, Any]:
    """The mode and allocation on each channel, whether they agree, the newest evidence, and the ramp's
    progress from the audit."""
    report: dict[str, Any] = {"channels": []}
    modes = set()
    for channel in channels:
        entry: dict[str, Any] = {"channel": channel.name, "target": channel.target}
        try:
            entry["mode"] = channel.read()
            modes.add(entry["mode"])
        except ChannelError as exc:
            entry["error"] = str(exc)
        if "error" not in entry:
            try:
                entry["allocation"] = channel.read_allocation()
            except ChannelError as exc:
                entry["allocation_error"] = str(exc)
        report["channels"].append(entry)
    if audit_dir:
        events = audit.read_events(audit_dir, RAMP_PROGRESS)
        report["ramp"] = events[-1] if events else None
    readable = [c for c in report["channels"] if "error" not in c]
    report["agree"] = len(modes) <= 1 and len(readable) == len(report["channels"])
    report["mode"] = modes.pop() if len(modes) == 1 and report["agree"] else None
    if gate_cfg is not None:
        from deploy_tool.modes.gate import evidence_gate  # not on the path of `pause`

        gate = evidence_gate(gate_cfg, channels=channels)
        report["evidence"] = {
            "path": gate.path,
            "verdict": gate.evidence.verdict if gate.evidence else None,
            "finished_at": iso_utc(gate.evidence.finished_at) if gate.evidence else None,
            "age_s": round(gate.age_s, 1) if gate.age_s is not None else None,
            "gate_open": gate.ok,
            "gate": gate.reason,
            "signer": gate.signer,
        }
    report["ok"] = report["agree"] and bool(readable)
    return report
