"""The suite's settings: every option once, with its flag, ini key, env var, default and parser.

Precedence is resolved in one place (`resolve`): command line > environment > ini > default, into one
frozen `Settings` record. Nothing else reads raw options. A bad value is a `pytest.UsageError` naming
the option, where the value came from, and the fix.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Any, Callable, Mapping

import pytest

from deploy_tool.envconfig import EnvConfigError, admin_url_from_env
from deploy_tool.units import parse_duration


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("a number") from None
    if not math.isfinite(value):
        raise ValueError("a finite number")
    return value


def positive(text: str) -> float:
    value = _number(text)
    if value <= 0:
        raise ValueError("a number above 0")
    return value


def fraction(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 1:
        raise ValueError("a fraction in [0, 1], e.g. 0.55 for 55 %")
    return value


def count(text: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError("a whole number, e.g. 3") from None
    if value < 0:
        raise ValueError("a whole number >= 0")
    return value


def positive_count(text: str) -> int:
    value = count(text)
    if value < 1:
        raise ValueError("a whole number >= 1")
    return value


def duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError("a duration above 0, such as 90s, 30m, 2h, 7d")
    return value


def url(text: str) -> str:
    text = text.strip()
    if not text.startswith(("http://", "https://")) or len(text) < len("http://x"):
        raise ValueError("an http:// or https:// URL, e.g. http://127.0.0.1:8001")
    return text.rstrip("/")


def database_url(text: str) -> str:
    text = text.strip()
    if not text.startswith(("postgresql://", "postgres://", "sqlite:///")):
        raise ValueError("postgresql://user:pass@host:5432/db or sqlite:///path/to/file.db")
    return text


def text_value(text: str) -> str:
    if not text.strip():
        raise ValueError("a non-empty value")
    return text.strip()


def env_name(text: str) -> str:
    text = text.strip()
    if not text or not all(c.isalnum() or c == "_" for c in text):
        raise ValueError("an environment variable name, e.g. EXEC_HTTP_ADMIN_TOKEN")
    return text


@dataclass(frozen=True)
class Option:
    """One setting: its flag, help, default (as text, parsed like any input), parser and env vars."""

    name: str
    help: str
    parse: Callable[[str], Any]
    default: str | None = None
    env: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("okx_base_url", "exchange REST root", url, "https://www.okx.com", ("OKX_BASE_URL",)),
    Option("api_latency_threshold_ms", "max median latency (ms) of the public time call", positive, "300"),
    Option("api_samples", "number of timed calls of the public time endpoint", positive_count, "3"),
    Option("max_clock_skew_ms", "max distance (ms) between exchange time and local UTC", positive, "1000"),
    Option("maintenance_horizon", "fail on exchange maintenance ongoing or starting within this duration", duration, "2h"),
    Option("database_url", "trades database: postgresql://... or sqlite:///path", database_url, None, ("DATABASE_URL",)),
    Option("trades_table", "table holding the trades feed", text_value, "trades"),
    Option("trades_time_column", "timestamp column of the trades table", text_value, "ts"),
    Option("data_latency_threshold", "max age (seconds) of the newest trade", positive, "5"),
    Option("db_statement_timeout_ms", "max server time (ms) of the newest-trade query; an index on the time "
           "column makes it a lookup", positive, "250"),
    Option("backtest_summary", "backtest result JSON", text_value, "data/backtest_summary.json", ("BACKTEST_SUMMARY",)),
    Option("min_sharpe", "minimum backtest Sharpe ratio", _number, "0.2"),
    Option("min_winrate", "minimum backtest win rate, a fraction in [0, 1]", fraction, "0.5"),
    Option("max_drawdown", "maximum backtest drawdown, a fraction in [0, 1]", fraction, "0.05"),
    Option("min_trades", "fewest backtest trades that make the figures meaningful (0 = off)", count, "0"),
    Option("backtest_max_age", "the backtest summary must be newer than this duration", duration, "24h"),
    Option("http_admin_url", "admin API root of the trading system (unset: admin checks skip)", url, None,
           ("EXEC_HTTP_ADMIN_URL",)),
    Option("admin_token_env", "name of the env var holding the admin bearer token", env_name, "EXEC_HTTP_ADMIN_TOKEN"),
    Option("control_file", "control file path (unset: control checks skip)", text_value, None, ("EXEC_CONTROL_FILE",)),
    Option("evidence_dir", "where the HTML and JSON evidence go", text_value, "data/evidence"),
)


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
    skip_db_check: bool = False
    skip_backtest_check: bool = False
    sources: Mapping[str, str] | None = None

    def admin_token(self, environ: Mapping[str, str] | None = None) -> str | None:
        environ = os.environ if environ is None else environ
        return environ.get(self.admin_token_env) or None


assert {f.name for f in fields(Settings)} >= {o.name for o in OPTIONS}


def add_options(parser: pytest.Parser) -> None:
    """Register every option as a flag (default None, so that its absence is visible) and an ini key."""
    group = parser.getgroup("gradual-deploy", "gradual-deploy preflight (go-live gate)")
    for option in OPTIONS:
        extra = f" [env {', '.join(option.env)}]" if option.env else ""
        default = f" (default: {option.default})" if option.default is not None else ""
        group.addoption(option.flag, dest=f"gd_{option.name}", default=None, metavar="VALUE",
                        help=f"{option.help}{default}{extra}")
        parser.addini(option.name, f"{option.help}{default}", default=None)
    group.addoption("--skip-db-check", action="store_true", dest="gd_skip_db_check", default=False,
                    help="skip the trades-feed freshness (db) checks; recorded as skipped on request")
    group.addoption("--skip-backtest-check", action="store_true", dest="gd_skip_backtest_check", default=False,
                    help="skip the backtest checks; recorded as skipped on request")


def _ini_source(config: pytest.Config) -> str:
    return config.inipath.name if config.inipath else "the ini file"


def resolve(config: pytest.Config, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flag > environment > ini > default; UsageError on a malformed value."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in OPTIONS:
        raw, source = config.getoption(f"gd_{option.name}"), "the command line"
        if raw is None:
            raw, source = _from_env(option, environ)
        if raw is None:
            ini = config.getini(option.name)
            raw, source = (ini, _ini_source(config)) if ini not in (None, "") else (option.default, "the default")
        if raw is None:
            values[option.name], sources[option.name] = None, "unset"
            continue
        try:
            values[option.name] = option.parse(str(raw))
        except ValueError as exc:
            raise pytest.UsageError(
                f"invalid {option.flag} {str(raw)!r} from {source}: expected {exc}"
                + (f" (ini key {option.name})" if source == _ini_source(config) else "")
            ) from None
        sources[option.name] = source
    return Settings(
        **values,
        skip_db_check=bool(config.getoption("gd_skip_db_check")),
        skip_backtest_check=bool(config.getoption("gd_skip_backtest_check")),
        sources=sources,
    )


def _from_env(option: Option, environ: Mapping[str, str]) -> tuple[str | None, str]:
    for name in option.env:
        value = environ.get(name, "")
        if value.strip():
            return value, f"environment variable {name}"
    if option.name == "http_admin_url":
        try:
            found = admin_url_from_env(environ)
        except EnvConfigError as exc:
            raise pytest.UsageError(f"invalid --http-admin-url from the environment: {exc}") from None
        if found:
            return found
    return None, ""
