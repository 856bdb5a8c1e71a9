"""Every setting of the tool, once, and the one record that holds them.

`Settings` is the option table: each field carries its flag, help, default (as text, parsed like any
input), parser, environment variables, group and whether it is a threshold. The pytest plugin, `watch`,
`switch`/`pause`/`status` and the channel builder all resolve it with `resolve`, in one order:
command line > environment > the gradual-deploy config (`--config`, a TOML file) > ini > default, and
`Settings.sources` says where each value came from. A bad value is an `OptionError` naming the option, where
the value came from and the fix. A pytest ini belongs to whoever owns the directory pytest runs in (in CI, the
trading system's checkout), so a threshold there may only be as strict as the default or stricter; a looser
one comes from the command line or the tool's own config, named explicitly.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Collection, Mapping

from deploy_tool import DeployError
from deploy_tool.redact import Redactor, mask_url
from deploy_tool.times import format_duration, parse_duration


class OptionError(DeployError):
    """A setting has a malformed value; the message names the option, its source and the fix."""

    def __init__(self, message: str, plain: str | None = None) -> None:
        super().__init__(message)
        self.plain = plain or message  # the same, said of where the value came from, for a channel report


# --- parsers: text in, value out, ValueError("what was expected") otherwise ---------------------------


def number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError("a number") from None
    if not math.isfinite(value):
        raise ValueError("a finite number")
    return value


def positive(text: str) -> float:
    value = number(text)
    if value <= 0:
        raise ValueError("a number above 0")
    return value


def fraction(text: str) -> float:
    value = number(text)
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
    if not math.isfinite(value):
        raise ValueError("a finite duration, such as 90s, 30m, 2h, 7d")
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


def share(text: str) -> float:
    """A share of capital: `0.5%` or `0.005`; never rescaled (5 is rejected, not read as 5 %)."""
    text = text.strip()
    value = number(text[:-1]) / 100 if text.endswith("%") else number(text)
    if not 0 < value <= 1:
        raise ValueError("a share of capital above 0 and at most 1, written 0.5% or 0.005")
    return value


def steps(text: str) -> tuple[float, ...]:
    values = tuple(share(part) for part in text.split(",") if part.strip())
    if not values:
        raise ValueError("one or more allocations, e.g. 0.5%,1%,2%,5%")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError("allocations that rise step by step, e.g. 0.5%,1%,2%,5%")
    return values


def paths(text: str) -> tuple[str, ...]:
    """Paths given once each (a repeated flag is joined with commas by `resolve`)."""
    found = tuple(part.strip() for part in text.split(",") if part.strip())
    if not found:
        raise ValueError("a file or directory path")
    return found


def git_commit(text: str) -> str:
    text = text.strip().lower()
    if len(text) not in (40, 64) or any(c not in "0123456789abcdef" for c in text):
        raise ValueError("a full git commit id, 40 (or 64) hex digits, e.g. from `git rev-parse HEAD`")
    return text


def notify_urls(text: str) -> tuple[str, ...]:
    found = tuple(part for part in text.replace(",", " ").split() if part)
    if not found or not all("://" in url for url in found):
        raise ValueError("notification URLs as apprise reads them, e.g. json://host/hook, slack://..., "
                         "tgram://..., mailto://...")
    return found


ON, OFF = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def switch_value(text: str) -> bool:
    """An on/off option's value: a typo such as `flase` is an error, never silently off."""
    value = str(text).strip().lower()
    if value not in ON + OFF:
        raise ValueError("true or false (also 1/0, yes/no, on/off)")
    return value in ON


# --- the table ------------------------------------------------------------------------------------


