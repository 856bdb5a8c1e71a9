"""Runbook 1: the exchange API is healthy, fast, on time, and not in maintenance."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.okx


def test_okx_public_time_ok(okx_time, settings, check):
    probe = okx_time.result()
    good, total = len(probe.good), len(probe.samples)
    check.record(good, total, "calls", f'{good}/{total} calls of {probe.url} answered HTTP 200 with code "0"')
    assert good == total, (
        f"{total - good} of {total} calls of {probe.url} failed, first: {probe.failures[0].error}; "
        "the exchange API is unhealthy or unreachable from this host"
    )


def test_okx_public_time_latency(okx_time, settings, check):
    probe = okx_time.result()
    median, threshold = probe.median_ms, settings.api_latency_threshold_ms
    shape = f"over {len(probe.good)} calls (p95 {probe.p95_ms:.1f} ms, max {probe.max_ms:.1f} ms)"
    check.record(median, threshold, "ms", f"median {median:.1f} ms {shape}, threshold {threshold:g} ms")
    assert median < threshold, (
        f"median latency {median:.1f} ms {shape} is not below the {threshold:g} ms threshold: "
        "the exchange or the network path is slow; retry later or check the route"
    )


def test_okx_clock_skew(okx_time, settings, check):
    probe = okx_time.result()
    skew, threshold = probe.skew_ms, settings.max_clock_skew_ms
    side = "ahead of" if skew > 0 else "behind"
    check.record(abs(skew), threshold, "ms", f"exchange clock {abs(skew):.0f} ms {side} local UTC, max {threshold:g} ms")
    assert abs(skew) <= threshold, (
        f"exchange clock is {abs(skew):.0f} ms {side} this host's UTC clock, max {threshold:g} ms: "
        "sync this host's clock (chrony/NTP) before trading; signed requests will be rejected"
    )


def test_okx_no_maintenance(okx_status, settings, check):
    probe = okx_status.result()
    blocking = len(probe.blocking)
    check.record(blocking, 0, "events", probe.summary())
    assert blocking == 0, (
        f"exchange maintenance within {settings.maintenance_horizon:g} s: {probe.summary()}; "
        "wait until it is over before going live"
    )
