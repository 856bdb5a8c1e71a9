"""Runbook 1: the exchange API is healthy, fast, on time, and not in maintenance."""

from __future__ import annotations

import pytest

from deploy_tool import criteria

pytestmark = pytest.mark.okx


def test_okx_public_time_ok(okx_time, settings, check):
    criterion = check(criteria.okx_public_time_ok(okx_time.value(), settings))
    assert criterion.ok, criterion.message


def test_okx_public_time_latency(okx_time, settings, check):
    criterion = check(criteria.okx_public_time_latency(okx_time.value(), settings))
    assert criterion.ok, criterion.message


def test_okx_clock_skew(okx_time, settings, check):
    criterion = check(criteria.okx_clock_skew(okx_time.value(), settings))
    assert criterion.ok, criterion.message


def test_okx_no_maintenance(okx_status, settings, check):
    criterion = check(criteria.okx_no_maintenance(okx_status.value(), settings))
    assert criterion.ok, criterion.message
