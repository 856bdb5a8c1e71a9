"""`gradual-deploy ramp`: raise the allocation step by step, each step held clean under watch before the
next, and back to the first ("stable") step and `paused` on a breach.

Modelled on canary analysis (Argo Rollouts' setWeight / pause / analysis with failureLimit; an abort
returns to the stable weight; Flagger's confirm-traffic-increase), for capital. The ramp is steps around
one analysis run per hold (`deploy_tool.analysis`): a step is raised only after the last one held clean
on a passing round, the mode is real, and every confirmation asked for (--confirm-url, --wait-for-approval,
or a person after an inconclusive hold) said go. Every step is a compare-and-swap on each channel's
allocation with read-back, every step, hold and wait is audited and told through --notify, and the state
lives in the channels and the audit, not in memory: a ramp that died mid-step resumes by holding that step
again.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from deploy_tool import audit
from deploy_tool.analysis import (
    SYSTEM_CLOCK,
    Terminated,
    catch_termination,
    ended_early,
    restore_handlers,
    not_real,
    Clock,
    Ended,
    Round,
    WatchConfig,
    after_breach,
    breach_pause,
    breach_reason,
    channel_lines,
    emit_channels,
    run,
    snapshot,
)
from deploy_tool.modes.channels import Channel, ChannelError, ChannelResult, same_allocation
from deploy_tool.modes.gate import Gate, GateConfig, evidence_gate
from deploy_tool.times import format_duration, iso_utc, utc_now

EXIT_OK, EXIT_BREACH, EXIT_INTERRUPTED = 0, 1, 130
AGAIN = "start the ramp again"  # what a refusal's fix ends with
RAMP_EVENTS = ("ramp_step", "ramp_step_held", "ramp_abort", "ramp_stopped", "ramp_done", "ramp_refused",
               "ramp_waiting", "ramp_approved")


def pct(value: float | None) -> str:
    return "none" if value is None else f"{value * 100:g}%"


@dataclass(frozen=True)
class Resume:
    """Where a ramp starts: the step to run first, and whether its allocation is already set."""

    index: int  # len(steps): nothing left to do
    already_set: bool
    why: str


def resume_point(steps: Sequence[float], current: float | None, history: Sequence[dict[str, Any]],
                 now: dict[str, Any] | None = None) -> Resume:
    """The next step from the current allocation and the audit: a step whose hold is not recorded as
    held (the ramp died, or aborted, during it) is held again before the ramp goes on, and so is one whose
    channels changed since its clean hold (their write counters `now` against those the record saved, or a
    pause audited after it): an incident since then is not held clean."""
    if current is None or current < steps[0] - 1e-12:
        return Resume(0, False, f"allocation {pct(current)}: starting at the first step")
    for index, step in enumerate(steps):
        if same_allocation(current, step):
            last = next((r for r in reversed(history) if same_allocation(r.get("allocation"), step)
                         and r.get("event") != "mode_switch"), None)
            since = _changed_since(last, history, now) if last is not None else None
            if last is not None and since:
                return Resume(index, True, f"allocation {pct(step)} was held clean ({last.get('ts', '?')}), but "
                                           f"{since} since: holding it again")
            if last is not None and last.get("event") in ("ramp_step_held", "ramp_done"):
                # The next step is not set yet: it must be taken (set and read back), never assumed.
                return Resume(index + 1, False, f"allocation {pct(step)} was held clean "
                                               f"({last.get('ts', '?')}): going on from the next step")
            return Resume(index, True, f"allocation {pct(step)} has no clean hold on record: holding it again")
        if current < step:
            return Resume(index, False, f"allocation {pct(current)} lies between steps: going on at {pct(step)}")
    return Resume(len(steps), True, f"allocation {pct(current)} is at or beyond the last step")


def _changed_since(record: dict[str, Any], history: Sequence[dict[str, Any]], now: dict[str, Any] | None) -> str | None:
    """What moved since a clean hold's record: a pause or switch audited after it, or the channels' write
    counters against the ones it saved."""
    after = [e for e in history if e.get("event") == "mode_switch" and str(e.get("ts", "")) > str(record.get("ts", ""))
             and e.get("to") != "real" and e.get("result") != "refused"]
    if after:
        e = after[0]
        return f"{e.get('action', 'switch')} to {e.get('to')} at {e.get('ts')} by {e.get('actor')}"
    saved = record.get("versions")
    if isinstance(saved, dict) and now is not None:
        return _moved(saved, now)
    return None


LARGE_STEP = 0.1  # a step of 10 % or more, in a go-live of 0.5-1 %: most likely a forgotten % sign


def percent_hint(steps: Sequence[float]) -> str:
    """What `--steps 0.5,1` most likely meant, said first when every step is 10 % or more; else ""."""
    if not steps or min(steps) < LARGE_STEP:  # one small step: fractions written on purpose
        return ""
    written = ",".join(f"{s:g}" for s in steps)
    meant = ",".join(f"{s:g}%" for s in steps)
    return (f"--steps {written} are fractions of the capital ({', '.join(pct(s) for s in steps)}); if you meant "
            f"{meant.replace(',', ', ')}, write --steps {meant}. ")


def plan_lines(steps: Sequence[float], hold_s: float, start: Resume | None = None,
               confirm: Sequence[str] = ()) -> list[str]:
    """The schedule, the confirmations asked before every raise, and the minimum time to full allocation."""
    first = start.index if start else 0
    lines = [f"ramp plan: {len(steps)} step(s), each held {format_duration(hold_s)} before the next"]
    if percent_hint(steps):
        lines.append(f"  NOTE: {percent_hint(steps).strip()}")
    for index, step in enumerate(steps):
        mark = "done" if index < first else ("now " if index == first else "    ")
        lines.append(f"  {mark} step {index + 1}: allocation {pct(step)}, hold {format_duration(hold_s)}")
    left = len(steps) - first
    if start:
        lines.append(f"  {start.why}")
    if confirm:
        lines.append("  before every raise it waits for " + " and ".join(
            "the --confirm-url to answer HTTP 200" if c == "confirm-url" else "`gradual-deploy ramp approve`"
            for c in confirm) + " (not counted below)")
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


@dataclass
class Start:
    """Whether the ramp may start (`refused` None), each channel's allocation, the ceiling, and the check
    asked again before every raise (`raise_refused`)."""

    refused: str | None
    values: dict[str, float | None]
    limit: float
    raise_refused: Callable[[float], str | None] = lambda allocation: None


def preflight(cfg: WatchConfig, channels: Sequence[Channel], force: bool) -> Start:
    """Why the ramp must not start (or None), each channel's allocation, and the ceiling (`ceiling`)."""
    settings = cfg.settings
    assert settings.steps is not None
    for channel in channels:
        try:
            mode = channel.read()
        except ChannelError as exc:
            return Start(f"{channel.name}: cannot read the mode: {exc}: fix that channel (its error says what it "
                         f"answered), then {AGAIN}", {}, settings.max_allocation)
        if mode != "real":
            return Start(f"{channel.name} {channel.target} is in {mode or 'no mode'}: a ramp starts only in real: "
                         f"`gradual-deploy switch --to real` first (from mock, on fresh signed evidence), then {AGAIN}",
                         {}, settings.max_allocation)
    gate_cfg = GateConfig.from_settings(settings)
    gate = evidence_gate(gate_cfg, channels=channels, then=AGAIN)
    if not gate.ok:
        return Start(f"evidence gate: {gate.reason}", {}, settings.max_allocation)
    cfg.gate_forced = gate.forced  # opened on unsigned evidence: the ramp's start is audited as forced
    configured = risk_limit(gate, channels, gate_cfg)
    if isinstance(configured, str):
        return Start(configured, {}, settings.max_allocation)
    limit, source = ceiling(settings.max_allocation, gate.evidence.thresholds if gate.evidence else {}, configured)
    above = [s for s in settings.steps if s > limit + 1e-12]
    if above and not force:
        thresholds = gate.evidence.thresholds if gate.evidence else {}
        return Start(f"{percent_hint(settings.steps)}step(s) {', '.join(pct(s) for s in above)} above {pct(limit)}, {source}: "
                     f"{raise_ceiling(settings.max_allocation, thresholds, configured, max(above), source)}; or --steps "
                     f"no higher than {pct(limit)} (or --force, audited as forced)", {}, limit)
    values, problems = _read_allocations(channels)
    if problems:
        return Start("; ".join(problems), {}, limit)
    known = {name: v for name, v in values.items() if v is not None}
    if len({round(v, 12) for v in known.values()}) > 1:
        return Start("the channels disagree on the allocation (" + ", ".join(f"{n} {pct(v)}" for n, v in known.items())
                     + "): set them equal first, to the lower (the admin API's POST /allocation, the control file's "
                     f"\"allocation\"; `gradual-deploy status` shows each), then {AGAIN}", {}, limit)

    def raise_refused(allocation: float) -> str | None:
        """The system's own limit read again before a raise: lowered during the ramp, it stops the raise."""
        if force:
            return None
        now = risk_limit(gate, channels, gate_cfg)
        if isinstance(now, str):
            return now
        if now is not None and allocation > now + 1e-12:
            return (f"the risk configuration's max_allocation is now {pct(now)}, below this step's "
                    f"{pct(allocation)}: lowered during the ramp, so nothing is raised; to go on, a ramp with --steps "
                    f"no higher than {pct(now)}, or max_allocation raised again in the risk configuration and "
                    "`gradual-deploy preflight` run again on it")
        return None

    return Start(None, values, limit, raise_refused)


