"""What a complete preflight run is: the check ids it must hold, computed by the tool from its settings.

The evidence carries this manifest, and the gate computes it again from the tool itself (the strategies
from the backtest file it is bound to, the instruments, the channels it names); a run that selected a
subset of checks (node ids, `-k`, `-m`, a foreign `python_functions`) cannot stand in for a whole one.
Every check of the suite is listed here by its test's name; tests/test_manifest.py keeps this table and
the collected suite equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

# group -> the checks of the group, by their test's name without `test_`.
CHECKS: dict[str, tuple[str, ...]] = {
    "okx": ("okx_public_time_ok", "okx_public_time_latency", "okx_clock_skew", "okx_no_maintenance"),
    "db": ("trades_fresh",),
    "backtest": ("backtest_summary_valid", "backtest_sharpe", "backtest_winrate", "backtest_max_drawdown",
                 "backtest_fresh", "backtest_min_trades"),
    "risk": ("risk_allocation", "risk_single_trade_loss", "risk_daily_loss", "risk_order_notional_cap",
             "risk_min_order"),
    "account": ("account_no_withdraw", "account_ip_bound", "account_facts", "account_equity"),
    "secrets": ("secrets_not_in_code",),
    "admin": ("admin_health", "admin_mode"),
    "control": ("control_file_valid", "control_dir_writable"),
    "observe": ("observe_audit_recent", "observe_audit_parseable", "observe_risk_events",
                "observe_order_failure_rate", "observe_risk_block_rate", "observe_signals", "observe_slippage",
                "observe_realized_pnl"),
}
# Required whatever the settings: a go-live pass has measured the exchange, the feed, the backtest and the
# risk limits. The others are required when the run was pointed at them (see `Scope`).
ALWAYS = ("okx", "db", "backtest", "risk")
PER_STRATEGY = "backtest"
PER_INSTRUMENT = "risk_min_order"
NO_SUMMARY = "summary"  # the parameter id of the backtest checks when the summary could not be read


def check_id(name: str, param: str | None = None) -> str:
    return f"{name}[{param}]" if param is not None else name


@dataclass(frozen=True)
class Scope:
    """What the manifest depends on: the strategies judged, the instruments, and which optional groups the
    run was pointed at."""

    strategies: tuple[str, ...] | None  # None: the summary could not be read
    inst_ids: tuple[str, ...] = ()
    min_trades: int = 0
    admin: bool = False
    control: bool = False
    account: bool = False
    secrets: bool = False
    strategy_filter: str | None = None  # --strategy: only this one of a multi-strategy result

    def as_dict(self) -> dict[str, Any]:
        return {"strategies": list(self.strategies) if self.strategies is not None else None,
                "inst_ids": list(self.inst_ids), "min_trades": self.min_trades, "admin": self.admin,
                "control": self.control, "account": self.account, "secrets": self.secrets,
                "strategy_filter": self.strategy_filter}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Scope:
        strategies = doc.get("strategies")
        return cls(tuple(str(s) for s in strategies) if isinstance(strategies, list) else None,
                   tuple(str(i) for i in doc.get("inst_ids") or ()), int(doc.get("min_trades") or 0),
                   bool(doc.get("admin")), bool(doc.get("control")), bool(doc.get("account")),
                   bool(doc.get("secrets")), str(doc["strategy_filter"]) if doc.get("strategy_filter") else None)


def groups(scope: Scope) -> list[str]:
    extra = [g for g, on in (("account", scope.account), ("secrets", scope.secrets), ("admin", scope.admin),
                             ("control", scope.control)) if on]
    return [*ALWAYS, *extra]


def required(scope: Scope) -> list[str]:
    """Every check id a complete go-live run under `scope` holds, in the runbook's order."""
    ids: list[str] = []
    strategies = scope.strategies if scope.strategies is not None else (NO_SUMMARY,)
    for group in groups(scope):
        for name in CHECKS[group]:
            if name == "backtest_min_trades" and scope.min_trades <= 0:
                continue
            if group == PER_STRATEGY:
                ids.extend(check_id(name, s) for s in strategies)
            elif name == PER_INSTRUMENT:
                ids.extend(check_id(name, i) for i in scope.inst_ids)
            else:
                ids.append(name)
    return ids


def group_of(check: str) -> str | None:
    name = check.split("[", 1)[0]
    return next((g for g, names in CHECKS.items() if name in names), None)


def missing(manifest: Iterable[str], checks: Mapping[str, str]) -> list[str]:
    """The manifest's ids that `checks` (id -> status) does not hold as passed, each with what it is."""
    problems = []
    for cid in manifest:
        status = checks.get(cid)
        if status != "passed":
            problems.append(f"{cid} {status or 'did not run'}")
    return problems