class Option:
    """One setting: its flag (spelled out, so that a search for it finds it), help, parser, default (as
    text, parsed like any input), env vars, the group of checks it belongs to, and whether the evidence
    records it as a threshold. A `flag_only` option is a plain on/off flag with no ini key; an option without
    `ini_key` takes a value but is never read from an ini file. A threshold is `looser` when its value is
    "higher" or "lower": a pytest ini may not set it looser than its default."""

    # A plain class, not a dataclass: `dataclasses` (and the `inspect` it imports) and the code a dataclass
    # generates at every import cost an emergency pause 20 ms; the table is built once per process.
    __slots__ = ("flag", "help", "parse", "default", "env", "group", "threshold", "flag_only", "bounds", "repeat",
                 "looser", "ini_key")

    def __init__(self, flag: str, help: str, parse: Callable[[str], Any], default: str | None = None,
                 env: tuple[str, ...] = (), group: str = "", threshold: bool = False, flag_only: bool = False,
                 bounds: tuple[float, float] | None = None, repeat: bool = False, looser: str | None = None,
                 ini_key: bool = True) -> None:
        self.flag = flag
        self.help = help
        self.parse = parse
        self.default = default
        self.env = env
        self.group = group
        self.threshold = threshold
        self.flag_only = flag_only
        self.bounds = bounds  # (low, high); low is excluded when it is 0 for a positive kind
        self.repeat = repeat  # the flag may be given more than once; the values are joined
        self.looser = looser  # of a threshold: "higher" or "lower", the way a value lets more pass
        self.ini_key = ini_key

    def __repr__(self) -> str:
        return f"Option({self.flag!r})"

    @property
    def name(self) -> str:
        """The ini key and the field of `Settings`."""
        return self.flag[2:].replace("-", "_")

    def help_text(self, with_default: bool = True) -> str:
        """The help of the flag, its default and env vars, ready for argparse (which formats it with %)."""
        default = f" (default: {self.default})" if with_default and self.default not in (None, "false") else ""
        env = f" [env {', '.join(self.env)}]" if self.env else ""
        return f"{self.help}{default}{env}".replace("%", "%%")

    def read(self, text: str) -> Any:
        """The value in `text`; ValueError saying what was expected, the sane range included."""
        value = self.parse(text)
        if self.bounds is None or value is None:
            return value
        low, high = self.bounds
        above = self.parse in (positive, duration) and low == 0  # 0 itself is no sane value for these
        if value > high or value < low or (above and value == low):
            raise ValueError(self.expected())
        return value

    def expected(self) -> str:
        """What a value of this option looks like, with its range."""
        assert self.bounds is not None
        low, high = self.bounds
        def show(v: float) -> str:
            if v and self.parse is duration:
                return format_duration(v)
            return str(int(v)) if float(v).is_integer() else f"{v:g}"

        nouns: dict[Callable[[str], Any], str] = {duration: "a duration", count: "a whole number",
                                                  positive_count: "a whole number"}
        noun = nouns.get(self.parse, "a number")
        span = (f"above {show(low)} and at most {show(high)}" if self.parse in (positive, duration) and low == 0
                else f"from {show(low)} to {show(high)}")
        return f"{noun} {span}" + (", such as 90s, 30m, 2h, 7d" if self.parse is duration else "")


def _setting(flag: str, help: str, parse: Callable[[str], Any], default: str | None = None, *,
             env: tuple[str, ...] = (), group: str, threshold: bool = False, flag_only: bool = False,
             bounds: tuple[float, float] | None = None, repeat: bool = False, looser: str | None = None,
             ini_key: bool = True) -> Any:
    return Option(flag, help, parse, default, env, group, threshold, flag_only, bounds, repeat, looser, ini_key)


DAY = 86400.0
MANY = 1_000_000_000  # a count beyond this is a typo, not a threshold


def _on_off(flag: str, help: str, group: str) -> Any:
    return _setting(flag, help, switch_value, "false", group=group, flag_only=True)


