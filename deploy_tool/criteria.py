"""The go-live and watch criteria: a probe's result judged against the settings, in one shape.

Each judge takes what a probe measured and the `Settings`, and returns a `Criterion`: its id, group,
measured value, threshold, unit, verdict and the message a person reads. The preflight tests record one
criterion each and assert it; `watch` and `ramp` run the same judges every round (`deploy_tool.analysis`).
A probe that could not measure is an `Attempt` holding the reason, and every criterion built on it fails
with that reason (outcome "error"): a check that could not measure never passes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from deploy_tool import MODES
from deploy_tool.probes import Attempt
from deploy_tool.times import format_age, format_duration, iso_utc, utc_now

if TYPE_CHECKING:
    from deploy_tool.modes.controlfile import ControlState
    from deploy_tool.probes.admin import AdminAnswer
    from deploy_tool.probes.backtest import Strategy
    from deploy_tool.probes.freshness import Freshness
    from deploy_tool.probes.observe import Observation
    from deploy_tool.probes.okx import MinOrder, StatusProbe, TimeProbe
    from deploy_tool.probes.okxaccount import Account
    from deploy_tool.probes.riskconfig import RiskConfig
    from deploy_tool.probes.secretscan import Scan
    from deploy_tool.redact import Redactor
    from deploy_tool.settings import Settings

# How far a timestamp may lie ahead of this host's clock before it counts as wrong.
TRADES_FUTURE_TOLERANCE_S = 1.0
BACKTEST_FUTURE_TOLERANCE_S = 60.0
ADMIN_HEALTH_LIMIT_MS = 2000.0

# A criterion's outcome (Argo Rollouts' measurement phases): measured and in bounds; measured and out of
# bounds; too few samples to judge; could not measure. Only "pass" and "inconclusive" are ok: in the
# preflight suite an inconclusive criterion passes as the contract's rule says (0 orders: a rate of 0), and
# an analysis run (`deploy_tool.analysis`) counts it apart, so that a ramp never advances on it.
PASS, FAIL, INCONCLUSIVE, ERROR = "pass", "fail", "inconclusive", "error"


@dataclass(frozen=True)
class Criterion:
    """One criterion's outcome: what was measured, against what, and what a person should do."""

    id: str
    group: str
    ok: bool
    measured: Any
    threshold: Any
    unit: str | None
    message: str
    details: dict[str, Any] | None = None  # structured facts behind the message, kept whole in the evidence
    outcome: str = ""  # PASS, FAIL, INCONCLUSIVE or ERROR; unset: PASS if ok, else FAIL

    def __post_init__(self) -> None:
        if not self.outcome:
            object.__setattr__(self, "outcome", PASS if self.ok else FAIL)
        if self.outcome not in (PASS, FAIL, INCONCLUSIVE, ERROR):
            raise ValueError(f"{self.id}: unknown outcome {self.outcome!r}")
        if self.ok != (self.outcome in (PASS, INCONCLUSIVE)):
            raise ValueError(f"{self.id}: outcome {self.outcome!r} with ok={self.ok}")


def unmeasured(id: str, group: str, error: str, threshold: Any = None, unit: str | None = None) -> Criterion:
    """The failing criterion of a check whose probe could not measure (an error, not a failed measurement)."""
    return Criterion(id, group, False, None, threshold, unit, error, outcome=ERROR)


def _absent(id: str, group: str, fact: str, threshold: Any = None, unit: str | None = None) -> Criterion:
    """A criterion that fails on what was found missing (no audit file today, no risk-events file): a fact
    about the system, measured, not a probe that could not measure."""
    return Criterion(id, group, False, None, threshold, unit, fact)


# --- okx ----------------------------------------------------------------------------------------


def okx_public_time_ok(probe: TimeProbe, settings: Settings) -> Criterion:
    good, total = len(probe.good), len(probe.samples)
    if good == total:
        return Criterion("okx_public_time_ok", "okx", True, good, total, "calls",
                         f'{good}/{total} calls of {probe.url} answered HTTP 200 with code "0"')
    return Criterion("okx_public_time_ok", "okx", False, good, total, "calls",
                     f"{total - good} of {total} calls of {probe.url} failed, first: {probe.failures[0].error}; "
                     "the exchange API is unhealthy or unreachable from this host")


