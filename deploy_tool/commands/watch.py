"""`gradual-deploy watch`: the runbook's observation period, with automatic rollback to `paused`.

Every interval one round judges the observe criteria, the trades-feed freshness and the exchange (the
same judges as the preflight suite, `deploy_tool.criteria`), prints one status line and appends a round
record to gradual-deploy's own audit (`--deploy-audit-dir`). After `--failure-limit` consecutive failing
rounds it pauses through every channel (the same code as `pause`), records the breach with its
measurements, writes an evidence snapshot, and exits 1.
"""

from __future__ import annotations

import datetime as dt
import json
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from deploy_tool import audit, fileops
from deploy_tool.criteria import Criterion, round_criteria
from deploy_tool.evidence import json_number
from deploy_tool.modes.change import Outcome, pause
from deploy_tool.modes.channels import Channel
from deploy_tool.redact import Redactor
from deploy_tool.settings import Settings
from deploy_tool.times import format_duration, iso_utc, utc_now

EXIT_OK, EXIT_BREACH, EXIT_INTERRUPTED = 0, 1, 130
# The groups whose thresholds a round judges, recorded with a breach.
WATCHED_GROUPS = ("observe", "db", "okx")


class Clock(Protocol):
    """The watch loop's time: a monotonic reading in seconds, and a wait. Every deadline, remaining time
    and pause between rounds comes from it, so that a test can pass one whose wait returns at once with
    the reading moved on, and run a long watch in-process without waiting for it."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock: `time.monotonic` and `time.sleep`."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


SYSTEM_CLOCK: Clock = SystemClock()


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class WatchConfig:
    """One watch: its settings (loop, thresholds, targets), who runs it, and how it prints."""

    settings: Settings
    json_lines: bool = False
    actor: str = "watch"
    redactor: Redactor = field(default_factory=Redactor)
    warn: Callable[[str], None] = _stderr
    gate_forced: bool = False  # the ramp's evidence gate opened only on unsigned evidence (--allow-unsigned)

    def record(self, entry: dict[str, Any]) -> None:
        """Append to gradual-deploy's own audit with every known secret masked. A failure to write (a full
        disk) is said on stderr and the watch goes on guarding: losing an audit line is bad, losing the
        guard is worse."""
        try:
            audit.append(self.settings.deploy_audit_dir, self.redactor.scrub_data(entry))
        except audit.AuditError as exc:
            self.warn(self.redactor.scrub(f"gradual-deploy watch: WARNING: {exc}; still watching"))


    def tell(self, about: str, title: str, lines: Sequence[str]) -> None:
        """Notify the --notify targets, bounded, after the fact; the delivery goes to the audit."""
        from deploy_tool.notify import tell

        tell(self.settings.notify, about, title, lines, self.redactor.scrub, self.record,
             lambda line: self.warn(self.redactor.scrub(line)))


TERMINATING_SIGNALS = ("SIGTERM", "SIGHUP", "SIGBREAK")  # each where the platform has it


class Terminated(BaseException):
    """The process was told to stop (SIGTERM, SIGHUP): not a clean end, so the watch pauses first."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signal.Signals(signum).name)


@dataclass
class RoundResult:
    """The criteria of one round."""

    number: int
    at: dt.datetime
    checks: list[Criterion] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Criterion]:
        return [c for c in self.checks if not c.ok]

    def measurements(self) -> dict[str, Any]:
        return {c.id: {"ok": c.ok, "measured": json_number(c.measured), "threshold": json_number(c.threshold),
                       "unit": c.unit, "message": c.message} for c in self.checks}


def run_round(number: int, cfg: WatchConfig) -> RoundResult:
    """Measure and judge everything once; a probe that cannot measure is a failing check, never a pass."""
    return RoundResult(number, utc_now(), round_criteria(cfg.settings, cfg.redactor))


def status_line(rnd: RoundResult, consecutive: int, limit: int, remaining_s: float) -> str:
    left = f"{format_duration(max(0, round(remaining_s)))} left"
    by_id = {c.id: c for c in rnd.checks}
    parts = []
    for name, label in (("observe_audit_recent", "audit age"), ("observe_risk_events", "risk events"),
                        ("observe_order_failure_rate", "order failures"), ("observe_risk_block_rate", "risk blocks"),
                        ("observe_signals", "intents"), ("observe_slippage", "slippage"),
                        ("observe_realized_pnl", "loss"), ("trades_fresh", "trades age"),
                        ("okx_public_time_latency", "okx")):
        c = by_id.get(name)
        if c is not None and c.measured is not None:
            if c.unit == "fraction":
                parts.append(f"{label} {c.measured:.1%}")
            elif c.unit in ("s", "ms", "bps"):
                parts.append(f"{label} {c.measured:.1f} {c.unit}")
            else:
                parts.append(f"{label} {c.measured}")
    head = f"round {rnd.number} {iso_utc(rnd.at)}"
    if rnd.ok:
        return f"{head} OK   " + ", ".join(parts) + f"; {left}"
    first = rnd.failures[0]
    return (f"{head} FAIL ({consecutive}/{limit}) {first.id}: {first.message}"
            + (f" (+{len(rnd.failures) - 1} more)" if len(rnd.failures) > 1 else "") + f"; {left}")


