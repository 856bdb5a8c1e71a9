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


def load_summary(path: str) -> Summary:
    """Read and validate the summary; ProbeError when the file as a whole is unusable."""
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
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProbeError(f"backtest summary {path} is not valid JSON: {exc}") from None
    fallback: tuple[dt.datetime | None, str] = (mtime, "file mtime")
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
    return Summary(path=path, sha256=hashlib.sha256(data).hexdigest(), strategies=tuple(strategies))
