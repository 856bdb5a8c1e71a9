"""One analysis run: the rounds that `watch` and `ramp` both drive.

Every --interval a round measures what the live system shows (the trading system's audit and risk events,
the trades feed, the exchange), judges it with the same judges as the preflight suite
(`deploy_tool.criteria`), and counts the round against the limits, as Argo Rollouts' AnalysisRun does:

- **fail**: a criterion measured out of bounds. `--failure-limit` consecutive failing rounds: breach.
- **error**: a probe could not measure. Not a failed criterion, and never a pass: more than
  `--consecutive-error-limit` consecutive rounds with an error is a breach (a guard that cannot see is not
  left running blind).
- **inconclusive**: too few samples to judge (fewer than `--min-orders` orders in the window). More than
  `--inconclusive-limit` consecutive ones make the run inconclusive: a person decides (the ramp waits for
  `gradual-deploy ramp approve`; watch says so).
- **pass**: everything measured and in bounds.

A round's outcome is its worst criterion's, in that order. The run also asks the mode after every round (a
pause always wins: someone else's pause or switch ends a ramp's run at once). `run` is the loop; the
caller (watch, or the ramp around each step) acts on how it ended. Time comes from a `Clock`, so that the
logic runs in a test in-process with a clock that does not wait.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from deploy_tool import audit, fileops
from deploy_tool.criteria import (
    ERROR,
    FAIL,
    INCONCLUSIVE,
    OBSERVE_JUDGES,
    PASS,
    Criterion,
    judged,
    observe_vs_backtest,
    okx_criteria,
    trades_fresh,
)
from deploy_tool.evidence import json_number
from deploy_tool.modes.change import Outcome, pause
from deploy_tool.modes.channels import Channel, ChannelError
from deploy_tool.probes import (
    Attempt,
    measure_baseline,
    measure_observation,
    measure_status,
    measure_time,
    measure_trades,
)
from deploy_tool.redact import Redactor
from deploy_tool.settings import Settings
from deploy_tool.times import format_left, iso_utc, utc_now

if TYPE_CHECKING:
    from deploy_tool.probes.backtest import Strategy

# What acting on a round takes at most, beyond measuring it: judging it and pausing every channel. Each round
# starts early by that and by the time a round takes, so that --interval bounds the time from a fact (a
# breach written) to its pause, not just the time between two rounds.
ACT_ALLOWANCE_S = 0.1
# The groups whose thresholds a round judges, recorded with a breach.
WATCHED_GROUPS = ("observe", "db", "okx")
OUTCOMES = (FAIL, ERROR, INCONCLUSIVE, PASS)  # worst first: a round is its worst criterion


class Clock(Protocol):
    """The loop's time: a monotonic reading in seconds, and a wait. Every deadline, remaining time and pause
    between rounds comes from it, so that a test can pass one whose wait returns at once with the reading
    moved on, and run a long watch in-process without waiting for it."""

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
    """One analysis run's settings (loop, limits, thresholds, targets), who runs it, and how it prints."""

    settings: Settings
    json_lines: bool = False
    actor: str = "watch"
    redactor: Redactor = field(default_factory=Redactor)
    warn: Callable[[str], None] = _stderr
    gate_forced: bool = False  # the ramp's evidence gate opened only on unsigned evidence (--allow-unsigned)
    command: str = "watch"  # the command that drives the run, for what it says: watch or ramp
    baseline: Attempt[Strategy] | None = None  # the judge's backtest trades, read once per run (--judge-backtest)
    stamp: dict[str, Any] = field(default_factory=dict)  # put into every record (the ramp's ramp_id)
    sending: list[threading.Thread] = field(default_factory=list)  # notifications sent in the background

    @property
    def limits(self) -> Limits:
        s = self.settings
        return Limits(s.failure_limit, s.consecutive_error_limit, s.inconclusive_limit)

    def record(self, entry: dict[str, Any]) -> None:
        """Append to gradual-deploy's own audit with every known secret masked. A failure to write (a full
        disk) is said on stderr and the run goes on guarding: losing an audit line is bad, losing the guard
        is worse."""
        try:
            audit.append(self.settings.deploy_audit_dir, self.redactor.scrub_data({**entry, **self.stamp}))
        except audit.AuditError as exc:
            self.warn(self.redactor.scrub(f"gradual-deploy: WARNING: {exc}; still watching"))

    def tell(self, about: str, title: str, lines: Sequence[str], wait: bool = True) -> None:
        """Notify the --notify targets, bounded, after the fact; the delivery goes to the audit. `wait`
        False sends from a thread of its own, for news that must not hold up the guard (a step taken, a
        wait begun): a slow receiver never delays the next round."""
        from deploy_tool.notify import tell

        if not self.settings.notify:
            return

        def send() -> None:
            tell(self.settings.notify, about, title, lines, self.redactor.scrub, self.record,
                 lambda line: self.warn(self.redactor.scrub(line)))

        if wait:
            send()
        else:
            thread = threading.Thread(target=send, name=f"notify-{about}", daemon=True)
            thread.start()
            self.sending.append(thread)

    def settle(self, timeout_s: float = 5.0) -> None:
        """Wait (at most `timeout_s` in all) for the notifications still being sent, so that the process does
        not end with them and their audit lines lost."""
        deadline = time.monotonic() + timeout_s
        for thread in self.sending:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.sending = [t for t in self.sending if t.is_alive()]


