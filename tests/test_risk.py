"""The risk group as users run it: the configuration from the admin API or from the system's own file,
each limit judged and each missing value failing with the key to set; the minimum-order check."""

from __future__ import annotations

import pytest

from deploy_tool.probes.riskconfig import parse_config

RISK_IDS = {"risk_allocation", "risk_single_trade_loss", "risk_daily_loss", "risk_order_notional_cap"}


def test_the_sandbox_configuration_passes(run_suite):
    run = run_suite("-m", "risk")
    assert run.result.ret == 0, run.output
    assert run.statuses("risk") == dict.fromkeys(RISK_IDS, "passed")
    allocation = run.check("risk_allocation")
    assert allocation["measured"] == 0.005 and allocation["threshold"] == 0.01 and allocation["unit"] == "fraction"
    assert run.evidence["thresholds"]["max_allocation"] == 0.01


@pytest.mark.parametrize("change,check_id,phrase", [
    ({"allocation": 0.02}, "risk_allocation", "allocation 0.02 (2.00%) in GET"),
    ({"daily_max_loss_pct": 0.05}, "risk_daily_loss", "daily loss limit 0.05 (5.00%)"),
    ({"single_trade_max_loss_pct": 2}, "risk_single_trade_loss", "expected a fraction in [0, 1] (0.01 for 1 %), never rescaled"),
    ({"max_order_notional": 0}, "risk_order_notional_cap", "0 means no cap"),
    ({"single_trade_max_loss_pct": None}, "risk_single_trade_loss", "single_trade_max_loss_pct is None, not a number"),
])
def test_a_loose_or_broken_limit_fails(run_suite, sandbox, change, check_id, phrase):
    sandbox.admin.config.update(change)
    run = run_suite("-m", "risk")
    assert run.result.ret == 1
    check = run.check(check_id)
    assert check["status"] == "failed" and phrase in check["message"], check["message"]


def test_a_missing_value_names_the_key_to_set(run_suite, sandbox):
    del sandbox.admin.config["daily_max_loss_pct"]
    run = run_suite("-m", "risk")
    message = run.check("risk_daily_loss")["message"]
    assert run.result.ret == 1 and f'no daily_max_loss_pct in GET {sandbox.admin_url}/config: set "daily_max_loss_pct"' in message


