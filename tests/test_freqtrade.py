"""Backtest results from freqtrade, read as freqtrade writes them, through the suite as users run it."""

from __future__ import annotations

import time

import pytest

from freqtrade_results import mark_latest, result, strategy_stats, write_json, write_zip


def _backtest(run_suite, summary, *extra):
    return run_suite("-m", "backtest", "--backtest-summary", str(summary), *extra)


def test_a_current_result_is_checked_per_strategy(run_suite, tmp_path):
    doc = result(("SampleStrategy", strategy_stats("SampleStrategy")),
                 ("RiskyStrategy", strategy_stats("RiskyStrategy", sharpe=0.1, winrate=0.4)))
    run = _backtest(run_suite, write_json(tmp_path, "backtest-result-2026-11-24_10-00-00", doc))
    statuses = run.statuses("backtest")
    assert statuses["backtest_sharpe[SampleStrategy]"] == "passed"
    assert statuses["backtest_winrate[SampleStrategy]"] == "passed"
    assert statuses["backtest_max_drawdown[SampleStrategy]"] == "passed"
    assert statuses["backtest_fresh[SampleStrategy]"] == "passed"
    assert statuses["backtest_sharpe[RiskyStrategy]"] == "failed" and statuses["backtest_winrate[RiskyStrategy]"] == "failed"
    drawdown = run.check("backtest_max_drawdown[SampleStrategy]")
    assert drawdown["measured"] == 0.033, "the most conservative of freqtrade's account drawdowns"
    assert "the most conservative of max_drawdown_account 0.031, max_relative_drawdown 0.033" in drawdown["message"]
    assert "freqtrade backtest_run_end_ts" in run.check("backtest_fresh[SampleStrategy]")["message"]
    picked = _backtest(run_suite, write_json(tmp_path, "backtest-result-2026-11-24_10-00-00", doc),
                       "--strategy", "SampleStrategy")
    statuses = picked.statuses("backtest")
    assert picked.result.ret == 0
    assert all(status == "passed" for cid, status in statuses.items() if "[SampleStrategy]" in cid)
    # a go-live pass judges every strategy of the result: the other is recorded as not run, and opens nothing
    assert {status for cid, status in statuses.items() if "[RiskyStrategy]" in cid} == {"skipped"}
    assert picked.evidence["opens_real"]["ok"] is False


def test_an_older_result_without_sharpe_or_winrate_fails_by_name(run_suite, tmp_path):
    stats = strategy_stats("StrategyTestV2", sharpe=None, winrate=None, run_end="2020-10-01 18:01:00+00:00",
                           drawdown={"max_drawdown": 0.21, "max_drawdown_account": 0.087})
    run = _backtest(run_suite, write_json(tmp_path, "backtest-result", result(("StrategyTestV2", stats))))
    assert run.result.ret == 1
    check = run.check("backtest_summary_valid[StrategyTestV2]")
    assert check["status"] == "failed"
    assert "sharpe missing" in check["message"] and "winrate missing" in check["message"]
    assert "this freqtrade result has no sharpe or winrate (an older freqtrade wrote it)" in check["message"]
    assert run.statuses("backtest")["backtest_sharpe[StrategyTestV2]"] == "failed"


@pytest.mark.parametrize("drawdown,expected", [
    ({"max_relative_drawdown": 0.04, "max_drawdown": 0.2}, 0.2),  # an older freqtrade's measure, larger: it wins
    ({"max_drawdown": 0.045}, 0.045),
])
def test_the_largest_drawdown_wins_the_legacy_one_included(run_suite, tmp_path, drawdown, expected):
    doc = result(("S", strategy_stats("S", drawdown=drawdown)))
    run = _backtest(run_suite, write_json(tmp_path, "r", doc))
    assert run.check("backtest_max_drawdown[S]")["measured"] == expected


