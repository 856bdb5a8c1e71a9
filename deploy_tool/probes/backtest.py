"""The backtest summary: parsing, validation and the go-live thresholds.

The file is a JSON object with sharpe / winrate / max_drawdown (aliases accepted), or a list of such
objects, or {"strategies": [...]}; each strategy is checked on its own. Fractions are never rescaled:
a winrate of 55 is rejected with a message, not read as 55 %.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from deploy_tool import ProbeError
from deploy_tool.times import parse_timestamp

MAX_SUMMARY_BYTES = 256_000_000  # a freqtrade result with every trade of a long backtest is large, not endless
ALIASES = {
    "sharpe": ("sharpe", "sharpe_ratio"),
    "winrate": ("winrate", "win_rate"),
    "max_drawdown": ("max_drawdown", "max_dd", "maxDrawdown", "max_drawdown_account", "max_relative_drawdown"),
}


@dataclass(frozen=True)
class Strategy:
    """One strategy's backtest figures, validated, or the reason they are unusable."""

    name: str
    sharpe: float = math.nan
    winrate: float = math.nan
    max_drawdown: float = math.nan
    trades: int | None = None
    generated_at: dt.datetime | None = None
    generated_at_source: str = ""
    error: str | None = None
    # Where each figure came from, for the evidence: {"sharpe": "sharpe", "max_drawdown": "max_relative_drawdown",
    # "drawdowns_seen": {...}, "freqtrade_version": "..."}; empty for our own summary format's plain fields.
    provenance: dict[str, Any] = field(default_factory=dict)
    # each backtest trade's return (freqtrade's `profit_ratio` per trade), when the result holds its trades;
    # None: it holds none (freqtrade without --export trades, or our own summary format)
    trade_returns: tuple[float, ...] | None = None

    def drawdown_note(self) -> str:
        seen = self.provenance.get("drawdowns_seen") or {}
        if len(seen) < 2:
            return f" ({self.provenance['max_drawdown']})" if self.provenance.get("max_drawdown") else ""
        listed = ", ".join(f"{k} {v:g}" for k, v in seen.items())
        return f" (the most conservative of {listed})"

    def sharpe_note(self) -> str:
        if not self.provenance.get("sharpe"):
            return ""
        version = self.provenance.get("freqtrade_version")
        return (f" (freqtrade `{self.provenance['sharpe']}`, freqtrade "
                + (f"{version}" if version else "version not recorded in the result") + ")")


@dataclass(frozen=True)
class Summary:
    """A parsed summary file with its fingerprint for the evidence."""

    path: str
    sha256: str
    strategies: tuple[Strategy, ...]


def _pick(obj: dict, name: str) -> tuple[str | None, Any]:
    """The figure under its first accepted name; ValueError when two names hold different values (which one
    the summary's author meant is not for this tool to guess)."""
    present = [key for key in ALIASES[name] if key in obj]
    if len({json.dumps(obj[key], sort_keys=True, default=str) for key in present}) > 1:
        raise ValueError(f"{name} is given twice with different values ({', '.join(f'{k} {obj[k]!r}' for k in present)}): "
                         "ambiguous; keep one")
    return (present[0], obj[present[0]]) if present else (None, None)


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"{key} is {value!r}, not a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{key} is {value!r}, not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{key} is {value!r}: not a finite number (the backtest produced no usable figure)")
    return number


def _strategy(obj: Any, name: str, fallback_time: tuple[dt.datetime | None, str]) -> Strategy:
    if not isinstance(obj, dict):
        return Strategy(name=name, error=f"entry is {type(obj).__name__}, expected an object with sharpe, winrate, max_drawdown")
    values: dict[str, float] = {}
    problems = []
    for figure in ALIASES:
        try:
            key, raw = _pick(obj, figure)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if key is None:
            problems.append(f"{figure} missing (accepted names: {', '.join(ALIASES[figure])})")
            continue
        try:
            values[figure] = _number(key, raw)
        except ValueError as exc:
            problems.append(str(exc))
    if "winrate" in values and not 0 <= values["winrate"] <= 1:
        problems.append(f"winrate {values['winrate']:g} is outside [0, 1]: write a fraction, e.g. 0.55 for 55 %")
    if "max_drawdown" in values:
        values["max_drawdown"] = abs(values["max_drawdown"])  # -0.04 means a 4 % drawdown
        if values["max_drawdown"] > 1:
            problems.append(
                f"max_drawdown {values['max_drawdown']:g} is outside [0, 1]: write a fraction, e.g. 0.04 for 4 %"
            )
    trades = None
    if "trades" in obj:
        raw = obj["trades"]
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) or raw < 0 or raw != int(raw):
            problems.append(f"trades is {raw!r}, not a whole number >= 0")
        else:
            trades = int(raw)
            if trades == 0:
                problems.append("0 trades: the figures describe a strategy that never traded, which proves nothing; "
                                "a backtest without trades never passes")
    generated_at, source = fallback_time
    if "generated_at" in obj:
        try:
            generated_at, source = parse_timestamp(obj["generated_at"]), "generated_at"
        except (ValueError, OverflowError, OSError):
            problems.append(f"generated_at {obj['generated_at']!r} is not an ISO 8601 time")
    if problems:
        return Strategy(name=name, error="; ".join(problems))
    return Strategy(
        name=name,
        sharpe=values["sharpe"],
        winrate=values["winrate"],
        max_drawdown=values["max_drawdown"],
        trades=trades,
        generated_at=generated_at,
        generated_at_source=source,
    )