def risk_limit(gate: Gate, channels: Sequence[Channel], cfg: GateConfig) -> float | None | str:
    """The risk configuration's own allocation limit (`max_allocation`, read where the evidence's run read
    the configuration: its file, else the admin API's GET /config), None when it sets none, or why it cannot
    be read (then the ramp does not start: its ceiling would be unknown)."""
    from deploy_tool import ProbeError
    from deploy_tool.probes.riskconfig import parse_config, read_file

    inputs = gate.evidence.inputs.get("risk_config") if gate.evidence else None
    path = inputs.get("path") if isinstance(inputs, dict) else None
    section = inputs.get("section") if isinstance(inputs, dict) else None
    try:
        if path:
            config = read_file(str(path), section)
        else:
            http = [c for c in channels if c.name == "http"]
            if not http:
                return ("the risk configuration the evidence judged was served by an admin API, and this ramp has "
                        f"none: give --http-admin-url (or EXEC_HTTP_ADMIN_URL), so that the ramp can read its "
                        f"allocation limit; then {AGAIN}")
            from deploy_tool.probes.admin import AdminClient, AdminError

            try:
                with AdminClient(http[0].target, token=cfg.admin_token) as client:
                    config = parse_config(client.get_config(), f"GET {client.shown_url}/config", section)
            except (AdminError, OSError) as exc:
                raise ProbeError(str(exc)) from None
    except ProbeError as exc:
        return (f"cannot read the risk configuration for its allocation limit: {exc}: make it readable where the "
                f"evidence's run read it ({path or 'GET /config of the admin API'}), then {AGAIN}")
    if "max_allocation" in config.problems:
        return (f"the risk configuration's allocation limit: {config.problems['max_allocation']}: fix max_allocation "
                f"in {path or 'the configuration GET /config serves'}, then {AGAIN}")
    return config.values.get("max_allocation")


