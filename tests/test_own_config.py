"""The suite's own configuration: `gradual-deploy preflight` collects every check and holds every threshold
whatever directory it runs in (a foreign pytest.ini, conftest.py, PYTEST_ADDOPTS or PYTEST_PLUGINS change
nothing); a pytest ini may set a threshold only as strict as its default or stricter; a looser one comes from
the command line or the tool's own config (--config), and every value says where it came from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy_tool.commands import preflight as preflight_command
from deploy_tool.settings import BY_NAME, OPTIONS, SUITE_OPTIONS, OptionError, looser_than_default, resolve
from test_suite_healthy import EXPECTED_IDS

GD = [sys.executable, "-m", "deploy_tool"]
SUITE = [o.name for o in SUITE_OPTIONS]
RISK_IDS = {"risk_allocation", "risk_single_trade_loss", "risk_daily_loss", "risk_order_notional_cap"}
# What the parent environment must not hand the child: the suite's targets and configs, and pytest's own.
CLEARED = ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD", "GD_CONFIG", "DATABASE_URL",
           "OKX_BASE_URL", "BACKTEST_SUMMARY", "EXEC_HTTP_ADMIN_URL", "EXEC_CONTROL_FILE", "EXEC_HTTP_ADMIN_ENABLED")


def _preflight(sandbox, cwd: Path, *args: str, env: dict[str, str] | None = None):
    """`gradual-deploy preflight` against the sandbox as a CI job runs it: its own process, started in `cwd`
    (the trading system's checkout). Returns the process and the JSON evidence (None when none was written)."""
    full = {k: v for k, v in os.environ.items() if k not in CLEARED}
    full.update({sandbox.token_env: sandbox.token, **sandbox.account_env(), **(env or {})})
    evidence = cwd / "evidence"
    done = subprocess.run([*GD, "preflight", *sandbox.preflight_args(), "--evidence-dir", str(evidence), *args],
                          cwd=cwd, env=full, capture_output=True, text=True, timeout=300)
    found = [p for p in sorted(evidence.glob("preflight-*.json")) if "." not in p.stem]  # not a signed envelope
    return done, (json.loads(found[0].read_text()) if found else None)


def _ids(doc: dict) -> set[str]:
    return {check["id"] for check in doc["checks"]}


# ------------------------------------------------------------------- gradual-deploy preflight, own config


FOREIGN_INI = {
    "pytest.ini": "[pytest]\npython_functions = test_okx_public_time_ok\nmax_daily_loss = 1\n",
    "pyproject.toml": '[tool.pytest.ini_options]\npython_functions = "test_okx_public_time_ok"\nmax_daily_loss = "1"\n',
}


@pytest.mark.parametrize("ini", sorted(FOREIGN_INI))
def test_a_foreign_ini_neither_selects_checks_nor_loosens_a_threshold(sandbox, tmp_path, ini):
    # The checkout holds the sandbox too: its paths on the command line keep pytest's search for an ini
    # in the checkout, as the relative paths of a CI job do.
    checkout = tmp_path
    (checkout / ini).write_text(FOREIGN_INI[ini])
    done, doc = _preflight(sandbox, checkout)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _ids(doc) == EXPECTED_IDS, "every check is collected, not the one the foreign ini names"
    assert RISK_IDS <= {c["id"] for c in doc["checks"] if c["status"] == "passed"}
    assert doc["thresholds"]["max_daily_loss"] == 0.02
    assert doc["verdict"] == "pass"


CONFTEST_DESELECTING = """
def pytest_collection_modifyitems(config, items):
    items[:] = [item for item in items if "okx" in item.name]
"""


@pytest.mark.parametrize("how", ["PYTEST_ADDOPTS", "conftest.py", "PYTEST_PLUGINS"])
def test_the_environment_and_conftest_of_the_checkout_change_nothing(sandbox, tmp_path, how):
    checkout = tmp_path
    env = {}
    if how == "PYTEST_ADDOPTS":
        env["PYTEST_ADDOPTS"] = "-k okx --max-daily-loss 1"
    elif how == "conftest.py":
        (checkout / "conftest.py").write_text(CONFTEST_DESELECTING)
    else:  # a plugin module the checkout holds, named in the job's environment (`python -m` puts cwd on sys.path)
        (checkout / "deselecting_plugin.py").write_text(CONFTEST_DESELECTING)
        env["PYTEST_PLUGINS"] = "deselecting_plugin"
    done, doc = _preflight(sandbox, checkout, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert _ids(doc) == EXPECTED_IDS and doc["skipped"] == []
    assert doc["thresholds"]["max_daily_loss"] == 0.02


def test_selection_skips_and_the_config_still_pass_through(sandbox, tmp_path):
    """What the operator puts on the command line is the operator's: -m, -k, --skip-*, --config."""
    checkout = tmp_path
    (checkout / "pytest.ini").write_text("[pytest]\naddopts = -m okx\n")
    config = checkout / "gd.toml"
    config.write_text('[gradual-deploy]\nmax_daily_loss = 0.05\nmin_sharpe = "0.1"\n')
    done, doc = _preflight(sandbox, checkout, "-m", "not db", "-k", "not admin_mode", "--skip-backtest-check",
                           "--config", str(config))
    assert done.returncode == 0, done.stdout + done.stderr
    statuses = {c["id"]: (c["status"], c["message"]) for c in doc["checks"]}
    assert statuses["trades_fresh"] == ("skipped", "deselected by -m 'not db'")
    assert statuses["admin_mode"][0] == "skipped" and statuses["admin_health"][0] == "passed"
    assert statuses["backtest_sharpe[sandbox-momentum]"] == ("skipped", "skipped on request: --skip-backtest-check")
    assert statuses["okx_public_time_ok"][0] == statuses["risk_daily_loss"][0] == "passed", "not -m okx from addopts"
    assert doc["thresholds"]["max_daily_loss"] == 0.05 and doc["thresholds"]["min_sharpe"] == 0.1


def test_help_works_in_any_checkout(tmp_path):
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --no-such-flag\n")
    done = subprocess.run([*GD, "preflight", "--help-pytest"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k not in CLEARED})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "gradual-deploy preflight (go-live gate):" in done.stdout and "--config=VALUE" in done.stdout
    assert "--max-daily-loss=VALUE" in done.stdout and "PytestAssertRewriteWarning" not in done.stdout + done.stderr


def test_the_run_takes_pytests_environment_away_and_gives_it_back(monkeypatch):
    seen: dict = {}

    def main(args, plugins=()):
        seen["args"] = list(args)
        seen["env"] = {name: os.environ.get(name) for name in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS",
                                                               "PYTEST_DISABLE_PLUGIN_AUTOLOAD")}
        return 0

    monkeypatch.setenv("PYTEST_ADDOPTS", "-k okx")
    monkeypatch.setenv("PYTEST_PLUGINS", "somewhere")
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.setattr(pytest, "main", main)
    assert preflight_command.run_preflight(["-m", "okx"]).exit_code == 0
    assert seen["env"] == {"PYTEST_ADDOPTS": None, "PYTEST_PLUGINS": None, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    assert os.environ["PYTEST_ADDOPTS"] == "-k okx" and os.environ["PYTEST_PLUGINS"] == "somewhere"
    assert "PYTEST_DISABLE_PLUGIN_AUTOLOAD" not in os.environ
    args = seen["args"]
    ini = Path(args[args.index("-c") + 1])
    assert ini.name == "preflight.ini" and ini.is_file() and ini.parent.name == "preflight_tests"
    assert Path(args[args.index("--rootdir") + 1]) == ini.parent.parent and "--noconftest" in args
    assert {"pytest_metadata.plugin", "pytest_html.plugin", "pytest_timeout", "preflight_tests.plugin"} <= {
        args[i + 1] for i, arg in enumerate(args) if arg == "-p"}
    assert args[-2:] == ["-m", "okx"], "the operator's arguments come last"

    def failing(args, plugins=()):
        raise KeyboardInterrupt

    monkeypatch.setattr(pytest, "main", failing)
    with pytest.raises(KeyboardInterrupt):
        preflight_command.run_preflight([])
    assert os.environ["PYTEST_ADDOPTS"] == "-k okx" and "PYTEST_DISABLE_PLUGIN_AUTOLOAD" not in os.environ


# ----------------------------------------------------------------- pytest preflight_tests: the ini's limits


@pytest.mark.parametrize("key,value,default", [
    ("max_daily_loss", "1", "0.02"),
    ("min_sharpe", "0", "0.2"),
    ("maintenance_horizon", "30m", "2h"),
    ("api_samples", "1", "3"),
])
def test_a_looser_threshold_in_the_ini_is_a_usage_error(pytester, key, value, default):
    pytester.makefile(".ini", pytest=f"[pytest]\n{key} = {value}\n")
    result = pytester.runpytest("--pyargs", "preflight_tests", "-p", "no:cacheprovider",
                                "--evidence-dir", str(pytester.path / "ev"), "-m", "control")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    flag = BY_NAME[key].flag
    assert (f"ERROR: {key} = {value} in pytest.ini is looser than the default {default}: a looser threshold comes "
            f"only from the command line ({flag}) or the gradual-deploy config (--config or GD_CONFIG); remove it "
            "from pytest.ini") in result.stderr.str()
    assert not (pytester.path / "ev").exists() and "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_looser_threshold_in_pyproject_is_a_usage_error_naming_it(pytester):
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\nmax_allocation = "0.5"\n')
    result = pytester.runpytest("--pyargs", "preflight_tests", "-p", "no:cacheprovider",
                                "--evidence-dir", str(pytester.path / "ev"), "-m", "control")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "ERROR: max_allocation = 0.5 in pyproject.toml is looser than the default 0.01" in result.stderr.str()


def _thresholds(pytester, *args: str) -> dict:
    """The thresholds the evidence records of a run of the control checks, every path on the command line inside
    the pytester directory (so that pytest finds the ini there)."""
    evidence = pytester.path / f"ev-{len(list(pytester.path.glob('ev-*')))}"
    result = pytester.runpytest("--pyargs", "preflight_tests", "-p", "no:cacheprovider", "--evidence-dir",
                                str(evidence), "-m", "control", "--control-file", str(pytester.path / "mode.json"),
                                *args)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    (found,) = [p for p in evidence.glob("preflight-*.json") if "." not in p.stem]
    return json.loads(found.read_text())["thresholds"]


def test_an_equal_or_stricter_threshold_in_the_ini_holds(pytester):
    pytester.makefile(".ini", pytest="[pytest]\nmax_daily_loss = 0.015\nmin_sharpe = 0.2\nmaintenance_horizon = 4h\n")
    thresholds = _thresholds(pytester)
    assert thresholds["max_daily_loss"] == 0.015 and thresholds["min_sharpe"] == 0.2
    assert thresholds["maintenance_horizon"] == 4 * 3600


def test_a_config_may_loosen_and_beats_the_ini(pytester, monkeypatch):
    pytester.makefile(".ini", pytest="[pytest]\nmax_daily_loss = 0.01\nmin_sharpe = 0.3\n")
    config = pytester.path / "gd.toml"
    config.write_text("[gradual-deploy]\nmax_daily_loss = 0.5\nmax_allocation = \"0.02\"\n")
    thresholds = _thresholds(pytester, "--config", str(config))
    assert thresholds["max_daily_loss"] == 0.5 and thresholds["max_allocation"] == 0.02
    assert thresholds["min_sharpe"] == 0.3, "the ini still holds what the config leaves alone"
    monkeypatch.setenv("GD_CONFIG", str(config))
    thresholds = _thresholds(pytester, "--max-daily-loss", "0.03")
    assert thresholds["max_daily_loss"] == 0.03, "the command line beats the config"
    assert thresholds["max_allocation"] == 0.02, "GD_CONFIG names the config"


@pytest.mark.parametrize("body,expected", [
    ("[gradual-deploy]\nmax_daily_los = 0.5\n", "sets unknown options in [gradual-deploy]: max_daily_los (a key is"),
    ("[gradual-deploy]\nmin_sharpe = 0.1\n[gradual-deploy\n", "is not valid TOML ("),
    ("min_sharpe = 0.1\n", "has no [gradual-deploy] table"),
])
def test_an_unusable_config_is_a_usage_error_naming_the_file(pytester, tmp_path, body, expected):
    config = tmp_path / "gd.toml"
    config.write_text(body)
    result = pytester.runpytest("--pyargs", "preflight_tests", "-p", "no:cacheprovider",
                                "--evidence-dir", str(pytester.path / "ev"), "-m", "control", "--config", str(config))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"ERROR: --config {config} (from the command line) {expected}" in result.stderr.str()
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


# --------------------------------------------------------------------------- resolve: sources and the rule


def _resolve(cli: dict | None = None, ini: dict | None = None, environ: dict | None = None, names=SUITE):
    cli, ini = cli or {}, ini or {}
    return resolve(names, cli=lambda o: cli.get(o.name), ini=lambda o: ini.get(o.name), ini_source="pytest.ini",
                   environ=environ or {})


def test_sources_say_where_every_value_came_from(tmp_path):
    config = tmp_path / "gd.toml"
    config.write_text('[gradual-deploy]\nmin_winrate = 0.4\nmax_drawdown = 0.2\nnotify = ["json://a/1", "json://b/2"]\n'
                      "skip_db_check = true\n")
    settings = _resolve(cli={"min_sharpe": "0.5", "config": str(config)},
                        environ={"DATABASE_URL": "sqlite:///x.db", "BACKTEST_SUMMARY": "s.json"},
                        ini={"max_drawdown": "0.01", "max_allocation": "0.005", "backtest_summary": "ini.json"})
    assert settings.sources["min_sharpe"] == "the command line" and settings.min_sharpe == 0.5
    assert settings.sources["database_url"] == "environment variable DATABASE_URL"
    assert settings.sources["backtest_summary"] == "environment variable BACKTEST_SUMMARY"
    assert settings.sources["min_winrate"] == f"config {config}" and settings.min_winrate == 0.4
    assert settings.sources["max_drawdown"] == f"config {config}" and settings.max_drawdown == 0.2
    assert settings.notify == ("json://a/1", "json://b/2") and settings.skip_db_check is True
    assert settings.sources["max_allocation"] == "pytest.ini" and settings.max_allocation == 0.005
    assert settings.sources["max_daily_loss"] == "the default" and settings.sources["config"] == "the command line"
    assert settings.threshold_sources(["backtest", "risk"]) == {
        "min_sharpe": "the command line", "min_winrate": f"config {config}", "max_drawdown": f"config {config}",
        "min_trades": "the default", "backtest_max_age": "the default", "max_allocation": "pytest.ini",
        "max_single_trade_loss": "the default", "max_daily_loss": "the default"}
    assert set(settings.threshold_sources(["okx", "db"])) == set(settings.thresholds(["okx", "db"]))
    from_env = _resolve(environ={"GD_CONFIG": str(config)})
    assert from_env.sources["config"] == "environment variable GD_CONFIG" and from_env.min_winrate == 0.4
    assert set(_resolve().sources) == {o.name for o in OPTIONS}, "every field says where it came from"


@pytest.mark.parametrize("key,value", [("max_daily_loss", "0.021"), ("min_winrate", "0.49"), ("max_slippage_bps", "51"),
                                       ("backtest_max_age", "25h"), ("observe_window", "1h"),
                                       ("api_latency_threshold_ms", "300.5"), ("db_statement_timeout_ms", "1000")])
def test_an_ini_may_not_loosen_a_threshold_but_the_command_line_and_config_may(tmp_path, key, value):
    option = BY_NAME[key]
    with pytest.raises(OptionError, match=rf"^{key} = {value} in pytest.ini is looser than the default "
                                          rf"{option.default}: .*; remove it from pytest\.ini$"):
        _resolve(ini={key: value})
    assert getattr(_resolve(cli={key: value}), key) == option.read(value)
    config = tmp_path / "gd.toml"
    config.write_text(f'[gradual-deploy]\n{key} = "{value}"\n')
    assert getattr(_resolve(cli={"config": str(config)}, ini={key: value}), key) == option.read(value)


@pytest.mark.parametrize("key,value", [("max_daily_loss", "0.02"), ("max_daily_loss", "0.001"), ("min_sharpe", "3"),
                                       ("maintenance_horizon", "1d"), ("api_samples", "10"), ("max_signals", "99")])
def test_an_ini_may_hold_a_threshold_equal_or_stricter(key, value):
    settings = _resolve(ini={key: value})
    assert getattr(settings, key) == BY_NAME[key].read(value) and settings.sources[key] == "pytest.ini"


def test_every_threshold_has_a_direction_and_only_thresholds_have_one():
    for option in OPTIONS:
        assert (option.looser in ("higher", "lower")) == option.threshold, option.flag
    ways = {o.name: o.looser for o in OPTIONS if o.threshold}
    assert {n for n, way in ways.items() if way == "lower"} == {
        "min_sharpe", "min_winrate", "min_trades", "api_samples", "maintenance_horizon", "min_signals"}
    assert looser_than_default(BY_NAME["max_signals"], 10**9) is False, "unset (off) is the loosest"


def test_an_ini_cannot_name_the_config(tmp_path):
    with pytest.raises(OptionError, match=r"^config = gd\.toml in pytest\.ini is not read: --config comes only from "
                                          r"the command line or the environment \(GD_CONFIG\)"):
        _resolve(ini={"config": "gd.toml"})


@pytest.mark.parametrize("body,expected", [
    ("[gradual-deploy]\nmin_sharpe = 0.1\nbogus = 1\nworse = 2\n",
     "sets unknown options in [gradual-deploy]: bogus, worse"),
    ("min_sharpe = 0.1\n[gradual-deploy]\nmin_winrate = 0.4\n", "sets min_sharpe outside the [gradual-deploy] table"),
    ("[gradual-deploy]\nconfig = 'other.toml'\n", "sets config in [gradual-deploy]: a config cannot name another one"),
    ("[gradual-deploy]\nbacktest_max_age = 1979-05-27\n", "sets backtest_max_age = 1979-05-27 in [gradual-deploy]: "
                                                          "expected a string, a number or true/false"),
    ("[gradual-deploy]\nmin_sharpe = [1, 2]\n", "sets min_sharpe = [1, 2] in [gradual-deploy]: expected a string"),
    ("[gradual-deploy]\n= 1\n", "is not valid TOML ("),
])
def test_an_unusable_config_file_is_an_option_error(tmp_path, body, expected):
    config = tmp_path / "gd.toml"
    config.write_text(body)
    with pytest.raises(OptionError) as info:
        _resolve(environ={"GD_CONFIG": str(config)})
    assert str(info.value).startswith(f"--config {config} (from environment variable GD_CONFIG) {expected}")


def test_a_missing_config_and_a_bad_value_in_one_name_the_file(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(OptionError, match="cannot be read .*: give --config a readable TOML file"):
        _resolve(cli={"config": str(missing)})
    config = tmp_path / "gd.toml"
    config.write_text("[gradual-deploy]\nmin_winrate = 55\n")
    with pytest.raises(OptionError) as info:
        _resolve(cli={"config": str(config)})
    assert str(info.value) == (f"invalid --min-winrate '55' from config {config}: expected a fraction in [0, 1], "
                               "e.g. 0.55 for 55 % (key min_winrate in [gradual-deploy])")


def test_watch_reads_the_config_too(tmp_path):
    """The commands resolve through the same function: `watch` takes --config and its thresholds."""
    from deploy_tool.cli import COMMAND_SETTINGS

    config = tmp_path / "gd.toml"
    config.write_text("[gradual-deploy]\nmax_risk_events = 7\ninterval = \"5s\"\n")
    settings = _resolve(cli={"config": str(config)}, names=COMMAND_SETTINGS["watch"])
    assert settings.max_risk_events == 7 and settings.interval == 5
    assert settings.sources["interval"] == f"config {config}"