def test_age_from_the_run_else_the_meta_file(run_suite, tmp_path):
    old = strategy_stats("S", run_end=int(time.time()) - 3 * 86400)
    run = _backtest(run_suite, write_json(tmp_path, "old", result(("S", old))))
    fresh = run.check("backtest_fresh[S]")
    assert fresh["status"] == "failed" and "freqtrade backtest_run_end_ts" in fresh["message"]
    undated = strategy_stats("S")
    del undated["backtest_run_end_ts"], undated["backtest_run_start_ts"]
    path = write_json(tmp_path / "meta", "backtest-result", result(("S", undated)),
                      meta={"S": {"run_id": "430d0271075ef327edbb23088f4db4ebe51a3dbf",
                                  "backtest_start_time": int(time.time()) - 120}})
    run = _backtest(run_suite, path)
    fresh = run.check("backtest_fresh[S]")
    assert fresh["status"] == "passed" and "freqtrade meta backtest_start_time" in fresh["message"]


def test_a_zipped_result_and_a_results_directory(run_suite, tmp_path):
    results = tmp_path / "backtest_results"
    write_zip(results, "backtest-result-2026-11-20_08-00-00", result(("S", strategy_stats("S", sharpe=0.05))))
    newest = write_zip(results, "backtest-result-2026-11-24_08-00-00", result(("S", strategy_stats("S"))))
    run = _backtest(run_suite, newest)
    assert run.result.ret == 0 and run.statuses("backtest")["backtest_sharpe[S]"] == "passed"
    mark_latest(results, newest.name)
    run = _backtest(run_suite, results)
    assert run.result.ret == 0
    assert run.evidence["inputs"]["backtest_summary"]["path"] == str(newest)
    mark_latest(results, "backtest-result-2026-11-20_08-00-00.zip")
    assert _backtest(run_suite, results).statuses("backtest")["backtest_sharpe[S]"] == "failed"


@pytest.mark.parametrize("setup,phrase", [
    ("no-marker", "is a directory without .last_result.json"),
    ("bad-zip", "is not a readable zip"),
    ("unknown-strategy", "strategy 'Nope' is not in"),
])
def test_unusable_freqtrade_inputs_fail_with_the_reason(run_suite, tmp_path, setup, phrase):
    extra = []
    if setup == "no-marker":
        target = tmp_path / "empty"
        target.mkdir()
    elif setup == "bad-zip":
        target = tmp_path / "broken.zip"
        target.write_bytes(b"PK\x03\x04 not really")
    else:
        target = write_json(tmp_path, "r", result(("S", strategy_stats("S"))))
        extra = ["--strategy", "Nope"]
    run = _backtest(run_suite, target, *extra)
    assert run.result.ret == 1
    assert any(phrase in c["message"] for c in run.evidence["checks"] if c["marker"] == "backtest"), run.output


# --- what freqtrade reports, judged the most conservative way (issue 16) ---------------------------------


def test_the_headline_drawdown_is_judged_not_the_smaller_one(run_suite, tmp_path):
    """freqtrade 2024.11's figures for one run: "Max % of account underwater" 2.02 %, the account's absolute
    drawdown 1.99 %. --max-drawdown 0.02 must fail on the headline."""
    stats = strategy_stats("S", drawdown={"max_drawdown_account": 0.0198735, "max_relative_drawdown": 0.020205})
    run = _backtest(run_suite, write_json(tmp_path, "r", result(("S", stats))), "--max-drawdown", "0.02")
    check = run.check("backtest_max_drawdown[S]")
    assert (check["status"], check["measured"], check["threshold"]) == ("failed", 0.020205, 0.02)
    figures = run.evidence["inputs"]["backtest_summary"]["figures"]["S"]
    assert figures["max_drawdown"] == "max_relative_drawdown"
    assert figures["drawdowns_seen"] == {"max_drawdown_account": 0.0198735, "max_relative_drawdown": 0.020205}