@dataclass(frozen=True)
class Limits:
    """When a run ends on its own: `failure` consecutive failing rounds breach (the contract's
    --failure-limit); more than `consecutive_error` consecutive error rounds breach; more than
    `inconclusive` consecutive inconclusive rounds make the run inconclusive."""

    failure: int = 1
    consecutive_error: int = 4
    inconclusive: int = 3


# --- one round ----------------------------------------------------------------------------------


@dataclass
class Round:
    """The criteria of one round, and its outcome."""

    number: int
    at: dt.datetime
    checks: list[Criterion] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        found = {c.outcome for c in self.checks}
        return next((o for o in OUTCOMES if o in found), ERROR)  # a round that judged nothing judged nothing

    @property
    def ok(self) -> bool:
        return self.outcome == PASS

    def of(self, outcome: str) -> list[Criterion]:
        return [c for c in self.checks if c.outcome == outcome]

    @property
    def failures(self) -> list[Criterion]:
        """What kept this round from passing, worst first."""
        return [c for o in OUTCOMES[:-1] for c in self.of(o)]

    def measurements(self) -> dict[str, Any]:
        return {c.id: {"outcome": c.outcome, "ok": c.ok, "measured": json_number(c.measured),
                       "threshold": json_number(c.threshold), "unit": c.unit, "message": c.message,
                       **({"details": _finite(c.details)} if c.details else {})}
                for c in self.checks}


