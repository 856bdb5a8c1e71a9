"""Observation: backwards readers, window edges, midnight rollover, bad lines, and every criterion."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from deploy_tool import criteria
from deploy_tool.probes import observe as obs_mod
from deploy_tool.settings import defaults
from deploy_tool.probes.observe import iter_lines_backwards, observe, read_audit_window, read_risk_events
from deploy_tool.times import iso_utc

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)


def _line(moment: dt.datetime, event: str, **extra) -> str:
    return json.dumps({"ts": iso_utc(moment), "event": event, **extra})


def _write(path, lines, ending="\n", tail=""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(("".join(line + ending for line in lines) + tail).encode())
    return path


@pytest.mark.parametrize("block", [7, 64, 65536])
def test_backwards_lines_crlf_blank_and_partial_tail(tmp_path, monkeypatch, block):
    monkeypatch.setattr(obs_mod, "BLOCK", block)
    path = _write(tmp_path / "f.jsonl", ["first", "", "second", "third line"], ending="\r\n", tail='{"ts": "2026-11')
    assert [x.rstrip(b"\r") for x in iter_lines_backwards(str(path))] == [b"third line", b"second", b"", b"first"]
    _write(path, ["only"], tail="")
    assert list(iter_lines_backwards(str(path))) == [b"only"]
    path.write_bytes(b"no newline at all")
    assert list(iter_lines_backwards(str(path))) == [], "a line still being written is not read yet"
    path.write_bytes(b"")
    assert list(iter_lines_backwards(str(path))) == []


def test_window_edges_and_counts(tmp_path):
    audit = tmp_path / "audit"
    start = NOW - dt.timedelta(minutes=10)
    _write(audit / "audit-2026-11-24.jsonl", [
        _line(start - dt.timedelta(seconds=1), "order_intent"),  # just before the window
        _line(start, "order_intent"),  # on the edge: inside
        _line(NOW - dt.timedelta(minutes=5), "order_result", status="filled"),
        json.dumps({"ts": int((NOW - dt.timedelta(minutes=4)).timestamp() * 1000), "type": "order_result", "status": "REJECTED"}),
        json.dumps({"ts": (NOW - dt.timedelta(minutes=3)).timestamp(), "event": "risk_block"}),
        "this is not json",
        _line(NOW - dt.timedelta(minutes=2), "risk_event"),
        _line(NOW - dt.timedelta(minutes=1), "heartbeat"),
    ], tail='{"ts": "2026-11-24T11:59:59Z", "event": "order_in')
    _write(audit / "deploy-2026-11-24.jsonl", [_line(NOW, "mode_switch")])  # our own audit is not the system's
    window = read_audit_window(str(audit), start, NOW)
    assert (window.order_intents, window.order_results, window.order_failures, window.risk_blocks,
            window.risk_events, window.bad_lines) == (1, 2, 1, 1, 1, 1)
    assert window.newest == NOW - dt.timedelta(minutes=1)
    assert [p.endswith("audit-2026-11-24.jsonl") for p in window.files] == [True]


def test_midnight_rollover_reads_yesterdays_tail(tmp_path):
    audit = tmp_path / "audit"
    now = dt.datetime(2026, 11, 24, 0, 5, tzinfo=UTC)
    _write(audit / "audit-2026-11-23.jsonl", [
        _line(now - dt.timedelta(hours=2), "order_intent"),
        _line(now - dt.timedelta(minutes=8), "order_intent"),
        _line(now - dt.timedelta(minutes=6), "risk_block"),
    ])
    _write(audit / "audit-2026-11-24.jsonl", [_line(now - dt.timedelta(minutes=2), "order_intent")])
    window = read_audit_window(str(audit), now - dt.timedelta(minutes=10), now)
    assert window.order_intents == 2 and window.risk_blocks == 1
    assert window.today_file.endswith("2026-11-24.jsonl") and len(window.files) == 2
    # a window inside today does not open yesterday's file
    assert len(read_audit_window(str(audit), now - dt.timedelta(minutes=3), now).files) == 1


def test_cost_follows_the_window_not_the_file(tmp_path):
    audit = tmp_path / "audit"
    old = [_line(NOW - dt.timedelta(hours=5), "order_intent")] * 100_000
    recent = [_line(NOW - dt.timedelta(seconds=30), "order_intent")] * 10
    _write(audit / "audit-2026-11-24.jsonl", old + recent)
    window = read_audit_window(str(audit), NOW - dt.timedelta(minutes=10), NOW)
    assert window.order_intents == 10
    assert window.scanned <= 10 + obs_mod.DISORDER_TOLERANCE + 1


def test_risk_events_csv(tmp_path):
    path = tmp_path / "risk.csv"
    rows = ["ts,kind,detail", f"{iso_utc(NOW - dt.timedelta(hours=1))},old,x",
            f"{iso_utc(NOW - dt.timedelta(minutes=9))},dd,\"quoted, with comma\"",
            f"{int((NOW - dt.timedelta(minutes=1)).timestamp() * 1000)},loss,y", "garbage-row,,"]
    _write(path, rows, ending="\r\n")
    window = read_risk_events(str(path), NOW - dt.timedelta(minutes=10), NOW)
    assert (window.exists, window.events, window.bad_rows) == (True, 2, 1)
    assert read_risk_events(str(tmp_path / "none.csv"), NOW, NOW).exists is False
    _write(path, ["time,kind"])
    from deploy_tool import ProbeError

    with pytest.raises(ProbeError, match="has no 'ts' column"):
        read_risk_events(str(path), NOW, NOW)


def _observation(tmp_path, lines, risk_rows=(), now=NOW):
    audit = tmp_path / "audit"
    _write(audit / f"audit-{now:%Y-%m-%d}.jsonl", lines)
    csv_path = _write(tmp_path / "risk.csv", ["ts,kind", *risk_rows])
    return observe(str(audit), str(csv_path), 600, now=now)


def test_every_criterion_passes_and_fails(tmp_path):
    m = lambda s: NOW - dt.timedelta(seconds=s)  # noqa: E731
    fill = {"status": "filled", "side": "buy", "price": 100.0, "fill_price": 100.02, "pnl": 0.5}
    healthy = _observation(tmp_path, [_line(m(60), "order_intent"), _line(m(59), "order_result", **fill),
                                      _line(m(30), "order_intent"), _line(m(29), "order_result", **fill)])
    limits = defaults(audit_max_silence=300, max_bad_audit_lines=0, max_risk_events=3, max_order_failure_rate=0.2,
                      max_risk_block_rate=0.5, min_signals=1, max_signals=10, capital=10000)
    assert all(judge(healthy, limits).ok for judge in criteria.OBSERVE_JUDGES)

    quiet = _observation(tmp_path, [_line(m(400), "order_intent")])
    crit = criteria.observe_audit_recent(quiet, defaults(audit_max_silence=300))
    assert not crit.ok and crit.measured == 400 and "has gone quiet" in crit.message

    bad = _observation(tmp_path, [_line(m(10), "order_intent"), "{broken", "[1, 2]"])
    crit = criteria.observe_audit_parseable(bad, defaults(max_bad_audit_lines=1))
    assert not crit.ok and crit.measured == 2 and "2 unusable audit line(s) (unparseable, undated or dated in the future) in the last 10m, max 1" in crit.message

    risky = _observation(tmp_path, [_line(m(10), "order_intent")], risk_rows=[f"{iso_utc(m(i))},dd" for i in range(1, 5)])
    crit = criteria.observe_risk_events(risky, defaults(max_risk_events=3))
    assert not crit.ok and crit.measured == 4 and "4 risk events in the last 10m" in crit.message and "max 3" in crit.message

    failing = _observation(tmp_path, [_line(m(9), "order_result", status="error"), _line(m(8), "order_result", status="filled"),
                                      _line(m(7), "order_result", status="failed")])
    crit = criteria.observe_order_failure_rate(failing, defaults(max_order_failure_rate=0.2))
    assert not crit.ok and crit.measured == pytest.approx(0.6667, abs=1e-3) and "2 of 3 order results failed" in crit.message

    blocked = _observation(tmp_path, [_line(m(9), "order_intent"), _line(m(8), "risk_block"), _line(m(7), "order_intent"),
                                      _line(m(6), "risk_block")])
    crit = criteria.observe_risk_block_rate(blocked, defaults(max_risk_block_rate=0.5))
    assert not crit.ok and crit.measured == 1.0 and "2 risk blocks for 2 order intents" in crit.message
    only_blocks = _observation(tmp_path, [_line(m(8), "risk_block")])
    assert not criteria.observe_risk_block_rate(only_blocks, defaults(max_risk_block_rate=0.5)).ok

    silent = _observation(tmp_path, [_line(m(8), "heartbeat")])
    crit = criteria.observe_signals(silent, defaults(min_signals=1, max_signals=None))
    assert not crit.ok and "the strategy is silent" in crit.message
    busy = _observation(tmp_path, [_line(m(i), "order_intent") for i in range(1, 6)])
    crit = criteria.observe_signals(busy, defaults(min_signals=0, max_signals=4))
    assert not crit.ok and "trading too much" in crit.message

    slipping = _observation(tmp_path, [_line(m(9), "order_result", status="filled", side="buy", price=100.0, fill_price=101.0),
                                       _line(m(8), "order_result", status="filled", side="sell", price=100.0, fill_price=99.0),
                                       _line(m(7), "order_result", status="filled", side="sell", price=100.0, fill_price=101.0)])
    crit = criteria.observe_slippage(slipping, defaults(max_slippage_bps=30))
    assert not crit.ok and round(crit.measured, 2) == 33.33 and "over 3 fill(s)" in crit.message  # (100+100-100)/3
    unpriced = _observation(tmp_path, [_line(m(9), "order_result", status="filled")])
    crit = criteria.observe_slippage(unpriced, defaults())
    assert not crit.ok and "carry no intended and fill price" in crit.message and "--audit-price-field" in crit.message
    losing = _observation(tmp_path, [_line(m(9), "order_result", **{**fill, "pnl": -150.0}),
                                     _line(m(8), "order_result", **{**fill, "pnl": -60.0})])
    crit = criteria.observe_realized_pnl(losing, defaults(capital=10000, max_daily_loss=0.02))
    assert not crit.ok and crit.measured == pytest.approx(0.021) and "roll back now" in crit.message
    crit = criteria.observe_realized_pnl(losing, defaults())
    assert not crit.ok and "set --capital" in crit.message

    missing = observe(str(tmp_path / "nowhere"), str(tmp_path / "none.csv"), 600, now=NOW)
    crit = criteria.observe_audit_recent(missing, defaults(audit_max_silence=300))
    assert not crit.ok and "no audit file for today (2026-11-24)" in crit.message


def test_future_lines_are_bad_and_never_fresh(tmp_path):
    m = lambda s: NOW - dt.timedelta(seconds=s)  # noqa: E731
    future = json.dumps({"ts": iso_utc(NOW + dt.timedelta(hours=1)), "event": "order_intent"})
    naive_local = json.dumps({"ts": "2026-11-24T20:00:00", "event": "order_intent"})  # UTC+8 wall clock, no offset
    obs = _observation(tmp_path, [_line(m(400), "order_intent"), future, naive_local])
    quiet = criteria.observe_audit_recent(obs, defaults(audit_max_silence=300))
    assert not quiet.ok and quiet.measured == 400, "a line dated in the future must not pass for a fresh one"
    bad = criteria.observe_audit_parseable(obs, defaults(max_bad_audit_lines=0))
    assert not bad.ok and bad.measured == 2
    assert obs.audit.order_intents == 1, "only the line from 400 s ago counts; the future ones do not"
    assert any("no UTC offset; read as UTC it lies 28800 s in the future" in e for e in obs.audit.bad_examples)
    assert any("it lies 3600 s in the future" in e for e in obs.audit.bad_examples)
    # within the clock-skew allowance a line is fine
    close = _observation(tmp_path, [json.dumps({"ts": iso_utc(NOW + dt.timedelta(milliseconds=500)), "event": "x"})])
    assert close.audit.bad_lines == 0 and criteria.observe_audit_recent(close, defaults()).ok


def test_risk_rows_that_cannot_be_dated_fail_the_risk_check(tmp_path):
    obs = _observation(tmp_path, [_line(NOW, "order_intent")], risk_rows=["yesterday-ish,dd", f"{iso_utc(NOW)},dd",
                                                                         f"{iso_utc(NOW + dt.timedelta(days=1))},dd"])
    crit = criteria.observe_risk_events(obs, defaults(max_risk_events=3))
    assert not crit.ok and "2 row(s) of" in crit.message and "cannot be dated" in crit.message
    assert "a risk event may hide there" in crit.message


def test_a_missing_risk_csv_fails_unless_allowed(tmp_path):
    audit = tmp_path / "audit"
    _write(audit / f"audit-{NOW:%Y-%m-%d}.jsonl", [_line(NOW, "order_intent")])
    obs = observe(str(audit), str(tmp_path / "wrong" / "risk.csv"), 600, now=NOW)
    crit = criteria.observe_risk_events(obs, defaults())
    assert not crit.ok and f"no risk-events file at {tmp_path / 'wrong' / 'risk.csv'}" in crit.message
    assert "--allow-missing-risk-csv" in crit.message
    assert criteria.observe_risk_events(obs, defaults(allow_missing_risk_csv=True)).ok


def test_a_wrong_risk_csv_path_fails_the_suite_and_watch(run_suite, sandbox, tmp_path):
    import subprocess
    import sys

    wrong = str(tmp_path / "typo.csv")
    run = run_suite("-m", "observe", "--audit-dir", str(sandbox.audit_dir), "--risk-events-csv", wrong)
    assert run.result.ret == 1 and run.check("observe_risk_events")["status"] == "failed"
    allowed = run_suite("-m", "observe", "--audit-dir", str(sandbox.audit_dir), "--risk-events-csv", wrong,
                        "--allow-missing-risk-csv")
    assert allowed.check("observe_risk_events")["status"] == "passed"
    args = [*sandbox.watch_args(), "--risk-events-csv", wrong, "--interval", "0.5s", "--duration", "30s"]
    done = subprocess.run([sys.executable, "-m", "deploy_tool", "watch", *args], capture_output=True, text=True,
                          timeout=60, env={**__import__("os").environ, sandbox.token_env: sandbox.token}, cwd=tmp_path)
    assert done.returncode == 1 and "observe_risk_events: no risk-events file" in done.stdout


# --- the latest round's slice (issue 17, point 1 in part) -------------------------------------------------


def _orders(directory, now, clean_s: float, failing: int, per_s: float = 1.0) -> None:
    """An audit of `clean_s` seconds of filled orders, then `failing` rejected ones in the last second."""
    import datetime as dt
    import json as _json

    lines = []
    moments = int(clean_s * per_s)
    for i in range(moments, 0, -1):
        at = now - dt.timedelta(seconds=1 + i / per_s)
        lines.append({"ts": at.isoformat(), "event": "order_intent"})
        lines.append({"ts": at.isoformat(), "event": "order_result", "status": "filled", "price": 100, "fill_price": 100})
    for i in range(failing):
        at = now - dt.timedelta(seconds=0.9 - i * 0.1)
        lines.append({"ts": at.isoformat(), "event": "order_intent"})
        lines.append({"ts": at.isoformat(), "event": "order_result", "status": "rejected"})
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"audit-{now:%Y-%m-%d}.jsonl").write_text("".join(_json.dumps(x) + "\n" for x in lines))


def test_a_total_outage_breaches_in_the_first_round_that_sees_it(tmp_path):
    """Ten minutes of clean history, then every order rejected for the last second: over the window that is
    1 %, far below the 20 % limit; over the latest round's slice it is 100 %."""
    from deploy_tool.criteria import observe_order_failure_rate
    from deploy_tool.probes.observe import observe
    from deploy_tool.settings import defaults
    from deploy_tool.times import utc_now

    now = utc_now()
    _orders(tmp_path / "audit", now, clean_s=590, failing=6)
    settings = defaults(interval=1.0)
    obs = observe(str(tmp_path / "audit"), str(tmp_path / "none.csv"), 600, now=now, recent_s=settings.interval)
    assert obs.audit.order_results == 596 and obs.audit.recent is not None and obs.audit.recent.order_results == 6
    verdict = observe_order_failure_rate(obs, settings)
    assert not verdict.ok and verdict.measured == 1.0
    assert "in the last 1s: 6 of 6 order results failed (100.0%)" in verdict.message
    # window only (what the tool judged before): 6 of 596, 1 %, passes
    window_only = observe(str(tmp_path / "audit"), str(tmp_path / "none.csv"), 600, now=now)
    assert observe_order_failure_rate(window_only, settings).ok
    # too few in the slice to judge (--min-orders): the window's rate alone decides
    few = defaults(interval=1.0, min_orders=7)
    assert observe_order_failure_rate(obs, few).ok
