"""Runbook 6: live keys are limited: no withdrawal right, bound to this host's IP; the account is known."""

from __future__ import annotations

import pytest

from deploy_tool import criteria

pytestmark = pytest.mark.account


def test_account_no_withdraw(okx_account, settings, check):
    criterion = check(criteria.account_no_withdraw(okx_account.value(), settings))
    assert criterion.ok, criterion.message


def test_account_ip_bound(okx_account, settings, check):
    criterion = check(criteria.account_ip_bound(okx_account.value(), settings))
    assert criterion.ok, criterion.message


def test_account_facts(okx_account, settings, check):
    criterion = check(criteria.account_facts(okx_account.value(), settings))
    assert criterion.ok, criterion.message


def test_account_equity(okx_account, settings, check):
    criterion = check(criteria.account_equity(okx_account.value(), settings))
    assert criterion.ok, criterion.message