def raise_ceiling(max_allocation: float, thresholds: dict[str, Any], configured: float | None, highest: float,
                  source: str) -> str:
    """Why a step above the ceiling is refused and how to lift the ceiling to `highest`: each limit below it
    raised, in the order that works (the risk configuration, then new evidence judged against it, then the
    ramp's own flag)."""
    checked = thresholds.get("max_allocation")
    fixes = []
    risk = configured is not None and configured < highest - 1e-12
    if risk:  # a changed configuration is a changed subject: the evidence must judge it again
        fixes.append(f"max_allocation {highest:g} in the risk configuration")
    if risk or (isinstance(checked, (int, float)) and not isinstance(checked, bool) and checked < highest - 1e-12):
        fixes.append(f"`gradual-deploy preflight --max-allocation {highest:g}` run again, signed")
    if max_allocation < highest - 1e-12 or not fixes:
        fixes.append(f"this ramp with --max-allocation {highest:g}")
    head = ("a step above what the gate checked needs new evidence" if len(fixes) > 1 or not fixes[0].startswith("this")
            else f"a step above {source} needs a higher one")
    return f"{head}: {', then '.join(fixes)}"


def ceiling(max_allocation: float, thresholds: dict[str, Any], configured: float | None = None) -> tuple[float, str]:
    """The highest allocation a ramp may reach without --force, and where that limit comes from: the lowest
    of --max-allocation, the max_allocation the evidence's run was judged against, and the risk
    configuration's own max_allocation."""
    found = [(max_allocation, "--max-allocation")]
    checked = thresholds.get("max_allocation")
    if isinstance(checked, (int, float)) and not isinstance(checked, bool):
        found.append((float(checked), "the max_allocation the evidence's preflight checked"))
    if configured is not None:
        found.append((configured, "the risk configuration's max_allocation"))
    return min(found, key=lambda pair: pair[0])


def _lower_to(channels: Sequence[Channel], stable: float, reason: str, actor: str) -> list[ChannelResult]:
    """Each channel's allocation down to `stable`, compare-and-swap on what it holds now: one at or below it
    (someone lowered it meanwhile) is left alone, never raised by an abort."""
    results = []
    for channel in channels:
        try:
            now = channel.read_allocation()
        except ChannelError as exc:
            results.append(ChannelResult(channel.name, channel.target, ok=False, error=f"cannot read the allocation: "
                                         f"{exc}"))
            continue
        if now is not None and now <= stable + 1e-12:
            results.append(ChannelResult(channel.name, channel.target, now, now, ok=True,
                                         note=f"already at or below {pct(stable)}: left as it is"))
            continue
        results.append(channel.apply_allocation(stable, now, reason, actor, cas=True))
    return results


def _set_step(channels: Sequence[Channel], allocation: float, current: dict[str, float | None], reason: str,
              actor: str, cas: bool = True) -> list[ChannelResult]:
    return [c.apply_allocation(allocation, current.get(c.name), reason, actor, cas=cas) for c in channels]


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
    for event in audit.read_since(cfg.settings.deploy_audit_dir, ("mode_switch",), since):
        if str(event.get("ts", "")) >= since and event.get("to") != "real" and event.get("result") != "refused":
            return f"{event.get('action', 'switch')} to {event.get('to')} at {event.get('ts')} by {event.get('actor')}"
    return None


RESUME = "`gradual-deploy ramp` resumes, holding this step again, once the system is back in real"