def _finite(value: Any) -> Any:
    """The value with every non-finite float as None: the records and the snapshot are strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def measure_round(number: int, cfg: WatchConfig) -> Round:
    """Measure and judge once what a run guards: observe, the trades feed (unless skipped) and the exchange.
    A probe that cannot measure yields error criteria, never passing ones."""
    settings, redactor = cfg.settings, cfg.redactor
    observation = measure_observation(settings, redactor)
    found = [judged(observation, judge, settings) for judge in OBSERVE_JUDGES]
    if settings.judge_backtest:
        if cfg.baseline is None:
            cfg.baseline = measure_baseline(settings, redactor)
        found.append(judge_trades(observation, cfg.baseline, settings))
    if not settings.skip_db_check:
        found.append(judged(measure_trades(settings, redactor), trades_fresh, settings))
    found += okx_criteria(measure_time(settings, redactor), measure_status(settings, redactor), settings)
    return Round(number, utc_now(), found)


def judge_trades(observation: Attempt[Any], baseline: Attempt[Strategy], settings: Settings) -> Criterion:
    """The live trades against the backtest's (`criteria.observe_vs_backtest`), or the error of whichever side
    could not be read."""
    for attempt in (baseline, observation):
        if attempt.error is not None:
            return Criterion("observe_vs_backtest", "observe", False, None, settings.judge_fail_p, "p",
                             attempt.error, outcome=ERROR)
    return observe_vs_backtest(observation.value(), baseline.value(), settings)


def crashed_round(number: int, exc: BaseException) -> Round:
    return Round(number, utc_now(), [Criterion("round", "watch", False, None, None, None,
                                               f"the round crashed: {type(exc).__name__}: {exc}", outcome=ERROR)])


@dataclass
class Tally:
    """The run's counts: consecutive failing, error and inconclusive rounds, and every outcome's total."""

    limits: Limits
    consecutive: dict[str, int] = field(default_factory=lambda: {FAIL: 0, ERROR: 0, INCONCLUSIVE: 0})
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))

    def add(self, rnd: Round) -> str | None:
        """Count the round; what it makes of the run: "failed" or "errored" (a breach), "inconclusive" (the
        consecutive inconclusive rounds just went over the limit), or None. Only a passing round ends a streak:
        rounds that alternate between failing and erroring (or inconclusive) never pass, so neither kind
        starts again from zero between them."""
        outcome = rnd.outcome
        self.totals[outcome] += 1
        for name in self.consecutive:
            if outcome == PASS:
                self.consecutive[name] = 0
            elif name == outcome:
                self.consecutive[name] += 1
        if self.consecutive[FAIL] >= self.limits.failure:
            return "failed"
        if self.consecutive[ERROR] > self.limits.consecutive_error:
            return "errored"
        if self.consecutive[INCONCLUSIVE] == self.limits.inconclusive + 1:
            return "inconclusive"
        return None

    def counter(self, rnd: Round) -> str:
        """The round's streak against its limit, e.g. "2/3" failing, or "5/4+1" errors."""
        outcome = rnd.outcome
        if outcome == FAIL:
            return f"{self.consecutive[FAIL]}/{self.limits.failure}"
        if outcome == ERROR:
            return f"{self.consecutive[ERROR]}/{self.limits.consecutive_error + 1}"
        if outcome == INCONCLUSIVE:
            return f"{self.consecutive[INCONCLUSIVE]}/{self.limits.inconclusive + 1}"
        return ""

    def summary(self) -> dict[str, int]:
        return {name: count for name, count in self.totals.items() if count}


def status_line(rnd: Round, tally: Tally, remaining_s: float | None, waiting: str = "") -> str:
    """One round for a person: its outcome, the headline numbers or the first problem, and the time left."""
    left = f"{format_left(remaining_s)} left" if remaining_s is not None else "no end set"
    if waiting:
        left = f"{left}; {waiting}"
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
    word = {FAIL: "FAIL", ERROR: "ERROR", INCONCLUSIVE: "INCONCLUSIVE"}[rnd.outcome]
    problems = rnd.failures
    first = problems[0]
    return (f"{head} {word} ({tally.counter(rnd)}) {first.id}: {first.message}"
            + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else "") + f"; {left}")


# --- the run ------------------------------------------------------------------------------------

TERMINATING_SIGNALS = ("SIGTERM", "SIGHUP", "SIGBREAK")  # each where the platform has it


