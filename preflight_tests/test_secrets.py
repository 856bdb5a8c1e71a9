"""Runbook 6: API keys are not hard-coded: the trading system's source holds none."""

from __future__ import annotations

import pytest

from deploy_tool import criteria

pytestmark = pytest.mark.secrets


def test_secrets_not_in_code(secret_scan, settings, check):
    criterion = check(criteria.secrets_not_in_code(secret_scan.value(), settings))
    assert criterion.ok, criterion.message