def okx_public_time_latency(probe: TimeProbe, settings: Settings) -> Criterion:
    threshold = settings.api_latency_threshold_ms
    if not probe.good:
        return unmeasured("okx_public_time_latency", "okx", probe.no_good_call(), threshold, "ms")
    median = probe.median_ms
    shape = f"over {len(probe.good)} calls (p95 {probe.p95_ms:.1f} ms, max {probe.max_ms:.1f} ms)"
    if median < threshold:
        return Criterion("okx_public_time_latency", "okx", True, median, threshold, "ms",
                         f"median {median:.1f} ms {shape}, threshold {threshold:g} ms")
    return Criterion("okx_public_time_latency", "okx", False, median, threshold, "ms",
                     f"median latency {median:.1f} ms {shape} is not below the {threshold:g} ms threshold: "
                     "the exchange or the network path is slow; retry later or check the route")


def okx_clock_skew(probe: TimeProbe, settings: Settings) -> Criterion:
    threshold = settings.max_clock_skew_ms
    if not probe.good:
        return unmeasured("okx_clock_skew", "okx", probe.no_good_call(), threshold, "ms")
    skew = probe.skew_ms
    side = "ahead of" if skew > 0 else "behind"
    if abs(skew) <= threshold:
        return Criterion("okx_clock_skew", "okx", True, abs(skew), threshold, "ms",
                         f"exchange clock {abs(skew):.0f} ms {side} local UTC, max {threshold:g} ms")
    return Criterion("okx_clock_skew", "okx", False, abs(skew), threshold, "ms",
                     f"exchange clock is {abs(skew):.0f} ms {side} this host's UTC clock, max {threshold:g} ms: "
                     "sync this host's clock (chrony/NTP) before trading; signed requests will be rejected")


def okx_no_maintenance(probe: StatusProbe, settings: Settings) -> Criterion:
    blocking = len(probe.blocking)
    if blocking == 0:
        return Criterion("okx_no_maintenance", "okx", True, 0, 0, "events", probe.summary())
    return Criterion("okx_no_maintenance", "okx", False, blocking, 0, "events",
                     f"exchange maintenance within {format_duration(settings.maintenance_horizon)}: "
                     f"{probe.summary()}; wait until it is over before going live")


def okx_criteria(time_probe: Attempt[TimeProbe], status_probe: Attempt[StatusProbe],
                 settings: Settings) -> list[Criterion]:
    """The exchange group, as `watch` runs it every round."""
    found = [judged(time_probe, judge, settings)
             for judge in (okx_public_time_ok, okx_public_time_latency, okx_clock_skew)]
    return [*found, judged(status_probe, okx_no_maintenance, settings)]


# --- db -----------------------------------------------------------------------------------------


def trades_fresh(freshness: Freshness, settings: Settings) -> Criterion:
    """The newest trade is younger than the data-latency threshold; a future timestamp is never fresh."""
    threshold = settings.data_latency_threshold
    where = f"{freshness.table}.{freshness.column} in {freshness.target}"
    age = freshness.age_s
    if age < -TRADES_FUTURE_TOLERANCE_S:
        return Criterion("trades_fresh", "db", False, age, threshold, "s",
                         f"newest trade {iso_utc(freshness.newest)} is {-age:.1f} s in the future (tolerance "
                         f"{TRADES_FUTURE_TOLERANCE_S:g} s) in {where}: the feed's clock or this host's clock is "
                         f"wrong, or {freshness.column} is not UTC")
    if age >= threshold:
        return Criterion("trades_fresh", "db", False, age, threshold, "s",
                         f"newest trade is {format_age(age)} old ({iso_utc(freshness.newest)}), threshold "
                         f"{threshold:g} s, in {where}: the trades feed is stalled or lagging")
    return Criterion("trades_fresh", "db", True, age, threshold, "s",
                     f"newest trade is {age:.2f} s old, threshold {threshold:g} s, in {where}")


# --- backtest -----------------------------------------------------------------------------------


def backtest_summary_valid(strategy: Strategy, settings: Settings) -> Criterion:
    problems = 1 if strategy.error else 0
    return Criterion("backtest_summary_valid", "backtest", problems == 0, problems, 0, "problems",
                     strategy.error or f"{strategy.name}: sharpe, winrate, max_drawdown present and finite")


def backtest_sharpe(strategy: Strategy, settings: Settings) -> Criterion:
    s, minimum = strategy, settings.min_sharpe
    ok = s.sharpe >= minimum
    text = f"{s.name}: sharpe {s.sharpe:g}{s.sharpe_note()}, minimum {minimum:g}"
    return Criterion("backtest_sharpe", "backtest", ok, s.sharpe, minimum, "ratio", text if ok else (
        f"{s.name}: sharpe {s.sharpe:g}{s.sharpe_note()} is below the minimum {minimum:g}: do not go live with it"))