def test_a_wallet_drawdown_and_the_freqtrade_version_are_recorded(run_suite, tmp_path):
    """freqtrade 2026.x also reports the marked-to-market wallet's drawdown under wallet_stats (the key names
    here are matched by pattern: any numeric `*drawdown*` that is not an amount, a time or a balance)."""
    stats = strategy_stats("S", drawdown={"max_drawdown_account": 0.0198735, "max_relative_drawdown": 0.020205})
    stats["wallet_stats"] = {"max_drawdown": 0.0286, "max_drawdown_abs": 286.0, "drawdown_start_ts": 1700000000000}
    doc = result(("S", stats))
    doc["metadata"] = {"S": {"run_id": "abc", "freqtrade_version": "2026.9"}}
    run = _backtest(run_suite, write_json(tmp_path, "r", doc), "--max-drawdown", "0.05")
    check = run.check("backtest_max_drawdown[S]")
    assert (check["status"], check["measured"]) == ("passed", 0.0286)
    figures = run.evidence["inputs"]["backtest_summary"]["figures"]["S"]
    assert figures["max_drawdown"] == "wallet_stats.max_drawdown" and figures["freqtrade_version"] == "2026.9"
    assert set(figures["drawdowns_seen"]) == {"max_drawdown_account", "max_relative_drawdown",
                                              "wallet_stats.max_drawdown"}
    assert figures["sharpe"] == "sharpe"
    assert "(freqtrade `sharpe`, freqtrade 2026.9)" in run.check("backtest_sharpe[S]")["message"]


def test_a_strategy_that_never_traded_never_passes(run_suite, tmp_path):
    stats = strategy_stats("Idle", sharpe=0.0, winrate=0.0, total_trades=0,
                           drawdown={"max_drawdown_account": 0.0, "max_relative_drawdown": 0.0})
    run = _backtest(run_suite, write_json(tmp_path, "r", result(("Idle", stats))),
                    "--min-sharpe", "0", "--min-winrate", "0", "--min-trades", "0")
    assert run.result.ret == 1 and run.evidence["verdict"] == "fail"
    check = run.check("backtest_summary_valid[Idle]")
    assert check["status"] == "failed" and "0 trades" in check["message"]


def test_a_handful_of_trades_does_not_pass_the_defaults(run_suite, tmp_path):
    """7 trades over a day gave a Sharpe of 117.6: the default --min-trades (30) refuses such a sample."""
    stats = strategy_stats("Lucky", sharpe=117.6, winrate=0.86, total_trades=7)
    run = _backtest(run_suite, write_json(tmp_path, "r", result(("Lucky", stats))))
    assert run.evidence["thresholds"]["min_trades"] == 30
    check = run.check("backtest_min_trades[Lucky]")
    assert (check["status"], check["measured"], check["threshold"]) == ("failed", 7, 30)
    assert run.check("backtest_sharpe[Lucky]")["status"] == "passed"
    assert run.evidence["verdict"] == "fail"


@pytest.mark.parametrize("bad", ["0.60", None, float("nan"), True, [0.6]])
def test_a_drawdown_field_that_holds_no_number_fails_never_drops_out(run_suite, tmp_path, bad):
    stats = strategy_stats("S", drawdown={"max_drawdown_account": bad, "max_relative_drawdown": 0.01})
    run = _backtest(run_suite, write_json(tmp_path, "r", result(("S", stats))))
    check = run.check("backtest_summary_valid[S]")
    assert check["status"] == "failed" and "max_drawdown_account is" in check["message"], check["message"]


@pytest.mark.parametrize("wallet", [{"drawdown": {"max_drawdown": 0.6}}, {"Max_Drawdown": 0.6},
                                    [{"max_drawdown": 0.6}]])
def test_a_wallet_drawdown_is_found_at_any_depth_and_case(run_suite, tmp_path, wallet):
    stats = strategy_stats("S", drawdown={"max_drawdown_account": 0.01, "max_relative_drawdown": 0.01})
    stats["wallet_stats"] = wallet
    run = _backtest(run_suite, write_json(tmp_path, "r", result(("S", stats))))
    check = run.check("backtest_max_drawdown[S]")
    assert (check["status"], check["measured"]) == ("failed", 0.6), check


def test_our_format_with_two_drawdowns_that_differ_is_ambiguous(run_suite, tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"strategy": "s", "sharpe": 1, "winrate": 0.6, "max_drawdown": 0.01, '
                    '"max_drawdown_account": 0.6, "trades": 100}')
    run = _backtest(run_suite, path)
    assert "max_drawdown is given twice with different values" in run.check("backtest_summary_valid[s]")["message"]
