"""The suite as users run it, in a healthy world: every criterion passes and the evidence says so."""

from __future__ import annotations

import json

import pytest

from deploy_tool.evidence import SCHEMA

EXPECTED_IDS = {
    "okx_public_time_ok", "okx_public_time_latency", "okx_clock_skew", "okx_no_maintenance",
    "trades_fresh",
    "backtest_summary_valid[sandbox-momentum]", "backtest_sharpe[sandbox-momentum]",
    "backtest_winrate[sandbox-momentum]", "backtest_max_drawdown[sandbox-momentum]",
    "backtest_fresh[sandbox-momentum]", "backtest_min_trades[sandbox-momentum]",
    "risk_allocation", "risk_single_trade_loss", "risk_daily_loss", "risk_order_notional_cap",
    "account_no_withdraw", "account_ip_bound", "account_facts", "account_equity", "secrets_not_in_code",
    "admin_health", "admin_mode", "control_file_valid", "control_dir_writable",
}


def test_healthy_world_passes_with_complete_evidence(run_suite, sandbox):
    run = run_suite()
    run.result.assert_outcomes(passed=len(EXPECTED_IDS))
    assert run.result.ret == 0
    doc = run.evidence
    assert doc["schema"] == SCHEMA
    assert doc["verdict"] == "pass"
    assert set(run.statuses()) == EXPECTED_IDS
    assert set(run.statuses().values()) == {"passed"}
    for key in ("started_at", "finished_at", "tool_version", "host", "actor", "thresholds", "targets", "inputs",
                "skipped", "html_report"):
        assert key in doc, key
    assert doc["started_at"].endswith("Z") and doc["finished_at"] >= doc["started_at"]
    assert doc["thresholds"]["min_sharpe"] == 0.2 and doc["thresholds"]["api_latency_threshold_ms"] == 300
    assert doc["targets"]["okx_base_url"] == sandbox.okx_url
    assert doc["targets"]["database_url"] == sandbox.database_url
    assert doc["inputs"]["backtest_summary"]["sha256"] and len(doc["inputs"]["backtest_summary"]["sha256"]) == 64
    assert doc["skipped"] == []
    assert doc["html_report"] == run.html_files[0].name
    assert run.json_files[0].stem == run.html_files[0].stem
    # complete by the tool's own manifest, signed, and saying so
    assert set(doc["manifest"]) == EXPECTED_IDS and doc["opens_real"] == {"ok": True, "why": []}
    assert [a.name for a in run.attestations] == [doc["attestation"]] == [f"{run.json_files[0].stem}.intoto.json"]
    assert doc["signed_by"] and doc["run_id"]
    latency = run.check("okx_public_time_latency")
    assert latency["unit"] == "ms" and latency["threshold"] == 300 and 0 < latency["measured"] < 300
    assert latency["marker"] == "okx" and latency["required"] is True
    fresh = run.check("trades_fresh")
    assert fresh["unit"] == "s" and 0 <= fresh["measured"] < 5
    run.result.stdout.fnmatch_lines(["*preflight verdict: PASS*", "evidence: *preflight-*.html", "evidence: *preflight-*.json"])


def test_html_puts_verdict_first_then_checks_then_environment(run_suite):
    html = run_suite().html
    verdict_at = html.index('id="gd-verdict"')
    checks_at = html.index('id="gd-checks"')
    env_at = html.index('id="gd-env"')
    assert verdict_at < checks_at < env_at
    assert "Verdict: PASS" in html
    assert "<th>Measured</th><th>Threshold</th><th>Unit</th>" in html
    assert "okx_public_time_latency" in html
    # self-contained: the stylesheet is inline, including the ordering rules
    assert '<link href="' not in html and ".gd-verdict" in html


def test_evidence_is_never_overwritten(run_suite, tmp_path):
    first = run_suite(evidence_dir=tmp_path / "ev")
    second = run_suite(evidence_dir=tmp_path / "ev")
    files = second.json_files
    assert len(files) == 2
    assert [a.name for a in second.attestations] == sorted(f"{f.stem}.intoto.json" for f in files)
    assert len(sorted(second.evidence_dir.glob("preflight-*.html"))) == 2
    stems = {f.stem for f in files}
    assert len(stems) == 2
    for f in files:
        assert json.loads(f.read_text())["verdict"] == "pass"
    assert first.result.ret == second.result.ret == 0


def test_markers_select_groups(run_suite):
    run = run_suite("-m", "not db")
    assert run.result.ret == 0
    assert run.check("trades_fresh")["status"] == "skipped"
    assert "deselected by -m 'not db'" in run.check("trades_fresh")["message"]
    assert {s["id"] for s in run.evidence["skipped"]} == {"trades_fresh"}
    assert run.evidence["skipped"][0]["required"] is True


def test_pyargs_works_from_any_directory(pytester, sandbox, monkeypatch, tmp_path):
    monkeypatch.setenv(sandbox.token_env, sandbox.token)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = pytester.runpytest_subprocess("--pyargs", "preflight_tests", *sandbox.preflight_args(),
                                           "--evidence-dir", str(elsewhere / "ev"))
    assert result.ret == 0, result.stdout.str()
    (evidence,) = [p for p in (elsewhere / "ev").glob("*.json") if not p.name.endswith(".intoto.json")]
    assert [p.name for p in (elsewhere / "ev").glob("*.intoto.json")] == [f"{evidence.stem}.intoto.json"]


@pytest.mark.parametrize("layout", ["object", "list", "strategies"])
def test_each_strategy_is_its_own_check(run_suite, sandbox, layout):
    a = {"strategy": "alpha", "sharpe": 0.9, "winrate": 0.6, "max_drawdown": 0.02, "trades": 120, "generated_at": _now()}
    b = {"strategy": "beta", "sharpe": 0.1, "winrate": 0.6, "max_drawdown": 0.02, "trades": 120, "generated_at": _now()}
    doc = {"object": a, "list": [a, b], "strategies": {"strategies": [a, b]}}[layout]
    sandbox.backtest_summary.write_text(json.dumps(doc))
    run = run_suite("-m", "backtest")
    statuses = run.statuses()
    assert statuses["backtest_sharpe[alpha]"] == "passed"
    if layout == "object":
        assert "backtest_sharpe[beta]" not in statuses
        assert run.result.ret == 0
    else:
        assert statuses["backtest_sharpe[beta]"] == "failed"
        assert "beta: sharpe 0.1 is below the minimum 0.2" in run.check("backtest_sharpe[beta]")["message"]
        assert run.result.ret == 1


def _now() -> str:
    from deploy_tool.times import iso_utc, utc_now

    return iso_utc(utc_now())