def backtest_winrate(strategy: Strategy, settings: Settings) -> Criterion:
    s, minimum = strategy, settings.min_winrate
    ok = s.winrate >= minimum
    text = f"{s.name}: winrate {s.winrate:g}, minimum {minimum:g}"
    return Criterion("backtest_winrate", "backtest", ok, s.winrate, minimum, "fraction", text if ok else (
        f"{s.name}: winrate {s.winrate:g} is below the minimum {minimum:g}: do not go live with it"))


def backtest_max_drawdown(strategy: Strategy, settings: Settings) -> Criterion:
    s, maximum = strategy, settings.max_drawdown
    ok = s.max_drawdown <= maximum
    text = f"{s.name}: max drawdown {s.max_drawdown:g}{s.drawdown_note()}, maximum {maximum:g}"
    return Criterion("backtest_max_drawdown", "backtest", ok, s.max_drawdown, maximum, "fraction", text if ok else (
        f"{s.name}: max drawdown {s.max_drawdown:g}{s.drawdown_note()} exceeds the maximum {maximum:g}: do not go "
        "live with it"))


def backtest_fresh(strategy: Strategy, settings: Settings, now: dt.datetime | None = None) -> Criterion:
    """The summary's generated_at (else the file's mtime) is within --backtest-max-age."""
    max_age = settings.backtest_max_age
    if strategy.generated_at is None:
        return Criterion("backtest_fresh", "backtest", False, None, max_age, "s",
                         f"{strategy.name}: the summary has no generated_at and no file time")
    age = ((now or utc_now()) - strategy.generated_at).total_seconds()
    stamp = f"{strategy.generated_at_source} {iso_utc(strategy.generated_at)}"
    if age < -BACKTEST_FUTURE_TOLERANCE_S:
        return Criterion("backtest_fresh", "backtest", False, age, max_age, "s",
                         f"{strategy.name}: {stamp} lies {format_age(-age)} in the future: fix the backtest "
                         "host's clock")
    text = f"{strategy.name}: backtest is {format_age(age)} old ({stamp}), max age {format_age(max_age)}"
    if age > max_age:
        return Criterion("backtest_fresh", "backtest", False, age, max_age, "s",
                         f"{text}: re-run the backtest before going live")
    return Criterion("backtest_fresh", "backtest", True, age, max_age, "s", text)


def backtest_min_trades(strategy: Strategy, settings: Settings) -> Criterion:
    s, minimum = strategy, settings.min_trades
    if s.trades is None:
        return Criterion("backtest_min_trades", "backtest", False, None, minimum, "trades",
                         f"{s.name}: the summary has no trades count but --min-trades is {minimum}: "
                         "add trades to the summary or lower --min-trades")
    if s.trades >= minimum:
        return Criterion("backtest_min_trades", "backtest", True, s.trades, minimum, "trades",
                         f"{s.name}: {s.trades} trades, minimum {minimum}")
    return Criterion("backtest_min_trades", "backtest", False, s.trades, minimum, "trades",
                     f"{s.name}: {s.trades} backtest trades, fewer than the minimum {minimum}: "
                     "the figures are not meaningful yet")


# --- risk ---------------------------------------------------------------------------------------


def _risk_value(config: RiskConfig, name: str, check_id: str, threshold: Any, unit: str | None) -> Criterion | float:
    """The configured value, or the failing criterion that says why there is none."""
    if name in config.problems:
        return Criterion(check_id, "risk", False, None, threshold, unit,
                         f"{config.problems[name]} in {config.source}: fix {config.key_hint(name)}")
    value = config.values.get(name)
    if value is None:
        return Criterion(check_id, "risk", False, None, threshold, unit,
                         f"no {name} in {config.source}: set {config.key_hint(name)}; a live system without it "
                         "has no limit there")
    return value


def _at_most(config: RiskConfig, name: str, check_id: str, limit: float, what: str) -> Criterion:
    value = _risk_value(config, name, check_id, limit, "fraction")
    if isinstance(value, Criterion):
        return value
    text = f"{what} {value:g} ({value:.2%}) in {config.source}, at most {limit:g} ({limit:.2%})"
    if value <= 0:
        return Criterion(check_id, "risk", False, value, limit, "fraction", f"{text}: 0 means no limit set")
    if value > limit:
        return Criterion(check_id, "risk", False, value, limit, "fraction",
                         f"{text}: lower it before going live small")
    return Criterion(check_id, "risk", True, value, limit, "fraction", text)


def risk_allocation(config: RiskConfig, settings: Settings) -> Criterion:
    return _at_most(config, "allocation", "risk_allocation", settings.max_allocation, "allocation")


def risk_single_trade_loss(config: RiskConfig, settings: Settings) -> Criterion:
    return _at_most(config, "single_trade_max_loss_pct", "risk_single_trade_loss", settings.max_single_trade_loss,
                    "per-trade loss limit")


