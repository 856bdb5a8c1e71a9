"""Runbook 1: the strategy's recent backtest meets the go-live bars, checked per strategy."""

from __future__ import annotations

import pytest

from deploy_tool import ProbeError, criteria

pytestmark = pytest.mark.backtest


def _figures(backtest_summary, strategy):
    """The strategy's validated figures; the check fails when the summary or the strategy is unusable."""
    summary = backtest_summary.value()
    if strategy.error:
        raise ProbeError(f"strategy {strategy.name} in {summary.path}: {strategy.error}")
    return strategy


def test_backtest_summary_valid(backtest_summary, strategy, settings, check):
    summary = backtest_summary.value()
    criterion = check(criteria.backtest_summary_valid(strategy, settings))
    assert criterion.ok, f"strategy {strategy.name} in {summary.path}: {criterion.message}"


def test_backtest_sharpe(backtest_summary, strategy, settings, check):
    criterion = check(criteria.backtest_sharpe(_figures(backtest_summary, strategy), settings))
    assert criterion.ok, criterion.message


def test_backtest_winrate(backtest_summary, strategy, settings, check):
    criterion = check(criteria.backtest_winrate(_figures(backtest_summary, strategy), settings))
    assert criterion.ok, criterion.message


def test_backtest_max_drawdown(backtest_summary, strategy, settings, check):
    criterion = check(criteria.backtest_max_drawdown(_figures(backtest_summary, strategy), settings))
    assert criterion.ok, criterion.message


def test_backtest_fresh(backtest_summary, strategy, settings, check):
    criterion = check(criteria.backtest_fresh(_figures(backtest_summary, strategy), settings))
    assert criterion.ok, criterion.message


def test_backtest_min_trades(backtest_summary, strategy, settings, check):
    criterion = check(criteria.backtest_min_trades(_figures(backtest_summary, strategy), settings))
    assert criterion.ok, criterion.message