def load_summary(path: str, strategy: str | None = None) -> Summary:
    """Read and validate the summary: this tool's own format or freqtrade's result (its JSON, its `.zip`,
    or a results directory whose `.last_result.json` names the newest). `strategy` picks one strategy.
    ProbeError when the file as a whole is unusable."""
    if os.path.isdir(path):
        path = _latest_result(path)
    try:
        from deploy_tool import fileops

        data = fileops.read_bytes(path, limit=MAX_SUMMARY_BYTES)  # a FIFO is refused, a huge file too
        mtime = dt.datetime.fromtimestamp(os.stat(path).st_mtime, dt.timezone.utc)
    except FileNotFoundError:
        raise ProbeError(
            f"backtest summary {path} does not exist: run the backtest, point --backtest-summary at its "
            "result, or pass --skip-backtest-check"
        ) from None
    except OSError as exc:
        raise ProbeError(f"backtest summary {path} cannot be read: {exc.strerror or exc}") from None
    text = _zipped_result(path, data) if path.lower().endswith(".zip") else data
    try:
        doc = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProbeError(f"backtest summary {path} is not valid JSON: {exc}") from None
    fallback: tuple[dt.datetime | None, str] = (mtime, "file mtime")
    if _is_freqtrade(doc):
        return Summary(path=path, sha256=hashlib.sha256(data).hexdigest(),
                       strategies=_freqtrade(doc, path, fallback, strategy))
    if isinstance(doc, dict) and "strategies" in doc:
        if "generated_at" in doc:
            try:
                fallback = (parse_timestamp(doc["generated_at"]), "generated_at")
            except (ValueError, OverflowError, OSError):
                raise ProbeError(f"backtest summary {path}: generated_at {doc['generated_at']!r} is not ISO 8601") from None
        entries = doc["strategies"]
        if not isinstance(entries, list):
            raise ProbeError(f"backtest summary {path}: 'strategies' is not a list")
    elif isinstance(doc, list):
        entries = doc
    elif isinstance(doc, dict):
        entries = [doc]
    else:
        raise ProbeError(f"backtest summary {path} holds {type(doc).__name__}, expected an object or a list")
    if not entries:
        raise ProbeError(f"backtest summary {path} lists no strategy")
    strategies = []
    seen: set[str] = set()
    for index, entry in enumerate(entries, 1):
        name = str(entry.get("strategy") or entry.get("name") or "") if isinstance(entry, dict) else ""
        name = name or (f"strategy-{index}" if len(entries) > 1 else "summary")
        if name in seen:
            name = f"{name}-{index}"
        seen.add(name)
        strategies.append(_strategy(entry, name, fallback))
    return Summary(path=path, sha256=hashlib.sha256(data).hexdigest(),
                   strategies=_pick_strategy(tuple(strategies), strategy, path))


def _pick_strategy(strategies: tuple[Strategy, ...], wanted: str | None, path: str) -> tuple[Strategy, ...]:
    if wanted is None:
        return strategies
    chosen = tuple(s for s in strategies if s.name == wanted)
    if not chosen:
        raise ProbeError(f"strategy {wanted!r} is not in {path}: it holds {', '.join(s.name for s in strategies)}; "
                         "set --strategy to one of them")
    return chosen


# --- freqtrade's result files -------------------------------------------------------------------------