def _stopped(cfg: WatchConfig, index: int, step: float | None, why: str, emit: Callable[[str], None], note: str = "",
             resume: str = RESUME) -> int:
    """Stop the ramp, audited; the line says why, what was left, and how it goes on (`resume`)."""
    cfg.record({"event": "ramp_stopped", "actor": cfg.actor, "step": index + 1, "allocation": step, "reason": why,
                "mode": "left as it was"})
    where = f"step {index + 1} ({pct(step)})" if index >= 0 else f"before step 1 (allocation {pct(step)})"
    emit(f"ramp: STOPPED at {where}: {why}; {note or 'no allocation raised'}" + (f"; {resume}" if resume else ""))
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
        emit(f"ramp: STOPPED at {label}: not every channel took the allocation; nothing overwritten; see each channel "
             "below: once they hold the same allocation (`gradual-deploy status`), `gradual-deploy ramp` resumes")
        emit_channels(emit, results)
        cfg.record({"event": "ramp_stopped", "actor": cfg.actor, "step": index + 1, "allocation": step,
                    "reason": "; ".join(f"{r.channel}: {r.error}" for r in results if not r.ok)})
    return ok


@dataclass
class Step:
    """Where the ramp is: the step being taken or held (0-based), its allocation, and its label."""

    index: int
    allocation: float
    count: int

    @property
    def label(self) -> str:
        return f"step {self.index + 1}/{self.count} ({pct(self.allocation)})"


def ramp(cfg: WatchConfig, channels: Sequence[Channel], *, force: bool = False,
         emit: Callable[[str], None] = print, clock: Clock = SYSTEM_CLOCK,
         measure: Callable[[int, WatchConfig], Round] | None = None) -> int:
    """Run the ramp, each hold timed by `clock`; 0 at full allocation, 1 refused, stopped or aborted (paused,
    stable allocation), 130 Ctrl+C. A signal (SIGTERM, SIGHUP) anywhere in it, a wait's webhook call
    included, pauses first, as within a hold."""
    previous = catch_termination()
    try:
        return _ramp(cfg, channels, force=force, emit=emit, clock=clock, measure=measure)
    except (Terminated, Exception) as exc:  # a signal, or a crash between holds: never leave a raise unguarded
        ended_early(cfg, channels, 0, exc)
        return EXIT_BREACH
    finally:
        restore_handlers(previous)
        cfg.settle()  # the step and wait notifications still being sent, bounded