class Settings:
    """Every resolved setting of one run. The fields are the option table: each is declared here with its
    Option as the class attribute, and every instance holds a value for each (immutable, compared and shown
    like a frozen dataclass; `replace` makes a changed copy)."""

    # where the other settings may come from besides the command line and the environment
    config: str | None = _setting("--config", "the gradual-deploy config: a TOML file whose [gradual-deploy] table "
                                  "sets options by name (min_sharpe = 0.3); unlike a pytest ini it may set a "
                                  "threshold looser than its default", text_value, None, env=("GD_CONFIG",),
                                  group="evidence", ini_key=False)
    # the exchange (okx)
    okx_base_url: str = _setting("--okx-base-url", "exchange REST root", url, "https://www.okx.com",
                                 env=("OKX_BASE_URL",), group="okx")
    api_latency_threshold_ms: float = _setting("--api-latency-threshold-ms", "max median latency (ms) of the public "
                                               "time call", positive, "300", group="okx",
                                               threshold=True, looser="higher", bounds=(0, 60_000))
    # Fewer timed calls are fewer chances to meet a failing or slow one: fewer is looser.
    api_samples: int = _setting("--api-samples", "number of timed calls of the public time endpoint", positive_count,
                                "3", group="okx", threshold=True, looser="lower", bounds=(1, 100))
    max_clock_skew_ms: float = _setting("--max-clock-skew-ms", "max distance (ms) between exchange time and local UTC",
                                        positive, "1000", group="okx",
                                        threshold=True, looser="higher", bounds=(0, 3_600_000))
    # A shorter horizon sees less of the maintenance scheduled ahead: shorter is looser.
    maintenance_horizon: float = _setting("--maintenance-horizon", "fail on exchange maintenance ongoing or starting "
                                          "within this duration", duration, "2h", group="okx",
                                          threshold=True, looser="lower", bounds=(0, 30 * DAY))
    # the trades feed (db)
    database_url: str | None = _setting("--database-url", "trades database: postgresql://... or sqlite:///path",
                                        database_url, None, env=("DATABASE_URL",), group="db")
    trades_table: str = _setting("--trades-table", "table holding the trades feed", text_value, "trades", group="db")
    trades_time_column: str = _setting("--trades-time-column", "timestamp column of the trades table", text_value, "ts",
                                       group="db")
    data_latency_threshold: float = _setting("--data-latency-threshold", "max age (seconds) of the newest trade",
                                             positive, "5", group="db",
                                             threshold=True, looser="higher", bounds=(0, 7 * DAY))
    # Debatable: a longer timeout asks more of the production database, but as a check it lets a slow
    # (unindexed) newest-trade query pass that a shorter one fails: longer is looser.
    db_statement_timeout_ms: float = _setting("--db-statement-timeout-ms", "max server time (ms) of the newest-trade "
                                              "query; an index on the time column makes it a lookup", positive, "250",
                                              group="db", threshold=True, looser="higher", bounds=(1, 600_000))
    skip_db_check: bool = _on_off("--skip-db-check", "skip the trades-feed freshness (db) checks; recorded as skipped "
                                  "on request", group="db")
    # the backtest
    backtest_summary: str = _setting("--backtest-summary", "backtest result JSON", text_value,
                                     "data/backtest_summary.json", env=("BACKTEST_SUMMARY",), group="backtest")
    strategy: str | None = _setting("--strategy", "check only this strategy of a multi-strategy result (unset: "
                                    "every strategy)", text_value, None, group="backtest")
    min_sharpe: float = _setting("--min-sharpe", "minimum backtest Sharpe ratio", number, "0.2", group="backtest",
                                 threshold=True, looser="lower", bounds=(-100, 100))
    min_winrate: float = _setting("--min-winrate", "minimum backtest win rate, a fraction in [0, 1]", fraction, "0.5",
                                  group="backtest", threshold=True, looser="lower", bounds=(0, 1))
    max_drawdown: float = _setting("--max-drawdown", "maximum backtest drawdown, a fraction in [0, 1]", fraction,
                                   "0.05", group="backtest", threshold=True, looser="higher", bounds=(0, 1))
    min_trades: int = _setting("--min-trades", "fewest backtest trades that make the figures meaningful (0 = off; a "
                               "backtest with 0 trades never passes)", count, "30", group="backtest", threshold=True, looser="lower", bounds=(0, MANY))
    backtest_max_age: float = _setting("--backtest-max-age", "the backtest summary must be newer than this duration",
                                       duration, "24h", group="backtest",
                                       threshold=True, looser="higher", bounds=(0, 365 * DAY))
    skip_backtest_check: bool = _on_off("--skip-backtest-check", "skip the backtest checks; recorded as skipped on "
                                        "request", group="backtest")
    # the risk configuration of the trading system (capital, limits)
    risk_config: str | None = _setting("--risk-config", "the trading system's risk configuration file (JSON, YAML or "
                                       "KEY=VALUE .env); unset: GET /config of the admin API", text_value, None,
                                       group="risk")
    risk_config_section: str | None = _setting("--risk-config-section", "the section of the risk configuration the "
                                               "system reads its limits from, dotted (e.g. live.risk); unset: the "
                                               "top level and a `risk` section", text_value, None, group="risk")
    max_allocation: float = _setting("--max-allocation", "largest share of capital the system may trade, a fraction "
                                     "(0.01 for one percent)", fraction, "0.01", group="risk",
                                     threshold=True, looser="higher", bounds=(0, 1))
    max_single_trade_loss: float = _setting("--max-single-trade-loss", "largest per-trade loss limit the "
                                            "configuration may set, a fraction", fraction, "0.01", group="risk",
                                            threshold=True, looser="higher", bounds=(0, 1))
    max_daily_loss: float = _setting("--max-daily-loss", "largest daily loss limit the configuration may set, a "
                                     "fraction; also the realized-PnL bound of the observe checks", fraction, "0.02",
                                     group="risk", threshold=True, looser="higher", bounds=(0, 1))
    capital: float | None = _setting("--capital", "total capital in the quote currency (e.g. USDT): with --inst-id, "
                                     "capital x allocation must buy the exchange's minimum order", positive, None,
                                     group="risk", bounds=(0, 1e12))
    inst_id: str | None = _setting("--inst-id", "instruments the system trades, comma-separated (e.g. BTC-USDT): "
                                   "checked against OKX's minimum order size", text_value, None, group="risk")
    skip_risk_check: bool = _on_off("--skip-risk-check", "skip the risk-configuration checks; recorded as skipped "
                                    "on request", group="risk")
    # the exchange account behind the API key (signed, read only)
    okx_api_key_env: str = _setting("--okx-api-key-env", "name of the env var holding the OKX API key",
                                    env_name, "OKX_API_KEY", group="account")
    okx_api_secret_env: str = _setting("--okx-api-secret-env", "name of the env var holding the OKX API secret",
                                       env_name, "OKX_API_SECRET", group="account")
    okx_api_passphrase_env: str = _setting("--okx-api-passphrase-env", "name of the env var holding the OKX API "
                                           "passphrase", env_name, "OKX_API_PASSPHRASE", group="account")
    okx_demo: bool = _on_off("--okx-demo", "the key is a demo-trading key: send x-simulated-trading: 1",
                             group="account")
    allow_unbound_key: bool = _on_off("--allow-unbound-key", "pass an API key that is not bound to IP addresses",
                                      group="account")
    require_account_check: bool = _on_off("--require-account-check", "fail the account checks when no API key "
                                          "is set, instead of skipping them", group="account")
    # keys not in code
    scan_path: str | None = _setting("--scan-path", "the trading system's source, scanned for hard-coded keys "
                                     "(unset: the secrets check skips)", text_value, None, group="secrets")
    # telling someone
    notify: tuple[str, ...] | None = _setting("--notify", "where to tell someone (apprise URL: json://host/hook, "
                                              "slack://..., tgram://..., mailto://...); repeatable", notify_urls,
                                              None, env=("GD_NOTIFY_URLS",), group="notify", repeat=True)
    # the channels: admin API and control file
    http_admin_url: str | None = _setting("--http-admin-url", "admin API root of the trading system (unset: admin "
                                          "checks skip)", url, None, env=("EXEC_HTTP_ADMIN_URL",), group="admin")
    admin_token_env: str = _setting("--admin-token-env", "name of the env var holding the admin bearer token",
                                    env_name, "EXEC_HTTP_ADMIN_TOKEN", group="admin")
    control_file: str | None = _setting("--control-file", "control file path (unset: control checks skip)", text_value,
                                        None, env=("EXEC_CONTROL_FILE",), group="control")
    # the evidence and the gate in front of real
    evidence_dir: str = _setting("--evidence-dir", "where the HTML and JSON evidence go", text_value, "data/evidence",
                                 group="evidence")
    signing_key: str | None = _setting("--signing-key", "file holding the Ed25519 private key (PEM) that signs the "
                                       "evidence; the key itself may instead be in GD_SIGNING_KEY (a CI secret). "
                                       "Make one with `gradual-deploy keygen`", text_value, None,
                                       env=("GD_SIGNING_KEY_FILE",), group="evidence")
    subject: tuple[str, ...] | None = _setting("--subject", "a file or directory of the trading system (its code, "
                                               "its config) the evidence is bound to by sha256; repeatable",
                                               paths, None, group="evidence", repeat=True)
    revision: str | None = _setting("--revision", "the trading system's git commit the evidence is bound to "
                                    "(40 or 64 hex digits)", git_commit, None, env=("GD_REVISION",), group="evidence")
    trusted_keys: str = _setting("--trusted-keys", "file of the Ed25519 public keys (PEM) whose evidence may open "
                                 "real, kept with the trading system", text_value, "data/keys/trusted-keys.pem",
                                 env=("GD_TRUSTED_KEYS",), group="gate", flag_only=True)
    allow_unsigned: bool = _on_off("--allow-unsigned", "accept evidence that is not signed by a trusted key "
                                   "(rehearsals only; audited as forced)", group="gate")
    max_evidence_age: float = _setting("--max-evidence-age", "switch --to real needs a passing evidence younger than "
                                       "this", duration, "1h", group="gate", flag_only=True, bounds=(0, 30 * DAY))
    # observation: the trading system's own audit and risk events
    audit_dir: str = _setting("--audit-dir", "directory of the trading system's audit JSONL, one file per UTC day",
                              text_value, "data/audit", group="observe")
    risk_events_csv: str = _setting("--risk-events-csv", "the trading system's risk-events CSV (header, a ts column)",
                                    text_value, "data/risk_events.csv", group="observe")
    # Debatable: a longer window holds the count limits (--max-risk-events) to more time, but dilutes a
    # recent burst in every rate and makes --min-signals easier to meet: longer is looser.
    observe_window: float = _setting("--observe-window", "observation window the observe checks look back over",
                                     duration, "10m", group="observe",
                                     threshold=True, looser="higher", bounds=(0, 31 * DAY))
    audit_max_silence: float = _setting("--audit-max-silence", "the newest audit line must be younger than this",
                                        duration, "5m", group="observe",
                                        threshold=True, looser="higher", bounds=(0, 31 * DAY))
    max_bad_audit_lines: int = _setting("--max-bad-audit-lines", "most unparseable audit lines tolerated in the window",
                                        count, "0", group="observe", threshold=True, looser="higher", bounds=(0, MANY))
    max_risk_events: int = _setting("--max-risk-events", "most risk events tolerated in the window", count, "3",
                                    group="observe", threshold=True, looser="higher", bounds=(0, MANY))
    max_order_failure_rate: float = _setting("--max-order-failure-rate", "max failed order_result / order_result in "
                                             "the window", fraction, "0.2", group="observe",
                                             threshold=True, looser="higher", bounds=(0, 1))
    max_risk_block_rate: float = _setting("--max-risk-block-rate", "max risk_block / order_intent in the window",
                                          fraction, "0.5", group="observe",
                                          threshold=True, looser="higher", bounds=(0, 1))
    min_orders: int = _setting("--min-orders", "fewest order results (or intents) a rate is judged on: a window "
                               "with fewer is inconclusive unless already failing, and a round's slice (the last "
                               "--interval) with fewer is not judged on its own",
                               positive_count, "3", group="observe", threshold=True, looser="higher",
                               bounds=(1, MANY))
    min_signals: int = _setting("--min-signals", "fewest order intents expected in the window", count, "0",
                                group="observe", threshold=True, looser="lower", bounds=(0, MANY))
    # Unset is off, the loosest; any value is tighter than that, and a higher one looser than a lower.
    max_signals: int | None = _setting("--max-signals", "most order intents tolerated in the window (unset: off)",
                                       count, None, group="observe", threshold=True, looser="higher", bounds=(0, MANY))
    audit_ts_field: str = _setting("--audit-ts-field", "audit field holding the time", text_value, "ts",
                                   group="observe")
    audit_event_field: str = _setting("--audit-event-field", "audit field holding the event (alias: type)",
                                      text_value, "event", group="observe")
    audit_status_field: str = _setting("--audit-status-field", "audit field holding an order_result's status",
                                       text_value, "status", group="observe")
    risk_events_ts_column: str = _setting("--risk-events-ts-column", "risk-events CSV column holding the time",
                                          text_value, "ts", group="observe")
    max_slippage_bps: float = _setting("--max-slippage-bps", "largest mean adverse fill slippage in the window, in "
                                       "basis points of the intended price", positive, "50", group="observe",
                                       threshold=True, looser="higher", bounds=(0, 10_000))
    audit_price_field: str = _setting("--audit-price-field", "order_result field holding the intended price",
                                      text_value, "price", group="observe")
    audit_fill_price_field: str = _setting("--audit-fill-price-field", "order_result field holding the fill price",
                                           text_value, "fill_price", group="observe")
    audit_size_field: str = _setting("--audit-size-field", "order_result field holding the filled size (base "
                                     "currency), for each trade's return (--judge-backtest)", text_value, "sz",
                                     group="observe")
    audit_pnl_field: str = _setting("--audit-pnl-field", "order_result field holding the realized PnL (quote "
                                    "currency)", text_value, "pnl", group="observe")
    allow_missing_risk_csv: bool = _on_off("--allow-missing-risk-csv", "pass the risk-events check when "
                                           "--risk-events-csv does not exist (default: it fails)", group="observe")
    observe: bool = _on_off("--observe", "also run the observe checks (the watch period); -m observe runs only them",
                            group="observe")
    # the judge (watch, ramp): the live trades against the backtest's own, as Kayenta's judge does for canaries
    judge_backtest: str | None = _setting("--judge-backtest", "every round, compare the live per-trade returns in "
                                          "the window with this backtest's own trades (a freqtrade result with its "
                                          "trades: .json, .zip or its results directory): a one-sided Mann-Whitney "
                                          "U test; needs scipy (pip install 'gradual-deploy[judge]')", text_value,
                                          None, group="judge", flag_only=True)
    judge_strategy: str | None = _setting("--judge-strategy", "the strategy whose backtest trades are the baseline, "
                                          "when the result holds several", text_value, None, group="judge",
                                          flag_only=True)
    judge_min_trades: int = _setting("--judge-min-trades", "fewest live trades (order results with a pnl, a size "
                                     "and a price) in the window before the judge compares; fewer: inconclusive",
                                     positive_count, "10", group="judge", flag_only=True, bounds=(2, MANY))
    judge_fail_p: float = _setting("--judge-fail-p", "a p-value below this (the live returns lower than the "
                                   "backtest's) fails the round", fraction, "0.01", group="judge", flag_only=True,
                                   bounds=(0, 1))
    judge_marginal_p: float = _setting("--judge-marginal-p", "a p-value below this (and not below --judge-fail-p) "
                                       "is marginal: inconclusive, a person looks", fraction, "0.05", group="judge",
                                       flag_only=True, bounds=(0, 1))
    # watch: the loop, and where the tool's own audit goes
    steps: tuple[float, ...] | None = _setting("--steps", "the allocation at each ramp step, rising, e.g. "
                                               "0.5%,1%,2%,5% (or 0.005,0.01,...)", steps, None, group="ramp",
                                               flag_only=True)
    confirm_url: str | None = _setting("--confirm-url", "a webhook asked before every raise of the allocation "
                                       "(POST, JSON): HTTP 200 goes on, anything else waits and asks again every "
                                       "--interval (Flagger's confirm-traffic-increase)", url, None,
                                       env=("GD_CONFIRM_URL",), group="ramp", ini_key=False)
    wait_for_approval: bool = _on_off("--wait-for-approval", "before every raise of the allocation, wait for "
                                      "`gradual-deploy ramp approve` from another terminal", group="ramp")
    hold: float = _setting("--hold", "how long each ramp step must hold clean before the next", duration, "2h",
                           group="ramp", flag_only=True, bounds=(0, 7 * DAY))
    interval: float = _setting("--interval", "time between watch rounds", duration, "30s", group="watch",
                               flag_only=True, bounds=(0, DAY))
    duration: float = _setting("--duration", "how long to watch", duration, "2h", group="watch", flag_only=True, bounds=(0, 31 * DAY))
    failure_limit: int = _setting("--failure-limit", "consecutive failing rounds (a criterion measured out of "
                                  "bounds) that trigger the pause", positive_count, "1", group="watch",
                                  flag_only=True, bounds=(1, 10_000))
    consecutive_error_limit: int = _setting("--consecutive-error-limit", "consecutive rounds in which a probe could "
                                            "not measure that are tolerated; one more triggers the pause (as Argo "
                                            "Rollouts' consecutiveErrorLimit)", count, "4", group="watch",
                                            flag_only=True, bounds=(0, 10_000))
    inconclusive_limit: int = _setting("--inconclusive-limit", "consecutive inconclusive rounds (too few orders "
                                       "to judge a rate, see --min-orders) that are tolerated; one more makes the "
                                       "analysis inconclusive: a ramp waits for `gradual-deploy ramp approve`, a "
                                       "watch says so", count, "3", group="watch", flag_only=True,
                                       bounds=(0, 10_000))
    deploy_audit_dir: str = _setting("--deploy-audit-dir", "where gradual-deploy's own audit JSONL goes "
                                     "(switch and pause call it --audit-dir)", text_value, "data/audit",
                                     group="watch", flag_only=True)

    # Not an option: settings named but unusable, by name, for a caller that asked to go on without them
    # (a pause goes through the channel that works and reports the other FAILED with this reason).
    problems: Mapping[str, str]
    # Not an option: where each setting's value came from, by name: "the command line", "environment variable
    # X", "config <path>", the ini file's name (e.g. "pytest.ini") or "the default".
    sources: Mapping[str, str]

    def __init__(self, *, problems: Mapping[str, str] | None = None, sources: Mapping[str, str] | None = None,
                 **values: Any) -> None:
        missing = [o.name for o in OPTIONS if o.name not in values]
        unknown = [name for name in values if name not in BY_NAME]
        if missing or unknown:
            raise TypeError(f"Settings: missing {missing}, unknown {unknown}")
        for option in OPTIONS:
            object.__setattr__(self, option.name, values[option.name])
        object.__setattr__(self, "problems", dict(problems or {}))
        object.__setattr__(self, "sources", dict(sources or {}))

    def _values(self) -> dict[str, Any]:
        return {o.name: getattr(self, o.name) for o in OPTIONS}

    def replace(self, **changes: Any) -> "Settings":
        """A copy with `changes` (values, not text: nothing is parsed again; `problems` and `sources` too)."""
        problems = changes.pop("problems", self.problems)
        sources = changes.pop("sources", self.sources)
        return Settings(**{**self._values(), **changes}, problems=problems, sources=sources)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: Settings are immutable (use .replace)")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: Settings are immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Settings):
            return NotImplemented
        return (self._values(), self.problems, self.sources) == (other._values(), other.problems, other.sources)

    __hash__ = None  # type: ignore[assignment]  # it holds mappings

    def __repr__(self) -> str:
        fields = [f"{o.name}={getattr(self, o.name)!r}" for o in OPTIONS]
        return f"Settings({', '.join([*fields, f'problems={self.problems!r}', f'sources={self.sources!r}'])})"

    def admin_token(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The admin bearer token, from the env var named by --admin-token-env."""
        environ = os.environ if environ is None else environ
        return environ.get(self.admin_token_env) or None

    def redactor(self, environ: Mapping[str, str] | None = None) -> Redactor:
        """A redactor for every secret these settings know: passwords in URL settings, the admin token,
        and every secret-looking environment variable."""
        environ = os.environ if environ is None else environ
        redactor = Redactor.from_environ(environ)
        for option in OPTIONS:
            if option.parse in (url, database_url):
                redactor.add_url(getattr(self, option.name))
        redactor.add(self.admin_token(environ))
        for target in self.notify or ():  # a webhook URL is a credential: whoever has it can post
            redactor.add(target)
        if self.confirm_url:  # whoever has it can confirm a raise: its user info (add_url, above), secret-named
            from urllib.parse import parse_qsl, urlsplit  # query values, and any long one (a signature, a key)

            for _, value in parse_qsl(urlsplit(self.confirm_url).query):
                if len(value) >= 12:  # a short one (?env=prod) masked everywhere would only mangle the output
                    redactor.add(value)
        return redactor

    def thresholds(self, groups: Collection[str]) -> dict[str, Any]:
        """The threshold settings of the given groups, by option name, as the evidence records them."""
        return {o.name: getattr(self, o.name) for o in OPTIONS if o.threshold and o.group in groups}

    def threshold_sources(self, groups: Collection[str]) -> dict[str, str]:
        """Where each of `thresholds(groups)` came from, by option name."""
        return {name: self.sources.get(name, "the default") for name in self.thresholds(groups)}


OPTIONS: tuple[Option, ...] = tuple(v for v in vars(Settings).values() if isinstance(v, Option))
BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
for _name, _value in vars(Settings).items():  # a field named unlike its flag would be unreachable from the command line
    if isinstance(_value, Option) and _value.name != _name:
        raise AssertionError(f"Settings.{_name}: its flag does not spell its name")
for _option in OPTIONS:  # a threshold without a direction could be loosened from a pytest ini unseen
    if (_option.looser in ("higher", "lower")) != _option.threshold:
        raise AssertionError(f"{_option.flag}: a threshold needs looser='higher' or 'lower', and only a threshold")

# The suite's options: everything but the watch loop and the gate, which belong to the commands.
SUITE_OPTIONS = tuple(o for o in OPTIONS if o.group not in ("watch", "gate", "ramp", "judge"))


def admin_url_from_env(environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(url, source) for the admin API from EXEC_HTTP_ADMIN_URL, or from EXEC_HTTP_HOST and EXEC_HTTP_PORT
    when EXEC_HTTP_ADMIN_ENABLED=true; None when the environment names none; ValueError when it names one
    incompletely, or when EXEC_HTTP_ADMIN_ENABLED holds a value that is neither on nor off (`y`, `enabled`):
    read as off, it would drop the admin API from a pause without a word."""
    value = environ.get("EXEC_HTTP_ADMIN_URL", "").strip()
    if value:
        return value, "environment variable EXEC_HTTP_ADMIN_URL"
    enabled = environ.get("EXEC_HTTP_ADMIN_ENABLED", "")
    try:
        on = switch_value(enabled)
    except ValueError as exc:
        shown = enabled.strip() if len(enabled.strip()) <= 20 else enabled.strip()[:17] + "..."
        raise ValueError(f"EXEC_HTTP_ADMIN_ENABLED={shown!r} is neither on nor off: expected {exc}") from None
    if not on:
        return None
    host = environ.get("EXEC_HTTP_HOST", "").strip() or "127.0.0.1"
    port = environ.get("EXEC_HTTP_PORT", "").strip()
    if not port:
        raise ValueError("EXEC_HTTP_ADMIN_ENABLED=true but EXEC_HTTP_PORT is not set: set EXEC_HTTP_PORT "
                         "(and EXEC_HTTP_HOST) or EXEC_HTTP_ADMIN_URL")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"EXEC_HTTP_PORT={port!r} is not a TCP port (1-65535)")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}", "environment variables EXEC_HTTP_HOST/EXEC_HTTP_PORT"