# freqtrade names the drawdown three ways over its versions: the account's, the relative one, the legacy one.
# freqtrade's drawdowns of the account, all fractions: "Absolute drawdown (account)" and "Max % of account
# underwater" (the headline); 2026.x adds one of the marked-to-market wallet under `wallet_stats`. The gate
# judges the largest of them and of an older freqtrade's `max_drawdown` (another measure; the larger wins).
FREQTRADE_DRAWDOWN = ("max_drawdown_account", "max_relative_drawdown")
FREQTRADE_LEGACY_DRAWDOWN = "max_drawdown"
NOT_A_FRACTION = ("abs", "start", "end", "date", "_ts", "high", "low", "duration", "count")
# When the backtest ran: the run's end (epoch seconds, or a date string in older files), else the meta file's
# start, else the end of the data it ran over (epoch ms).
FREQTRADE_TIMES = ("backtest_run_end_ts", "backtest_run_start_ts")


def _is_freqtrade(doc: Any) -> bool:
    return (isinstance(doc, dict) and isinstance(doc.get("strategy"), dict)
            and ("strategy_comparison" in doc or "metadata" in doc)
            and all(isinstance(v, dict) for v in doc["strategy"].values()))


def _latest_result(directory: str) -> str:
    """The result `.last_result.json` in a freqtrade results directory names."""
    marker = os.path.join(directory, ".last_result.json")
    try:
        from deploy_tool import fileops

        name = json.loads(fileops.read_text(marker, limit=1_000_000)).get("latest_backtest")
    except FileNotFoundError:
        raise ProbeError(f"backtest summary {directory} is a directory without .last_result.json: point "
                         "--backtest-summary at a result file, or at freqtrade's backtest_results directory") from None
    except (OSError, ValueError, AttributeError) as exc:
        raise ProbeError(f"{marker} cannot be read: {exc}") from None
    if not isinstance(name, str) or not name or os.sep in name or name.startswith(".."):
        raise ProbeError(f"{marker} names no result file (latest_backtest {name!r})")
    return os.path.join(directory, name)


def _zipped_result(path: str, data: bytes) -> bytes:
    """The result JSON inside freqtrade's `.zip`: `<stem>.json` beside its config and strategy files."""
    import io
    import zipfile

    import zlib

    stem = os.path.basename(path)[: -len(".zip")]

    def bounded(archive: zipfile.ZipFile, name: str) -> bytes:
        # A zip bomb: the member's declared size first, then never more than that limit read.
        if archive.getinfo(name).file_size > MAX_SUMMARY_BYTES:
            raise ProbeError(f"backtest summary {path}: {name} unpacks to more than {MAX_SUMMARY_BYTES} bytes")
        with archive.open(name) as member:
            content = member.read(MAX_SUMMARY_BYTES + 1)
        if len(content) > MAX_SUMMARY_BYTES:
            raise ProbeError(f"backtest summary {path}: {name} unpacks to more than {MAX_SUMMARY_BYTES} bytes")
        return content

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            if f"{stem}.json" in names:
                return bounded(archive, f"{stem}.json")
            results = [n for n in names if n.endswith(".json") and not n.endswith(("_config.json", ".meta.json"))
                       and not n.startswith(f"{stem}_")]
            if len(results) == 1:
                return bounded(archive, results[0])
    except (zipfile.BadZipFile, OSError, KeyError, RuntimeError, NotImplementedError, zlib.error, EOFError) as exc:
        # RuntimeError: an encrypted member; NotImplementedError: a compression zipfile cannot read
        raise ProbeError(f"backtest summary {path} is not a readable zip: {type(exc).__name__}: {exc}") from None
    raise ProbeError(f"backtest summary {path} holds no {stem}.json (members: {', '.join(names[:8])})")


def _meta(path: str) -> dict[str, Any]:
    """freqtrade's `<stem>.meta.json` beside the result, by strategy; empty when there is none."""
    stem = path[: -len(".zip")] if path.lower().endswith(".zip") else path[: -len(".json")]
    try:
        from deploy_tool import fileops

        meta = json.loads(fileops.read_text(f"{stem}.meta.json", limit=16_000_000))
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _freqtrade_time(stats: dict, meta: dict, fallback: tuple[dt.datetime | None, str]) -> tuple[dt.datetime | None, str]:
    for key in FREQTRADE_TIMES:
        if stats.get(key) not in (None, "", 0):
            try:
                return parse_timestamp(stats[key]), f"freqtrade {key}"
            except (ValueError, OverflowError, OSError):
                continue
    if meta.get("backtest_start_time") not in (None, "", 0):
        try:
            return parse_timestamp(meta["backtest_start_time"]), "freqtrade meta backtest_start_time"
        except (ValueError, OverflowError, OSError):
            pass
    if stats.get("backtest_end_ts") not in (None, "", 0):
        try:
            return parse_timestamp(stats["backtest_end_ts"]), "freqtrade backtest_end_ts (end of the data)"
        except (ValueError, OverflowError, OSError):
            pass
    return fallback