def _ramp(cfg: WatchConfig, channels: Sequence[Channel], *, force: bool, emit: Callable[[str], None], clock: Clock,
          measure: Callable[[int, WatchConfig], Round] | None) -> int:
    settings = cfg.settings
    steps = settings.steps
    assert steps is not None
    cfg.stamp = {"ramp_id": uuid.uuid4().hex[:12]}  # every record of this ramp: its waits end with it
    begin = preflight(cfg, channels, force)
    reason, values, limit = begin.refused, begin.values, begin.limit
    if reason:
        cfg.record({"event": "ramp_refused", "actor": cfg.actor, "steps": list(steps), "reason": reason})
        emit(f"ramp: REFUSED: {reason}")
        return EXIT_BREACH
    known = [v for v in values.values() if v is not None]
    start = resume_point(steps, known[0] if known else None,
                         audit.read_events(settings.deploy_audit_dir, (*RAMP_EVENTS, "mode_switch")), versions(channels))
    forced = any(s > limit + 1e-12 for s in steps) or cfg.gate_forced
    cfg.record({"event": "ramp_start", "actor": cfg.actor, "steps": list(steps), "hold_s": settings.hold,
                "start_step": start.index + 1, "resume": start.why, "forced": forced, "ceiling": limit,
                "confirm": confirmations(settings), "channels": [c.target for c in channels]})
    for line in plan_lines(steps, settings.hold, start, confirmations(settings)):
        emit(line)
    person = ""  # why a person must approve the next raise (the last hold was inconclusive)
    # what a pause between now and the next raise would move: the channels' write counters and the audit
    counters: dict[str, Any] = versions(channels)
    hold_started = iso_utc(utc_now())
    for index in range(start.index, len(steps)):
        step = Step(index, steps[index], len(steps))
        why = not_real(channels)
        if why:  # checked before every step: a pause is never followed by a raise
            return _stopped(cfg, index, step.allocation, why, emit)
        if not (index == start.index and start.already_set):
            if confirmations(settings) or person:
                held = known[0] if known else None
                ended = _wait(cfg, channels, step, held, person, emit=emit, clock=clock, measure=measure)
                if ended.result != "ready":
                    return _ended(cfg, channels, steps, index - 1, held, ended, emit)
                overlapped = (_moved(counters, versions(channels)) or _paused_since(cfg, hold_started)
                              or not_real(channels))
                if overlapped:  # someone paused (and came back) while the ramp waited: nothing is raised
                    return _stopped(cfg, index - 1, held, f"while waiting: {overlapped}", emit)
                if person:  # the inconclusive hold counts as held once a person approved going on
                    cfg.record({"event": "ramp_step_held", "actor": cfg.actor, "step": index, "allocation": held,
                                "approved": ended.why, "versions": counters})
                person = ""
            limited = begin.raise_refused(step.allocation)
            if limited:  # the system's own limit, read again before every raise: the reason says how to go on
                return _stopped(cfg, index - 1, known[0] if known else None, limited, emit, resume="")
            before = dict(values)
            if not _take_step(cfg, channels, index, step.allocation, values, step.label, emit, limit):
                return EXIT_BREACH
            why = not_real(channels)
            if why:  # paused while the step was written: the raise is taken back
                return _take_back(cfg, channels, step, before, why, emit)
            emit(f"ramp {step.label}: allocation {pct(known[0] if known else None)} -> {pct(step.allocation)} "
                 f"confirmed on " + ", ".join(c.name for c in channels) + f"; holding {format_duration(settings.hold)}")
            cfg.tell("ramp step", f"gradual-deploy ramp: {step.label} taken", wait=False, lines=
                     [f"allocation {pct(known[0] if known else None)} -> {pct(step.allocation)} on "
                      + ", ".join(c.target for c in channels), f"holding {format_duration(settings.hold)}"])
        else:
            # a channel that holds no allocation yet (a control file before its first ramp) gets this one
            missing = [c for c in channels if values.get(c.name) is None]
            if missing and not _take_step(cfg, missing, index, step.allocation, values, step.label, emit, limit):
                return EXIT_BREACH
            newly = f" (set on {', '.join(c.name for c in missing)}, which held none)" if missing else ""
            emit(f"ramp {step.label}: allocation already {pct(step.allocation)}{newly}; holding "
                 f"{format_duration(settings.hold)}")
        values, known = {c.name: step.allocation for c in channels}, [step.allocation]
        hold_started, counters = iso_utc(utc_now()), versions(channels)
        ended = run(cfg, channels, duration_s=settings.hold, need_pass=True, stop_inconclusive=True,
                    extra={"ramp_step": index + 1, "allocation": step.allocation},
                    mode_check=lambda: not_real(channels), emit=emit, clock=clock, measure=measure)
        if ended.result not in ("held", "inconclusive"):
            return _ended(cfg, channels, steps, index, step.allocation, ended, emit)
        overlapped = (_moved(counters, versions(channels)) or _paused_since(cfg, hold_started)
                      or not_real(channels))
        if overlapped:  # a hold that a pause overlapped is not clean, however the rounds went
            return _stopped(cfg, index, step.allocation, f"the hold was not clean: {overlapped}", emit,
                            "the allocation left as it is")
        if ended.result == "inconclusive":
            streak = ended.tally.consecutive["inconclusive"] if ended.tally else "?"
            unjudged = "; ".join(f"{c.id}: {c.message}" for c in (ended.last.failures if ended.last else []))
            person = (f"the hold of {step.label} was inconclusive: {streak} rounds in a row had too few orders to "
                      f"judge ({unjudged[:300]})")
            emit(f"ramp {step.label}: INCONCLUSIVE after {ended.rounds} rounds: it does not advance on its own")
            if index == len(steps) - 1:  # the last step: a person says whether the ramp is done
                done = _wait(cfg, channels, None, step.allocation, person, emit=emit, clock=clock, measure=measure)
                if done.result != "ready":
                    return _ended(cfg, channels, steps, index, step.allocation, done, emit)
                overlapped = (_moved(counters, versions(channels)) or _paused_since(cfg, hold_started)
                              or not_real(channels))
                if overlapped:  # a pause that came and went while it waited: the step is not held
                    return _stopped(cfg, index, step.allocation, f"while waiting: {overlapped}", emit,
                                    "the allocation left as it is")
                cfg.record({"event": "ramp_step_held", "actor": cfg.actor, "step": index + 1,
                            "allocation": step.allocation, "rounds": ended.rounds, "approved": done.why})
            continue
        cfg.record({"event": "ramp_step_held", "actor": cfg.actor, "step": index + 1, "allocation": step.allocation,
                    "rounds": ended.rounds, "versions": counters})
        emit(f"ramp {step.label}: held clean for {format_duration(settings.hold)} ({ended.rounds} rounds)")
        cfg.tell("ramp step", f"gradual-deploy ramp: {step.label} held clean", wait=False, lines=
                 [f"allocation {pct(step.allocation)} held clean for {format_duration(settings.hold)} "
                  f"({ended.rounds} rounds)"])
    if start.index < len(steps):  # a ramp that did nothing records no clean hold a later one could go on from
        cfg.record({"event": "ramp_done", "actor": cfg.actor, "allocation": steps[-1], "versions": versions(channels)})
        emit(f"ramp complete: allocation {pct(steps[-1])}")
        cfg.tell("ramp done", f"gradual-deploy ramp: complete at {pct(steps[-1])}",
                 [f"every step held clean; allocation {pct(steps[-1])}"])
    else:
        emit(f"ramp: nothing to do: {start.why}")
    return EXIT_OK


