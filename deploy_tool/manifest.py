"""What a complete preflight run is: the check ids it must hold, computed by the tool from its settings.

The evidence carries this manifest, and the gate computes it again from the tool itself (the strategies
from the backtest file it is bound to, the instruments, the channels it names); a run that selected a
subset of checks (node ids, `-k`, `-m`, a foreign `python_functions`) cannot stand in for a whole one.
Every check of the suite is listed here by its test's name; tests/test_manifest.py keeps this table and
the collected suite equal.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:
    from deploy_tool.evidence import Evidence

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


# --- what a run lacks to open real, and the honest next step (the gate's rule; the preflight says it too) ---

SIGNED = "signed (--signing-key FILE or GD_SIGNING_KEY_FILE)"


def rerun(how: str = "") -> str:
    """The preflight again (`how`: against what), signed: the command to run."""
    return f"run the preflight again{how}, signed: `gradual-deploy preflight --signing-key FILE` (or GD_SIGNING_KEY_FILE)"


RERUN = rerun()
THEN = "switch again"  # what the caller does once the fix is made (`ramp`: start the ramp again)
# A skip flag -> what the run skipped, the option that gives it instead, and the other way to give it.
SKIP_FIXES = {
    "--skip-db-check": ("the trades database", "--database-url URL", "DATABASE_URL"),
    "--skip-backtest-check": ("the backtest summary", "--backtest-summary FILE", "BACKTEST_SUMMARY"),
    "--skip-risk-check": ("the risk configuration", "--risk-config FILE", "--http-admin-url URL, which serves GET /config"),
}
SELECTIONS = "-m, -k, --strategy, --ignore or test paths"


def incomplete(evidence: Evidence) -> str | None:
    """Why the evidence does not hold every required check of its manifest passed, or None. The manifest
    is the tool's, recomputed; the document's own list must agree with it. (`verify` asks the same.)"""
    # The channel groups are required by the targets the run names, whatever its scope says.
    scope = replace(Scope.from_dict(evidence.scope), admin=bool(evidence.targets.get("http_admin_url")),
                                control=bool(evidence.targets.get("control_file")))
    expected = required(scope)
    problems = []
    if sorted(expected) != sorted(evidence.manifest):
        extra = sorted(set(evidence.manifest) - set(expected))
        lacking = sorted(set(expected) - set(evidence.manifest))
        problems.append("its manifest is not the tool's for its settings ("
                        + "; ".join(x for x in (f"lacks {', '.join(lacking)}" if lacking else "",
                                                f"adds {', '.join(extra)}" if extra else "") if x) + ")")
    statuses: dict[str, str] = {}
    for check in evidence.checks:
        # a check that ran twice under one id counts by its worst outcome
        if statuses.get(check.id) in (None, "passed"):
            statuses[check.id] = check.status
    bad = missing(expected, statuses)
    if bad:
        problems.append("required checks not passed: " + ", ".join(bad))
    # A document whose checks say passed but whose own skipped list names a required check contradicts
    # itself (a real partial run is already named above).
    named = {str(s.get("id")) for s in evidence.declared_skipped if str(s.get("id")) in expected or s.get("required")}
    declared = sorted(cid for cid in named if statuses.get(cid) == "passed")
    if declared:
        problems.append(f"its skipped list names required checks: {', '.join(declared)}")
    if evidence.skips_requested:
        problems.append(f"checks skipped on request: {', '.join(evidence.skips_requested)}")
    if evidence.foreign_tests:
        problems.append(f"the run collected {len(evidence.foreign_tests)} test(s) that are not the suite's "
                        f"({', '.join(evidence.foreign_tests[:3])})")
    return "; ".join(problems) or None


def complete_run(evidence: Evidence, then: str = THEN, needs_database: bool = False) -> str:
    """The honest next step for a run that is not a complete go-live pass: the preflight again, given what it
    skipped (the option and variable of each skip flag) and without the selection it made, signed; then
    `then`. `needs_database`: the command that asks has no --database-url either, and needs the same one."""
    whats, options, names, drops = [], [], [], []
    for flag in evidence.skips_requested:
        drops.append(flag)
        if flag in SKIP_FIXES:
            what, option, other = SKIP_FIXES[flag]
            whats.append(f"with {what} once it is ready")
            options.append(option)
            names.append(other)
    if selected(evidence):
        whats.append("as the whole suite")
        drops.append(SELECTIONS)
    if not whats:  # nothing left out: the document itself is wrong (its manifest, its skipped list)
        return f"{RERUN}; then {then}"
    command = " ".join(["gradual-deploy preflight", *options])
    if needs_database and "--skip-db-check" in evidence.skips_requested:
        then = f"{then} with the same --database-url"
    return (f"run the preflight again {' and '.join(whats)}: `{command}`"
            + (f" (or {', '.join(names)})" if names else "") + f" without {', '.join(drops)}, {SIGNED}; then {then}")


def selected(evidence: Evidence) -> bool:
    """Whether the run left out required checks by a selection (-m, -k, --strategy, --ignore, test paths, a
    foreign test module) rather than a skip flag: a failed check is no selection."""
    statuses: dict[str, str] = {}
    for check in evidence.checks:
        statuses.setdefault(check.id, check.status)
    return bool(evidence.scope.get("strategy_filter") or evidence.foreign_tests
                or any(statuses.get(cid) not in ("passed", "failed") for cid in evidence.manifest
                       if not _requested(cid, evidence)))


def _requested(check: str, evidence: Evidence) -> bool:
    """Whether the check belongs to a group the run skipped on request (a skip flag, not a selection)."""
    return f"--skip-{group_of(check)}-check" in evidence.skips_requested
