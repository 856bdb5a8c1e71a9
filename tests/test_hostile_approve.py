"""A hostile review of the ramp's approvals, the audit read behind them, the judge, and notifications.

Each test is an attack, written as the SAFE behaviour it should meet: a test that fails shows a hole.

(1) an approval that approves a wait it was not given for, or a refusal where one legitimate wait exists;
(2) `audit.read_since` missing an approval that was written, or reading far more than it needs;
(3) the judge passing when the live trades do worse, or a round crashing into something other than an error;
(4) a traceback or a secret from `ramp approve`, or from a `--judge-backtest` that is no usable file;
(5) background notifications racing the audit.

The sandbox and the fake clock of `test_guard_clock.py` are used as they are.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import socket
import subprocess
import sys
import threading
import time
from typing import Callable

import pytest

from deploy_tool import analysis as analysis_mod
from deploy_tool import audit, fileops
from deploy_tool.analysis import ERROR, FAIL, PASS, Round, WatchConfig, judge_trades
from deploy_tool.commands.ramp import approvals, approve, ask_webhook, open_waits
from deploy_tool.commands.watch import watch
from deploy_tool.criteria import judged, observe_realized_pnl, observe_vs_backtest
from deploy_tool.probes import measure_baseline, measure_observation
from deploy_tool.probes.backtest import Strategy
from deploy_tool.probes.observe import AuditWindow, Observation, RiskWindow, observe
from deploy_tool.redact import Redactor
from deploy_tool.settings import defaults
from deploy_tool.times import iso_utc, utc_now
from waiting import holds_within
from test_guard_clock import (  # noqa: F401  (fixtures used by name)
    FakeClock,
    events,
    from_cli,
    live,
    modes,
    run_ramp,
    world,
)

GD = [sys.executable, "-m", "deploy_tool"]
NESTED = "[" * 100_000 + "]" * 100_000  # valid JSON; json.loads raises RecursionError, not ValueError


# --- helpers ------------------------------------------------------------------------------------------




def waiting_record(wait_id: str, channels: list | None = None, step_to: int | None = 2, **extra) -> dict:
    """What `_wait` writes when a ramp waits before step 2 of 0.5%,1%."""
    return {"event": "ramp_waiting", "actor": "bob", "wait_id": wait_id, "for": "step 2/2 (1%)",
            "channels": channels if channels is not None else ["http://127.0.0.1:8080", "/srv/ctl.json"],
            "step_to": step_to, "allocation_to": 0.01, "held_allocation": 0.005, "needs": ["approval"],
            "reason": "confirmation before every raise", **extra}


def today_file(directory) -> str:
    return os.path.join(str(directory), f"deploy-{utc_now():%Y-%m-%d}.jsonl")


def raw_line(directory, line: str) -> None:
    """A line in today's audit file as someone else wrote it (no `ts` stamped by `audit.append`)."""
    os.makedirs(str(directory), exist_ok=True)
    with open(today_file(directory), "a", encoding="utf-8") as fh:
        fh.write(line)


def _obs(returns: list[float]) -> Observation:
    return Observation(window_s=600, now=utc_now(), audit_dir="audit", audit=AuditWindow(trade_returns=list(returns)),
                       risk=RiskWindow("risk.csv"))


def _returns(low: float, high: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.uniform(low, high) for _ in range(n)]


BASE = _returns(-0.0005, 0.001, 200, 1)


