"""The suite's settings: every option once, with its flag, ini key, env var, default and parser.

Precedence is resolved in one place (`resolve`): command line > environment > ini > default, into one
frozen `Settings` record. Nothing else reads raw options. A bad value is a `pytest.UsageError` naming
the option, where the value came from, and the fix.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Mapping

import pytest

from deploy_tool.options import OBSERVE_OPTIONS, OPTIONS, OptionError, resolve_values

ALL_OPTIONS = OPTIONS + OBSERVE_OPTIONS


@dataclass(frozen=True)
class Settings:
    """Every resolved setting of one run, and where each came from."""

    okx_base_url: str
    api_latency_threshold_ms: float
    api_samples: int
    max_clock_skew_ms: float
    maintenance_horizon: float
    database_url: str | None
    trades_table: str
    trades_time_column: str
    data_latency_threshold: float
    db_statement_timeout_ms: float
    backtest_summary: str
    min_sharpe: float
    min_winrate: float
    max_drawdown: float
    min_trades: int
    backtest_max_age: float
    http_admin_url: str | None
    admin_token_env: str
    control_file: str | None
    evidence_dir: str
    audit_dir: str
    risk_events_csv: str
    observe_window: float
    audit_max_silence: float
    max_bad_audit_lines: int
    max_risk_events: int
    max_order_failure_rate: float
    max_risk_block_rate: float
    min_signals: int
    max_signals: int | None
    audit_ts_field: str
    audit_event_field: str
    audit_status_field: str
    risk_events_ts_column: str
    skip_db_check: bool = False
    observe: bool = False
    skip_backtest_check: bool = False
    sources: Mapping[str, str] | None = None

    def admin_token(self, environ: Mapping[str, str] | None = None) -> str | None:
        environ = os.environ if environ is None else environ
        return environ.get(self.admin_token_env) or None


assert {f.name for f in fields(Settings)} >= {o.name for o in ALL_OPTIONS}


def add_options(parser: pytest.Parser) -> None:
    """Register every option as a flag (default None, so that its absence is visible) and an ini key."""
    group = parser.getgroup("gradual-deploy", "gradual-deploy preflight (go-live gate)")
    for option in ALL_OPTIONS:
        extra = f" [env {', '.join(option.env)}]" if option.env else ""
        default = f" (default: {option.default})" if option.default is not None else ""
        group.addoption(option.flag, dest=f"gd_{option.name}", default=None, metavar="VALUE",
                        help=f"{option.help}{default}{extra}")
        parser.addini(option.name, f"{option.help}{default}", default=None)
    group.addoption("--skip-db-check", action="store_true", dest="gd_skip_db_check", default=False,
                    help="skip the trades-feed freshness (db) checks; recorded as skipped on request")
    group.addoption("--skip-backtest-check", action="store_true", dest="gd_skip_backtest_check", default=False,
                    help="skip the backtest checks; recorded as skipped on request")
    group.addoption("--observe", action="store_true", dest="gd_observe", default=False,
                    help="also run the observe checks (the watch period); -m observe runs only them")


def _ini_source(config: pytest.Config) -> str:
    return config.inipath.name if config.inipath else "the ini file"


def resolve(config: pytest.Config, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flag > environment > ini > default; UsageError on a malformed value."""
    environ = os.environ if environ is None else environ
    try:
        values, sources = resolve_values(
            ALL_OPTIONS,
            cli=lambda option: config.getoption(f"gd_{option.name}"),
            ini=lambda option: config.getini(option.name),
            ini_source=_ini_source(config),
            environ=environ,
        )
    except OptionError as exc:
        raise pytest.UsageError(str(exc)) from None
    return Settings(
        **values,
        skip_db_check=bool(config.getoption("gd_skip_db_check")),
        skip_backtest_check=bool(config.getoption("gd_skip_backtest_check")),
        # Observe checks run when asked for by flag or by a marker expression that names them.
        observe=bool(config.getoption("gd_observe")) or "observe" in (config.getoption("markexpr", "") or ""),
        sources=sources,
    )