def risk_daily_loss(config: RiskConfig, settings: Settings) -> Criterion:
    return _at_most(config, "daily_max_loss_pct", "risk_daily_loss", settings.max_daily_loss, "daily loss limit")


def risk_order_notional_cap(config: RiskConfig, settings: Settings, equity: float | None = None) -> Criterion:
    """The per-order notional cap is set, above 0, and no more than the allocated capital: a cap that
    allows more than capital x allocation caps nothing."""
    check_id = "risk_order_notional_cap"
    value = _risk_value(config, "max_order_notional", check_id, None, "quote")
    if isinstance(value, Criterion):
        return value
    if value <= 0:
        return Criterion(check_id, "risk", False, value, None, "quote",
                         f"per-order notional cap is 0 in {config.source}: 0 means no cap; set a real one")
    allocation = _risk_value(config, "allocation", check_id, None, "quote")
    if isinstance(allocation, Criterion):
        return allocation
    capital, source = (settings.capital, "capital") if settings.capital is not None else (equity, "account equity")
    if capital is None:
        return Criterion(check_id, "risk", False, value, None, "quote",
                         f"per-order notional cap {value:g} in {config.source}, but the allocated capital is unknown: "
                         "set --capital (or an API key, for the account's equity) so that the cap can be compared "
                         "with capital x allocation")
    budget = capital * allocation
    text = (f"per-order notional cap {value:g} in {config.source}; {source} {capital:g} x allocation {allocation:g} "
            f"= {budget:g}")
    if value > budget:
        return Criterion(check_id, "risk", False, value, budget, "quote",
                         f"{text}: the cap allows more than the allocated capital, so it caps nothing; set it at "
                         "or below the allocated capital")
    return Criterion(check_id, "risk", True, value, budget, "quote", text)


def risk_min_order(min_order: MinOrder, config: RiskConfig, settings: Settings,
                   equity: float | None = None) -> Criterion:
    """capital (else the account's equity) x allocation buys at least the exchange's minimum order."""
    check_id = f"risk_min_order[{min_order.inst_id}]"
    allocation = _risk_value(config, "allocation", check_id, min_order.notional, "quote")
    if isinstance(allocation, Criterion):
        return allocation
    capital, source = (settings.capital, "capital") if settings.capital is not None else (equity, "account equity")
    if capital is None:
        return Criterion(check_id, "risk", False, None, min_order.notional, "quote",
                         f"{min_order.describe()}; set --capital (or an API key, for the account's equity) to check "
                         "that the allocation can buy it")
    budget = capital * allocation
    text = (f"{source} {capital:g} x allocation {allocation:g} = {budget:g}; {min_order.describe()}")
    if budget < min_order.notional:
        return Criterion(check_id, "risk", False, budget, min_order.notional, "quote",
                         f"{text}: the allocation cannot place a single order; the system would sit idle in real")
    return Criterion(check_id, "risk", True, budget, min_order.notional, "quote", text)


# --- account ------------------------------------------------------------------------------------


def account_no_withdraw(account: Account, settings: Settings) -> Criterion:
    ok = "withdraw" not in account.perm
    return Criterion("account_no_withdraw", "account", ok, ",".join(account.perm), "no withdraw", None,
                     f"API key permissions: {','.join(account.perm) or 'none'}" if ok else
                     f"the API key may withdraw ({','.join(account.perm)}): a trading key must not; make a key "
                     "with read and trade only")


def account_ip_bound(account: Account, settings: Settings) -> Criterion:
    if account.ip:
        return Criterion("account_ip_bound", "account", True, account.ip, "bound", None,
                         f"API key bound to {account.ip}")
    if settings.allow_unbound_key:
        return Criterion("account_ip_bound", "account", True, "", "bound", None,
                         "API key not bound to any IP: allowed by --allow-unbound-key")
    return Criterion("account_ip_bound", "account", False, "", "bound", None,
                     "the API key is not bound to any IP address: anyone holding it can trade from anywhere; bind it "
                     "to this host's IP, or pass --allow-unbound-key")


def account_facts(account: Account, settings: Settings) -> Criterion:
    """What the account is, for the evidence (the runbook advises limited keys or sub-accounts)."""
    return Criterion("account_facts", "account", True, "sub-account" if account.sub_account else "main account",
                     None, None, account.describe())


def account_equity(account: Account, settings: Settings) -> Criterion:
    if account.total_eq is None:
        return Criterion("account_equity", "account", False, None, None, "USD",
                         "the balance answer holds no totalEq: the account's equity cannot be read")
    return Criterion("account_equity", "account", True, account.total_eq, None, "USD",
                     f"total equity {account.total_eq:g} USD" + ("; allocation budgets use it when --capital is unset"
                                                                  if settings.capital is None else ""))


