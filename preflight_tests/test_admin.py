"""Runbook 2: the trading system's admin API answers, and reports a valid mode."""

from __future__ import annotations

import pytest

from deploy_tool import criteria

pytestmark = pytest.mark.admin


def test_admin_health(admin, check):
    criterion = check(criteria.admin_health(admin.health(), admin.shown_url))
    assert criterion.ok, criterion.message


def test_admin_mode(admin, check):
    criterion = check(criteria.admin_mode(admin.get_mode(), admin.shown_url))
    assert criterion.ok, criterion.message
