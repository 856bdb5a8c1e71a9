"""Runbook 4: before real, the configuration limits the allocation, each trade's and each day's loss,
and each order's notional; and the allocation can buy the exchange's minimum order."""

from __future__ import annotations

import pytest

from deploy_tool import criteria

pytestmark = pytest.mark.risk


def test_risk_allocation(risk_config, settings, check):
    criterion = check(criteria.risk_allocation(risk_config.value(), settings))
    assert criterion.ok, criterion.message


def test_risk_single_trade_loss(risk_config, settings, check):
    criterion = check(criteria.risk_single_trade_loss(risk_config.value(), settings))
    assert criterion.ok, criterion.message


def test_risk_daily_loss(risk_config, settings, check):
    criterion = check(criteria.risk_daily_loss(risk_config.value(), settings))
    assert criterion.ok, criterion.message


def test_risk_order_notional_cap(risk_config, settings, equity, check):
    criterion = check(criteria.risk_order_notional_cap(risk_config.value(), settings, equity))
    assert criterion.ok, criterion.message


def test_risk_min_order(min_order, risk_config, settings, equity, check):
    criterion = check(criteria.risk_min_order(min_order.value(), risk_config.value(), settings, equity))
    assert criterion.ok, criterion.message