# --- secrets ------------------------------------------------------------------------------------

SHOWN_FINDINGS = 10


def secrets_not_in_code(found: Scan, settings: Settings) -> Criterion:
    criterion = _secrets_not_in_code(found)
    details = {"files_scanned": found.files,
               "findings": [{"path": f.path, "line": f.line, "kind": f.kind, "allowlisted": f.allowlisted}
                            for f in found.findings],
               "not_scanned": [{"path": n.path, "reason": n.reason} for n in found.not_scanned]}
    return dataclasses.replace(criterion, details=details)


def _secrets_not_in_code(found: Scan) -> Criterion:
    hard, allowed, unread = found.hard_coded, found.allowlisted, found.unreadable
    count = len(found.findings) + len(unread)
    skipped = f"; {found.not_scanned_text(SHOWN_FINDINGS)}" if found.not_scanned else "; nothing left out"
    if count == 0:
        return Criterion("secrets_not_in_code", "secrets", True, 0, 0, "findings",
                         f"no hard-coded secret in {found.files} file(s) under {found.root}{skipped}")

    def shown(items: tuple[Any, ...], describe: Callable[[Any], str]) -> str:
        more = f" (+{len(items) - SHOWN_FINDINGS} more)" if len(items) > SHOWN_FINDINGS else ""
        return "; ".join(describe(item) for item in items[:SHOWN_FINDINGS]) + more

    parts = []
    if hard:
        parts.append(f"{len(hard)} hard-coded secret(s) under {found.root}: {shown(hard, lambda f: f.describe())}: "
                     "move them into environment variables or config.yaml, and rotate every key that was ever "
                     "committed")
    if allowed:
        parts.append(f"{len(allowed)} key-like value(s) allowlisted by pragma under {found.root}: "
                     f"{shown(allowed, lambda f: f.describe())}: a pragma hides a key from the scanner, it does not "
                     "make it safe: a real key moves into the environment or config.yaml and is rotated, a fake one "
                     "is made to look fake (e.g. \"fake-okx-key\")")
    if unread:
        parts.append(f"{len(unread)} path(s) under {found.root} could not be read, so may hold a key: "
                     f"{shown(unread, lambda e: f'{e.path} ({e.reason})')}: let the gate read them, or move them out "
                     "of the scan path")
    return Criterion("secrets_not_in_code", "secrets", False, count, 0, "findings", "; ".join(parts) + skipped)


# --- admin and control --------------------------------------------------------------------------


def admin_health(answer: AdminAnswer, shown_url: str) -> Criterion:
    limit = ADMIN_HEALTH_LIMIT_MS
    status = answer.body.get("status") if isinstance(answer.body, dict) else None
    if answer.latency_ms < limit:
        return Criterion("admin_health", "admin", True, answer.latency_ms, limit, "ms",
                         f"GET {shown_url}/health: HTTP {answer.status} status={status!r} in "
                         f"{answer.latency_ms:.0f} ms")
    return Criterion("admin_health", "admin", False, answer.latency_ms, limit, "ms",
                     f"GET {shown_url}/health took {answer.latency_ms:.0f} ms, limit {limit:.0f} ms: the trading "
                     "system is overloaded")


def admin_mode(body: dict, shown_url: str) -> Criterion:
    mode = body.get("mode")
    if mode in MODES:
        return Criterion("admin_mode", "admin", True, mode, "mock|real|paused", None,
                         f"GET {shown_url}/mode: mode {mode}, version {body.get('version')}")
    return Criterion("admin_mode", "admin", False, mode, "mock|real|paused", None,
                     f"GET {shown_url}/mode: mode {mode!r} is not one of {MODES}")


def control_file_valid(state: ControlState | None, path: str) -> Criterion:
    if state is None:
        return Criterion("control_file_valid", "control", True, None, "mock|real|paused", None,
                         f"{path} does not exist yet: the first switch or pause creates it")
    ok = state.mode in MODES
    return Criterion("control_file_valid", "control", ok, state.mode, "mock|real|paused", None,
                     f"{path}: mode {state.mode}, version {state.version}" if ok
                     else f"{path}: mode {state.mode!r} is not one of {MODES}")


def control_dir_writable(directory: str) -> Criterion:
    return Criterion("control_dir_writable", "control", True, True, True, None, f"a file can be created in {directory}")


# --- observe ------------------------------------------------------------------------------------


