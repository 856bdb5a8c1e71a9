"""Backtest results in freqtrade's own layout, for the tests.

Provenance: the key names, nesting and value types follow the result files freqtrade writes and keeps as
test data (`tests/testdata/backtest_results/` in the freqtrade repository: `backtest-result_new.json` for
a result without `sharpe`/`winrate` and with `backtest_run_*_ts` as date strings, `backtest-result.meta.json`
for the companion, `.last_result.json` for the results directory, and freqtrade's `.zip` results, which
hold `<stem>.json` beside `<stem>_config.json` and the strategy's files). The figures here are made up;
only the layout is freqtrade's.
"""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path


def strategy_stats(name: str, *, sharpe: float | None = 1.8, winrate: float | None = 0.62,
                   drawdown: dict | None = None, total_trades: int = 179, run_end: object = "now") -> dict:
    """One strategy's section of `result["strategy"]`, as a current freqtrade writes it."""
    now = int(time.time())
    stats: dict = {
        "trades": [{"pair": "ETH/BTC", "stake_amount": 0.001, "amount": 0.0106, "open_date": "2018-01-10 07:35:00+00:00",
                    "close_date": "2018-01-10 08:35:00+00:00", "open_rate": 0.0943, "close_rate": 0.0947,
                    "profit_ratio": 0.004, "profit_abs": 0.0000047, "exit_reason": "roi", "is_open": False,
                    "open_timestamp": 1515569700000.0, "close_timestamp": 1515573300000.0}],
        "locks": [], "results_per_pair": [], "exit_reason_summary": [],
        "total_trades": total_trades, "profit_total": 2.6, "profit_total_abs": 0.026,
        "backtest_start": "2018-01-10 07:15:00", "backtest_start_ts": 1515568500000,
        "backtest_end": "2018-01-30 04:45:00", "backtest_end_ts": 1517287500000, "backtest_days": 19,
        "backtest_run_start_ts": now - 60 if run_end == "now" else run_end,
        "backtest_run_end_ts": now if run_end == "now" else run_end,
        "stake_currency": "USDT", "timeframe": "5m", "strategy_name": name,
        "wins": 48, "losses": 9, "draws": 122,
        "max_drawdown_abs": 0.003, "max_drawdown_low": 0.022, "max_drawdown_high": 0.025,
    }
    stats.update(drawdown if drawdown is not None else {"max_drawdown_account": 0.031, "max_relative_drawdown": 0.033})
    if sharpe is not None:
        stats.update(sharpe=sharpe, sortino=2.1, calmar=3.0)
    if winrate is not None:
        stats["winrate"] = winrate
    return stats


def result(*strategies: tuple[str, dict]) -> dict:
    """A whole result document: `strategy` by name, and `strategy_comparison`."""
    return {"strategy": dict(strategies),
            "strategy_comparison": [{"key": name, "trades": s["total_trades"], "profit_total": s["profit_total"],
                                     "max_drawdown_account": s.get("max_drawdown_account")} for name, s in strategies]}


def write_json(directory: Path, stem: str, doc: dict, meta: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}.json"
    path.write_text(json.dumps(doc))
    if meta is not None:
        (directory / f"{stem}.meta.json").write_text(json.dumps(meta, indent=4))
    return path


def write_zip(directory: Path, stem: str, doc: dict) -> Path:
    """freqtrade's zipped result: `<stem>.json` beside the config and the strategy's files."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stem}.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{stem}.json", json.dumps(doc))
        archive.writestr(f"{stem}_config.json", json.dumps({"stake_currency": "USDT", "timeframe": "5m"}))
        archive.writestr(f"{stem}_SampleStrategy.py", "class SampleStrategy: ...\n")
        archive.writestr(f"{stem}_SampleStrategy.json", json.dumps({"strategy_name": "SampleStrategy", "params": {}}))
    return path


def mark_latest(directory: Path, name: str) -> None:
    (directory / ".last_result.json").write_text(json.dumps({"latest_backtest": name}))