class Terminated(BaseException):
    """The process was told to stop (SIGTERM, SIGHUP): not a clean end, so the run pauses first."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signal.Signals(signum).name)


@dataclass
class Ended:
    """How a run ended:
    - "held": its duration is over (with `need_pass`, on a passing round);
    - "breach": failed or errored (`breach` says which), left to the caller to act on;
    - "inconclusive": more consecutive inconclusive rounds than the limit (only with `stop_inconclusive`);
    - "mode": the mode check said why not to go on (someone paused);
    - "ready": `ready` said the wait is over (a confirmation came);
    - "stopped": Ctrl+C; "ended": a signal or a crash, already paused."""

    result: str
    rounds: int
    last: Round | None = None
    tally: Tally | None = None
    why: str = ""
    pending: tuple[dict[str, Any], str] | None = None  # a breach's round record and line, told after the pause

    def tell_round(self, cfg: WatchConfig, emit: Callable[[str], None]) -> None:
        """Audit and print the breaching round, once the pause is done."""
        if self.pending is not None:
            record, line = self.pending
            self.pending = None
            cfg.record(record)
            emit(line)

    @property
    def breach(self) -> str:
        return self.why if self.result == "breach" else ""


def run(cfg: WatchConfig, channels: Sequence[Channel], emit: Callable[[str], None], *,
        duration_s: float | None, clock: Clock = SYSTEM_CLOCK, extra: dict[str, Any] | None = None,
        mode_check: Callable[[], str | None] | None = None, need_pass: bool = False,
        stop_inconclusive: bool = False, ready: Callable[[], str | None] | None = None,
        on_inconclusive: Callable[[Round, Tally], None] | None = None,
        each_round: Callable[[Round], dict[str, Any]] | None = None,
        measure: Callable[[int, WatchConfig], Round] | None = None) -> Ended:
    """Run rounds until one of `Ended`'s ends. --interval is the longest a fact waits to be judged and acted
    on: a fact that lands just after a round has read it waits for the next round to read it, measure the
    rest and act, so each round starts that much before --interval is over (`lead`: the time the last round
    took, plus ACT_ALLOWANCE_S, at most half the interval).

    `duration_s` None runs until something else ends it (a wait). `need_pass`: the duration ends only on a
    passing round (an inconclusive or error round holds the run on: a ramp never advances on one). `ready`
    is asked after every round that did not end the run (a wait's confirmation: None = not yet, else what
    said go). `extra` goes into every round record, and so does what `each_round` returns for the round
    (watch: the modes it read). Any end but these pauses first."""
    settings, limits = cfg.settings, cfg.limits
    measure = measure or measure_round
    tally = Tally(limits)
    deadline = None if duration_s is None else clock.monotonic() + duration_s
    number = 0
    previous = catch_termination()
    try:
        while True:
            number += 1
            round_started = clock.monotonic()
            try:
                rnd = measure(number, cfg)
            except Exception as exc:  # a round that could not measure is an error round, never a pass
                rnd = crashed_round(number, exc)
            verdict = tally.add(rnd)
            remaining = None if deadline is None else deadline - clock.monotonic()
            breach = verdict in ("failed", "errored")
            seen = each_round(rnd) if each_round is not None and not breach else {}
            record = {"event": "watch_round", **(extra or {}), **seen, "round": number, "outcome": rnd.outcome,
                      "ok": rnd.ok, "consecutive": dict(tally.consecutive),
                      "consecutive_failures": tally.consecutive[FAIL],
                      "failures": [c.id for c in rnd.failures], "measurements": rnd.measurements()}
            line = (json.dumps({"ts": iso_utc(rnd.at), **record}) if cfg.json_lines
                    else status_line(rnd, tally, remaining, (extra or {}).get("waiting", "")))
            if breach:  # acted on first: its record and line wait for the pause (a stuck terminal holds nothing)
                return Ended("breach", number, rnd, tally, verdict or "", pending=({"actor": cfg.actor, **record}, line))
            cfg.record({"actor": cfg.actor, **record})
            emit(line)
            why = mode_check() if mode_check is not None else None
            if why:
                return Ended("mode", number, rnd, tally, why)
            if verdict == "inconclusive":
                if stop_inconclusive:
                    return Ended("inconclusive", number, rnd, tally)
                if on_inconclusive is not None:
                    on_inconclusive(rnd, tally)
            go = ready() if ready is not None else None
            if go:
                return Ended("ready", number, rnd, tally, go)
            over = remaining is not None and remaining <= 0
            if over and (rnd.ok or not need_pass):
                break
            took = clock.monotonic() - round_started
            wait = settings.interval - took - min(took + ACT_ALLOWANCE_S, settings.interval / 2)
            if remaining is not None and not over:
                wait = min(wait, remaining)
            clock.sleep(max(0.0, wait))
            if deadline is not None and clock.monotonic() >= deadline and not need_pass:
                break
    except KeyboardInterrupt:
        return Ended("stopped", number, tally=tally)
    except BaseException as exc:  # any other end before the duration: stop guarding only once paused
        ended_early(cfg, channels, number, exc)
        return Ended("ended", number, tally=tally)
    finally:
        restore_handlers(previous)
    return Ended("held", number, rnd, tally)


def catch_termination() -> dict[int, Any]:
    """Turn SIGTERM and SIGHUP (POSIX), SIGBREAK (Windows: Ctrl+Break, or the console window closed) into
    `Terminated` (main thread only); the handlers they had before."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    numbers = [getattr(signal, name) for name in TERMINATING_SIGNALS if hasattr(signal, name)]
    return {number: signal.signal(number, _raise_terminated) for number in numbers}