def observe_audit_recent(obs: Observation, settings: Settings) -> Criterion:
    max_silence = settings.audit_max_silence
    if not obs.audit.today_file:
        return _absent("observe_audit_recent", "observe",
                          f"no audit file for today ({obs.now.date().isoformat()}) in {obs.audit_dir}: is the "
                          "trading system writing its audit (AUDIT_TO_FILE=true)? check --audit-dir", max_silence, "s")
    if obs.audit.newest is None:
        return _absent("observe_audit_recent", "observe",
                          f"no readable audit line in {obs.audit.today_file}: the trading system writes nothing "
                          "usable", max_silence, "s")
    silence = (obs.now - obs.audit.newest).total_seconds()
    ok = silence < max_silence
    text = (f"newest audit line {format_age(silence)} old ({iso_utc(obs.audit.newest)}), max silence "
            f"{format_duration(max_silence)}")
    return Criterion("observe_audit_recent", "observe", ok, silence, max_silence, "s",
                     text if ok else f"{text}: the trading system has gone quiet; check that it runs")


def observe_audit_parseable(obs: Observation, settings: Settings) -> Criterion:
    bad, max_bad = obs.audit.bad_lines, settings.max_bad_audit_lines
    examples = f"; e.g. {obs.audit.bad_examples[0]!r}" if obs.audit.bad_examples else ""
    return Criterion("observe_audit_parseable", "observe", bad <= max_bad, bad, max_bad, "lines",
                     f"{bad} unusable audit line(s) (unparseable, undated or dated in the future) {obs.window}, "
                     f"max {max_bad}{examples}")


def observe_risk_events(obs: Observation, settings: Settings) -> Criterion:
    maximum = settings.max_risk_events
    if not obs.risk.exists and not settings.allow_missing_risk_csv:
        return _absent("observe_risk_events", "observe",
                          f"no risk-events file at {obs.risk.path}: a wrong path would silently hide every risk "
                          "event; check --risk-events-csv, or pass --allow-missing-risk-csv if the system writes "
                          "none", maximum, "events")
    if obs.risk.bad_rows:
        return Criterion("observe_risk_events", "observe", False, None, maximum, "events",
                         f"{obs.risk.bad_rows} row(s) of {obs.risk.path} cannot be dated (e.g. "
                         f"{obs.risk.bad_example!r}): a risk event may hide there; fix the writer")
    count = max(obs.risk.events, obs.audit.risk_events)
    source = (f"{obs.risk.events} in {obs.risk.path}, {obs.audit.risk_events} risk_event audit lines"
              if obs.risk.exists else f"{obs.audit.risk_events} risk_event audit lines (no {obs.risk.path})")
    text = f"{count} risk events {obs.window} ({source}), max {maximum}"
    ok = count <= maximum
    return Criterion("observe_risk_events", "observe", ok, count, maximum, "events",
                     text if ok else f"{text}: roll back and investigate")


def _recent_rate(obs: Observation, settings: Settings, part: str, whole: str) -> tuple[float, str] | None:
    """(rate, words) over the latest round's slice, when it holds at least --min-orders of `whole`; None
    when there is no slice or too few to judge (the window's rate still is)."""
    recent = obs.audit.recent
    if recent is None or obs.recent_s is None:
        return None
    count, hits = getattr(recent, whole), getattr(recent, part)
    if count < settings.min_orders:
        return None
    return hits / count, f"in the last {format_duration(obs.recent_s)}: {hits} of {count}"


def observe_order_failure_rate(obs: Observation, settings: Settings) -> Criterion:
    """Failed order results over the window, and over the latest round's slice: a total outage breaches in
    the first round that sees it instead of once it outweighs the window's history."""
    maximum = settings.max_order_failure_rate
    results, failures = obs.audit.order_results, obs.audit.order_failures
    rate = failures / results if results else 0.0
    text = f"{failures} of {results} order results failed {obs.window} ({rate:.1%}), max {maximum:.1%}"
    recent = _recent_rate(obs, settings, "order_failures", "order_results")
    if recent is not None and recent[0] > maximum and recent[0] > rate:
        return Criterion("observe_order_failure_rate", "observe", False, recent[0], maximum, "fraction",
                         f"{recent[1]} order results failed ({recent[0]:.1%}), max {maximum:.1%} ({text}): the "
                         "exchange or the order path is failing now")
    ok = rate <= maximum
    if ok and results < settings.min_orders:
        return Criterion("observe_order_failure_rate", "observe", True, rate, maximum, "fraction",
                         f"{text}: too few to judge (--min-orders {settings.min_orders})", outcome=INCONCLUSIVE)
    return Criterion("observe_order_failure_rate", "observe", ok, rate, maximum, "fraction",
                     text if ok else f"{text}: the exchange or the order path is failing")


