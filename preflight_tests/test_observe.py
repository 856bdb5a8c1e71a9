"""Runbook 3 and 5: the watch period. The trading system's audit and risk events over the last window.

Only with `-m observe` or `--observe`: a go-live preflight runs before there is anything to observe.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.observe


def _judge(criterion, check):
    check.record(criterion.measured, criterion.threshold, criterion.unit, criterion.message)
    assert criterion.ok, criterion.message


def test_observe_audit_recent(observation, settings, check):
    _judge(observation.result().audit_recent(settings.audit_max_silence), check)


def test_observe_audit_parseable(observation, settings, check):
    _judge(observation.result().audit_parseable(settings.max_bad_audit_lines), check)


def test_observe_risk_events(observation, settings, check):
    _judge(observation.result().risk_events(settings.max_risk_events), check)


def test_observe_order_failure_rate(observation, settings, check):
    _judge(observation.result().order_failure_rate(settings.max_order_failure_rate), check)


def test_observe_risk_block_rate(observation, settings, check):
    _judge(observation.result().risk_block_rate(settings.max_risk_block_rate), check)


def test_observe_signals(observation, settings, check):
    _judge(observation.result().signals(settings.min_signals, settings.max_signals), check)