def restore_handlers(handlers: dict[int, Any]) -> None:
    for number, handler in handlers.items():
        signal.signal(number, handler)


def ended_early(cfg: WatchConfig, channels: Sequence[Channel], rounds: int, exc: BaseException) -> None:
    """The run must end before its time (a signal, a crash, a closed terminal): pause first."""
    why = f"{type(exc).__name__}: {exc}" if not isinstance(exc, Terminated) else f"terminated by {exc}"
    reason = f"{cfg.command} ended before its duration ({why}); paused so that nothing trades unguarded"[:500]
    outcome = pause(channels, reason=reason, actor=cfg.actor, audit_dir=cfg.settings.deploy_audit_dir,
                    scrub=cfg.redactor.scrub_data)
    cfg.record({"event": "watch_stopped", "actor": cfg.actor, "rounds": rounds, "reason": why,
                "pause": outcome.result})
    try:
        cfg.warn(cfg.redactor.scrub(f"gradual-deploy {cfg.command}: {reason}: pause {outcome.result.upper()}"))
    except Exception:
        pass  # stderr may be gone too; the audit has it
    try:
        cfg.tell(f"{cfg.command} ended", f"gradual-deploy: {cfg.command} ended early, pause {outcome.result.upper()}",
                 [reason, *channel_lines(outcome.channels)])
    except Exception:
        pass


# --- the mode check -----------------------------------------------------------------------------


def read_modes(channels: Sequence[Channel]) -> dict[str, str]:
    """Each channel's mode as it reads now, or why it cannot be read."""
    found = {}
    for channel in channels:
        try:
            found[channel.name] = channel.read() or "no mode"
        except ChannelError as exc:
            found[channel.name] = f"unreadable ({exc})"
    return found


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


# --- acting on a breach -------------------------------------------------------------------------


def breach_reason(label: str, ended: Ended) -> str:
    rnd, tally = ended.last, ended.tally
    assert rnd is not None and tally is not None
    if ended.breach == "errored":
        head = (f"{label}: {tally.consecutive[ERROR]} consecutive round(s) could not measure (more than "
                f"--consecutive-error-limit {tally.limits.consecutive_error})")
    else:
        head = f"{label}: {tally.consecutive[FAIL]} consecutive failing round(s)"
    return (head + ": " + "; ".join(f"{c.id}: {c.message}" for c in rnd.failures))[:500]


def after_breach(outcome: Outcome) -> str:
    """The next step after a breach's pause, for the line that says how the pause went."""
    if outcome.result in ("failed", "unconfirmed"):
        return ("NO CHANNEL CONFIRMED THE PAUSE: stop the trading system by hand, then check it with "
                "`gradual-deploy status`")
    if outcome.result == "partial":
        return ("not every channel confirmed the pause: check the trading system (`gradual-deploy status`) and "
                "pause the others by hand")
    return ("to go live again: find the cause (the snapshot holds the measurements), rehearse in mock "
            "(`gradual-deploy switch --to mock`), then `switch --to real` (the runbook's way back; the gate takes "
            "the newest evidence while it is fresh, so run a new signed `gradual-deploy preflight` first if anything "
            "changed)")


def breach_pause(cfg: WatchConfig, channels: Sequence[Channel], reason: str) -> Outcome:
    return pause(channels, reason=reason, actor=cfg.actor, audit_dir=cfg.settings.deploy_audit_dir,
                 scrub=cfg.redactor.scrub_data)


def channel_lines(results: Sequence[Any]) -> list[str]:
    return [f"  {c.channel} {c.target}: " + (f"{c.before} -> {c.after} confirmed" if c.ok else f"FAILED: {c.error}")
            for c in results]


def emit_channels(emit: Callable[[str], None], results: Sequence[Any]) -> None:
    for line in channel_lines(results):
        emit(line)


def snapshot(cfg: WatchConfig, rnd: Round, outcome: Outcome, reason: str, kind: str = "watch-breach",
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
        # run after its pause), and nothing but a regular file replaced
        fileops.write_atomic(path, (json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode())
        return str(path)
    except OSError:
        return None