def _ended(cfg: WatchConfig, channels: Sequence[Channel], steps: Sequence[float], index: int, held: float | None,
           ended: Ended, emit: Callable[[str], None]) -> int:
    """A hold or a wait that ended otherwise than held or ready: a breach aborts, the mode stops, Ctrl+C
    leaves everything as it is. `index` is the step held (-1: none yet, a wait before the first), `held` the
    allocation the channels hold."""
    label = (f"step {index + 1}/{len(steps)} ({pct(steps[index])})" if index >= 0
             else f"the wait before step 1 (allocation {pct(held)})")
    if ended.result == "breach":
        return _abort(cfg, channels, steps, index, held, ended, emit)
    if ended.result == "ended":
        return EXIT_BREACH
    if ended.result == "mode":
        return _stopped(cfg, max(index, 0), held, ended.why, emit, "the allocation left as it is")
    cfg.record({"event": "ramp_stopped", "actor": cfg.actor, "step": index + 1, "allocation": held,
                "reason": "Ctrl+C", "mode": "left as it was"})
    emit(f"ramp stopped by Ctrl+C during {label}; allocation and mode left as they are; "
         "`gradual-deploy ramp` resumes by holding this step again")
    return EXIT_INTERRUPTED


def _take_back(cfg: WatchConfig, channels: Sequence[Channel], step: Step, before: dict[str, float | None], why: str,
               emit: Callable[[str], None]) -> int:
    previous = next((v for v in before.values() if v is not None), None)
    if previous is None or same_allocation(previous, step.allocation):
        return _stopped(cfg, step.index, step.allocation, why, emit, f"the allocation stays at {pct(step.allocation)}: "
                        "there is no lower one to set back to; the pause holds")
    back = _set_step(channels, previous, {}, f"ramp {step.label}: taken back, {why}", cfg.actor, cas=False)
    cfg.record({"event": "ramp_step", "actor": cfg.actor, "step": step.index + 1, "allocation": previous,
                "taken_back": step.allocation, "channels": [r.as_dict() for r in back], "ok": all(r.ok for r in back)})
    return _stopped(cfg, step.index, step.allocation, why, emit, f"the allocation was set back to {pct(previous)}"
                    + ("" if all(r.ok for r in back) else " (NOT on every channel: see the audit)"))


# --- confirmation between steps (Flagger's confirm-traffic-increase) ------------------------------------

CONFIRM_TIMEOUT_S = 5.0


def confirmations(settings: Any) -> list[str]:
    return [name for name, on in (("confirm-url", settings.confirm_url), ("approval", settings.wait_for_approval))
            if on]


_ASKING: dict[str, Any] = {}  # the webhook call still running, by URL: one at a time


def ask_webhook(url: str, payload: dict[str, Any], timeout_s: float = CONFIRM_TIMEOUT_S) -> tuple[bool, str]:
    """POST the step to the confirmation webhook: (go on, what it answered). Only HTTP 200 goes on; an error,
    a timeout or any other status waits. The whole exchange is bounded by `timeout_s` (an answer that
    trickles in byte by byte too): it runs in a thread that is left behind when it is late, and while that
    one still runs no other is started for that URL: a webhook that never answers holds one socket."""
    import threading

    running = _ASKING.get(url)
    if running is not None and running.is_alive():
        return False, "no answer yet (the last ask is still open)"
    answers: list[tuple[bool, str]] = []

    def post() -> None:
        import requests

        try:
            answer = requests.post(url, json=payload, timeout=timeout_s, allow_redirects=False, stream=True)
            answer.close()  # the status is the answer (Flagger's rule); the body is not read
            answers.append((answer.status_code == 200, f"HTTP {answer.status_code}"))
        except Exception as exc:  # a malformed host, a refused connection: no answer, never a crash
            answers.append((False, f"no answer ({type(exc).__name__})"))

    thread = threading.Thread(target=post, name="confirm-url", daemon=True)
    thread.start()
    _ASKING[url] = thread
    thread.join(timeout_s)
    return answers[0] if answers else (False, f"no answer within {timeout_s:g} s")


def approvals(audit_dir: str, wait_id: str, since: str | None = None) -> dict[str, Any] | None:
    """The `gradual-deploy ramp approve` of this wait, if one was recorded (no earlier than `since`, the wait's
    start, when given: a waiting ramp asks every round, and reads only what came since)."""
    found = (audit.read_since(audit_dir, ("ramp_approved",), since) if since
             else audit.read_events(audit_dir, ("ramp_approved",)))
    return next((e for e in found if e.get("wait_id") == wait_id), None)


