"""Runbook 3 and 5: the watch period. The trading system's audit and risk events over the last window.

Only with `-m observe` or `--observe`: a go-live preflight runs before there is anything to observe.
`gradual-deploy watch` judges the same criteria every round.
"""

from __future__ import annotations

import pytest

from deploy_tool import criteria

pytestmark = pytest.mark.observe


def test_observe_audit_recent(observation, settings, check):
    criterion = check(criteria.observe_audit_recent(observation.value(), settings))
    assert criterion.ok, criterion.message


def test_observe_audit_parseable(observation, settings, check):
    criterion = check(criteria.observe_audit_parseable(observation.value(), settings))
    assert criterion.ok, criterion.message


def test_observe_risk_events(observation, settings, check):
    criterion = check(criteria.observe_risk_events(observation.value(), settings))
    assert criterion.ok, criterion.message


def test_observe_order_failure_rate(observation, settings, check):
    criterion = check(criteria.observe_order_failure_rate(observation.value(), settings))
    assert criterion.ok, criterion.message


def test_observe_risk_block_rate(observation, settings, check):
    criterion = check(criteria.observe_risk_block_rate(observation.value(), settings))
    assert criterion.ok, criterion.message


def test_observe_signals(observation, settings, check):
    criterion = check(criteria.observe_signals(observation.value(), settings))
    assert criterion.ok, criterion.message


def test_observe_slippage(observation, settings, check):
    criterion = check(criteria.observe_slippage(observation.value(), settings))
    assert criterion.ok, criterion.message


def test_observe_realized_pnl(observation, settings, check):
    criterion = check(criteria.observe_realized_pnl(observation.value(), settings))
    assert criterion.ok, criterion.message
