"""`gradual-deploy ramp`: raise the allocation step by step, each step held clean under watch before the
next, and back to the first ("stable") step and `paused` on a breach.

Modelled on canary analysis (Argo Rollouts' setWeight / pause / analysis with failureLimit; an abort
returns to the stable weight), for capital. Every step is a compare-and-swap on each channel's
allocation with read-back, every step and hold is audited, and the state lives in the channels and the
audit, not in memory: a ramp that died mid-step resumes by holding that step again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from deploy_tool import audit
from deploy_tool.commands.watch import (
    EXIT_BREACH,
    EXIT_INTERRUPTED,
    EXIT_OK,
    SYSTEM_CLOCK,
    Clock,
    WatchConfig,
    breach_reason,
    channel_lines,
    emit_channels,
    guard,
    snapshot,
)
from deploy_tool.modes.change import pause
from deploy_tool.modes.channels import Channel, ChannelError, ChannelResult, same_allocation
from deploy_tool.modes.gate import GateConfig, evidence_gate
from deploy_tool.times import format_duration, iso_utc, utc_now

RAMP_EVENTS = ("ramp_step", "ramp_step_held", "ramp_abort", "ramp_stopped", "ramp_done", "ramp_refused")


def pct(value: float | None) -> str:
    return "none" if value is None else f"{value * 100:g}%"


@dataclass(frozen=True)
class Resume:
    """Where a ramp starts: the step to run first, and whether its allocation is already set."""

    index: int  # len(steps): nothing left to do
    already_set: bool
    why: str


def resume_point(steps: Sequence[float], current: float | None, history: Sequence[dict[str, Any]]) -> Resume:
    """The next step from the current allocation and the audit: a step whose hold is not recorded as
    held (the ramp died, or aborted, during it) is held again before the ramp goes on."""
    if current is None or current < steps[0] - 1e-12:
        return Resume(0, False, f"allocation {pct(current)}: starting at the first step")
    for index, step in enumerate(steps):
        if same_allocation(current, step):
            last = next((r for r in reversed(history) if same_allocation(r.get("allocation"), step)), None)
            if last is not None and last.get("event") in ("ramp_step_held", "ramp_done"):
                # The next step is not set yet: it must be taken (set and read back), never assumed.
                return Resume(index + 1, False, f"allocation {pct(step)} was held clean "
                                               f"({last.get('ts', '?')}): going on from the next step")
            return Resume(index, True, f"allocation {pct(step)} has no clean hold on record: holding it again")
        if current < step:
            return Resume(index, False, f"allocation {pct(current)} lies between steps: going on at {pct(step)}")
    return Resume(len(steps), True, f"allocation {pct(current)} is at or beyond the last step")


def plan_lines(steps: Sequence[float], hold_s: float, start: Resume | None = None) -> list[str]:
    """The schedule, and the minimum time to full allocation."""
    first = start.index if start else 0
    lines = [f"ramp plan: {len(steps)} step(s), each held {format_duration(hold_s)} before the next"]
    for index, step in enumerate(steps):
        mark = "done" if index < first else ("now " if index == first else "    ")
        lines.append(f"  {mark} step {index + 1}: allocation {pct(step)}, hold {format_duration(hold_s)}")
    left = len(steps) - first
    if start:
        lines.append(f"  {start.why}")
    lines.append(f"minimum time to full allocation {pct(steps[-1])}: {format_duration(left * hold_s) if left else '0s'} "
                 f"({left} step(s) left; a breach at any step goes back to {pct(steps[0])} and paused)")
    return lines


def _read_allocations(channels: Sequence[Channel]) -> tuple[dict[str, float | None], list[str]]:
    values: dict[str, float | None] = {}
    problems = []
    for channel in channels:
        try:
            values[channel.name] = channel.read_allocation()
        except ChannelError as exc:
            problems.append(f"{channel.name}: cannot read the allocation: {exc}")
    return values, problems


def preflight(cfg: WatchConfig, channels: Sequence[Channel],
              force: bool) -> tuple[str | None, dict[str, float | None], float]:
    """Why the ramp must not start (or None), each channel's allocation, and the ceiling (`ceiling`)."""
    settings = cfg.settings
    assert settings.steps is not None
    for channel in channels:
        try:
            mode = channel.read()
        except ChannelError as exc:
            return f"{channel.name}: cannot read the mode: {exc}", {}, settings.max_allocation
        if mode != "real":
            return (f"{channel.name} {channel.target} is in {mode or 'no mode'}: a ramp starts only in real", {},
                    settings.max_allocation)
    gate = evidence_gate(GateConfig.from_settings(settings), channels=channels)
    if not gate.ok:
        return f"evidence gate: {gate.reason}", {}, settings.max_allocation
    cfg.gate_forced = gate.forced  # opened on unsigned evidence: the ramp's start is audited as forced
    limit, source = ceiling(settings.max_allocation, gate.evidence.thresholds if gate.evidence else {})
    above = [s for s in settings.steps if s > limit + 1e-12]
    if above and not force:
        return (f"step(s) {', '.join(pct(s) for s in above)} above {pct(limit)}, {source}: a step above what the "
                "gate checked needs a preflight run with a higher --max-allocation (new evidence), or --force "
                "(audited as forced)"), {}, limit
    values, problems = _read_allocations(channels)
    if problems:
        return "; ".join(problems), {}, limit
    known = {name: v for name, v in values.items() if v is not None}
    if len({round(v, 12) for v in known.values()}) > 1:
        return ("the channels disagree on the allocation (" + ", ".join(f"{n} {pct(v)}" for n, v in known.items())
                + "): set them equal first"), {}, limit
    return None, values, limit