def _wait(cfg: WatchConfig, channels: Sequence[Channel], step: Step | None, current: float | None, person: str, *,
          emit: Callable[[str], None], clock: Clock, measure: Callable[[int, WatchConfig], Round] | None) -> Ended:
    """Wait, still guarding (rounds every --interval, a breach aborts, a pause stops), until every
    confirmation asked for says go: --confirm-url answers 200, and `gradual-deploy ramp approve` names this
    wait (with --wait-for-approval, or when `person` says why a person must decide). `step` None: the wait
    is for completing the ramp. Shown, audited and told when it starts; every webhook answer that changes
    is audited."""
    settings = cfg.settings
    wait_id = uuid.uuid4().hex[:12]
    # the approvals are looked for from a little before the wait began (another host's clock may lag)
    started = iso_utc(utc_now() - dt.timedelta(minutes=10))
    target = f"{step.label}" if step else "completing the ramp"
    needs = [n for n in confirmations(settings) if step is not None or n == "approval"]
    if person and "approval" not in needs:
        needs.append("approval")
    state: dict[str, Any] = {"webhook": "not asked yet", "approved": None}
    payload = {"phase": "confirm-step" if step else "confirm-done", "step": step.index + 1 if step else None,
               "from": current, "to": step.allocation if step else None, "wait_id": wait_id,
               "channels": [c.target for c in channels], "actor": cfg.actor}

    def ready() -> str | None:
        done = []
        if "confirm-url" in needs:
            go, answer = ask_webhook(str(settings.confirm_url), payload,
                                     min(CONFIRM_TIMEOUT_S, max(0.1, settings.interval / 2)))
            if answer != state["webhook"]:
                cfg.record({"event": "ramp_confirm", "actor": cfg.actor, "wait_id": wait_id, "answer": answer,
                            "go": go})
                if not go:
                    emit(f"ramp: the --confirm-url answered {answer}: waiting; asking again every "
                         f"{format_duration(settings.interval)}")
            state["webhook"] = answer
            if not go:
                return None
            done.append(f"--confirm-url answered {answer}")
        if "approval" in needs:
            approval = state["approved"] or approvals(settings.deploy_audit_dir, wait_id, started)
            if approval is None:
                return None
            state["approved"] = approval
            done.append(f"approved by {approval.get('actor', '?')}"
                        + (f" ({approval['reason']})" if approval.get("reason") else ""))
        return "; ".join(done)

    why = person or "confirmation before every raise"
    how = []
    if "confirm-url" in needs:
        how.append("the --confirm-url to answer HTTP 200")
    if "approval" in needs:
        how.append(f"`gradual-deploy ramp approve --deploy-audit-dir {settings.deploy_audit_dir}` "
                   "from another terminal")
    cfg.record({"event": "ramp_waiting", "actor": cfg.actor, "wait_id": wait_id, "for": target,
                "channels": [c.target for c in channels],
                "step_to": step.index + 1 if step else None, "allocation_to": step.allocation if step else None,
                "held_allocation": current, "needs": needs, "reason": why})
    go = ready()
    if go:
        cfg.record({"event": "ramp_confirmed", "actor": cfg.actor, "wait_id": wait_id, "by": go})
        return Ended("ready", 0, why=go)
    text = (f"ramp: WAITING before {target}: {why}; waiting for " + " and ".join(how)
            + f"; still guarding (wait {wait_id})")
    emit(text)
    cfg.tell("ramp waiting", f"gradual-deploy ramp: waiting before {target}", [text], wait=False)
    held_step = step.index if step else len(settings.steps or ())  # the number of the step held meanwhile
    ended = run(cfg, channels, duration_s=None, ready=ready, mode_check=lambda: not_real(channels),
                extra={"ramp_step": held_step, "allocation": current,
                       "waiting": f"waiting before {target}"},
                emit=emit, clock=clock, measure=measure)
    if ended.result == "ready":
        cfg.record({"event": "ramp_confirmed", "actor": cfg.actor, "wait_id": wait_id, "by": ended.why})
        emit(f"ramp: confirmed before {target}: {ended.why}")
    return ended


# what ends a wait: its ramp's end (a signal's early end is a `watch_stopped` of that ramp), or its confirmation
ENDS = ("ramp_stopped", "ramp_abort", "ramp_done", "ramp_refused", "ramp_confirmed", "watch_stopped")


def open_waits(audit_dir: str) -> list[dict[str, Any]]:
    """The waits still open in this audit: each `ramp_waiting` that no event of its own ramp ended (its
    `ramp_id`: confirmed, stopped, aborted, done) and no later ramp on the same channels superseded (a ramp
    that died while it waited leaves its wait behind: the next ramp's start closes it)."""
    history = audit.read_events(audit_dir, (*RAMP_EVENTS, *ENDS, "ramp_start"))
    found = []
    for index, wait in enumerate(history):
        if wait.get("event") != "ramp_waiting":
            continue
        later = history[index + 1:]
        ended = any(e.get("event") in ENDS and (e.get("wait_id") == wait.get("wait_id") or
                                                (e.get("ramp_id") and e.get("ramp_id") == wait.get("ramp_id")))
                    for e in later)
        superseded = any(e.get("event") == "ramp_start" and (not wait.get("channels")
                                                             or e.get("channels") == wait.get("channels"))
                         for e in later)
        if not ended and not superseded:
            found.append(wait)
    return found


