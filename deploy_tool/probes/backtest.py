"""The backtest summary: parsing, validation and the go-live thresholds.

The file is a JSON object with sharpe / winrate / max_drawdown (aliases accepted), or a list of such
objects, or {"strategies": [...]}; each strategy is checked on its own. Fractions are never rescaled:
a winrate of 55 is rejected with a message, not read as 55 %.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
from dataclasses import dataclass
from typing import Any

from deploy_tool import ProbeError
from deploy_tool.times import parse_timestamp

ALIASES = {
    "sharpe": ("sharpe", "sharpe_ratio"),
    "winrate": ("winrate", "win_rate"),
    "max_drawdown": ("max_drawdown", "max_dd", "maxDrawdown"),
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


@dataclass(frozen=True)
class Summary:
    """A parsed summary file with its fingerprint for the evidence."""

    path: str
    sha256: str
    strategies: tuple[Strategy, ...]


def _pick(obj: dict, field: str) -> tuple[str | None, Any]:
    for key in ALIASES[field]:
        if key in obj:
            return key, obj[key]
    return None, None


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
    for field in ALIASES:
        key, raw = _pick(obj, field)
        if key is None:
            problems.append(f"{field} missing (accepted names: {', '.join(ALIASES[field])})")
            continue
        try:
            values[field] = _number(key, raw)
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
        with open(path, "rb") as fh:
            data = fh.read()
        mtime = dt.datetime.fromtimestamp(os.stat(path).st_mtime, dt.timezone.utc)
    except FileNotFoundError:
        raise ProbeError(
            f"backtest summary {path} does not exist: run the backtest, point --backtest-summary at its "
            "result, or pass --skip-backtest-check"
        ) from None
    except OSError as exc:
        raise ProbeError(f"backtest summary {path} cannot be read: {exc.strerror}") from None
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
FREQTRADE_DRAWDOWN = ("max_drawdown_account", "max_relative_drawdown", "max_drawdown")
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
        with open(marker, encoding="utf-8") as fh:
            name = json.load(fh).get("latest_backtest")
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

    stem = os.path.basename(path)[: -len(".zip")]
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            if f"{stem}.json" in names:
                return archive.read(f"{stem}.json")
            results = [n for n in names if n.endswith(".json") and not n.endswith(("_config.json", ".meta.json"))
                       and not n.startswith(f"{stem}_")]
            if len(results) == 1:
                return archive.read(results[0])
    except (zipfile.BadZipFile, OSError, KeyError) as exc:
        raise ProbeError(f"backtest summary {path} is not a readable zip: {exc}") from None
    raise ProbeError(f"backtest summary {path} holds no {stem}.json (members: {', '.join(names[:8])})")


def _meta(path: str) -> dict[str, Any]:
    """freqtrade's `<stem>.meta.json` beside the result, by strategy; empty when there is none."""
    stem = path[: -len(".zip")] if path.lower().endswith(".zip") else path[: -len(".json")]
    try:
        with open(f"{stem}.meta.json", encoding="utf-8") as fh:
            meta = json.load(fh)
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


def _freqtrade(doc: dict, path: str, fallback: tuple[dt.datetime | None, str],
               wanted: str | None) -> tuple[Strategy, ...]:
    """Each strategy of a freqtrade result, its figures under freqtrade's own names."""
    meta = _meta(path)
    found = []
    for name, stats in doc["strategy"].items():
        entry: dict[str, Any] = {k: stats[k] for k in ("sharpe", "winrate") if k in stats}
        drawdown = next((k for k in FREQTRADE_DRAWDOWN if k in stats), None)
        if drawdown is not None:
            entry["max_drawdown"] = stats[drawdown]
        if "total_trades" in stats:
            entry["trades"] = stats["total_trades"]
        own_meta = meta.get(name)
        when = _freqtrade_time(stats, own_meta if isinstance(own_meta, dict) else {}, fallback)
        strategy = _strategy(entry, str(name), when)
        if strategy.error:
            missing = [k for k in ("sharpe", "winrate") if k not in stats]
            hint = (f"; this freqtrade result has no {' or '.join(missing)} (an older freqtrade wrote it): re-run "
                    "the backtest with a current freqtrade") if missing else ""
            strategy = Strategy(name=str(name), error=f"{strategy.error}{hint}")
        found.append(strategy)
    if not found:
        raise ProbeError(f"backtest summary {path} (a freqtrade result) holds no strategy")
    return _pick_strategy(tuple(found), wanted, path)
