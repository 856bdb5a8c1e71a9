"""The exchange account group: signed OKX requests, cross-checked against the official SDK (python-okx),
against a stand-in that verifies signatures and answers error codes the way OKX does."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import requests

from deploy_tool.probes.okxaccount import ERRORS, Credentials, headers, sign
from deploy_tool.sandbox import sandbox_account

KEY, SECRET, PASSPHRASE = "CANARY-okxkey-1f2e", "CANARY-okxsecret-9a8b", "CANARY-okxpass-7c6d"
ACCOUNT_IDS = {"account_no_withdraw", "account_ip_bound", "account_facts", "account_equity"}


@pytest.mark.parametrize("stamp,method,path,body", [
    ("2020-12-08T09:08:57.715Z", "GET", "/api/v5/account/balance?ccy=BTC", ""),
    ("2026-11-24T23:59:59.001Z", "get", "/api/v5/account/config", ""),
    ("2026-01-01T00:00:00.000Z", "POST", "/api/v5/trade/order", '{"instId":"BTC-USDT","side":"buy"}'),
])
def test_the_signature_is_the_official_sdks(stamp, method, path, body):
    from okx import utils

    ours = sign(SECRET, stamp, method, path, body)
    assert ours == utils.signature(stamp, method, path, body, SECRET).decode()
    assert ours == utils.sign(utils.pre_hash(stamp, method, path, body, debug=False), SECRET).decode()


@pytest.fixture
def keyed(sandbox, monkeypatch):
    sandbox.exchange.behaviour.accounts[KEY] = sandbox_account(KEY, SECRET, PASSPHRASE)
    for name, value in (("OKX_API_KEY", KEY), ("OKX_API_SECRET", SECRET), ("OKX_API_PASSPHRASE", PASSPHRASE)):
        monkeypatch.setenv(name, value)
    return sandbox


def test_the_stand_in_verifies_as_okx_does_for_the_official_sdk(keyed):
    from okx.Account import AccountAPI

    good = AccountAPI(KEY, SECRET, PASSPHRASE, flag="0", domain=keyed.okx_url, debug=False).get_account_config()
    assert good["code"] == "0" and good["data"][0]["acctLv"] == "2"
    wrong = AccountAPI(KEY, "not-the-secret", PASSPHRASE, flag="0", domain=keyed.okx_url, debug=False)
    assert wrong.get_account_config()["code"] == "50113"
    demo = AccountAPI(KEY, SECRET, PASSPHRASE, flag="1", domain=keyed.okx_url, debug=False)
    assert demo.get_account_balance()["code"] == "50101"


def test_a_key_passes_and_the_evidence_records_the_account_never_the_key(run_suite, keyed):
    run = run_suite("-m", "account", "-vv")
    assert run.result.ret == 0, run.output
    assert run.statuses("account") == dict.fromkeys(ACCOUNT_IDS, "passed")
    assert "live sub-account, acctLv 2 (spot and futures), posMode net_mode, perm read_only,trade" in \
        run.check("account_facts")["message"]
    assert run.check("account_equity")["measured"] == 10250.5
    for text in (run.output, run.html, json.dumps(run.evidence)):
        for canary in (KEY, SECRET, PASSPHRASE):
            assert canary not in text


@pytest.mark.parametrize("change,check_id,phrase", [
    ({"perm": "read_only,trade,withdraw"}, "account_no_withdraw", "the API key may withdraw"),
    ({"ip": ""}, "account_ip_bound", "not bound to any IP address"),
])
def test_a_key_that_can_withdraw_or_is_unbound_fails(run_suite, keyed, change, check_id, phrase):
    keyed.exchange.behaviour.accounts[KEY]["config"].update(change)
    run = run_suite("-m", "account")
    assert run.result.ret == 1 and phrase in run.check(check_id)["message"]
    if check_id == "account_ip_bound":
        allowed = run_suite("-m", "account", "--allow-unbound-key")
        assert allowed.check("account_ip_bound")["status"] == "passed"


@pytest.mark.parametrize("setup,code", [("demo", "50101"), ("ip", "50110"), ("sign", "50113"), ("perm", "50120")])
def test_okx_error_codes_say_what_to_fix(run_suite, keyed, monkeypatch, setup, code):
    extra = []
    if setup == "demo":
        extra = ["--okx-demo"]
    elif setup == "ip":
        keyed.exchange.behaviour.ip_whitelisted = False
    elif setup == "sign":
        monkeypatch.setenv("OKX_API_SECRET", "CANARY-wrong-secret")
    else:
        keyed.exchange.behaviour.accounts[KEY]["config"]["perm"] = "trade"
    run = run_suite("-m", "account", *extra)
    message = run.check("account_no_withdraw")["message"]
    assert run.result.ret == 1 and f"OKX error {code}" in message and ERRORS[code] in message
    assert "CANARY-wrong-secret" not in run.output + json.dumps(run.evidence)


def test_an_expired_timestamp_is_50102(keyed):
    creds = Credentials(KEY, SECRET, PASSPHRASE)
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    answer = requests.get(keyed.okx_url + "/api/v5/account/config",
                          headers=headers(creds, "GET", "/api/v5/account/config", now=old), timeout=5).json()
    assert answer["code"] == "50102" and "clock" in ERRORS["50102"]


def test_without_a_key_the_group_skips_unless_required(run_suite, monkeypatch):
    for name in ("OKX_API_KEY", "OKX_API_SECRET", "OKX_API_PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)
    run = run_suite("-m", "account")
    assert set(run.statuses("account").values()) == {"skipped"}
    assert "no exchange API key set (OKX_API_KEY, OKX_API_SECRET, OKX_API_PASSPHRASE)" in run.evidence["skipped"][0]["reason"]
    required = run_suite("-m", "account", "--require-account-check")
    assert required.result.ret == 1 and set(required.statuses("account").values()) == {"failed"}
    monkeypatch.setenv("OKX_API_KEY", "only-the-key")
    partial = run_suite("-m", "account")
    assert "the exchange API key is set only in part: OKX_API_SECRET, OKX_API_PASSPHRASE missing" in \
        partial.check("account_facts")["message"]


def test_the_minimum_order_check_uses_the_account_equity_without_capital(run_suite, sandbox, keyed):
    args = sandbox.preflight_args()
    del args[args.index("--capital"):args.index("--capital") + 2]
    run = run_suite("-m", "risk", "--inst-id", "BTC-USDT", *args, sandbox_args=False)
    check = run.check("risk_min_order[BTC-USDT]")
    assert check["status"] == "passed" and "account equity 10250.5 x allocation 0.005" in check["message"]
    cap = run.check("risk_order_notional_cap")  # and the order cap against the same allocated capital
    assert cap["status"] == "passed" and cap["threshold"] == 10250.5 * 0.005