def _freqtrade_drawdowns(stats: dict) -> tuple[dict[str, float], list[str]]:
    """Every drawdown (a fraction) freqtrade reports for a strategy, by field, the legacy `max_drawdown` and
    `wallet_stats` (any depth, any case) included; and the drawdown fields that hold no number (a string, a
    list, NaN): those fail the strategy, they never just drop out of the comparison."""
    seen: dict[str, float] = {}
    unusable: list[str] = []

    def consider(key: str, value: Any) -> None:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            seen[key] = abs(float(value))
        elif value is not None or key in FREQTRADE_DRAWDOWN:
            unusable.append(f"{key} is {str(value)[:40]!r}, not a number")

    for key in (*FREQTRADE_DRAWDOWN, FREQTRADE_LEGACY_DRAWDOWN):
        if key in stats:
            consider(key, stats[key])

    def walk(node: Any, prefix: str, depth: int) -> None:
        if depth > 4:
            return
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, value in items:
            key = f"{prefix}.{k}"
            if isinstance(value, (dict, list)):
                walk(value, key, depth + 1)
            elif "drawdown" in str(k).lower() and not any(t in str(k).lower() for t in NOT_A_FRACTION):
                consider(key, value)

    if "wallet_stats" in stats:
        walk(stats["wallet_stats"], "wallet_stats", 0)
    return seen, unusable


def _trade_returns(stats: dict) -> tuple[float, ...] | None:
    """Each trade's `profit_ratio` in a freqtrade strategy's result, or None when it lists no trades; a trade
    without a finite one is left out (it cannot be compared)."""
    trades = stats.get("trades")
    if not isinstance(trades, list):
        return None
    found = []
    for trade in trades:
        value = trade.get("profit_ratio") if isinstance(trade, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            found.append(float(value))
    return tuple(found)


def _freqtrade(doc: dict, path: str, fallback: tuple[dt.datetime | None, str],
               wanted: str | None) -> tuple[Strategy, ...]:
    """Each strategy of a freqtrade result, its figures under freqtrade's own names."""
    meta = _meta(path)
    found = []
    for name, stats in doc["strategy"].items():
        entry: dict[str, Any] = {k: stats[k] for k in ("sharpe", "winrate") if k in stats}
        seen, unusable = _freqtrade_drawdowns(stats)
        worst = max(seen, key=lambda k: seen[k]) if seen else None
        if unusable:
            entry["max_drawdown"] = f"unusable: {'; '.join(unusable)}"  # fails the strategy, with the reason
        elif worst is not None:
            entry["max_drawdown"] = seen[worst]
        if "total_trades" in stats:
            entry["trades"] = stats["total_trades"]
        own = doc.get("metadata", {}).get(name) if isinstance(doc.get("metadata"), dict) else None
        version = next((str(v) for v in (stats.get("freqtrade_version"),
                                         own.get("freqtrade_version") if isinstance(own, dict) else None,
                                         doc.get("freqtrade_version")) if v), None)
        provenance = {"sharpe": "sharpe" if "sharpe" in stats else None,
                      "max_drawdown": worst,
                      "drawdowns_seen": seen, "freqtrade_version": version}
        own_meta = meta.get(name)
        when = _freqtrade_time(stats, own_meta if isinstance(own_meta, dict) else {}, fallback)
        strategy = _strategy(entry, str(name), when)
        if not strategy.error:
            strategy = dataclasses.replace(strategy, provenance=provenance, trade_returns=_trade_returns(stats))
        if strategy.error:
            missing = [k for k in ("sharpe", "winrate") if k not in stats]
            hint = (f"; this freqtrade result has no {' or '.join(missing)} (an older freqtrade wrote it): re-run "
                    "the backtest with a current freqtrade") if missing else ""
            strategy = Strategy(name=str(name), error=f"{strategy.error}{hint}")
        found.append(strategy)
    if not found:
        raise ProbeError(f"backtest summary {path} (a freqtrade result) holds no strategy")
    return _pick_strategy(tuple(found), wanted, path)