def observe_risk_block_rate(obs: Observation, settings: Settings) -> Criterion:
    maximum = settings.max_risk_block_rate
    intents, blocks = obs.audit.order_intents, obs.audit.risk_blocks
    rate = blocks / intents if intents else (math.inf if blocks else 0.0)
    text = f"{blocks} risk blocks for {intents} order intents {obs.window} ({rate:.1%}), max {maximum:.1%}"
    recent = _recent_rate(obs, settings, "risk_blocks", "order_intents")
    if recent is not None and recent[0] > maximum and recent[0] > rate:
        return Criterion("observe_risk_block_rate", "observe", False, recent[0], maximum, "fraction",
                         f"risk blocks for order intents: {recent[1]} ({recent[0]:.1%}), max {maximum:.1%} "
                         f"({text}): the strategy keeps hitting its risk limits now")
    ok = rate <= maximum
    if ok and intents < settings.min_orders:
        return Criterion("observe_risk_block_rate", "observe", True, rate, maximum, "fraction",
                         f"{text}: too few to judge (--min-orders {settings.min_orders})", outcome=INCONCLUSIVE)
    return Criterion("observe_risk_block_rate", "observe", ok, None if math.isinf(rate) else rate, maximum,
                     "fraction", text if ok else f"{text}: the strategy keeps hitting its risk limits")


def observe_signals(obs: Observation, settings: Settings) -> Criterion:
    low, high = settings.min_signals, settings.max_signals
    intents = obs.audit.order_intents
    bounds = f"[{low}, {high if high is not None else 'off'}]"
    text = f"{intents} order intents {obs.window}, expected within {bounds}"
    ok = intents >= low and (high is None or intents <= high)
    hint = ": the strategy is silent" if intents < low else ": the strategy is trading too much"
    return Criterion("observe_signals", "observe", ok, intents, bounds, "intents", text if ok else text + hint)


def observe_slippage(obs: Observation, settings: Settings) -> Criterion:
    """Mean adverse fill slippage against the intended price (runbook step 5)."""
    maximum, audit = settings.max_slippage_bps, obs.audit
    if audit.unpriced_results:
        return Criterion("observe_slippage", "observe", False, None, maximum, "bps",
                         f"{audit.unpriced_results} order result(s) {obs.window} carry no intended and fill price "
                         f"(fields {settings.audit_price_field!r}, {settings.audit_fill_price_field!r}): slippage "
                         "cannot be measured; write them, or rename with --audit-price-field/--audit-fill-price-field")
    mean = audit.mean_slippage_bps
    if mean is None:
        return Criterion("observe_slippage", "observe", True, None, maximum, "bps",
                         f"no fills {obs.window}: nothing to judge slippage on", outcome=INCONCLUSIVE)
    text = f"mean adverse slippage {mean:.1f} bps over {audit.fills} fill(s) {obs.window}, max {maximum:g} bps"
    ok = mean <= maximum
    return Criterion("observe_slippage", "observe", ok, mean, maximum, "bps",
                     text if ok else f"{text}: fills are far from the intended prices; the book is thin or orders too big")


def observe_realized_pnl(obs: Observation, settings: Settings) -> Criterion:
    """Realized PnL in the window, as a loss against the daily loss limit (runbook step 5)."""
    limit, audit = settings.max_daily_loss, obs.audit
    if not audit.pnl_lines and audit.fills:
        return Criterion("observe_realized_pnl", "observe", True, None, limit, "fraction",
                         f"{audit.fills} fill(s) {obs.window} and none carries a realized PnL in "
                         f"{settings.audit_pnl_field!r}: the loss cannot be judged (a system that books PnL under "
                         "another name: --audit-pnl-field)", outcome=INCONCLUSIVE)
    if not audit.pnl_lines:
        return Criterion("observe_realized_pnl", "observe", True, 0.0, limit, "fraction",
                         f"no realized PnL {obs.window}")
    if settings.capital is None:
        return Criterion("observe_realized_pnl", "observe", False, None, limit, "fraction",
                         f"realized PnL {audit.pnl_total:g} over {audit.pnl_lines} result(s) {obs.window}: set "
                         "--capital to judge it against --max-daily-loss")
    loss = max(0.0, -audit.pnl_total) / settings.capital
    text = (f"realized PnL {audit.pnl_total:g} {obs.window} = a loss of {loss:.3%} of capital "
            f"{settings.capital:g}, daily limit {limit:.2%}")
    ok = loss < limit
    return Criterion("observe_realized_pnl", "observe", ok, loss, limit, "fraction",
                     text if ok else f"{text}: roll back now")


