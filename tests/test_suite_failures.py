"""Each bad input makes the right check fail, with what was measured and what to do; nothing passes by accident."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time

import pytest

from waiting import wait_until
from deploy_tool.sandbox import maintenance_event
from deploy_tool.times import iso_utc, utc_now


def _failed_only(run, *ids):
    statuses = run.statuses()
    assert ids
    failed = {i for i, s in statuses.items() if s == "failed"}
    assert failed == set(ids), f"failed: {sorted(failed)}"
    assert run.evidence["verdict"] == "fail"
    assert run.result.ret == 1
    assert "Traceback" not in run.output


def test_unconfigured_database_fails_naming_the_option(run_suite, sandbox):
    args = [a for a in sandbox.preflight_args()]
    i = args.index("--database-url")
    del args[i:i + 2]
    run = run_suite(*args, sandbox_args=False)
    _failed_only(run, "trades_fresh")
    message = run.check("trades_fresh")["message"]
    assert "--database-url" in message and "--skip-db-check" in message
    run.result.stdout.fnmatch_lines(["*_ test_trades_fresh _*", "no trades database configured: set --database-url*"])


@pytest.mark.parametrize("flag,marker", [("--skip-db-check", "db"), ("--skip-backtest-check", "backtest")])
def test_skip_flags_are_recorded_as_skipped_on_request(run_suite, flag, marker):
    run = run_suite(flag)
    assert run.result.ret == 0
    skipped = run.evidence["skipped"]
    assert skipped and all(s["reason"] == f"skipped on request: {flag}" and s["marker"] == marker for s in skipped)
    assert run.evidence["skips_requested"] == [flag]
    assert all(c["status"] == "passed" for c in run.evidence["checks"] if c["marker"] != marker)
    # the run says, in the evidence and on the terminal, that this evidence does not open real, and why
    required = [s["id"] for s in skipped if s["required"]]
    assert required and set(required) <= set(run.evidence["manifest"])
    why = [f"required checks not passed: {', '.join(f'{cid} skipped' for cid in required)}; "
           f"checks skipped on request: {flag}"]  # in the gate's own words: the run and the gate never disagree
    assert run.evidence["opens_real"] == {"ok": False, "why": why}
    # and the honest next step first, in the gate's words: the preflight again with what was skipped (its
    # option and variable), without the skip, signed; then switch
    (line,) = [x for x in run.result.stdout.lines if x.startswith("this evidence does not open real: ")]
    assert line.startswith(f"this evidence does not open real: {'; '.join(why)}. To open real: run the preflight "
                           "again with ")
    option = {"--skip-db-check": "--database-url URL", "--skip-backtest-check": "--backtest-summary FILE",
              "--skip-risk-check": "--risk-config FILE"}[flag]
    assert f"`gradual-deploy preflight {option}`" in line and f"without {flag}" in line
    assert line.endswith("then `gradual-deploy switch --to real`")


def test_a_run_in_which_no_check_passed_fails(run_suite):
    run = run_suite("-m", "admin", sandbox_args=False)
    assert run.evidence["verdict"] == "fail"
    assert run.result.ret == 1
    assert {c["status"] for c in run.evidence["checks"]} == {"skipped"}
    assert any("not configured" in c["message"] for c in run.evidence["checks"] if c["marker"] == "admin")
    run.result.stdout.fnmatch_lines(["*no check passed*", "*preflight verdict: FAIL*"])


def test_slow_exchange_fails_latency_with_measured_and_threshold(run_suite, sandbox):
    sandbox.exchange.behaviour.delay_ms = 120
    run = run_suite("-m", "okx", "--api-latency-threshold-ms", "100")
    _failed_only(run, "okx_public_time_latency")
    check = run.check("okx_public_time_latency")
    assert check["measured"] >= 120 and check["threshold"] == 100 and check["unit"] == "ms"
    assert "is not below the 100 ms threshold" in check["message"] and "median" in check["message"]


def test_clock_skew_fails(run_suite, sandbox):
    sandbox.exchange.behaviour.skew_ms = 4000
    run = run_suite("-m", "okx")
    _failed_only(run, "okx_clock_skew")
    check = run.check("okx_clock_skew")
    assert 3500 < check["measured"] < 4500
    assert "ahead of this host's UTC clock, max 1000 ms" in check["message"]


def test_exchange_error_code_fails_health_and_latency(run_suite, sandbox):
    sandbox.exchange.behaviour.code = "50001"
    sandbox.exchange.behaviour.msg = "Service temporarily unavailable"
    run = run_suite("-m", "okx")
    _failed_only(run, "okx_public_time_ok", "okx_public_time_latency", "okx_clock_skew", "okx_no_maintenance")
    assert "code '50001' (expected \"0\")" in run.check("okx_public_time_ok")["message"]


def test_exchange_http_500_and_garbage(run_suite, sandbox):
    sandbox.exchange.behaviour.garbage = True
    sandbox.exchange.behaviour.http_status = 502
    run = run_suite("-m", "okx")
    assert set(run.statuses("okx").values()) == {"failed"}
    assert "HTTP 502 with non-JSON body" in run.check("okx_public_time_ok")["message"]


def test_unreachable_exchange_fails_every_okx_check(run_suite, sandbox):
    run = run_suite("-m", "okx", "--okx-base-url", "http://127.0.0.1:9")
    assert set(run.statuses("okx").values()) == {"failed"}
    assert "connection refused" in run.check("okx_public_time_ok")["message"]


@pytest.mark.parametrize(
    "state,starts_in_h,fails",
    [("ongoing", -0.5, True), ("scheduled", 1, True), ("pre_open", 0.5, True), ("scheduled", 3, False),
     ("completed", -2, False), ("canceled", 1, False)],
)
def test_maintenance_within_horizon_fails(run_suite, sandbox, state, starts_in_h, fails):
    now = utc_now()
    begin = now + dt.timedelta(hours=starts_in_h)
    sandbox.exchange.behaviour.events = [maintenance_event(state, begin, begin + dt.timedelta(hours=1), "Spot upgrade")]
    run = run_suite("-m", "okx", "--maintenance-horizon", "2h")
    check = run.check("okx_no_maintenance")
    assert check["status"] == ("failed" if fails else "passed")
    if fails:
        assert "Spot upgrade" in check["message"] and state in check["message"]


def test_stalled_feed_fails_freshness(run_suite, sandbox):
    sandbox.feed.stall()  # returns once no write is under way: the newest trade stays the newest
    conn = sqlite3.connect(sandbox.database_path)
    try:
        (newest_ms,) = conn.execute("SELECT max(ts) FROM trades").fetchone()
    finally:
        conn.close()
    # The feed's own clock: epoch ms.
    wait_until(lambda: time.time() * 1000 - newest_ms > 300, "the stalled feed's newest trade to age past 0.3 s", 10)
    run = run_suite("-m", "db", "--data-latency-threshold", "0.3")
    _failed_only(run, "trades_fresh")
    check = run.check("trades_fresh")
    assert check["measured"] > 0.3 and check["threshold"] == 0.3
    assert "the trades feed is stalled or lagging" in check["message"]


def test_missing_admin_token_is_reported_as_401(run_suite, sandbox, monkeypatch):
    monkeypatch.delenv(sandbox.token_env)
    run = run_suite("-m", "admin")
    _failed_only(run, "admin_health", "admin_mode")
    assert "HTTP 401" in run.check("admin_health")["message"]


def test_unreachable_admin_api_fails(run_suite, sandbox):
    run = run_suite("-m", "admin", "--http-admin-url", "http://127.0.0.1:9")
    _failed_only(run, "admin_health", "admin_mode")
    assert "connection refused" in run.check("admin_health")["message"]


def test_corrupt_control_file_fails(run_suite, sandbox):
    sandbox.control_file.write_text('{"mode": "live"')
    run = run_suite("-m", "control")
    _failed_only(run, "control_file_valid")
    assert "is not valid JSON" in run.check("control_file_valid")["message"]
    sandbox.control_file.write_text('{"mode": "live"}')
    run = run_suite("-m", "control")
    assert "holds mode 'live'" in run.check("control_file_valid")["message"]


def test_control_directory_missing_fails(run_suite, sandbox, tmp_path):
    run = run_suite("-m", "control", "--control-file", str(tmp_path / "nowhere" / "mode.json"))
    _failed_only(run, "control_dir_writable")
    assert "mkdir -p" in run.check("control_dir_writable")["message"]


def _summary(sandbox, **fields):
    doc = {"strategy": "s1", "sharpe": 0.9, "winrate": 0.6, "max_drawdown": 0.02, "trades": 120,
           "generated_at": iso_utc(utc_now())}
    doc.update(fields)
    sandbox.backtest_summary.write_text(json.dumps({k: v for k, v in doc.items() if v is not None}))


def test_winrate_written_as_percent_is_rejected_not_rescaled(run_suite, sandbox):
    _summary(sandbox, winrate=55)
    run = run_suite("-m", "backtest")
    assert run.check("backtest_summary_valid[s1]")["status"] == "failed"
    assert "winrate 55 is outside [0, 1]: write a fraction, e.g. 0.55" in run.check("backtest_summary_valid[s1]")["message"]
    assert run.check("backtest_winrate[s1]")["status"] == "failed"
    assert run.result.ret == 1


def test_stale_backtest_fails(run_suite, sandbox):
    _summary(sandbox, generated_at=iso_utc(utc_now() - dt.timedelta(hours=30)))
    run = run_suite("-m", "backtest")
    _failed_only(run, "backtest_fresh[s1]")
    assert "max age 24.0 h" in run.check("backtest_fresh[s1]")["message"]


def test_missing_summary_fails_naming_the_option(run_suite, sandbox, tmp_path):
    run = run_suite("-m", "backtest", "--backtest-summary", str(tmp_path / "none.json"))
    assert set(run.statuses("backtest").values()) == {"failed"}
    assert "--backtest-summary" in run.check("backtest_summary_valid[summary]")["message"]


def test_min_trades_is_checked_by_default_and_off_only_when_asked(run_suite, sandbox):
    _summary(sandbox, trades=40)
    first = run_suite("-m", "backtest")
    assert first.result.ret == 0 and first.statuses()["backtest_min_trades[s1]"] == "passed"
    assert first.check("backtest_min_trades[s1]")["threshold"] == 30
    run = run_suite("-m", "backtest", "--min-trades", "100")
    _failed_only(run, "backtest_min_trades[s1]")
    assert "40 backtest trades, fewer than the minimum 100" in run.check("backtest_min_trades[s1]")["message"]
    _summary(sandbox, trades=None)  # no count at all: the default asks for one
    unknown = run_suite("-m", "backtest")
    _failed_only(unknown, "backtest_min_trades[s1]")
    off = run_suite("-m", "backtest", "--min-trades", "0")
    assert off.result.ret == 0 and "backtest_min_trades[s1]" not in off.statuses()
    _summary(sandbox, trades=0)  # but a backtest that never traded fails even so
    idle = run_suite("-m", "backtest", "--min-trades", "0")
    assert idle.check("backtest_summary_valid[s1]")["status"] == "failed"
    assert "0 trades" in idle.check("backtest_summary_valid[s1]")["message"]


def test_hanging_probe_cannot_stop_the_evidence(run_suite, sandbox):
    sandbox.exchange.behaviour.delay_ms = 4000
    run = run_suite("-m", "okx", "--timeout", "1")
    assert run.evidence["verdict"] == "fail"
    assert set(run.statuses("okx").values()) == {"failed"}
    assert "Timeout" in run.check("okx_public_time_ok")["message"]