@dataclass
class Guarded:
    """How a guarded stretch of rounds ended: held (clean to its end), breach, stopped (Ctrl+C) or ended
    (a signal or a crash, already paused)."""

    result: str
    rounds: int
    last: RoundResult | None = None
    consecutive: int = 0
    why: str = ""  # what the mode check saw, when it ended the stretch ("mode")


def guard(cfg: WatchConfig, channels: Sequence[Channel], duration_s: float, emit: Callable[[str], None], *,
          clock: Clock = SYSTEM_CLOCK, extra: dict[str, Any] | None = None,
          mode_check: Callable[[], str | None] | None = None) -> Guarded:
    """Run rounds for `duration_s` of `clock` time, one every --interval from the start of the last, or until
    --failure-limit consecutive rounds fail (a breach, left to the caller to act on), or until `mode_check`
    (asked after every round) says why the mode is no longer one to go on in ("mode": someone paused).
    Any end but the duration, a breach, the mode or Ctrl+C pauses first. `extra` goes into every round
    record (the ramp's step)."""
    settings = cfg.settings
    deadline = clock.monotonic() + duration_s
    consecutive = number = 0
    previous = _catch_termination()
    try:
        while True:
            number += 1
            round_started = clock.monotonic()
            try:
                rnd = run_round(number, cfg)
            except Exception as exc:  # a round that could not measure is a failing round, never a pass
                rnd = RoundResult(number, utc_now(), [Criterion("round", "watch", False, None, None, None,
                                                                f"the round crashed: {type(exc).__name__}: {exc}")])
            consecutive = 0 if rnd.ok else consecutive + 1
            remaining = deadline - clock.monotonic()
            record = {"event": "watch_round", **(extra or {}), "round": number, "ok": rnd.ok,
                      "consecutive_failures": consecutive, "failures": [c.id for c in rnd.failures],
                      "measurements": rnd.measurements()}
            cfg.record({"actor": cfg.actor, **record})
            emit(json.dumps({"ts": iso_utc(rnd.at), **record}) if cfg.json_lines
                 else status_line(rnd, consecutive, settings.failure_limit, remaining))
            if consecutive >= settings.failure_limit:
                return Guarded("breach", number, rnd, consecutive)
            why = mode_check() if mode_check is not None else None
            if why:
                return Guarded("mode", number, rnd, consecutive, why)
            if remaining <= 0:
                break
            clock.sleep(max(0.0, min(settings.interval - (clock.monotonic() - round_started), remaining)))
            if clock.monotonic() >= deadline:
                break
    except KeyboardInterrupt:
        return Guarded("stopped", number)
    except BaseException as exc:  # any other end before the duration: stop guarding only once paused
        _ended_early(cfg, channels, number, exc)
        return Guarded("ended", number)
    finally:
        _restore(previous)
    return Guarded("held", number)


def watch(cfg: WatchConfig, channels: Sequence[Channel], emit: Callable[[str], None] = print, *,
          clock: Clock = SYSTEM_CLOCK) -> int:
    """Run rounds until a breach (pause, exit 1), the end of the duration (exit 0) or Ctrl+C (exit 130)."""
    settings = cfg.settings
    emit = _scrubbed(emit, cfg.redactor)
    cfg.record({"event": "watch_start", "actor": cfg.actor, "interval_s": settings.interval,
                "duration_s": settings.duration, "failure_limit": settings.failure_limit,
                "channels": [c.target for c in channels]})
    guarded = guard(cfg, channels, settings.duration, emit, clock=clock)
    if guarded.result == "breach":
        assert guarded.last is not None
        return _breach(cfg, channels, guarded.last, guarded.consecutive, emit)
    if guarded.result == "ended":
        return EXIT_BREACH
    if guarded.result == "stopped":
        cfg.record({"event": "watch_stopped", "actor": cfg.actor, "rounds": guarded.rounds,
                    "reason": "Ctrl+C", "mode": "left as it was"})
        emit(_final(cfg, {"result": "stopped", "rounds": guarded.rounds},
                    f"watch stopped by Ctrl+C after {guarded.rounds} round(s); the mode was left as it is"))
        return EXIT_INTERRUPTED
    cfg.record({"event": "watch_end", "actor": cfg.actor, "rounds": guarded.rounds, "result": "no breach"})
    emit(_final(cfg, {"result": "no_breach", "rounds": guarded.rounds},
                f"watch finished: no breach in {format_duration(settings.duration)} ({guarded.rounds} rounds)"))
    return EXIT_OK