def trading_audit(tmp_path, results: list[dict]) -> tuple[str, str]:
    """The trading system's audit of today (an order_intent and an order_result each), and an empty risk csv."""
    directory = tmp_path / "system-audit"
    directory.mkdir()
    now = utc_now()
    lines = []
    for n, result in enumerate(results):
        at = (now - dt.timedelta(seconds=2 * n + 1)).isoformat()
        lines.append({"ts": at, "event": "order_intent"})
        lines.append({"ts": at, "event": "order_result", "status": "filled", **result})
    (directory / f"audit-{now:%Y-%m-%d}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in reversed(lines)))
    (tmp_path / "risk.csv").write_text("ts,kind,detail\n")
    return str(directory), str(tmp_path / "risk.csv")


# --- (1) approvals: the right wait, and only it ---------------------------------------------------------


def test_approve_refuses_a_wait_whose_ramp_ended_on_a_signal(live):
    """The ramp waits for approval; SIGTERM ends it (paused first, as it should). Its wait is not open any
    more, but `watch_stopped` is not among the events that close a wait: `ramp approve` "approves" it and
    says the waiting ramp goes on at its next round, while no ramp runs."""
    def terminate_in_the_wait(clock: FakeClock) -> None:
        if events(live, "ramp_waiting"):
            raise analysis_mod.Terminated("SIGTERM")

    code, lines, _ = run_ramp(live, "--wait-for-approval", hold="1s", on_sleep=terminate_in_the_wait)
    assert code == 1 and modes(live) == ("paused", "paused"), lines
    done, text = approve(str(live.audit_dir), "alice", "looks fine")
    assert not done, f"approved the wait of a ramp that a signal ended: {text!r}"


def test_step_and_wait_id_must_both_name_the_wait(tmp_path):
    """--step of one wait with --wait-id of another: nothing is approved (either one alone would pick)."""
    directory = str(tmp_path / "audit")
    audit.append(directory, waiting_record("a1a1a1a1a1a1", channels=["ctl-a"], step_to=2))
    audit.append(directory, waiting_record("b2b2b2b2b2b2", channels=["ctl-b"], step_to=3))
    assert not approve(directory, "alice", "go", step=3, wait_id="a1a1a1a1a1a1")[0]
    assert not approve(directory, "alice", "go", wait_id="a1a1a1a1")[0], "a prefix of a wait id approved it"
    assert not audit.read_events(directory, ("ramp_approved",))
    assert approve(directory, "alice", "go", step=2, wait_id="a1a1a1a1a1a1")[0]


def test_an_approval_written_before_the_wait_with_a_guessed_id_approves_nothing(tmp_path):
    """Approvals are matched on the wait's id only; it is uuid4's first 12 hex digits (48 bits), minted when
    the wait begins, so a line written earlier cannot name it. An earlier approval of any other id is not
    taken."""
    directory = str(tmp_path / "audit")
    since = iso_utc(utc_now() - dt.timedelta(minutes=10))
    audit.append(directory, {"event": "ramp_approved", "actor": "mallory", "wait_id": "000000000000"})
    audit.append(directory, {"event": "ramp_approved", "actor": "mallory", "wait_id": None})
    audit.append(directory, waiting_record("c3c3c3c3c3c3"))
    assert approvals(directory, "c3c3c3c3c3c3", since) is None
    assert approvals(directory, "c3c3c3c3c3c3") is None


# --- (2) read_since: every approval that was written, and no more reading than needed ------------------------


@pytest.mark.parametrize("late", [
    "lagging host",      # another deployment's watch on a host whose clock is 20 minutes behind
    "no ts",             # a line someone wrote by hand: {"event": "note", ...}
])
def test_read_since_finds_an_approval_that_an_out_of_order_line_follows(tmp_path, late):
    """The backwards read stops at the first line older than `since`: one such line after the approval (a
    host whose clock lags more than the 10 minutes' slack, or a line without `ts`) hides it, round after
    round, and the ramp waits for ever on an approval that is in its audit."""
    directory = tmp_path / "audit"
    since = iso_utc(utc_now() - dt.timedelta(minutes=10))
    audit.append(str(directory), waiting_record("a1a1a1a1a1a1"))
    audit.append(str(directory), {"event": "ramp_approved", "actor": "alice", "wait_id": "a1a1a1a1a1a1"})
    if late == "lagging host":
        audit.append(str(directory), {"ts": iso_utc(utc_now() - dt.timedelta(minutes=20)), "event": "watch_round",
                                      "actor": "other@lagging-host"})
    else:
        raw_line(directory, json.dumps({"event": "note", "text": "restarted the feed"}) + "\n")
    audit.append(str(directory), {"event": "watch_round", "actor": "test"})  # the wait's own next round
    assert approvals(str(directory), "a1a1a1a1a1a1", since) is not None, "the approval in the audit was not seen"


def test_a_waiting_ramp_sees_its_approval_when_a_lagging_hosts_line_follows_it(live):
    """End to end: the ramp waits; alice approves; another deployment's watch on a host whose clock lags 20
    minutes writes a round into the same audit directory. The ramp never sees the approval."""
    state = {"approved": False, "rounds_after": 0}

    def approve_then_a_lagging_line(clock: FakeClock) -> None:
        if not state["approved"]:
            if events(live, "ramp_waiting"):
                done, text = approve(str(live.audit_dir), "alice", "go")
                assert done, text
                audit.append(str(live.audit_dir), {"ts": iso_utc(utc_now() - dt.timedelta(minutes=20)),
                                                   "event": "watch_round", "actor": "other@lagging-host"})
                state["approved"] = True
        else:
            state["rounds_after"] += 1
            if state["rounds_after"] > 8:
                raise KeyboardInterrupt

    code, lines, _ = run_ramp(live, "--wait-for-approval", hold="1s", on_sleep=approve_then_a_lagging_line)
    assert state["approved"], lines
    assert events(live, "ramp_confirmed"), ("approved, and the ramp went on waiting for 8 rounds:\n"
                                            + "\n".join(lines[-5:]))


def test_an_approval_appended_after_a_torn_line_is_still_read(tmp_path):
    """The audit's last line was cut short (a writer killed mid-line, a disk that filled): `audit.append`
    writes the approval right after it, on the same line, and no reader can parse the pair. The waiting
    ramp never sees its approval, and `ramp approve` does not see it either (it would approve again)."""
    directory = tmp_path / "audit"
    since = iso_utc(utc_now() - dt.timedelta(minutes=10))
    audit.append(str(directory), waiting_record("a1a1a1a1a1a1"))
    raw_line(directory, '{"ts":"' + iso_utc(utc_now()) + '","event":"watch_round","measurements":{"observe_')
    done, text = approve(str(directory), "alice", "go")
    assert done, text
    assert approvals(str(directory), "a1a1a1a1a1a1", since) is not None, "the approval glued to a torn line is lost"


def test_read_since_reads_crlf_lines_and_a_later_days_file(tmp_path):
    """A file converted to CRLF, and a file of a later day (a host whose clock runs a day ahead) holding
    lines older than `since`: neither hides the approval."""
    directory = tmp_path / "audit"
    directory.mkdir()
    now = utc_now()
    since = iso_utc(now - dt.timedelta(minutes=10))
    tomorrow = (now + dt.timedelta(days=1)).date()
    (directory / f"deploy-{tomorrow}.jsonl").write_text(
        json.dumps({"ts": iso_utc(now - dt.timedelta(hours=3)), "event": "watch_round"}) + "\n")
    with open(today_file(directory), "wb") as fh:
        for record in ({"ts": iso_utc(now), "event": "ramp_approved", "wait_id": "a1a1a1a1a1a1"},
                       {"ts": iso_utc(now), "event": "watch_round"}):
            fh.write(json.dumps(record).encode() + b"\r\n")
    assert approvals(str(directory), "a1a1a1a1a1a1", since) is not None


def test_read_since_costs_a_huge_line_once_not_its_square(tmp_path):
    """`iter_lines_backwards` adds each 64 KB block in front of what it carries and splits the whole again:
    a line of n bytes costs n^2/64K bytes copied and scanned. One 16 MB line (a round with a large
    measurement, a pasted blob) takes seconds, 32 MB ~13 s, every round of a wait (and every round of
    watch, which reads the trading system's audit the same way)."""
    directory = tmp_path / "audit"
    directory.mkdir()
    now = utc_now()
    with open(today_file(directory), "wb") as fh:
        fh.write(json.dumps({"ts": iso_utc(now - dt.timedelta(minutes=1)), "event": "watch_round",
                             "blob": "a" * (16 << 20)}).encode() + b"\n")
        fh.write(json.dumps({"ts": iso_utc(now), "event": "ramp_approved", "wait_id": "a1a1a1a1a1a1"}).encode() + b"\n")
    started = time.perf_counter()
    found = audit.read_since(str(directory), ("ramp_approved",), iso_utc(now - dt.timedelta(minutes=10)))
    took = time.perf_counter() - started
    assert [e["wait_id"] for e in found] == ["a1a1a1a1a1a1"]
    assert took < 1.0, f"reading back over one 16 MB line took {took:.1f} s"


# --- (3) the judge ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [-1.0, 0.0])
def test_losing_sells_with_a_signed_or_zero_size_are_not_dropped_from_the_judge(tmp_path, size):
    """Half the live trades are buys that gain a little, half are sells that lose 5 % each, written with a
    negative size (signed quantity) or a size of 0: `_fill` keeps only positive sizes, so the judge sees the
    buys alone and passes a strategy that does far worse than its backtest."""
    results = []
    for n in range(20):
        results.append({"side": "buy", "sz": 1.0, "price": 100.0, "fill_price": 100.0, "pnl": 0.05})
        results.append({"side": "sell", "sz": size, "price": 100.0, "fill_price": 100.0, "pnl": -5.0})
    audit_dir, risk = trading_audit(tmp_path, results)
    obs = observe(audit_dir, risk, 600, recent_s=30)
    found = observe_vs_backtest(obs, Strategy("S", trade_returns=tuple(BASE)), defaults())
    assert found.outcome != PASS, (f"{len(obs.audit.trade_returns)} of 40 live trades judged: "
                                   f"{found.message}")


def test_a_nan_among_the_live_returns_never_passes_the_judge():
    """scipy propagates NaN: one NaN return makes p NaN, and `p < fail_p` and `p < marginal_p` are both
    False: "pass". (The producers filter non-finite values today; the judge itself does not.)"""
    worse = [-0.05] * 19 + [math.nan]
    found = observe_vs_backtest(_obs(worse), Strategy("S", trade_returns=tuple(BASE)), defaults())
    assert found.outcome != PASS, found.message


def test_a_baseline_of_identical_returns_still_fails_live_trades_that_do_worse():
    """A backtest whose every trade hit the same take-profit (all ties); half the live trades hit it too,
    half lose: the ties do not hide the losses."""
    found = observe_vs_backtest(_obs([0.01] * 10 + [-0.05] * 10), Strategy("S", trade_returns=(0.01,) * 40),
                                defaults())
    assert found.outcome == FAIL, found.message
    equal = observe_vs_backtest(_obs([0.01] * 20), Strategy("S", trade_returns=(0.01,) * 40), defaults())
    assert equal.outcome == PASS, equal.message  # equal is not worse


def test_live_returns_are_finite_however_small_the_notional(tmp_path):
    """A fill whose size x price underflows to a subnormal (a dust order, a price in the wrong unit): its
    return is pnl / 1e-320 = -inf, kept as a trade return."""
    results = [{"side": "buy", "sz": 1.0, "price": 100.0, "fill_price": 100.0, "pnl": 0.01} for _ in range(12)]
    results.append({"side": "sell", "sz": 1e-160, "price": 1e-160, "fill_price": 1e-160, "pnl": -1.0})
    audit_dir, risk = trading_audit(tmp_path, results)
    obs = observe(audit_dir, risk, 600, recent_s=30)
    assert all(math.isfinite(r) for r in obs.audit.trade_returns), obs.audit.trade_returns[-3:]


def test_a_breach_on_a_judge_that_saw_infinite_returns_is_paused_and_its_snapshot_written(world):
    """The judge fails on live returns that are -inf (see above): its details hold the median, -inf. The
    breach pauses, then `snapshot` dumps the measurements with allow_nan=False: ValueError, which it does
    not catch: watch ends in a traceback and no snapshot is written."""
    cfg, channels = from_cli(world, "watch", "--duration", "5s", "--interval", "1s")
    judge = observe_vs_backtest(_obs([-math.inf] * 20), Strategy("S", trade_returns=tuple(BASE)), defaults())
    assert judge.outcome == FAIL
    lines: list[str] = []
    try:
        code = watch(cfg, channels, lines.append, clock=FakeClock(world.system),
                     measure=lambda n, c: Round(n, utc_now(), [judge]))
    except Exception as exc:
        pytest.fail(f"watch crashed after its pause: {type(exc).__name__}: {exc}")
    assert code == 1 and modes(world) == ("paused", "paused"), lines
    assert list(world.evidence_dir.glob("watch-breach-*.json")), "no snapshot of the breach"


@pytest.mark.parametrize("odd", ["dust notional", "deeply nested line"])
def test_one_odd_line_in_the_systems_audit_does_not_turn_a_loss_into_an_error(tmp_path, odd):
    """Ten fills lose 100 each (10 % of capital, far over --max-daily-loss): the loss check fails, a breach
    at once (--failure-limit 1). Add one odd line: a fill whose size x price underflows to 0.0
    (ZeroDivisionError in `_fill`), or a line nested 100 000 deep (RecursionError, which `_scan_audit` does
    not catch). The whole observation "crashes": every observe check is an ERROR, and the breach waits for
    --consecutive-error-limit + 1 rounds instead."""
    results = [{"side": "buy", "sz": 1.0, "price": 100.0, "fill_price": 100.0, "pnl": -100.0} for _ in range(10)]
    if odd == "dust notional":
        results.append({"side": "buy", "sz": 1e-200, "price": 1e-200, "fill_price": 1e-200, "pnl": 0.0})
    audit_dir, risk = trading_audit(tmp_path, results)
    if odd == "deeply nested line":
        path = os.path.join(audit_dir, f"audit-{utc_now():%Y-%m-%d}.jsonl")
        with open(path, "a") as fh:
            fh.write(NESTED + "\n")
    settings = defaults(audit_dir=audit_dir, risk_events_csv=risk, capital=10_000.0, interval=30.0)
    found = judged(measure_observation(settings), observe_realized_pnl, settings)
    assert found.outcome == FAIL, f"{found.outcome}: {found.message}"


# --- (4) tracebacks and secrets -----------------------------------------------------------------------------


@pytest.mark.parametrize("hostile", ["deeply nested line", "channels that are numbers", "needs that is a number"])
def test_ramp_approve_on_a_hostile_audit_line_ends_without_a_traceback(tmp_path, hostile):
    """Anyone who can approve can write the audit directory. One line it holds: nested 100 000 deep
    (RecursionError from json.loads, caught nowhere: every `read_events` and `read_since` crashes, `ramp
    approve` and a ramp's start and its waits too), or a wait whose fields have unexpected types."""
    directory = tmp_path / "audit"
    if hostile == "deeply nested line":
        audit.append(str(directory), waiting_record("a1a1a1a1a1a1"))
        raw_line(directory, NESTED + "\n")
    elif hostile == "channels that are numbers":
        audit.append(str(directory), waiting_record("a1a1a1a1a1a1", channels=[1, 2]))
        audit.append(str(directory), waiting_record("b2b2b2b2b2b2", channels=[3, 4]))
    else:
        audit.append(str(directory), waiting_record("a1a1a1a1a1a1", needs=5))
    done = subprocess.run(GD + ["ramp", "approve", "--deploy-audit-dir", str(directory)], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert "Traceback" not in done.stderr, done.stderr[-600:]
    assert done.returncode in (0, 1), done


def test_a_hostile_audit_line_during_a_hold_does_not_crash_the_ramp_unguarded(live):
    """The same nested line lands in the audit while step 1 holds. After the hold the ramp reads the audit
    back (`_paused_since`, then the wait's approvals): RecursionError escapes `ramp()`, outside any analysis
    run: a traceback, the allocation raised, the mode real, nothing guarding."""
    planted: list[bool] = []

    def plant(clock: FakeClock) -> None:
        if not planted and events(live, "ramp_step"):
            raw_line(live.audit_dir, NESTED + "\n")
            planted.append(True)

    try:
        code, lines, _ = run_ramp(live, hold="1s", on_sleep=plant)
    except Exception as exc:
        pytest.fail(f"the ramp crashed ({type(exc).__name__}) with allocation {live.admin.allocation} and modes "
                    f"{modes(live)}: nothing guards it now")
    assert planted
    assert code == 0 or modes(live) == ("paused", "paused"), lines


@pytest.mark.parametrize("what", ["fifo", "directory without marker", "marker is a fifo", "marker names a fifo",
                                  "huge", "symlink loop", "under a file"])
def test_a_judge_backtest_that_is_no_usable_file_is_an_error_round_at_once(tmp_path, what):
    """--judge-backtest names a FIFO, a directory, a huge file or an unreadable path: an error criterion
    within moments (never a wait, a crash or a pass), its message free of the secret in the path."""
    secret = "s3cret-token-4242"
    where = tmp_path / secret
    where.mkdir()
    path = where / "result.json"
    if what == "fifo":
        os.mkfifo(path)
    elif what == "directory without marker":
        path = where / "results"
        path.mkdir()
    elif what == "marker is a fifo":
        path = where / "results"
        path.mkdir()
        os.mkfifo(path / ".last_result.json")
    elif what == "marker names a fifo":
        path = where / "results"
        path.mkdir()
        (path / ".last_result.json").write_text(json.dumps({"latest_backtest": "bt.json"}))
        os.mkfifo(path / "bt.json")
    elif what == "huge":
        with open(path, "wb") as fh:
            fh.truncate(300 * 1024 * 1024)  # sparse: nothing on disk
    elif what == "symlink loop":
        os.symlink(where / "b.json", path)
        os.symlink(path, where / "b.json")
    else:
        (where / "plain").write_text("{}")
        path = where / "plain" / "result.json"
    settings = defaults(judge_backtest=str(path))
    box: list = []
    thread = threading.Thread(target=lambda: box.append(measure_baseline(settings, Redactor([secret]))), daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(20)
    assert box, f"reading --judge-backtest ({what}) still runs after 20 s"
    baseline = box[0]
    assert baseline.error is not None and "Traceback" not in baseline.error
    assert secret not in baseline.error, baseline.error
    criterion = judge_trades(Observation(600, utc_now(), "audit", AuditWindow(trade_returns=BASE[:20]),
                                         RiskWindow("risk.csv")), baseline, defaults())
    assert criterion.outcome == ERROR, criterion.message
    assert time.monotonic() - started < 10


# --- (5) the webhook and notifications against the audit and the process ---------------------------------------


def test_a_webhook_that_never_finishes_its_headers_leaves_no_thread_behind_each_round(tmp_path):
    """Each ask runs in a thread that is left behind when late. A webhook (or a proxy in front of it) that
    trickles its headers a byte at a time holds each of those threads and its socket for as long as it
    likes: one more every round of a wait (every 30 s), until the process runs out of threads or file
    descriptors, and then a pause cannot open the control file or the admin API."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    stop = threading.Event()

    def trickle(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                while not stop.wait(0.02):
                    conn.sendall(b"a")
            except OSError:
                pass

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=trickle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/confirm"

    def askers() -> int:
        return sum(1 for t in threading.enumerate() if t.name == "confirm-url" and t.is_alive())

    before = askers()
    try:
        for _ in range(25):  # 25 rounds of a wait
            go, answer = ask_webhook(url, {"phase": "confirm-step"}, timeout_s=0.1)
            assert not go
        left = askers() - before
    finally:
        stop.set()
        server.close()
        holds_within(lambda: askers() <= before, 10)
    assert left <= 2, f"{left} threads (each holding a socket) left behind by 25 asks"


def test_records_from_a_notification_thread_and_the_main_loop_are_never_torn(tmp_path, monkeypatch):
    """A notification's delivery is recorded from its own thread while the loop records its rounds: every
    line whole and every line there, with the POSIX append and with the Windows (locked) append."""
    for windows in (False, True):
        monkeypatch.setattr(fileops, "WINDOWS", windows)
        directory = tmp_path / f"audit-{windows}"
        cfg = WatchConfig(defaults(deploy_audit_dir=str(directory)), actor="test",
                          redactor=Redactor(["sandbox-token-1234567"]))
        blob = "x" * 40_000 + "sandbox-token-1234567"

        def writer(name: str) -> None:
            for n in range(25):
                cfg.record({"event": "notify" if name != "main" else "watch_round", "who": name, "n": n,
                            "blob": blob})

        threads = [threading.Thread(target=writer, args=(name,)) for name in ("main", "n1", "n2", "n3")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        raw = "".join(open(os.path.join(directory, n), encoding="utf-8").read() for n in os.listdir(directory)
                      if n.endswith(".jsonl"))
        # every line a whole record: no blank line either (an append checks the last line under a lock)
        lines = raw.splitlines()
        parsed = [json.loads(line) for line in lines]  # a torn line fails here
        assert len(parsed) == 100 and "sandbox-token-1234567" not in raw


def test_a_ramp_does_not_return_while_a_notification_it_started_is_unrecorded(live, monkeypatch):
    """Step notifications go out from daemon threads (`tell(wait=False)`). The ramp returns, and the CLI
    exits, while the last "held clean" notification is still being delivered: the process ends, the daemon
    thread dies, the message is not sent and its delivery line never reaches the audit."""
    import deploy_tool.notify as notify_mod

    started: list[str] = []

    def slow_send(urls, title, body, timeout_s=notify_mod.NOTIFY_TIMEOUT_S):
        started.append(title)
        if "complete" not in title:
            time.sleep(1.0)  # a receiver that takes a second (the bound is 5 s)
        return notify_mod.Delivery("sent")

    monkeypatch.setattr(notify_mod, "send", slow_send)
    code, lines, _ = run_ramp(live, "--notify", "json://127.0.0.1:9/hook", hold="1s")
    recorded = len(events(live, "notify"))
    holds_within(lambda: len(events(live, "notify")) >= len(started), 10)  # let them land before teardown
    assert code == 0, lines
    assert recorded == len(started), (f"the ramp returned with {len(started) - recorded} of {len(started)} "
                                      "notifications still unrecorded (lost when the process exits)")
