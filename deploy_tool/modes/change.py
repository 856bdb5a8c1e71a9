"""Mode changes across channels, each audited: `switch` (all must confirm, compare-and-swap, evidence gate
for real), `pause` (any confirmation is enough, never blocked, bounded in time), and `status`.

Functions return an `Outcome` (or a status report); the CLI prints them.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

Scrub = Callable[[Any], Any]

from deploy_tool import audit
from deploy_tool.modes.channels import Channel, ChannelError, ChannelResult
from deploy_tool.modes.machine import decide
from deploy_tool.times import iso_utc

if TYPE_CHECKING:
    from deploy_tool.modes.gate import GateConfig

PAUSE_JOIN_S = 10.0
# Said last in every refusal --force overrides, after the fix: the honest next step comes first.
FORCE_LAST = " (or --force, audited as forced)"


class Outcome:
    """What one switch or pause did on each channel, and where its audit line went. (A plain class:
    `dataclasses` costs a pause 20 ms of imports.)"""

    def __init__(self, action: str, target: str, result: str, reason: str = "", forced: bool = False,
                 evidence: str | None = None, evidence_run: str | None = None, evidence_signer: str | None = None,
                 channels: list[ChannelResult] | None = None, audit: str | None = None,
                 audit_error: str | None = None) -> None:
        self.action = action  # "switch" or "pause"
        self.target = target
        # done, noop, refused, failed, partial, unconfirmed (written where no system is known to read)
        self.result = result
        self.reason = reason
        self.forced = forced
        self.evidence = evidence
        self.evidence_run = evidence_run  # run id of the evidence that opened real
        self.evidence_signer = evidence_signer  # key id that signed it
        self.channels: list[ChannelResult] = [] if channels is None else channels
        self.audit = audit  # the audit file the line went to
        self.audit_error = audit_error

    def __repr__(self) -> str:
        return (f"Outcome(action={self.action!r}, target={self.target!r}, result={self.result!r}, "
                f"reason={self.reason!r}, forced={self.forced!r}, channels={self.channels!r})")

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
        except Exception as exc:  # kept, never raised: the change is done and its report must be printed
            self.audit_error = f"cannot write the audit line to {audit_dir}: {type(exc).__name__}: {exc}"
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
        unread = ", ".join(e.channel for e in errors)
        return Outcome("switch", target, "failed", f"could not read the current mode on {unread}: nothing changed; "
                       "fix that channel (its error says what it answered), then switch again", channels=errors)
    outcome = Outcome("switch", target, "refused", channels=[
        ChannelResult(c.name, c.target, before=modes[c.name], after=modes[c.name]) for c in channels])
    decisions = {c.name: decide(modes[c.name], target, force) for c in channels}
    refused: dict[str, list[str]] = {}  # one reason, the channels it holds for: said once
    for name, d in decisions.items():
        if not d.allowed:
            refused.setdefault(d.reason, []).append(name)
    if refused:
        outcome.reason = "; ".join(f"{', '.join(names)}: {why}" for why, names in refused.items())
        if any(d.forceable for d in decisions.values() if not d.allowed):
            outcome.reason += FORCE_LAST
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
                outcome.reason = f"evidence gate: {gate.reason}{FORCE_LAST}"
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
        changed = [r.channel for r in results if r.ok and not decisions[r.channel].noop]
        outcome.reason += (f"; {', '.join(changed)} already changed to {target}: the channels disagree now "
                           "(`gradual-deploy status` shows each); fix the failed channel and switch again, or "
                           "`gradual-deploy pause`" if changed else
                           "; nothing changed: fix the failed channel (its error says what it answered), then switch "
                           "again")
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
    deadline = time.monotonic() + PAUSE_JOIN_S  # one bound for all channels together, not one each
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
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
        path = getattr(channel, "path", None)
        if entry.get("mode") is None and "error" not in entry and path is not None:
            entry["missing"] = not os.path.lexists(path)  # a typo'd --control-file, not "no mode yet"
        if "error" not in entry:
            try:
                entry["allocation"] = channel.read_allocation()
            except ChannelError as exc:
                entry["allocation_error"] = str(exc)
        report["channels"].append(entry)
    if audit_dir:
        report["audit_dir"] = audit_dir
        events = audit.read_events(audit_dir, RAMP_PROGRESS)
        report["ramp"] = events[-1] if events else None
    readable = [c for c in report["channels"] if "error" not in c and not c.get("missing")]
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
