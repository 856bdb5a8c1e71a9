"""Durations, timestamps, and the exchange probes against the OKX stand-in on loopback."""

from __future__ import annotations

import datetime as dt

import pytest

from deploy_tool import ProbeError
from deploy_tool.probes.okx import probe_public_time, probe_system_status
from deploy_tool.sandbox import ExchangeStandIn, maintenance_event
from deploy_tool.times import epoch_to_datetime, format_duration, parse_duration, parse_timestamp

UTC = dt.timezone.utc


@pytest.mark.parametrize("text,seconds", [("90s", 90), ("30m", 1800), ("2h", 7200), ("7d", 604800), ("45", 45), ("1.5h", 5400), (" 2H ", 7200)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2 weeks", "-5s", "h", "1y"])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="90s, 30m, 2h, 7d"):
        parse_duration(text)


def test_format_duration():
    assert [format_duration(s) for s in (7200, 86400, 90, 60, 1.5)] == ["2h", "1d", "90s", "1m", "1.5s"]


def test_epoch_magnitudes_and_iso():
    moment = dt.datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
    t = moment.timestamp()
    for value in (t, t * 1e3, t * 1e6, t * 1e9, str(int(t * 1000))):
        assert abs((parse_timestamp(value) - moment).total_seconds()) < 1e-3
    assert parse_timestamp("2026-11-24T12:00:00Z") == moment
    assert parse_timestamp("2026-11-24 20:00:00+08:00") == moment
    assert parse_timestamp("2026-11-24T12:00:00") == moment  # naive ISO is UTC
    assert parse_timestamp(dt.datetime(2026, 11, 24, 12)) == moment
    with pytest.raises(ValueError):
        parse_timestamp("soon")
    with pytest.raises(ValueError):
        epoch_to_datetime(float("nan"))


@pytest.fixture
def exchange():
    stand_in = ExchangeStandIn().start()
    yield stand_in
    stand_in.stop()


def test_public_time_probe_measures_latency_and_skew(exchange):
    exchange.behaviour.delay_ms = 30
    exchange.behaviour.skew_ms = -2500
    probe = probe_public_time(exchange.url, samples=5)
    assert len(probe.good) == 5 and not probe.failures
    assert 30 <= probe.median_ms < 300 and probe.p95_ms <= probe.max_ms
    assert -2600 < probe.skew_ms < -2400


def test_public_time_probe_reports_each_failure(exchange):
    exchange.behaviour.http_status = 503
    probe = probe_public_time(exchange.url, samples=2)
    assert len(probe.failures) == 2 and "HTTP 503 (expected 200)" in probe.failures[0].error
    with pytest.raises(ProbeError, match="no successful call"):
        _ = probe.median_ms
    exchange.behaviour.delay_ms = 800
    probe = probe_public_time(exchange.url, samples=1, timeout=(1, 0.3))
    assert "no complete answer" in probe.failures[0].error and "within 0.3 s" in probe.failures[0].error


def test_system_status_horizon(exchange):
    now = dt.datetime.now(UTC)
    h = dt.timedelta(hours=1)
    exchange.behaviour.events = [
        maintenance_event("scheduled", now + 3 * h, now + 4 * h, "later"),
        maintenance_event("completed", now - 3 * h, now - 2 * h, "done"),
    ]
    probe = probe_system_status(exchange.url, horizon_s=7200)
    assert probe.blocking == () and "later: scheduled 'later'" in probe.summary()
    probe = probe_system_status(exchange.url, horizon_s=4 * 3600)
    assert [e.title for e in probe.blocking] == ["later"]
    exchange.behaviour.code = "50011"
    with pytest.raises(ProbeError, match='did not answer with OKX\'s shape code "0"'):
        probe_system_status(exchange.url, horizon_s=60)