def _catch_termination() -> dict[int, Any]:
    """Turn SIGTERM and SIGHUP (POSIX), SIGBREAK (Windows: Ctrl+Break, or the console window closed) into
    `Terminated` (main thread only); the handlers they had before."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    numbers = [getattr(signal, name) for name in TERMINATING_SIGNALS if hasattr(signal, name)]
    return {number: signal.signal(number, _raise_terminated) for number in numbers}


def _restore(handlers: dict[int, Any]) -> None:
    for number, handler in handlers.items():
        signal.signal(number, handler)


def _ended_early(cfg: WatchConfig, channels: Sequence[Channel], rounds: int, exc: BaseException) -> int:
    """The watch must end before its duration (a signal, a crash, a closed terminal): pause first."""
    why = f"{type(exc).__name__}: {exc}" if not isinstance(exc, Terminated) else f"terminated by {exc}"
    reason = f"watch ended before its duration ({why}); paused so that nothing trades unguarded"[:500]
    outcome = pause(channels, reason=reason, actor=cfg.actor, audit_dir=cfg.settings.deploy_audit_dir,
                    scrub=cfg.redactor.scrub_data)
    cfg.record({"event": "watch_stopped", "actor": cfg.actor, "rounds": rounds, "reason": why,
                "pause": outcome.result})
    try:
        cfg.warn(cfg.redactor.scrub(f"gradual-deploy watch: {reason}: pause {outcome.result.upper()}"))
    except Exception:
        pass  # stderr may be gone too; the audit has it
    try:
        cfg.tell("watch ended", f"gradual-deploy: watch ended early, pause {outcome.result.upper()}",
                 [reason, *channel_lines(outcome.channels)])
    except Exception:
        pass
    return EXIT_BREACH


def _scrubbed(emit: Callable[[str], None], redactor: Redactor) -> Callable[[str], None]:
    return lambda line: emit(redactor.scrub(line))


def _final(cfg: WatchConfig, record: dict[str, Any], text: str) -> str:
    return json.dumps({"event": "watch_end", **record}) if cfg.json_lines else text


def breach_reason(label: str, rnd: RoundResult, consecutive: int) -> str:
    return (f"{label}: {consecutive} consecutive failing round(s): "
            + "; ".join(f"{c.id}: {c.message}" for c in rnd.failures))[:500]


def _breach(cfg: WatchConfig, channels: Sequence[Channel], rnd: RoundResult, consecutive: int,
            emit: Callable[[str], None]) -> int:
    reason = breach_reason("watch", rnd, consecutive)
    outcome = pause(channels, reason=reason, actor=cfg.actor, audit_dir=cfg.settings.deploy_audit_dir,
                    scrub=cfg.redactor.scrub_data)
    written = snapshot(cfg, rnd, outcome, reason)
    cfg.record({"event": "watch_breach", "actor": cfg.actor, "round": rnd.number,
                "consecutive_failures": consecutive, "failures": [c.id for c in rnd.failures],
                "measurements": rnd.measurements(), "pause": outcome.result, "evidence": written})
    if cfg.json_lines:
        emit(json.dumps({"event": "watch_breach", "round": rnd.number, "pause": outcome.as_dict(),
                         "evidence": written}))
    else:
        emit(f"BREACH after {consecutive} failing round(s): pausing through every channel")
        emit_channels(emit, outcome.channels)
        emit(f"pause: {outcome.result.upper()}; evidence snapshot: {written}")
    cfg.tell("watch breach", f"gradual-deploy watch: BREACH, pause {outcome.result.upper()}",
             [reason, *channel_lines(outcome.channels), f"evidence snapshot: {written}"])
    return EXIT_BREACH


def channel_lines(results: Sequence[Any]) -> list[str]:
    return [f"  {c.channel} {c.target}: " + (f"{c.before} -> {c.after} confirmed" if c.ok else f"FAILED: {c.error}")
            for c in results]


def emit_channels(emit: Callable[[str], None], results: Sequence[Any]) -> None:
    for line in channel_lines(results):
        emit(line)


def snapshot(cfg: WatchConfig, rnd: RoundResult, outcome: Outcome, reason: str, kind: str = "watch-breach",
             **extra: Any) -> str | None:
    """The breach as a JSON document beside the preflight evidence (never named like one)."""
    directory = Path(cfg.settings.evidence_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{kind}-{rnd.at:%Y%m%dT%H%M%SZ}.json"
        n = 1
        while path.exists():
            n += 1
            path = directory / f"{kind}-{rnd.at:%Y%m%dT%H%M%SZ}-{n}.json"
        doc = cfg.redactor.scrub_data({
            "schema": f"gradual-deploy/{kind}/1", "at": iso_utc(rnd.at), "round": rnd.number,
            "reason": reason, "measurements": rnd.measurements(), "pause": outcome.as_dict(),
            "thresholds": cfg.settings.thresholds(WATCHED_GROUPS), **extra,
        })
        # fileops: a fresh temp file, never one planted at a guessable name (a FIFO there would hold the
        # watch after its pause), and nothing but a regular file replaced
        fileops.write_atomic(path, (json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode())
        return str(path)
    except OSError:
        return None
