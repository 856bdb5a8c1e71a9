"""`gradual-deploy watch`: the runbook's observation period, with automatic rollback to `paused`.

One analysis run (`deploy_tool.analysis`) for --duration: every --interval a round judges the observe
criteria, the trades-feed freshness and the exchange, prints one status line and appends a round record to
gradual-deploy's own audit (`--deploy-audit-dir`). On a breach (--failure-limit consecutive failing rounds,
or more than --consecutive-error-limit rounds that could not measure) it pauses through every channel (the
same code as `pause`), records the breach with its measurements, writes an evidence snapshot, and exits 1.
An inconclusive run (too few orders to judge, for more than --inconclusive-limit rounds) is said, audited
and told through --notify; it pauses nothing.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

from deploy_tool.analysis import (
    FAIL,
    INCONCLUSIVE,
    SYSTEM_CLOCK,
    after_breach,
    Clock,
    Ended,
    Round,
    Tally,
    WatchConfig,
    breach_pause,
    breach_reason,
    channel_lines,
    emit_channels,
    read_modes,
    run,
    snapshot,
)
from deploy_tool.modes.channels import Channel
from deploy_tool.redact import Redactor
from deploy_tool.times import format_duration

__all__ = ["EXIT_BREACH", "EXIT_INTERRUPTED", "EXIT_OK", "WatchConfig", "watch"]

EXIT_OK, EXIT_BREACH, EXIT_INTERRUPTED = 0, 1, 130


def watch(cfg: WatchConfig, channels: Sequence[Channel], emit: Callable[[str], None] = print, *,
          clock: Clock = SYSTEM_CLOCK, measure: Callable[[int, WatchConfig], Round] | None = None) -> int:
    """Run rounds until a breach (pause, exit 1), the end of the duration (exit 0) or Ctrl+C (exit 130)."""
    settings = cfg.settings
    emit = _scrubbed(emit, cfg.redactor)
    limits = cfg.limits
    cfg.record({"event": "watch_start", "actor": cfg.actor, "interval_s": settings.interval,
                "duration_s": settings.duration, "failure_limit": limits.failure,
                "consecutive_error_limit": limits.consecutive_error, "inconclusive_limit": limits.inconclusive,
                "channels": [c.target for c in channels]})
    inconclusive: list[int] = []

    def told(rnd: Round, tally: Tally) -> None:
        inconclusive.append(rnd.number)
        why = "; ".join(f"{c.id}: {c.message}" for c in rnd.of(INCONCLUSIVE))
        text = (f"watch INCONCLUSIVE: {tally.consecutive[INCONCLUSIVE]} consecutive round(s) had too few orders to "
                f"judge (--inconclusive-limit {limits.inconclusive}): {why}; still watching, nothing paused")
        cfg.record({"event": "watch_inconclusive", "actor": cfg.actor, "round": rnd.number, "reason": text})
        emit(json.dumps({"event": "watch_inconclusive", "round": rnd.number}) if cfg.json_lines else text)
        cfg.tell("watch inconclusive", "gradual-deploy watch: INCONCLUSIVE", [text], wait=False)

    modes: dict[str, str] = {}

    def mode_seen(rnd: Round) -> dict[str, Any]:
        """The mode every round: recorded, and said when it changes (someone paused or switched while this
        watch guards; it goes on guarding whatever the mode)."""
        now = read_modes(channels)
        if modes and now != modes:
            text = (f"watch: the mode changed: " + ", ".join(f"{name} {modes.get(name)} -> {mode}"
                                                          for name, mode in now.items() if mode != modes.get(name))
                    + "; still watching")
            cfg.record({"event": "watch_mode_changed", "actor": cfg.actor, "round": rnd.number, "from": dict(modes),
                        "to": now})
            emit(json.dumps({"event": "watch_mode_changed", "round": rnd.number, "modes": now}) if cfg.json_lines
                 else text)
        modes.clear()
        modes.update(now)
        return {"modes": now}

    try:
        ended = run(cfg, channels, emit, duration_s=settings.duration, clock=clock, on_inconclusive=told,
                    each_round=mode_seen, measure=measure)
    finally:
        cfg.settle()
    if ended.result == "breach":
        return _breach(cfg, channels, ended, emit)
    if ended.result == "ended":
        return EXIT_BREACH
    if ended.result == "stopped":
        cfg.record({"event": "watch_stopped", "actor": cfg.actor, "rounds": ended.rounds,
                    "reason": "Ctrl+C", "mode": "left as it was"})
        emit(_final(cfg, {"result": "stopped", "rounds": ended.rounds},
                    f"watch stopped by Ctrl+C after {ended.rounds} round(s); the mode was left as it is"))
        return EXIT_INTERRUPTED
    totals = ended.tally.summary() if ended.tally else {}
    if not totals.get("pass"):  # nothing was shown to be healthy: no green end (fail closed)
        text = (f"watch finished: NO ROUND PASSED in {format_duration(settings.duration)} ({ended.rounds} rounds: "
                + ", ".join(f"{n} {name}" for name, n in totals.items()) + "): nothing showed the system healthy; "
                "nothing was paused (no breach); fix what the rounds could not measure (each round's line names the "
                "check and why), then run `gradual-deploy watch` again")
        cfg.record({"event": "watch_end", "actor": cfg.actor, "rounds": ended.rounds, "result": "nothing passed",
                    "outcomes": totals})
        emit(_final(cfg, {"result": "nothing_passed", "rounds": ended.rounds, "outcomes": totals}, text))
        return EXIT_BREACH
    result = "inconclusive" if inconclusive else "no breach"
    cfg.record({"event": "watch_end", "actor": cfg.actor, "rounds": ended.rounds, "result": result,
                "outcomes": totals, "inconclusive_at": inconclusive})
    counts = ", ".join(f"{n} {name}" for name, n in totals.items())
    text = f"watch finished: no breach in {format_duration(settings.duration)} ({ended.rounds} rounds"
    text += f": {counts})" if set(totals) - {"pass"} else ")"
    if inconclusive:
        text += (f"; INCONCLUSIVE: more than {limits.inconclusive} rounds in a row had too few orders to judge "
                 f"(from round {inconclusive[0]}): this period does not show the system trading cleanly")
    emit(_final(cfg, {"result": result.replace(" ", "_"), "rounds": ended.rounds, "outcomes": totals}, text))
    return EXIT_OK


def _scrubbed(emit: Callable[[str], None], redactor: Redactor) -> Callable[[str], None]:
    return lambda line: emit(redactor.scrub(line))


def _final(cfg: WatchConfig, record: dict[str, Any], text: str) -> str:
    return json.dumps({"event": "watch_end", **record}) if cfg.json_lines else text


def _breach(cfg: WatchConfig, channels: Sequence[Channel], ended: Ended, emit: Callable[[str], None]) -> int:
    rnd, tally = ended.last, ended.tally
    assert rnd is not None and tally is not None
    reason = breach_reason("watch", ended)
    outcome = breach_pause(cfg, channels, reason)
    ended.tell_round(cfg, emit)
    written = snapshot(cfg, rnd, outcome, reason)
    cfg.record({"event": "watch_breach", "actor": cfg.actor, "round": rnd.number, "breach": ended.breach,
                "consecutive_failures": tally.consecutive[FAIL], "consecutive": dict(tally.consecutive),
                "failures": [c.id for c in rnd.failures], "measurements": rnd.measurements(),
                "pause": outcome.result, "evidence": written})
    if cfg.json_lines:
        emit(json.dumps({"event": "watch_breach", "round": rnd.number, "breach": ended.breach,
                         "pause": outcome.as_dict(), "evidence": written}))
    else:
        what = ("round(s) that could not measure" if ended.breach == "errored" else "failing round(s)")
        count = tally.consecutive["error" if ended.breach == "errored" else FAIL]
        emit(f"BREACH after {count} {what}: pausing through every channel")
        emit_channels(emit, outcome.channels)
        emit(f"pause: {outcome.result.upper()}; evidence snapshot: {written}; next: {after_breach(outcome)}")
    cfg.tell("watch breach", f"gradual-deploy watch: BREACH, pause {outcome.result.upper()}",
             [reason, *channel_lines(outcome.channels), f"evidence snapshot: {written}"])
    return EXIT_BREACH
