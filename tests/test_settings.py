"""Settings: flag > environment > ini > default, and a clear usage error (exit 4) for every bad value."""

from __future__ import annotations

import pytest

from deploy_tool.settings import SUITE_OPTIONS as OPTIONS


def _usage(pytester, *args, ini: str | None = None):
    if ini is not None:
        (pytester.path / "pytest.ini").write_text(f"[pytest]\n{ini}\n")
    result = pytester.runpytest("--pyargs", "preflight_tests", "-p", "no:cacheprovider",
                                "--evidence-dir", str(pytester.path / "ev"), *args)
    return result


@pytest.mark.parametrize(
    "args,ini,env,expected",
    [
        (["--min-winrate", "55"], None, {}, "invalid --min-winrate '55' from the command line: expected a fraction in [0, 1], e.g. 0.55"),
        ([], "min_winrate = 55", {}, "invalid --min-winrate '55' from pytest.ini: expected a fraction in [0, 1], e.g. 0.55 for 55 % (ini key min_winrate)"),
        (["--api-samples", "three"], None, {}, "invalid --api-samples 'three' from the command line: expected a whole number, e.g. 3"),
        (["--maintenance-horizon", "2 weeks"], None, {}, "invalid --maintenance-horizon '2 weeks' from the command line: expected a duration such as 90s, 30m, 2h, 7d or plain seconds"),
        (["--backtest-max-age", "0"], None, {}, "invalid --backtest-max-age '0' from the command line: expected a duration above 0*"),
        ([], None, {"DATABASE_URL": "mysql://db/x"}, "invalid --database-url 'mysql://db/x' from environment variable DATABASE_URL: expected postgresql://*"),
        ([], None, {"OKX_BASE_URL": "www.okx.com"}, "invalid --okx-base-url 'www.okx.com' from environment variable OKX_BASE_URL: expected an http:// or https:// URL*"),
        (["--max-drawdown", "nan"], None, {}, "invalid --max-drawdown 'nan' from the command line: expected a finite number"),
        (["--api-latency-threshold-ms", "-5"], None, {}, "invalid --api-latency-threshold-ms '-5' from the command line: expected a number above 0"),
        ([], None, {"EXEC_HTTP_ADMIN_ENABLED": "true"}, "*EXEC_HTTP_ADMIN_ENABLED=true but EXEC_HTTP_PORT is not set*"),
    ],
)
def test_bad_values_are_usage_errors_naming_option_and_source(pytester, monkeypatch, args, ini, env, expected):
    for name in ("DATABASE_URL", "OKX_BASE_URL", "EXEC_HTTP_ADMIN_URL", "EXEC_HTTP_ADMIN_ENABLED", "EXEC_HTTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = _usage(pytester, *args, ini=ini)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    if "*" in expected:
        result.stderr.fnmatch_lines([f"ERROR: {expected}*".replace("[", "[[]")])
    else:
        assert f"ERROR: {expected}" in err, err
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def _settings_of(pytester, *args, ini: str = ""):
    """Run the suite with only the backtest group and return the evidence's thresholds and targets."""
    import json

    import uuid

    (pytester.path / "pytest.ini").write_text(f"[pytest]\n{ini}\n")
    ev = pytester.path / f"ev-{uuid.uuid4().hex[:8]}"
    pytester.runpytest("--pyargs", "preflight_tests", "-p", "no:cacheprovider", "--evidence-dir", str(ev),
                       "-m", "control", *args)
    (path,) = ev.glob("*.json")
    return json.loads(path.read_text())


def test_precedence_flag_over_env_over_ini_over_default(pytester, monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    doc = _settings_of(pytester)
    assert doc["thresholds"]["min_sharpe"] == 0.2 and doc["targets"]["database_url"] is None
    doc = _settings_of(pytester, ini="min_sharpe = 0.7\ndatabase_url = sqlite:///from-ini.db")
    assert doc["thresholds"]["min_sharpe"] == 0.7 and doc["targets"]["database_url"] == "sqlite:///from-ini.db"
    monkeypatch.setenv("DATABASE_URL", "sqlite:///from-env.db")
    doc = _settings_of(pytester, ini="database_url = sqlite:///from-ini.db")
    assert doc["targets"]["database_url"] == "sqlite:///from-env.db"
    doc = _settings_of(pytester, "--database-url", "sqlite:///from-flag.db", "--min-sharpe", "1.5",
                       ini="min_sharpe = 0.7\ndatabase_url = sqlite:///from-ini.db")
    assert doc["targets"]["database_url"] == "sqlite:///from-flag.db" and doc["thresholds"]["min_sharpe"] == 1.5


def test_admin_url_from_exec_http_host_and_port(pytester, monkeypatch):
    monkeypatch.delenv("EXEC_HTTP_ADMIN_URL", raising=False)
    monkeypatch.setenv("EXEC_HTTP_ADMIN_ENABLED", "true")
    monkeypatch.setenv("EXEC_HTTP_HOST", "127.0.0.1")
    monkeypatch.setenv("EXEC_HTTP_PORT", "8001")
    assert _settings_of(pytester)["targets"]["http_admin_url"] == "http://127.0.0.1:8001"
    monkeypatch.setenv("EXEC_HTTP_ADMIN_URL", "http://10.0.0.5:9000/admin")
    assert _settings_of(pytester)["targets"]["http_admin_url"] == "http://10.0.0.5:9000/admin"


def test_every_option_is_a_flag_and_an_ini_key(pytester):
    result = pytester.runpytest("--help")
    out = result.stdout.str()
    for option in OPTIONS:
        assert option.flag in out, option.flag
        if option.ini_key and not option.flag_only:
            assert f"{option.name} " in out, option.name
        elif option.name == "config":  # the tool's own config is never itself named in an ini
            assert not any(line.strip().startswith("config ") for line in out.splitlines()), out
    for flag in ("--skip-db-check", "--skip-backtest-check"):
        assert flag in out


ABSURD = [
    (["--observe-window", "99999999999d"], "invalid --observe-window '99999999999d' from the command line: expected a duration above 0 and at most 31d"),
    (["--backtest-max-age", "1" * 400], "invalid --backtest-max-age '" + "1" * 57 + "...' from the command line: expected a finite duration"),
    (["--db-statement-timeout-ms", "0.5"], "invalid --db-statement-timeout-ms '0.5' from the command line: expected a number from 1 to 600000"),
    (["--min-sharpe", "inf"], "invalid --min-sharpe 'inf' from the command line: expected a finite number"),
    (["--api-samples", "100000"], "invalid --api-samples '100000' from the command line: expected a whole number from 1 to 100"),
    (["--maintenance-horizon", "1e400"], "invalid --maintenance-horizon '1e400' from the command line: expected a duration such as"),
    (["--max-risk-events", "99999999999999999999"], "invalid --max-risk-events '99999999999999999999' from the command line: expected a whole number from 0 to 1000000000"),
]


@pytest.mark.parametrize("args,expected", ABSURD)
def test_absurd_values_are_usage_errors_with_the_range(pytester, args, expected):
    result = _usage(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"ERROR: {expected}" in result.stderr.str()
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


@pytest.mark.parametrize("args", [["--observe-window", "99999999999d"], ["--interval", "1" * 400], ["--duration", "nan"],
                                  ["--failure-limit", "0"], ["--max-order-failure-rate", "inf"],
                                  ["--db-statement-timeout-ms", "0.5"]])
def test_absurd_values_never_reach_watch(sandbox, args):
    """Exit 2 before any round, and nothing paused."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "deploy_tool", "watch", *sandbox.watch_args(), *args],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"gradual-deploy: error: invalid {args[0]}" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == "" and json.loads(sandbox.control_file.read_text())["reason"] != "watch"
    assert not list(sandbox.audit_dir.glob("deploy-*.jsonl"))


def test_absurd_max_evidence_age_is_a_usage_error(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "deploy_tool", "switch", "--to", "mock", "--control-file",
                           str(tmp_path / "m.json"), "--max-evidence-age", "9" * 30 + "d"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "expected a duration above 0 and at most 30d" in done.stderr
    assert not (tmp_path / "m.json").exists()
