"""`gradual-deploy watch`: the runbook's observation period, with automatic rollback to `paused`.

Every interval one round runs the observe criteria, the trades-feed freshness and the exchange probes
(the same library code as the preflight suite), prints one status line and appends a round record to
the audit. After `failure_limit` consecutive failing rounds it pauses through every channel (the same
code as `pause`), records the breach with its measurements, writes an evidence snapshot, and exits 1.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from deploy_tool import ProbeError, audit
from deploy_tool.redact import Redactor
from deploy_tool.units import format_duration, iso_utc, utc_now

EXIT_OK, EXIT_BREACH, EXIT_INTERRUPTED = 0, 1, 130


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    measured: Any
    threshold: Any
    unit: str
    message: str


@dataclass
class WatchConfig:
    interval_s: float
    duration_s: float
    failure_limit: int
    values: dict[str, Any]  # resolved options (observe, db, okx) by name
    audit_dir: str
    evidence_dir: str
    skip_db_check: bool = False
    json_lines: bool = False
    actor: str = "watch"
    redactor: Redactor = field(default_factory=Redactor)

    def record(self, entry: dict[str, Any]) -> None:
        """Append to the audit with every known secret masked."""
        audit.append(self.audit_dir, self.redactor.scrub_data(entry))


@dataclass
class RoundResult:
    number: int
    at: dt.datetime
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def measurements(self) -> dict[str, Any]:
        return {c.name: {"ok": c.ok, "measured": c.measured, "threshold": c.threshold, "unit": c.unit,
                         "message": c.message} for c in self.checks}


def run_round(number: int, cfg: WatchConfig) -> RoundResult:
    """Measure everything once; a probe that cannot measure is a failing check, never a pass."""
    from deploy_tool.observe import observe

    v = cfg.values
    result = RoundResult(number, utc_now())
    add = result.checks.append
    try:
        obs = observe(v["audit_dir"], v["risk_events_csv"], v["observe_window"], ts_field=v["audit_ts_field"],
                      event_field=v["audit_event_field"], status_field=v["audit_status_field"],
                      risk_ts_column=v["risk_events_ts_column"])
        for name, criterion in (
            ("audit_recent", obs.audit_recent(v["audit_max_silence"])),
            ("audit_parseable", obs.audit_parseable(v["max_bad_audit_lines"])),
            ("risk_events", obs.risk_events(v["max_risk_events"])),
            ("order_failure_rate", obs.order_failure_rate(v["max_order_failure_rate"])),
            ("risk_block_rate", obs.risk_block_rate(v["max_risk_block_rate"])),
            ("signals", obs.signals(v["min_signals"], v["max_signals"])),
        ):
            add(Check(name, criterion.ok, criterion.measured, criterion.threshold, criterion.unit, criterion.message))
    except ProbeError as exc:
        add(Check("observe", False, None, None, "", str(exc)))
    if not cfg.skip_db_check:
        from deploy_tool.freshness import probe_trades_freshness

        threshold = v["data_latency_threshold"]
        try:
            fresh = probe_trades_freshness(v["database_url"], v["trades_table"], v["trades_time_column"],
                                           statement_timeout_s=v["db_statement_timeout_ms"] / 1000)
            ok, message = fresh.verdict(threshold)
            add(Check("trades_fresh", ok, round(fresh.age_s, 3), threshold, "s", message))
        except ProbeError as exc:
            add(Check("trades_fresh", False, None, threshold, "s", str(exc)))
    _exchange_checks(cfg, add)
    return result


def _exchange_checks(cfg: WatchConfig, add: Callable[[Check], None]) -> None:
    from deploy_tool.okx import probe_public_time, probe_system_status

    v = cfg.values
    latency_limit, skew_limit = v["api_latency_threshold_ms"], v["max_clock_skew_ms"]
    probe = probe_public_time(v["okx_base_url"], v["api_samples"])
    if probe.failures:
        add(Check("okx_public_time_ok", False, len(probe.good), len(probe.samples), "calls",
                  f"{len(probe.failures)} of {len(probe.samples)} calls failed: {probe.failures[0].error}"))
    if probe.good:
        median = probe.median_ms
        add(Check("okx_latency", median < latency_limit, round(median, 1), latency_limit, "ms",
                  f"median {median:.1f} ms, threshold {latency_limit:g} ms"))
        skew = probe.skew_ms
        add(Check("okx_clock_skew", abs(skew) <= skew_limit, round(abs(skew), 1), skew_limit, "ms",
                  f"exchange clock {abs(skew):.0f} ms off local UTC, max {skew_limit:g} ms"))
    try:
        status = probe_system_status(v["okx_base_url"], v["maintenance_horizon"])
        add(Check("okx_no_maintenance", not status.blocking, len(status.blocking), 0, "events", status.summary()))
    except ProbeError as exc:
        add(Check("okx_no_maintenance", False, None, 0, "events", str(exc)))


def status_line(rnd: RoundResult, consecutive: int, limit: int, remaining_s: float) -> str:
    left = f"{format_duration(max(0, round(remaining_s)))} left"
    by_name = {c.name: c for c in rnd.checks}
    parts = []
    for name, label in (("audit_recent", "audit age"), ("risk_events", "risk events"),
                        ("order_failure_rate", "order failures"), ("risk_block_rate", "risk blocks"),
                        ("signals", "intents"), ("trades_fresh", "trades age"), ("okx_latency", "okx")):
        c = by_name.get(name)
        if c is not None and c.measured is not None:
            if c.unit == "fraction":
                parts.append(f"{label} {c.measured:.1%}")
            elif c.unit in ("s", "ms"):
                parts.append(f"{label} {c.measured:.1f} {c.unit}")
            else:
                parts.append(f"{label} {c.measured}")
    head = f"round {rnd.number} {iso_utc(rnd.at)}"
    if rnd.ok:
        return f"{head} OK   " + ", ".join(parts) + f"; {left}"
    first = rnd.failures[0]
    return (f"{head} FAIL ({consecutive}/{limit}) {first.name}: {first.message}"
            + (f" (+{len(rnd.failures) - 1} more)" if len(rnd.failures) > 1 else "") + f"; {left}")


def watch(cfg: WatchConfig, channels: Sequence[Any], emit: Callable[[str], None] = print,
          sleep: Callable[[float], None] = time.sleep) -> int:
    """Run rounds until a breach (pause, exit 1), the end of the duration (exit 0) or Ctrl+C (exit 130)."""
    from deploy_tool import switch

    emit = _scrubbed(emit, cfg.redactor)
    started = time.monotonic()
    deadline = started + cfg.duration_s
    consecutive = 0
    number = 0
    cfg.record({"event": "watch_start", "actor": cfg.actor, "interval_s": cfg.interval_s,
                                 "duration_s": cfg.duration_s, "failure_limit": cfg.failure_limit,
                                 "channels": [c.target for c in channels]})
    try:
        while True:
            number += 1
            round_started = time.monotonic()
            try:
                rnd = run_round(number, cfg)
            except Exception as exc:  # a round that could not measure is a failing round, never a pass
                rnd = RoundResult(number, utc_now(), [Check("round", False, None, None, "",
                                                            f"the round crashed: {type(exc).__name__}: {exc}")])
            consecutive = 0 if rnd.ok else consecutive + 1
            remaining = deadline - time.monotonic()
            record = {"event": "watch_round", "round": number, "ok": rnd.ok, "consecutive_failures": consecutive,
                      "failures": [c.name for c in rnd.failures], "measurements": rnd.measurements()}
            cfg.record({"actor": cfg.actor, **record})
            emit(json.dumps({"ts": iso_utc(rnd.at), **record}) if cfg.json_lines
                 else status_line(rnd, consecutive, cfg.failure_limit, remaining))
            if consecutive >= cfg.failure_limit:
                return _breach(cfg, channels, rnd, consecutive, emit, switch)
            if remaining <= 0:
                break
            sleep(max(0.0, min(cfg.interval_s - (time.monotonic() - round_started), remaining)))
            if time.monotonic() >= deadline:
                break
    except KeyboardInterrupt:
        cfg.record({"event": "watch_stopped", "actor": cfg.actor, "rounds": number,
                                     "reason": "Ctrl+C", "mode": "left as it was"})
        emit(_final(cfg, {"result": "stopped", "rounds": number},
                    f"watch stopped by Ctrl+C after {number} round(s); the mode was left as it is"))
        return EXIT_INTERRUPTED
    cfg.record({"event": "watch_end", "actor": cfg.actor, "rounds": number, "result": "no breach"})
    emit(_final(cfg, {"result": "no_breach", "rounds": number},
                f"watch finished: no breach in {format_duration(cfg.duration_s)} ({number} rounds)"))
    return EXIT_OK


def _scrubbed(emit: Callable[[str], None], redactor: Redactor) -> Callable[[str], None]:
    return lambda line: emit(redactor.scrub(line))


def _final(cfg: WatchConfig, record: dict[str, Any], text: str) -> str:
    return json.dumps({"event": "watch_end", **record}) if cfg.json_lines else text


def _breach(cfg: WatchConfig, channels: Sequence[Any], rnd: RoundResult, consecutive: int,
            emit: Callable[[str], None], switch: Any) -> int:
    reason = (f"watch: {consecutive} consecutive failing round(s): "
              + "; ".join(f"{c.name}: {c.message}" for c in rnd.failures))[:500]
    outcome = switch.pause(channels, reason=reason, actor=cfg.actor)
    cfg.record(outcome.audit_record(cfg.actor, reason))
    snapshot = _snapshot(cfg, rnd, outcome, reason)
    cfg.record({"event": "watch_breach", "actor": cfg.actor, "round": rnd.number,
                                 "consecutive_failures": consecutive, "failures": [c.name for c in rnd.failures],
                                 "measurements": rnd.measurements(), "pause": outcome.result,
                                 "evidence": snapshot})
    if cfg.json_lines:
        emit(json.dumps({"event": "watch_breach", "round": rnd.number, "pause": outcome.as_dict(),
                         "evidence": snapshot}))
    else:
        emit(f"BREACH after {consecutive} failing round(s): pausing through every channel")
        for c in outcome.channels:
            emit(f"  {c.channel} {c.target}: " + (f"{c.before} -> {c.after} confirmed" if c.ok else f"FAILED: {c.error}"))
        emit(f"pause: {outcome.result.upper()}; evidence snapshot: {snapshot}")
    return EXIT_BREACH


def _snapshot(cfg: WatchConfig, rnd: RoundResult, outcome: Any, reason: str) -> str | None:
    """The breach as a JSON document beside the preflight evidence (never named like one)."""
    from deploy_tool.evidence import write_json_atomic

    directory = Path(cfg.evidence_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"watch-breach-{rnd.at:%Y%m%dT%H%M%SZ}.json"
        n = 1
        while path.exists():
            n += 1
            path = directory / f"watch-breach-{rnd.at:%Y%m%dT%H%M%SZ}-{n}.json"
        write_json_atomic(path, cfg.redactor.scrub_data({
            "schema": "gradual-deploy/watch-breach/1", "at": iso_utc(rnd.at), "round": rnd.number,
            "reason": reason, "measurements": rnd.measurements(), "pause": outcome.as_dict(),
            "thresholds": {k: v for k, v in cfg.values.items() if k.startswith(("max_", "min_", "audit_max"))},
        }))
        return str(path)
    except OSError:
        return None
