"""Runbook 2: the trading system's admin API answers, and reports a valid mode."""

from __future__ import annotations

import pytest

from deploy_tool import MODES
from deploy_tool.admin import AdminClient

pytestmark = pytest.mark.admin
HEALTH_LIMIT_MS = 2000.0


@pytest.fixture(scope="module")
def admin(admin_url, settings, redactor):
    with AdminClient(admin_url, token=settings.admin_token()) as client:
        yield client


def _call(fn):
    from deploy_tool import ProbeError

    try:
        return fn()
    except ProbeError as exc:
        pytest.fail(str(exc), pytrace=False)


def test_admin_health(admin, check):
    answer = _call(admin.health)
    status = answer.body.get("status")
    check.record(answer.latency_ms, HEALTH_LIMIT_MS, "ms",
                 f"GET {admin.shown_url}/health: HTTP {answer.status} status={status!r} in {answer.latency_ms:.0f} ms")
    assert answer.latency_ms < HEALTH_LIMIT_MS, (
        f"GET {admin.shown_url}/health took {answer.latency_ms:.0f} ms, limit {HEALTH_LIMIT_MS:.0f} ms: "
        "the trading system is overloaded"
    )


def test_admin_mode(admin, check):
    body = _call(admin.get_mode)
    check.record(body["mode"], "mock|real|paused", None, f"GET {admin.shown_url}/mode: mode {body['mode']}, version {body.get('version')}")
    assert body["mode"] in MODES, f"GET {admin.shown_url}/mode: mode {body['mode']!r} is not one of {MODES}"