def ceiling(max_allocation: float, thresholds: dict[str, Any]) -> tuple[float, str]:
    """The highest allocation a ramp may reach without --force, and where that limit comes from: the lower of
    --max-allocation and the max_allocation the evidence's run was judged against."""
    checked = thresholds.get("max_allocation")
    if isinstance(checked, (int, float)) and not isinstance(checked, bool) and checked < max_allocation:
        return float(checked), "the max_allocation the evidence's preflight checked"
    return max_allocation, "--max-allocation"


def _set_step(channels: Sequence[Channel], allocation: float, current: dict[str, float | None], reason: str,
              actor: str, cas: bool = True) -> list[ChannelResult]:
    return [c.apply_allocation(allocation, current.get(c.name), reason, actor, cas=cas) for c in channels]


def not_real(channels: Sequence[Channel]) -> str | None:
    """Why the ramp must not go on (a channel not in real, or one whose mode cannot be read), or None. A
    pause always wins: whoever paused or switched to mock, the ramp stops and raises nothing."""
    seen = []
    for channel in channels:
        try:
            mode = channel.read()
        except ChannelError as exc:
            return f"{channel.name} {channel.target}: cannot read the mode ({exc})"
        seen.append(f"{channel.name} {mode or 'no mode'}")
        if mode != "real":
            return f"the mode is no longer real ({', '.join(seen)})"
    return None


def versions(channels: Sequence[Channel]) -> dict[str, Any]:
    """Each channel's write counter (the control file's `version`, the admin API's `GET /mode` version), or
    why it cannot be read: a hold during which any of them moved was not left alone (someone paused and came
    back between two rounds, whatever audit they wrote to, or none)."""
    from deploy_tool.modes.channels import FileChannel, HttpChannel
    from deploy_tool.modes.controlfile import read_control

    found: dict[str, Any] = {}
    for channel in channels:
        try:
            if isinstance(channel, FileChannel):
                state = read_control(channel.path)
                found[channel.name] = state.version if state else None
            elif isinstance(channel, HttpChannel):
                found[channel.name] = channel.client.get_mode().get("version")
            else:
                found[channel.name] = "unknown"
        except Exception as exc:  # a counter that cannot be read proves nothing: the hold is not clean
            found[channel.name] = f"unreadable ({type(exc).__name__})"
    return found


def _moved(before: dict[str, Any], after: dict[str, Any]) -> str | None:
    changed = [f"{name} version {before.get(name)} -> {value}" for name, value in after.items()
               if value != before.get(name) or not isinstance(value, int)]
    return f"the channels changed during the hold ({', '.join(changed)})" if changed else None


def _paused_since(cfg: WatchConfig, since: str) -> str | None:
    """A mode change away from real audited since `since` (ISO time): a pause that came and went between two
    rounds still spoils the hold."""
    for event in audit.read_events(cfg.settings.deploy_audit_dir, ("mode_switch",)):
        if str(event.get("ts", "")) >= since and event.get("to") != "real" and event.get("result") != "refused":
            return f"{event.get('action', 'switch')} to {event.get('to')} at {event.get('ts')} by {event.get('actor')}"
    return None