def approve(audit_dir: str, actor: str, reason: str, step: int | None = None,
            wait_id: str | None = None, scrub: Callable[[Any], Any] = lambda record: record) -> tuple[bool, str]:
    """`gradual-deploy ramp approve`: approve the one wait a running ramp is in (`open_waits`; `step` and
    `wait_id` pick among several), audited; (done, what was approved or why not)."""
    waits = [w for w in open_waits(audit_dir) if (step is None or w.get("step_to") == step)
             and (wait_id is None or w.get("wait_id") == wait_id)]
    if not waits:
        every = open_waits(audit_dir)
        if every:
            shown = "; ".join(f"wait {w.get('wait_id')} before {w.get('for')}" for w in every)
            asked = " ".join(part for part in (f"--step {step}" if step is not None else "",
                                               f"--wait-id {wait_id}" if wait_id is not None else "") if part)
            steps = sorted({int(w["step_to"]) for w in every if isinstance(w.get("step_to"), int)})
            return False, (f"no open wait matches {asked} in {audit_dir}: open: {shown}; name one of those with "
                           "--wait-id" + (f" (or --step {', '.join(map(str, steps))})" if steps else ""))
        return False, (f"no ramp is waiting for approval in {audit_dir}: give the --deploy-audit-dir of the waiting "
                       "ramp (its WAITING line names this command); a ramp waits with --wait-for-approval, or after an "
                       "inconclusive hold")
    if len(waits) > 1:
        def where(wait: dict[str, Any]) -> str:
            targets = wait.get("channels")
            return ", ".join(str(c) for c in targets) if isinstance(targets, list) else "?"

        shown = "; ".join(f"--wait-id {w.get('wait_id')}: {w.get('for')} on {where(w)}" for w in waits)
        return False, f"{len(waits)} ramps wait in {audit_dir}: name the one to approve ({shown})"
    waiting = waits[0]
    needs = waiting.get("needs")
    if not isinstance(needs, list) or "approval" not in needs:
        return False, (f"the ramp waits before {waiting.get('for')} for its --confirm-url to answer HTTP 200, not for "
                       "an approval: an approval cannot stand in for the webhook; see the ramp's terminal for its "
                       "last answer, or stop the ramp (Ctrl+C) and start it with --wait-for-approval instead")
    if approvals(audit_dir, str(waiting.get("wait_id"))):
        return True, f"already approved: {waiting.get('for')}"
    audit.append(audit_dir, scrub({"event": "ramp_approved", "actor": actor, "wait_id": waiting.get("wait_id"),
                                   "for": waiting.get("for"), "step_to": waiting.get("step_to"), "reason": reason}))
    return True, f"approved: {waiting.get('for')} (the waiting ramp goes on at its next round)"


def _abort(cfg: WatchConfig, channels: Sequence[Channel], steps: Sequence[float], index: int, held: float | None,
           ended: Ended, emit: Callable[[str], None]) -> int:
    """A breach: pause through every channel, then the allocation back to the first step, audited. Back
    means down: an allocation below the first step (a breach while waiting before it) is left as it is."""
    rnd, tally = ended.last, ended.tally
    assert rnd is not None and tally is not None
    held_text = pct(held)
    reason = breach_reason(f"ramp step {index + 1} ({held_text})" if index >= 0
                           else f"ramp, before step 1 (allocation {held_text})", ended)
    outcome = breach_pause(cfg, channels, reason)
    ended.tell_round(cfg, emit)
    down = held is not None and held >= steps[0] - 1e-12
    restored = _lower_to(channels, steps[0], f"ramp abort: back to the stable {pct(steps[0])}", cfg.actor) if down else []
    written = snapshot(cfg, rnd, outcome, reason, kind="ramp-abort", step=index + 1, allocation=held,
                       stable_allocation=steps[0], allocation_restore=[r.as_dict() for r in restored])
    cfg.record({"event": "ramp_abort", "actor": cfg.actor, "step": index + 1,
                "allocation": steps[0] if down else held,
                "aborted_allocation": held, "round": rnd.number, "breach": ended.breach,
                "failures": [c.id for c in rnd.failures], "measurements": rnd.measurements(),
                "pause": outcome.result,
                "restore": ("done" if all(r.ok for r in restored) else "failed") if down else "not needed",
                "evidence": written})
    if cfg.json_lines:
        emit(json.dumps({"event": "ramp_abort", "step": index + 1, "pause": outcome.as_dict(),
                         "restore": [r.as_dict() for r in restored], "evidence": written}))
    else:
        what = "round(s) that could not measure" if ended.breach == "errored" else "failing round(s)"
        count = tally.consecutive["error" if ended.breach == "errored" else "fail"]
        emit(f"RAMP ABORT at step {index + 1} ({held_text}) after {count} {what}: "
             "pausing through every channel and going back to the stable allocation")
        emit_channels(emit, outcome.channels)
        emit_channels(emit, restored)
        back = (f"allocation back to {pct(steps[0])}: {'DONE' if all(r.ok for r in restored) else 'FAILED'}" if down
                else f"allocation left at {held_text}, below the stable {pct(steps[0])}")
        emit(f"pause: {outcome.result.upper()}; {back}; evidence snapshot: {written}; next: {after_breach(outcome)}")
    cfg.tell("ramp abort", f"gradual-deploy ramp: ABORT at {held_text}, pause {outcome.result.upper()}",
             [reason, *channel_lines(outcome.channels), *channel_lines(restored),
              f"allocation back to {pct(steps[0])}; evidence snapshot: {written}"])
    return EXIT_BREACH