def observe_vs_backtest(obs: Observation, baseline: Strategy, settings: Settings) -> Criterion:
    """Kayenta's judge for the live trades: their per-trade returns in the window against the backtest's own
    trades, a one-sided Mann-Whitney U test (is live stochastically lower?; direction: a decrease is bad). p
    below --judge-fail-p fails, below --judge-marginal-p is marginal (inconclusive: a person looks), else
    pass; too few live trades is inconclusive, a baseline without trades fails (Kayenta's mustHaveData)."""
    import statistics

    check_id, minimum = "observe_vs_backtest", settings.judge_min_trades
    fail_p, marginal_p = settings.judge_fail_p, settings.judge_marginal_p
    live, base = obs.audit.trade_returns, baseline.trade_returns
    if base is None:
        return Criterion(check_id, "observe", False, None, fail_p, "p", f"the backtest result of {baseline.name} "
                         "lists no trades to compare with: run freqtrade backtesting with --export trades and point "
                         "--judge-backtest at that result")
    if len(base) < minimum:
        return Criterion(check_id, "observe", False, None, fail_p, "p", f"the backtest of {baseline.name} holds "
                         f"{len(base)} trade(s) with a return, fewer than --judge-min-trades {minimum}: too few to "
                         "compare the live trades with")
    if obs.audit.unreturned:
        return Criterion(check_id, "observe", True, None, fail_p, "p",
                         f"{obs.audit.unreturned} order result(s) {obs.window} carry a PnL but no usable size and "
                         f"price ({settings.audit_size_field!r}, {settings.audit_fill_price_field!r}): their returns "
                         "cannot be compared, and leaving them out could hide losses; write them (or rename with "
                         "--audit-size-field)", outcome=INCONCLUSIVE)
    if len(live) < minimum:
        return Criterion(check_id, "observe", True, None, fail_p, "p",
                         f"{len(live)} live trade(s) with a return {obs.window}, fewer than --judge-min-trades "
                         f"{minimum}: too few to compare with the backtest", outcome=INCONCLUSIVE)
    from scipy.stats import mannwhitneyu

    result = mannwhitneyu(live, base, alternative="less")
    p, u = float(result.pvalue), float(result.statistic)
    if not math.isfinite(p):
        return Criterion(check_id, "observe", False, None, fail_p, "p", f"the Mann-Whitney U test gave no p-value "
                         f"(p={p}) for {len(live)} live and {len(base)} backtest returns: nothing to judge",
                         outcome=ERROR)
    live_median, base_median = statistics.median(live), statistics.median(base)
    verdict = "fail" if p < fail_p else ("marginal" if p < marginal_p else "pass")
    details = {"verdict": verdict, "p_value": p, "u": u, "alternative": "live less than backtest",
               "live_trades": len(live), "backtest_trades": len(base), "live_median_return": live_median,
               "backtest_median_return": base_median, "strategy": baseline.name,
               "fail_p": fail_p, "marginal_p": marginal_p}
    text = (f"live per-trade returns {obs.window} (n={len(live)}, median {live_median:.4%}) against "
            f"{baseline.name}'s backtest trades (n={len(base)}, median {base_median:.4%}): Mann-Whitney U {u:g}, "
            f"one-sided p={p:.4g}")
    if verdict == "fail":
        return Criterion(check_id, "observe", False, p, fail_p, "p", f"{text} < {fail_p:g}: the live trades do "
                         "worse than the backtest's; the strategy does not trade live as it was tested", details)
    if verdict == "marginal":
        return Criterion(check_id, "observe", True, p, marginal_p, "p", f"{text} < {marginal_p:g}: marginal, a "
                         "person looks", details, outcome=INCONCLUSIVE)
    return Criterion(check_id, "observe", True, p, marginal_p, "p", f"{text}: pass", details)


OBSERVE_JUDGES = (observe_audit_recent, observe_audit_parseable, observe_risk_events, observe_order_failure_rate,
                  observe_risk_block_rate, observe_signals, observe_slippage, observe_realized_pnl)


# --- probes judged -------------------------------------------------------------------------------


def judged(attempt: Attempt[Any], judge: Callable[[Any, Settings], Criterion], settings: Settings) -> Criterion:
    """The judge's criterion on the attempt's value, or the error criterion of the probe that could not
    measure."""
    if attempt.error is not None:
        probe_id, group = _JUDGE_IDS[judge]
        return unmeasured(probe_id, group, attempt.error)
    return judge(attempt.value(), settings)


_JUDGE_IDS: dict[Callable[..., Criterion], tuple[str, str]] = {
    judge: (judge.__name__, group)
    for group, judges in (("okx", (okx_public_time_ok, okx_public_time_latency, okx_clock_skew, okx_no_maintenance)),
                          ("db", (trades_fresh,)), ("observe", OBSERVE_JUDGES))
    for judge in judges
}
