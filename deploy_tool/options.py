"""Every setting of the tool, once: flag, ini key, env vars, default (as text) and parser.

The pytest plugin (`preflight_tests.settings`) and the `watch` command both build their options from
this table and resolve them with `resolve_values`: command line > environment > ini > default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from deploy_tool import DeployError
from deploy_tool.envconfig import EnvConfigError, admin_url_from_env
from deploy_tool.units import parse_duration


class OptionError(DeployError):
    """A setting has a malformed value; the message names the option, its source and the fix."""


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
    """One setting: its flag (spelled out, so that a search for it finds it), help, default (as text,
    parsed like any input), parser and env vars."""

    flag: str
    help: str
    parse: Callable[[str], Any]
    default: str | None = None
    env: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The ini key and the attribute of the settings record."""
        return self.flag[2:].replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("--okx-base-url", "exchange REST root", url, "https://www.okx.com", ("OKX_BASE_URL",)),
    Option("--api-latency-threshold-ms", "max median latency (ms) of the public time call", positive, "300"),
    Option("--api-samples", "number of timed calls of the public time endpoint", positive_count, "3"),
    Option("--max-clock-skew-ms", "max distance (ms) between exchange time and local UTC", positive, "1000"),
    Option("--maintenance-horizon", "fail on exchange maintenance ongoing or starting within this duration", duration, "2h"),
    Option("--database-url", "trades database: postgresql://... or sqlite:///path", database_url, None, ("DATABASE_URL",)),
    Option("--trades-table", "table holding the trades feed", text_value, "trades"),
    Option("--trades-time-column", "timestamp column of the trades table", text_value, "ts"),
    Option("--data-latency-threshold", "max age (seconds) of the newest trade", positive, "5"),
    Option("--db-statement-timeout-ms", "max server time (ms) of the newest-trade query; an index on the time "
           "column makes it a lookup", positive, "250"),
    Option("--backtest-summary", "backtest result JSON", text_value, "data/backtest_summary.json", ("BACKTEST_SUMMARY",)),
    Option("--min-sharpe", "minimum backtest Sharpe ratio", _number, "0.2"),
    Option("--min-winrate", "minimum backtest win rate, a fraction in [0, 1]", fraction, "0.5"),
    Option("--max-drawdown", "maximum backtest drawdown, a fraction in [0, 1]", fraction, "0.05"),
    Option("--min-trades", "fewest backtest trades that make the figures meaningful (0 = off)", count, "0"),
    Option("--backtest-max-age", "the backtest summary must be newer than this duration", duration, "24h"),
    Option("--http-admin-url", "admin API root of the trading system (unset: admin checks skip)", url, None,
           ("EXEC_HTTP_ADMIN_URL",)),
    Option("--admin-token-env", "name of the env var holding the admin bearer token", env_name, "EXEC_HTTP_ADMIN_TOKEN"),
    Option("--control-file", "control file path (unset: control checks skip)", text_value, None, ("EXEC_CONTROL_FILE",)),
    Option("--evidence-dir", "where the HTML and JSON evidence go", text_value, "data/evidence"),
)

OBSERVE_OPTIONS: tuple[Option, ...] = (
    Option("--audit-dir", "directory of the trading system's audit JSONL, one file per UTC day", text_value, "data/audit"),
    Option("--risk-events-csv", "the trading system's risk-events CSV (header, a ts column)", text_value,
           "data/risk_events.csv"),
    Option("--observe-window", "observation window the observe checks look back over", duration, "10m"),
    Option("--audit-max-silence", "the newest audit line must be younger than this", duration, "5m"),
    Option("--max-bad-audit-lines", "most unparseable audit lines tolerated in the window", count, "0"),
    Option("--max-risk-events", "most risk events tolerated in the window", count, "3"),
    Option("--max-order-failure-rate", "max failed order_result / order_result in the window", fraction, "0.2"),
    Option("--max-risk-block-rate", "max risk_block / order_intent in the window", fraction, "0.5"),
    Option("--min-signals", "fewest order intents expected in the window", count, "0"),
    Option("--max-signals", "most order intents tolerated in the window (unset: off)", count, None),
    Option("--audit-ts-field", "audit field holding the time", text_value, "ts"),
    Option("--audit-event-field", "audit field holding the event (alias: type)", text_value, "event"),
    Option("--audit-status-field", "audit field holding an order_result's status", text_value, "status"),
    Option("--risk-events-ts-column", "risk-events CSV column holding the time", text_value, "ts"),
)





def resolve_values(
    options: tuple[Option, ...],
    cli: Callable[[Option], Any],
    ini: Callable[[Option], Any],
    ini_source: str,
    environ: Mapping[str, str],
) -> tuple[dict[str, Any], dict[str, str]]:
    """Values and their sources from flag > environment > ini > default; OptionError on a bad value."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for option in options:
        raw, source = cli(option), "the command line"
        if raw is None:
            raw, source = _from_env(option, environ)
        if raw is None:
            from_ini = ini(option)
            raw, source = (from_ini, ini_source) if from_ini not in (None, "") else (option.default, "the default")
        if raw is None:
            values[option.name], sources[option.name] = None, "unset"
            continue
        try:
            values[option.name] = option.parse(str(raw))
        except ValueError as exc:
            raise OptionError(
                f"invalid {option.flag} {str(raw)!r} from {source}: expected {exc}"
                + (f" (ini key {option.name})" if source == ini_source else "")
            ) from None
        sources[option.name] = source
    return values, sources


def _from_env(option: Option, environ: Mapping[str, str]) -> tuple[str | None, str]:
    for name in option.env:
        value = environ.get(name, "")
        if value.strip():
            return value, f"environment variable {name}"
    if option.flag == "--http-admin-url":
        try:
            found = admin_url_from_env(environ)
        except EnvConfigError as exc:
            raise OptionError(f"invalid --http-admin-url from the environment: {exc}") from None
        if found:
            return found
    return None, ""
