"""Runbook 1: the strategy's recent backtest meets the go-live bars, checked per strategy."""

from __future__ import annotations

import pytest

from deploy_tool.backtest import age_verdict

pytestmark = pytest.mark.backtest


def _figures(backtest_summary, strategy):
    """The strategy's validated figures; the check fails when the summary could not be read."""
    summary = backtest_summary.result()
    if strategy.error:
        pytest.fail(f"strategy {strategy.name} in {summary.path}: {strategy.error}", pytrace=False)
    return strategy


def test_backtest_summary_valid(backtest_summary, strategy, check):
    summary = backtest_summary.result()
    problems = 1 if strategy.error else 0
    check.record(problems, 0, "problems", strategy.error or f"{strategy.name}: sharpe, winrate, max_drawdown present and finite")
    assert problems == 0, f"strategy {strategy.name} in {summary.path}: {strategy.error}"


def test_backtest_sharpe(backtest_summary, strategy, settings, check):
    s = _figures(backtest_summary, strategy)
    check.record(s.sharpe, settings.min_sharpe, "ratio", f"{s.name}: sharpe {s.sharpe:g}, minimum {settings.min_sharpe:g}")
    assert s.sharpe >= settings.min_sharpe, (
        f"{s.name}: sharpe {s.sharpe:g} is below the minimum {settings.min_sharpe:g}: do not go live with it"
    )


def test_backtest_winrate(backtest_summary, strategy, settings, check):
    s = _figures(backtest_summary, strategy)
    check.record(s.winrate, settings.min_winrate, "fraction", f"{s.name}: winrate {s.winrate:g}, minimum {settings.min_winrate:g}")
    assert s.winrate >= settings.min_winrate, (
        f"{s.name}: winrate {s.winrate:g} is below the minimum {settings.min_winrate:g}: do not go live with it"
    )


def test_backtest_max_drawdown(backtest_summary, strategy, settings, check):
    s = _figures(backtest_summary, strategy)
    check.record(s.max_drawdown, settings.max_drawdown, "fraction",
                 f"{s.name}: max drawdown {s.max_drawdown:g}, maximum {settings.max_drawdown:g}")
    assert s.max_drawdown <= settings.max_drawdown, (
        f"{s.name}: max drawdown {s.max_drawdown:g} exceeds the maximum {settings.max_drawdown:g}: do not go live with it"
    )


def test_backtest_fresh(backtest_summary, strategy, settings, check):
    s = _figures(backtest_summary, strategy)
    ok, age, message = age_verdict(s, settings.backtest_max_age)
    check.record(age, settings.backtest_max_age, "s", f"{s.name}: {message}")
    assert ok, f"{s.name}: {message}"


def test_backtest_min_trades(backtest_summary, strategy, settings, check):
    s = _figures(backtest_summary, strategy)
    assert s.trades is not None, (
        f"{s.name}: the summary has no trades count but --min-trades is {settings.min_trades}: "
        "add trades to the summary or lower --min-trades"
    )
    check.record(s.trades, settings.min_trades, "trades", f"{s.name}: {s.trades} trades, minimum {settings.min_trades}")
    assert s.trades >= settings.min_trades, (
        f"{s.name}: {s.trades} backtest trades, fewer than the minimum {settings.min_trades}: "
        "the figures are not meaningful yet"
    )