def _stopped(cfg: WatchConfig, index: int, step: float, why: str, emit: Callable[[str], None], note: str = "") -> int:
    cfg.record({"event": "ramp_stopped", "actor": cfg.actor, "step": index + 1, "allocation": step, "reason": why,
                "mode": "left as it was"})
    emit(f"ramp: STOPPED at step {index + 1} ({pct(step)}): {why}; {note or 'no allocation raised'}; "
         "`gradual-deploy ramp` resumes, holding this step again, once the system is back in real")
    return EXIT_BREACH


def _take_step(cfg: WatchConfig, targets: Sequence[Channel], index: int, step: float,
               values: dict[str, float | None], label: str, emit: Callable[[str], None], limit: float) -> bool:
    """Set the step's allocation on `targets`, audited; False (ramp stopped, nothing overwritten) unless
    every one of them confirms."""
    results = _set_step(targets, step, values, f"ramp {label}", cfg.actor)
    ok = all(r.ok for r in results)
    cfg.record({"event": "ramp_step", "actor": cfg.actor, "step": index + 1, "allocation": step, "from": values,
                "forced": step > limit + 1e-12, "channels": [r.as_dict() for r in results],
                "ok": ok})
    if not ok:
        emit(f"ramp: STOPPED at {label}: not every channel took the allocation; nothing overwritten")
        emit_channels(emit, results)
        cfg.record({"event": "ramp_stopped", "actor": cfg.actor, "step": index + 1, "allocation": step,
                    "reason": "; ".join(f"{r.channel}: {r.error}" for r in results if not r.ok)})
    return ok


def ramp(cfg: WatchConfig, channels: Sequence[Channel], *, force: bool = False,
         emit: Callable[[str], None] = print, clock: Clock = SYSTEM_CLOCK) -> int:
    """Run the ramp, each hold timed by `clock`; 0 at full allocation, 1 refused, stopped or aborted (paused,
    stable allocation), 130 Ctrl+C."""
    settings = cfg.settings
    steps = settings.steps
    assert steps is not None
    reason, values, limit = preflight(cfg, channels, force)
    if reason:
        cfg.record({"event": "ramp_refused", "actor": cfg.actor, "steps": list(steps), "reason": reason})
        emit(f"ramp: REFUSED: {reason}")
        return EXIT_BREACH
    known = [v for v in values.values() if v is not None]
    start = resume_point(steps, known[0] if known else None, audit.read_events(settings.deploy_audit_dir, RAMP_EVENTS))
    forced = any(s > limit + 1e-12 for s in steps) or cfg.gate_forced
    cfg.record({"event": "ramp_start", "actor": cfg.actor, "steps": list(steps), "hold_s": settings.hold,
                "start_step": start.index + 1, "resume": start.why, "forced": forced,
                "channels": [c.target for c in channels]})
    for line in plan_lines(steps, settings.hold, start):
        emit(line)
    for index in range(start.index, len(steps)):
        step = steps[index]
        label = f"step {index + 1}/{len(steps)} ({pct(step)})"
        why = not_real(channels)
        if why:  # checked before every step: a pause is never followed by a raise
            return _stopped(cfg, index, step, why, emit)
        if not (index == start.index and start.already_set):
            before = dict(values)
            if not _take_step(cfg, channels, index, step, values, label, emit, limit):
                return EXIT_BREACH
            why = not_real(channels)
            if why:  # paused while the step was written: the raise is taken back
                previous = next((v for v in before.values() if v is not None), None)
                if previous is None or same_allocation(previous, step):
                    return _stopped(cfg, index, step, why, emit, f"the allocation stays at {pct(step)}: there is "
                                    "no lower one to set back to; the pause holds")
                back = _set_step(channels, previous, {}, f"ramp {label}: taken back, {why}", cfg.actor, cas=False)
                cfg.record({"event": "ramp_step", "actor": cfg.actor, "step": index + 1, "allocation": previous,
                            "taken_back": step, "channels": [r.as_dict() for r in back],
                            "ok": all(r.ok for r in back)})
                return _stopped(cfg, index, step, why, emit, f"the allocation was set back to {pct(previous)}"
                                + ("" if all(r.ok for r in back) else " (NOT on every channel: see the audit)"))
            emit(f"ramp {label}: allocation {pct(known[0] if known else None)} -> {pct(step)} confirmed on "
                 + ", ".join(c.name for c in channels) + f"; holding {format_duration(settings.hold)}")
        else:
            # a channel that holds no allocation yet (a control file before its first ramp) gets this one
            missing = [c for c in channels if values.get(c.name) is None]
            if missing and not _take_step(cfg, missing, index, step, values, label, emit, limit):
                return EXIT_BREACH
            emit(f"ramp {label}: allocation already {pct(step)}; holding {format_duration(settings.hold)}")
        values, known = {c.name: step for c in channels}, [step]
        hold_started, counters = iso_utc(utc_now()), versions(channels)
        guarded = guard(cfg, channels, settings.hold, emit, clock=clock,
                        extra={"ramp_step": index + 1, "allocation": step}, mode_check=lambda: not_real(channels))
        if guarded.result == "breach":
            assert guarded.last is not None
            return _abort(cfg, channels, steps, index, guarded, emit)
        if guarded.result == "ended":
            return EXIT_BREACH
        if guarded.result == "mode":
            return _stopped(cfg, index, step, guarded.why, emit, "the allocation left as it is")
        if guarded.result == "stopped":
            cfg.record({"event": "ramp_stopped", "actor": cfg.actor, "step": index + 1, "allocation": step,
                        "reason": "Ctrl+C", "mode": "left as it was"})
            emit(f"ramp stopped by Ctrl+C during {label}; allocation and mode left as they are; "
                 "`gradual-deploy ramp` resumes by holding this step again")
            return EXIT_INTERRUPTED
        overlapped = (_moved(counters, versions(channels)) or _paused_since(cfg, hold_started)
                      or not_real(channels))
        if overlapped:  # a hold that a pause overlapped is not clean, however the rounds went
            return _stopped(cfg, index, step, f"the hold was not clean: {overlapped}", emit,
                            "the allocation left as it is")
        cfg.record({"event": "ramp_step_held", "actor": cfg.actor, "step": index + 1, "allocation": step,
                    "rounds": guarded.rounds})
        emit(f"ramp {label}: held clean for {format_duration(settings.hold)} ({guarded.rounds} rounds)")
    cfg.record({"event": "ramp_done", "actor": cfg.actor, "allocation": steps[-1]})
    emit(f"ramp complete: allocation {pct(steps[-1])}" if start.index < len(steps)
         else f"ramp: nothing to do: {start.why}")
    return EXIT_OK


