"""Runbook 1: the trades feed in the database is fresh."""

from __future__ import annotations

import pytest

from deploy_tool import criteria

pytestmark = pytest.mark.db


def test_trades_fresh(trades_freshness, settings, check):
    criterion = check(criteria.trades_fresh(trades_freshness.value(), settings))
    assert criterion.ok, criterion.message