@pytest.mark.parametrize("name,text", [
    ("risk.env", "# the system's .env\nexport ALLOCATION=0.005\nMAX_ORDER_NOTIONAL='50'\n"
                 "SINGLE_TRADE_MAX_LOSS_PCT=0.01\nDAILY_MAX_LOSS_PCT=\"0.02\"  # strict\n"),
    ("risk.yaml", "risk:\n  allocation: 0.005\n  max_order_notional: 50\n  single_trade_max_loss_pct: 0.01\n"
                  "  daily_max_loss_pct: 0.02\n"),
    ("risk.json", '{"allocation": 0.005, "max_order_notional": 50, "single_trade_max_loss_pct": 0.01, '
                  '"daily_max_loss_pct": 0.02}'),
])
def test_the_configuration_from_the_systems_own_file(run_suite, tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    run = run_suite("-m", "risk", "--risk-config", str(path), "--capital", "10000", sandbox_args=False)
    assert run.result.ret == 0, run.output
    assert run.statuses("risk") == dict.fromkeys(RISK_IDS, "passed")
    assert str(path) in run.check("risk_allocation")["message"]


def test_a_dotenv_file_missing_a_key_says_how_to_set_it(run_suite, tmp_path):
    path = tmp_path / "system.env"
    path.write_text("ALLOCATION=0.005\nMAX_ORDER_NOTIONAL=50\nSINGLE_TRADE_MAX_LOSS_PCT=0.01\n")
    run = run_suite("-m", "risk", "--risk-config", str(path), sandbox_args=False)
    assert run.result.ret == 1
    assert f"set DAILY_MAX_LOSS_PCT=... in {path}" in run.check("risk_daily_loss")["message"]


def test_no_risk_configuration_at_all_fails_closed(run_suite, tmp_path):
    run = run_suite("-m", "risk", sandbox_args=False)
    assert run.result.ret == 1
    assert {c["status"] for c in run.evidence["checks"] if c["marker"] == "risk"} == {"failed"}
    assert "no risk configuration: set --http-admin-url" in run.check("risk_allocation")["message"]
    broken = tmp_path / "broken.yaml"
    broken.write_text("allocation: [unclosed\n")
    run = run_suite("-m", "risk", "--risk-config", str(broken), sandbox_args=False)
    assert "cannot be parsed" in run.check("risk_allocation")["message"]


@pytest.mark.parametrize("capital,inst,ok,phrase", [
    ("10000", "BTC-USDT", True, "capital 10000 x allocation 0.005 = 50; BTC-USDT: minimum order 1e-05 at last 97000 = 0.97"),
    ("100", "BTC-USDT", False, "= 0.5; BTC-USDT: minimum order 1e-05 at last 97000 = 0.97: the allocation cannot place a single order"),
    ("500", "ETH-USDT-SWAP", False, "ETH-USDT-SWAP: minimum order 0.01 contracts x 0.1 at last 3500 = 3.5"),
    (None, "BTC-USDT", False, "set --capital (or an API key, for the account's equity) to check"),
    ("10000", "NOPE-USDT", False, "code '51001' Instrument ID does not exist"),
])
def test_the_allocation_must_buy_the_minimum_order(run_suite, sandbox, monkeypatch, capital, inst, ok, phrase):
    if capital is None:  # and no API key either: nothing tells the budget
        for name in ("OKX_API_KEY", "OKX_API_SECRET", "OKX_API_PASSPHRASE"):
            monkeypatch.delenv(name, raising=False)
    args = sandbox.preflight_args()
    del args[args.index("--capital"):args.index("--capital") + 2]
    run = run_suite("-m", "risk", "--inst-id", inst, *args, *(["--capital", capital] if capital else []),
                    sandbox_args=False)
    check = run.check(f"risk_min_order[{inst}]")
    assert (check["status"] == "passed") is ok and phrase in check["message"], check["message"]


def test_values_are_never_rescaled():
    config = parse_config({"ALLOCATION": "5", "Daily_Max_Loss_Pct": 0.02, "max_order_notional": "nan"}, "x.env")
    assert "expected a fraction in [0, 1]" in config.problems["allocation"]
    assert config.values["daily_max_loss_pct"] == 0.02
    assert "expected a finite number" in config.problems["max_order_notional"]


# --- where the system reads its settings (issue 16) ------------------------------------------------------


@pytest.mark.parametrize("name,text,phrase", [
    # a nested copy in a section the system does not read no longer stands in for the value it uses
    ("nested.json", '{"allocation": 0.5, "single_trade_max_loss_pct": 0.2, "daily_max_loss_pct": 0.9, '
                    '"max_order_notional": 50, "backtest": {"allocation": 0.005, "single_trade_max_loss_pct": 0.01, '
                    '"daily_max_loss_pct": 0.02}}', "allocation 0.5 (50.00%)"),
    ("paper.yaml", "allocation: 0.5\nsingle_trade_max_loss_pct: 0.2\ndaily_max_loss_pct: 0.9\nmax_order_notional: 50\n"
                   "paper:\n  allocation: 0.005\n  single_trade_max_loss_pct: 0.01\n  daily_max_loss_pct: 0.02\n",
     "allocation 0.5 (50.00%)"),
    # the same setting twice where it is read: ambiguous, both places named
    ("cased.env", "ALLOCATION=0.5\nallocation=0.005\nSINGLE_TRADE_MAX_LOSS_PCT=0.01\nDAILY_MAX_LOSS_PCT=0.02\n"
                  "MAX_ORDER_NOTIONAL=50\n", "allocation is set 2 times where the system reads it (ALLOCATION = '0.5', "
                                             "allocation = '0.005'): ambiguous"),
    ("both.yaml", "allocation: 0.5\nrisk:\n  allocation: 0.005\n", "(allocation = 0.5, risk.allocation = 0.005): ambiguous"),
    ("dup.json", '{"allocation": 0.5, "allocation": 0.005}', "written twice in one mapping: ambiguous"),
    ("dup.yaml", "allocation: 0.5\nallocation: 0.005\n", "written twice in one mapping: ambiguous"),
    ("alias.json", '{"allocation": 0.5, "capital_allocation": 0.005}', "allocation is set 2 times"),
    # two keys that could both be the section read, odd spellings, objects and repeated .env lines
    ("sections.json", '{"RISK": {"allocation": 0.005}, "risk": {"allocation": 1.0}}',
     "the section 'risk' is there 2 times ('RISK', 'risk'): ambiguous"),
    ("space.json", '{"risk ": {"allocation": 0.005}, "risk": {"allocation": 1.0}}', "is there 2 times"),
    ("spaced.json", '{" allocation ": 0.005}', "has spaces around it"),
    ("object.yaml", "allocation:\n  value: 0.005\n", "allocation is an object of 1 key(s), not a number"),
    ("twice.env", "ALLOCATION=0.9\nALLOCATION=0.005\n", "the key 'ALLOCATION' is written twice"),
])
def test_the_value_the_system_uses_is_the_one_judged(run_suite, tmp_path, name, text, phrase):
    path = tmp_path / name
    path.write_text(text)
    run = run_suite("-m", "risk", "--risk-config", str(path), "--capital", "10000", sandbox_args=False)
    check = run.check("risk_allocation")
    assert check["status"] == "failed" and phrase in check["message"], check["message"]


def test_a_named_section_is_the_only_place_read(run_suite, tmp_path):
    path = tmp_path / "system.yaml"
    path.write_text("allocation: 0.9\nlive:\n  risk:\n    allocation: 0.005\n    max_order_notional: 50\n"
                    "    single_trade_max_loss_pct: 0.01\n    daily_max_loss_pct: 0.02\n")
    run = run_suite("-m", "risk", "--risk-config", str(path), "--risk-config-section", "live.risk", "--capital", "10000",
                    sandbox_args=False)
    assert run.statuses("risk") == dict.fromkeys(RISK_IDS, "passed"), run.output
    missing = run_suite("-m", "risk", "--risk-config", str(path), "--risk-config-section", "paper", "--capital", "10000",
                        sandbox_args=False)
    assert "has no section 'paper' (--risk-config-section)" in missing.check("risk_allocation")["message"]


@pytest.mark.parametrize("cap,capital,ok,phrase", [
    ("1e300", "10000", False, "the cap allows more than the allocated capital, so it caps nothing"),
    ("51", "10000", False, "capital 10000 x allocation 0.005 = 50"),
    ("50", "10000", True, "= 50"),
    ("50", None, False, "the allocated capital is unknown: set --capital"),
])
def test_the_order_cap_is_no_more_than_the_allocated_capital(run_suite, tmp_path, monkeypatch, cap, capital, ok, phrase):
    for name in ("OKX_API_KEY", "OKX_API_SECRET", "OKX_API_PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "risk.json"
    path.write_text(f'{{"allocation": 0.005, "max_order_notional": {cap}, "single_trade_max_loss_pct": 0.01, '
                    '"daily_max_loss_pct": 0.02}')
    run = run_suite("-m", "risk", "--risk-config", str(path), *(["--capital", capital] if capital else []),
                    sandbox_args=False)
    check = run.check("risk_order_notional_cap")
    assert (check["status"] == "passed") is ok and phrase in check["message"], check["message"]


def _bomb(width: int, depth: int, kind: str) -> str:
    """An alias bomb: each level holds `width` aliases of the one before; walked, it is width ** depth nodes."""
    if kind == "list":
        lines = ["l0: &l0 [" + ", ".join(["x"] * width) + "]"]
        lines += [f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * width) + "]" for n in range(1, depth)]
    else:
        lines = ["m0: &m0 {" + ", ".join(f"k{i}: 1" for i in range(width)) + "}"]
        lines += [f"m{n}: &m{n} {{" + ", ".join(f"k{i}: *m{n - 1}" for i in range(width)) + "}" for n in range(1, depth)]
    return "\n".join(lines) + "\nallocation: 0.005\n"


@pytest.mark.parametrize("kind", ["list", "mapping"])
def test_a_yaml_alias_bomb_is_never_walked_and_a_big_one_is_refused(run_suite, tmp_path, kind):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(9, 9, kind))  # 72 aliases, 9 ** 9 nodes if walked: read where the system reads only
    run = run_suite("-m", "risk", "--risk-config", str(path), "--capital", "10000", sandbox_args=False)
    allocation = run.check("risk_allocation")
    assert allocation["status"] == "passed" and allocation["duration_s"] < 5, allocation
    path.write_text(_bomb(11, 11, kind))  # 110 aliases: refused while read
    assert path.stat().st_size < 1500
    run = run_suite("-m", "risk", "--risk-config", str(path), "--capital", "10000", sandbox_args=False)
    message = run.check("risk_allocation")["message"]
    assert "more than 100 YAML aliases: refused" in message, message


def test_a_dotenv_variable_is_not_expanded_from_the_gates_environment(run_suite, tmp_path, monkeypatch):
    monkeypatch.setenv("GD_TEST_ALLOC", "0.005")
    path = tmp_path / "system.env"
    path.write_text("ALLOCATION=${GD_TEST_ALLOC}\n")
    run = run_suite("-m", "risk", "--risk-config", str(path), "--capital", "10000", sandbox_args=False)
    message = run.check("risk_allocation")["message"]
    assert "not a number" in message and "${GD_TEST_ALLOC}" in message, message


def test_an_alias_bomb_under_a_setting_is_never_printed_whole(run_suite, tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(9, 9, "list").replace("allocation: 0.005", "risk:\n  allocation: *l8"))
    run = run_suite("-m", "risk", "--risk-config", str(path), "--capital", "10000", sandbox_args=False)
    check = run.check("risk_allocation")
    assert "allocation is a list of 9 item(s), not a number" in check["message"], check["message"]
    assert check["duration_s"] < 5