def _abort(cfg: WatchConfig, channels: Sequence[Channel], steps: Sequence[float], index: int, guarded: Any,
           emit: Callable[[str], None]) -> int:
    """A breach: pause through every channel, then the allocation back to the first step, audited."""
    rnd = guarded.last
    reason = breach_reason(f"ramp step {index + 1} ({pct(steps[index])})", rnd, guarded.consecutive)
    outcome = pause(channels, reason=reason, actor=cfg.actor, audit_dir=cfg.settings.deploy_audit_dir,
                    scrub=cfg.redactor.scrub_data)
    restored = _set_step(channels, steps[0], {}, f"ramp abort: back to the stable {pct(steps[0])}", cfg.actor,
                         cas=False)
    written = snapshot(cfg, rnd, outcome, reason, kind="ramp-abort", step=index + 1, allocation=steps[index],
                       stable_allocation=steps[0], allocation_restore=[r.as_dict() for r in restored])
    cfg.record({"event": "ramp_abort", "actor": cfg.actor, "step": index + 1, "allocation": steps[0],
                "aborted_allocation": steps[index], "round": rnd.number, "failures": [c.id for c in rnd.failures],
                "measurements": rnd.measurements(), "pause": outcome.result,
                "restore": "done" if all(r.ok for r in restored) else "failed", "evidence": written})
    if cfg.json_lines:
        emit(json.dumps({"event": "ramp_abort", "step": index + 1, "pause": outcome.as_dict(),
                         "restore": [r.as_dict() for r in restored], "evidence": written}))
    else:
        emit(f"RAMP ABORT at step {index + 1} ({pct(steps[index])}) after {guarded.consecutive} failing round(s): "
             "pausing through every channel and going back to the stable allocation")
        emit_channels(emit, outcome.channels)
        emit_channels(emit, restored)
        emit(f"pause: {outcome.result.upper()}; allocation back to {pct(steps[0])}: "
             f"{'DONE' if all(r.ok for r in restored) else 'FAILED'}; evidence snapshot: {written}")
    cfg.tell("ramp abort", f"gradual-deploy ramp: ABORT at {pct(steps[index])}, pause {outcome.result.upper()}",
             [reason, *channel_lines(outcome.channels), *channel_lines(restored),
              f"allocation back to {pct(steps[0])}; evidence snapshot: {written}"])
    return EXIT_BREACH
