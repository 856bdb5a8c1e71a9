"""The backtest summary parser: aliases, signs, ranges, non-finite values, several strategies, age."""

from __future__ import annotations

import datetime as dt
import json
import math
import os

import pytest

from deploy_tool import ProbeError
from deploy_tool.criteria import backtest_fresh
from deploy_tool.probes.backtest import load_summary
from deploy_tool.settings import defaults


def _load(tmp_path, doc, raw: str | None = None):
    path = tmp_path / "summary.json"
    path.write_text(raw if raw is not None else json.dumps(doc))
    return load_summary(str(path))


def test_aliases_and_negative_drawdown(tmp_path):
    (s,) = _load(tmp_path, {"sharpe_ratio": 0.8, "win_rate": 0.52, "maxDrawdown": -0.04, "trades": 120}).strategies
    assert (s.sharpe, s.winrate, s.max_drawdown, s.trades, s.error) == (0.8, 0.52, 0.04, 120, None)
    (s,) = _load(tmp_path, {"sharpe": 0.8, "winrate": 0.52, "max_dd": 0.03}).strategies
    assert s.max_drawdown == 0.03 and s.generated_at_source == "file mtime"


@pytest.mark.parametrize(
    "doc,problem",
    [
        ({"sharpe": 1, "winrate": 55, "max_drawdown": 0.02}, "winrate 55 is outside [0, 1]: write a fraction, e.g. 0.55 for 55 %"),
        ({"sharpe": 1, "winrate": 0.5, "max_drawdown": 4}, "max_drawdown 4 is outside [0, 1]: write a fraction, e.g. 0.04 for 4 %"),
        ({"sharpe": 1, "winrate": 0.5, "max_drawdown": -7}, "max_drawdown 7 is outside [0, 1]"),
        ({"sharpe": "NaN", "winrate": 0.5, "max_drawdown": 0.02}, "sharpe is 'NaN': not a finite number"),
        ({"sharpe": "inf", "winrate": 0.5, "max_drawdown": 0.02}, "sharpe is 'inf': not a finite number"),
        ({"sharpe": None, "winrate": 0.5, "max_drawdown": 0.02}, "sharpe is None, not a number"),
        ({"sharpe": True, "winrate": 0.5, "max_drawdown": 0.02}, "sharpe is True, not a number"),
        ({"winrate": 0.5, "max_drawdown": 0.02}, "sharpe missing (accepted names: sharpe, sharpe_ratio)"),
        ({"sharpe": 1, "winrate": 0.5, "max_drawdown": 0.02, "trades": 10.5}, "trades is 10.5, not a whole number"),
        ({"sharpe": 1, "winrate": 0.5, "max_drawdown": 0.02, "generated_at": "yesterday"}, "generated_at 'yesterday' is not an ISO 8601 time"),
    ],
)
def test_bad_fields_are_rejected_with_a_reason(tmp_path, doc, problem):
    (s,) = _load(tmp_path, doc).strategies
    assert s.error and problem in s.error


def test_nan_literal_in_json_is_rejected(tmp_path):
    (s,) = _load(tmp_path, None, raw='{"sharpe": NaN, "winrate": 0.5, "max_drawdown": 0.01}').strategies
    assert "not a finite number" in s.error


@pytest.mark.parametrize(
    "raw,message",
    [("", "is not valid JSON"), ("{", "is not valid JSON"), ("42", "holds int"), ("[]", "lists no strategy"),
     ('{"strategies": {}}', "'strategies' is not a list")],
)
def test_unusable_files(tmp_path, raw, message):
    with pytest.raises(ProbeError, match=message):
        _load(tmp_path, None, raw=raw)
    with pytest.raises(ProbeError, match="does not exist: run the backtest"):
        load_summary(str(tmp_path / "absent.json"))


def test_several_strategies_each_named(tmp_path):
    doc = {"generated_at": "2026-11-24T10:00:00Z", "strategies": [
        {"strategy": "a", "sharpe": 1, "winrate": 0.6, "max_drawdown": 0.01},
        {"name": "b", "sharpe": 1, "winrate": 0.6, "max_drawdown": 0.01, "generated_at": "2026-11-24T11:00:00+08:00"},
        {"sharpe": 1, "winrate": 0.6, "max_drawdown": 0.01},
        {"strategy": "a", "sharpe": 1, "winrate": 0.6, "max_drawdown": 0.01},
    ]}
    summary = _load(tmp_path, doc)
    assert [s.name for s in summary.strategies] == ["a", "b", "strategy-3", "a-4"]
    assert summary.strategies[0].generated_at == dt.datetime(2026, 11, 24, 10, tzinfo=dt.timezone.utc)
    assert summary.strategies[1].generated_at == dt.datetime(2026, 11, 24, 3, tzinfo=dt.timezone.utc)
    assert len(summary.sha256) == 64


def age_verdict(strategy, max_age_s, now):
    """(ok, age, message) of the backtest_fresh criterion."""
    criterion = backtest_fresh(strategy, defaults(backtest_max_age=max_age_s), now)
    return criterion.ok, criterion.measured, criterion.message


def test_age_from_generated_at_else_mtime(tmp_path):
    now = dt.datetime(2026, 11, 24, 12, tzinfo=dt.timezone.utc)
    (s,) = _load(tmp_path, {"sharpe": 1, "winrate": 0.6, "max_drawdown": 0.01, "generated_at": "2026-11-24T02:00:00Z"}).strategies
    assert age_verdict(s, 24 * 3600, now)[:2] == (True, 36000.0)
    ok, age, message = age_verdict(s, 3600, now)
    assert not ok and "re-run the backtest" in message
    ok, _, message = age_verdict(s, 3600, dt.datetime(2026, 11, 23, tzinfo=dt.timezone.utc))
    assert not ok and "in the future" in message
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"sharpe": 1, "winrate": 0.6, "max_drawdown": 0.01}))
    old = now.timestamp() - 2 * 86400
    os.utime(path, (old, old))
    (s,) = load_summary(str(path)).strategies
    ok, age, message = age_verdict(s, 86400, now)
    assert not ok and math.isclose(age, 2 * 86400) and "file mtime" in message


def test_a_figure_given_twice_with_different_values_is_ambiguous(tmp_path):
    from deploy_tool.probes.backtest import load_summary

    path = tmp_path / "s.json"
    path.write_text('{"strategy": "s", "sharpe": 0.1, "sharpe_ratio": 2.5, "winrate": 0.6, "max_drawdown": 0.02, '
                    '"trades": 50}')
    (strategy,) = load_summary(str(path)).strategies
    assert strategy.error and "sharpe is given twice with different values (sharpe 0.1, sharpe_ratio 2.5)" in strategy.error
    path.write_text('{"strategy": "s", "sharpe": 0.5, "sharpe_ratio": 0.5, "winrate": 0.6, "max_drawdown": 0.02, '
                    '"trades": 50}')
    (strategy,) = load_summary(str(path)).strategies
    assert strategy.error is None and strategy.sharpe == 0.5
