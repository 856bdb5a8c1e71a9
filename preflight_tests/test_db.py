"""Runbook 1: the trades feed in the database is fresh."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.db


def test_trades_fresh(trades_freshness, settings, check):
    freshness = trades_freshness.result()
    ok, message = freshness.verdict(settings.data_latency_threshold)
    check.record(freshness.age_s, settings.data_latency_threshold, "s", message)
    assert ok, message