def _from_env(option: Option, environ: Mapping[str, str]) -> tuple[str | None, str]:
    for name in option.env:
        value = environ.get(name, "")
        if value.strip():
            return value, f"environment variable {name}"
    if option.name == "http_admin_url":
        try:
            found = admin_url_from_env(environ)
        except ValueError as exc:
            raise OptionError(f"invalid --http-admin-url from the environment: {exc}", str(exc)) from None
        if found:
            return found
    return None, ""


# --- the gradual-deploy config: the tool's own TOML file -------------------------------------------------

CONFIG_TABLE = "gradual-deploy"


class ConfigFile:
    """The `[gradual-deploy]` table of a `--config` file: option values by name, as text, parsed like any input."""

    def __init__(self, path: str, values: Mapping[str, str]) -> None:
        self.path = path  # absolute: the evidence says which file, wherever the run started
        self.values = values

    @property
    def source(self) -> str:
        return f"config {self.path}"


def load_config(path: str, source: str = "the command line") -> ConfigFile:
    """The `[gradual-deploy]` table of the TOML file at `path`; OptionError naming the file when it cannot be
    read or parsed, has no such table, or sets a key that is no option."""
    shown = os.path.abspath(path)

    def error(problem: str) -> OptionError:
        return OptionError(f"--config {shown} (from {source}) {problem}", f"--config {shown} {problem}")

    import tomllib  # only a run given --config pays for it (not a pause)

    try:
        from deploy_tool import fileops

        doc = tomllib.loads(fileops.read_bytes(path, limit=1_000_000).decode("utf-8"))  # no FIFO, no endless file
    except OSError as exc:
        raise error(f"cannot be read ({exc.strerror or exc}): give --config a readable TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"is not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise error(f"is not valid TOML: it is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    table = doc.get(CONFIG_TABLE)
    if not isinstance(table, dict):
        raise error(f"has no [{CONFIG_TABLE}] table: set the options there, e.g. [{CONFIG_TABLE}] min_sharpe = 0.3")
    outside = sorted(key for key in doc if key != CONFIG_TABLE)
    if outside:  # a key above the table header is one the operator meant to set, not one to ignore
        raise error(f"sets {', '.join(outside)} outside the [{CONFIG_TABLE}] table: move it into the table")
    if "config" in table:
        raise error(f"sets config in [{CONFIG_TABLE}]: a config cannot name another one")
    unknown = sorted(key for key in table if key not in BY_NAME)
    if unknown:
        raise error(f"sets unknown options in [{CONFIG_TABLE}]: {', '.join(unknown)} (a key is the option's flag "
                    "without the leading -- and with _ for -, e.g. min_sharpe for --min-sharpe)")
    values = {}
    for key, value in table.items():
        option = BY_NAME[key]
        many = option.repeat or option.parse is steps
        text = _config_text(value, many)
        if text is None:
            kinds = "a string, a number or true/false" + (", or a list of them" if many else "")
            raise error(f"sets {key} = {value} in [{CONFIG_TABLE}]: expected {kinds}")
        values[key] = text
    return ConfigFile(shown, values)


def _config_text(value: Any, many: bool) -> str | None:
    """A TOML value as the text a flag would carry; None for a kind no option takes."""
    if isinstance(value, list) and many and value:
        parts = [_config_text(part, many=False) for part in value]
        return None if any(part is None for part in parts) else ",".join(str(part) for part in parts)
    if isinstance(value, bool):  # before int: a bool is an int
        return "true" if value else "false"
    if isinstance(value, (int, float, str)):
        return str(value)
    return None  # a table, a date, a list where one value belongs


# --- resolving --------------------------------------------------------------------------------------------


def resolve(
    names: Collection[str],
    cli: Callable[[Option], Any],
    ini: Callable[[Option], Any] = lambda option: None,
    ini_source: str = "the ini file",
    environ: Mapping[str, str] | None = None,
    tolerate: Collection[str] = (),
) -> Settings:
    """Settings from flag > environment > the gradual-deploy config > ini > default for the named options;
    every other field holds its default. The config file (`--config`, `GD_CONFIG`) is read first when `config`
    is among the names. Where each value came from goes into `Settings.sources`. OptionError on a bad value
    and on a threshold the ini sets looser than its default, except for the `tolerate`d options: those are
    left unset and their reason is kept in `Settings.problems`."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    problems: dict[str, str] = {}
    sources: dict[str, str] = {}
    config: ConfigFile | None = None
    if "config" in names:
        values["config"], sources["config"] = _resolve_one(BY_NAME["config"], cli, ini, ini_source, environ, None)
        if values["config"] is not None:
            config = load_config(values["config"], sources["config"])
    for option in OPTIONS:
        if option.name in values:
            continue
        if option.name not in names:
            values[option.name] = None if option.default is None else option.read(option.default)
            sources[option.name] = "the default"
            continue
        try:
            values[option.name], sources[option.name] = _resolve_one(option, cli, ini, ini_source, environ, config)
        except OptionError as exc:
            if option.name not in tolerate:
                raise
            values[option.name], problems[option.name] = None, exc.plain
    return Settings(**values, problems=problems, sources=sources)


def _resolve_one(option: Option, cli: Callable[[Option], Any], ini: Callable[[Option], Any], ini_source: str,
                 environ: Mapping[str, str], config: ConfigFile | None) -> tuple[Any, str]:
    """The option's value and where it came from."""
    raw, source = cli(option), "the command line"
    if isinstance(raw, list):  # a repeated flag
        raw = ",".join(raw)
    if raw is None:
        raw, source = _from_env(option, environ)
    if raw is None and config is not None and option.name in config.values:
        raw, source = config.values[option.name], config.source
    from_ini = False
    if raw is None and not option.flag_only:
        found = ini(option)
        if found not in (None, ""):
            if not option.ini_key:
                raise OptionError(f"{option.name} = {found} in {ini_source} is not read: {option.flag} comes only from "
                                  f"the command line or the environment ({', '.join(option.env)}); remove it from "
                                  f"{ini_source}")
            raw, source, from_ini = found, ini_source, True
    if raw is None:
        raw, source = option.default, "the default"
    if raw is None:
        return None, source
    try:
        value = option.read(str(raw))
    except (ValueError, OverflowError) as exc:
        # a webhook URL is a credential (whoever has it can post or confirm): never echoed
        shown = "***" if option.parse is notify_urls or option.name == "confirm_url" else str(
            (mask_url(str(raw)) if option.parse in (url, database_url) else None) or raw)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        where = source.removeprefix("environment variable ") if source.startswith("environment") else option.flag
        key = (f" (ini key {option.name})" if from_ini else
               f" (key {option.name} in [{CONFIG_TABLE}])" if config is not None and source == config.source else "")
        raise OptionError(
            f"invalid {option.flag} {shown!r} from {source}: expected {exc}{key}",
            f"{where}={shown!r} is unusable: expected {exc}",
        ) from None
    if from_ini and looser_than_default(option, value):
        # The ini belongs to whoever owns the directory pytest runs in; loosening the gate is a decision
        # someone makes by name, on the command line or in the tool's own config.
        env = f", the environment ({', '.join(option.env)})" if option.env else ""
        written = str(raw).strip()
        raise OptionError(
            f"{option.name} = {written} in {ini_source} is looser than the default {option.default}: a looser "
            f"threshold comes only from the command line ({option.flag}){env} or the gradual-deploy config "
            f"(--config or GD_CONFIG); remove it from {ini_source}",
            f"{option.name} = {written} in {ini_source} is looser than the default {option.default}",
        )
    return value, source


def looser_than_default(option: Option, value: Any) -> bool:
    """Does `value` let more pass than the option's default? Never for a non-threshold; unset is off, the
    loosest, so any value is at least as strict as an unset default."""
    if option.looser is None or option.default is None or value is None:
        return False
    default = option.read(option.default)
    return bool(value > default) if option.looser == "higher" else bool(value < default)


def defaults(**overrides: Any) -> Settings:
    """Every setting at its default, with the given fields replaced: for library callers and tests."""
    return resolve((), cli=lambda option: None).replace(**overrides)
