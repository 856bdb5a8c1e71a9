"""The analysis run that watch and ramp both drive (issue 17): outcomes, limits, waits and confirmations.

The counting is tested on scripted rounds with an injected clock (no sandbox, no waiting); the ramp's waits,
approvals, webhooks and ceilings against the sandbox on loopback, in-process on the fake clock of
`test_guard_clock.py`, with real HTTP servers, real files and `gradual-deploy ramp approve` as a process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import threading
from typing import Callable, Iterator

import pytest

from deploy_tool import analysis
from deploy_tool.analysis import ERROR, FAIL, INCONCLUSIVE, PASS, Limits, Round, Tally, WatchConfig
from deploy_tool.commands.ramp import approve
from deploy_tool.criteria import Criterion
from deploy_tool.settings import defaults
from deploy_tool.times import utc_now
from test_guard_clock import (  # noqa: F401  (fixtures used by name)
    FakeClock,
    _back_to_real,
    _pause_by_hand,
    events,
    file_doc,
    from_cli,
    live,
    modes,
    run_ramp,
    world,
)
from test_notify import Receiver

GD = [sys.executable, "-m", "deploy_tool"]


def criterion(outcome: str, id: str = "observe_order_failure_rate") -> Criterion:
    return Criterion(id, "observe", outcome in (PASS, INCONCLUSIVE), 0.0, 0.2, "fraction", f"{outcome} here",
                     outcome=outcome)


def scripted(*outcomes: str) -> Callable[[int, WatchConfig], Round]:
    """A measure function whose round n has outcomes[n-1] (the last repeats)."""

    def measure(number: int, cfg: WatchConfig) -> Round:
        outcome = outcomes[min(number, len(outcomes)) - 1]
        return Round(number, utc_now(), [criterion(PASS, "okx_clock_skew"), criterion(outcome)])

    return measure


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def cfg(tmp_path) -> WatchConfig:
    return WatchConfig(defaults(interval=1.0, deploy_audit_dir=str(tmp_path / "audit"),
                                evidence_dir=str(tmp_path / "evidence")), actor="test")


def outcomes_of(tmp_path) -> list[str]:
    lines = [json.loads(x) for f in sorted((tmp_path / "audit").glob("deploy-*.jsonl")) for x in f.read_text().splitlines()]
    return [e["outcome"] for e in lines if e["event"] == "watch_round"]


# --- counting ---------------------------------------------------------------------------------------


def test_a_round_is_its_worst_criterion():
    at = utc_now()
    assert Round(1, at, [criterion(PASS), criterion(INCONCLUSIVE)]).outcome == INCONCLUSIVE
    assert Round(1, at, [criterion(INCONCLUSIVE), criterion(ERROR)]).outcome == ERROR
    assert Round(1, at, [criterion(ERROR), criterion(FAIL), criterion(PASS)]).outcome == FAIL
    assert Round(1, at, []).outcome == ERROR, "a round that judged nothing is no pass"
    with pytest.raises(ValueError):
        Criterion("x", "observe", True, None, None, None, "measured nothing", outcome=ERROR)


@pytest.mark.parametrize("sequence,limits,verdicts", [
    # --failure-limit: consecutive failing rounds, reset by any other round
    ("FFPFF", Limits(failure=3), [None] * 5),
    ("FFF", Limits(failure=3), [None, None, "failed"]),
    # errors never count as failures; one more than the limit in a row breaches
    ("EEEE", Limits(failure=1, consecutive_error=4), [None] * 4),
    ("EEEEE", Limits(failure=1, consecutive_error=4), [None] * 4 + ["errored"]),
    ("EEPEEEE", Limits(consecutive_error=3), [None] * 6 + ["errored"]),
    ("EFE", Limits(failure=2, consecutive_error=0), ["errored", "errored", "errored"]),
    # only a passing round ends a streak: failing and error rounds that alternate never pass
    ("FEF", Limits(failure=2, consecutive_error=4), [None, None, "failed"]),
    ("EFEFEFEFE", Limits(failure=9, consecutive_error=4), [None] * 8 + ["errored"]),
    ("FIF", Limits(failure=2, inconclusive=3), [None, None, "failed"]),
    # inconclusive: said once, when the run in a row first goes over the limit
    ("IIIIII", Limits(inconclusive=3), [None, None, None, "inconclusive", None, None]),
    ("IIPIIII", Limits(inconclusive=3), [None, None, None, None, None, None, "inconclusive"]),
    ("I", Limits(inconclusive=0), ["inconclusive"]),
])
def test_the_limits_count_consecutive_rounds_of_their_own_kind(sequence, limits, verdicts):
    names = {"P": PASS, "F": FAIL, "E": ERROR, "I": INCONCLUSIVE}
    tally = Tally(limits)
    found = [tally.add(Round(n, utc_now(), [criterion(names[c])])) for n, c in enumerate(sequence, 1)]
    assert found == verdicts


@pytest.mark.parametrize("results,failures,outcome", [(2, 0, INCONCLUSIVE), (2, 2, FAIL), (3, 0, PASS), (0, 0, INCONCLUSIVE)])
def test_too_few_orders_to_judge_a_pass_is_inconclusive_never_too_few_to_judge_a_failure(tmp_path, results, failures,
                                                                                         outcome):
    from deploy_tool.criteria import observe_order_failure_rate, observe_risk_block_rate
    from deploy_tool.probes.observe import observe

    now = utc_now()
    lines = []
    for n in range(results):
        lines.append({"ts": now.isoformat(), "event": "order_intent"})
        lines.append({"ts": now.isoformat(), "event": "order_result", "status": "rejected" if n < failures else "filled"})
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / f"audit-{now:%Y-%m-%d}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    obs = observe(str(tmp_path / "audit"), str(tmp_path / "none.csv"), 600, now=now, recent_s=1.0)
    found = observe_order_failure_rate(obs, defaults(min_orders=3))
    assert found.outcome == outcome, found.message
    assert found.ok == (outcome != FAIL), "the suite's verdict (the contract's rule) is unchanged"
    if outcome == INCONCLUSIVE:
        assert "too few to judge (--min-orders 3)" in found.message
    blocks = observe_risk_block_rate(obs, defaults(min_orders=3))
    assert blocks.outcome == (INCONCLUSIVE if results < 3 else PASS), blocks.message


def test_what_is_found_missing_fails_and_what_cannot_be_read_is_an_error(tmp_path):
    """No audit file today and no risk-events file are facts about the system (the contract's criteria:
    fail at once); a file that cannot be read is a probe that could not measure (error)."""
    from deploy_tool.criteria import judged, observe_audit_recent, observe_risk_events
    from deploy_tool.probes import measure_observation

    (tmp_path / "audit").mkdir()
    settings = defaults(audit_dir=str(tmp_path / "audit"), risk_events_csv=str(tmp_path / "none.csv"))
    observation = measure_observation(settings)
    assert judged(observation, observe_audit_recent, settings).outcome == FAIL
    assert judged(observation, observe_risk_events, settings).outcome == FAIL
    os.mkfifo(tmp_path / "risk.csv")
    fifo = defaults(audit_dir=str(tmp_path / "audit"), risk_events_csv=str(tmp_path / "risk.csv"))
    unreadable = judged(measure_observation(fifo), observe_risk_events, fifo)
    assert unreadable.outcome == ERROR and "FIFO" in unreadable.message


# --- the run ----------------------------------------------------------------------------------------


def test_a_run_that_must_end_on_a_pass_holds_on_through_errors_and_inconclusive_rounds(cfg, tmp_path):
    """A ramp's hold: the duration is over after round 3, but rounds 3-5 do not pass; it ends on round 6."""
    clock = Clock()
    ended = analysis.run(cfg, [], lambda line: None, duration_s=2.0, clock=clock, need_pass=True,
                         measure=scripted(PASS, PASS, ERROR, INCONCLUSIVE, ERROR, PASS))
    assert ended.result == "held" and ended.rounds == 6 and ended.last.outcome == PASS
    assert outcomes_of(tmp_path) == [PASS, PASS, ERROR, INCONCLUSIVE, ERROR, PASS]
    plain = analysis.run(cfg, [], lambda line: None, duration_s=2.0, clock=Clock(),
                         measure=scripted(PASS, PASS, ERROR))
    assert plain.result == "held" and plain.rounds == 3, "a watch's duration ends at its time (rounds at 0, 0.9, 1.8 s)"


def test_a_run_stops_on_an_inconclusive_streak_only_when_asked(cfg):
    told: list[int] = []
    ended = analysis.run(cfg, [], lambda line: None, duration_s=60.0, clock=Clock(), need_pass=True,
                         stop_inconclusive=True, measure=scripted(PASS, INCONCLUSIVE))
    assert ended.result == "inconclusive" and ended.rounds == 5  # 4 in a row: more than the default 3
    watched = analysis.run(cfg, [], lambda line: None, duration_s=9.5, clock=Clock(),
                           on_inconclusive=lambda rnd, tally: told.append(rnd.number),
                           measure=scripted(PASS, INCONCLUSIVE))
    assert watched.result == "held" and watched.rounds == 11 and told == [5]


def test_the_mode_check_and_readiness_are_asked_after_every_round(cfg):
    asked: list[str] = []

    def mode() -> str | None:
        asked.append("mode")
        return "the mode is no longer real (http paused)" if len(asked) == 3 else None

    ended = analysis.run(cfg, [], lambda line: None, duration_s=None, clock=Clock(), mode_check=mode,
                         measure=scripted(PASS))
    assert ended.result == "mode" and ended.rounds == 3 and "paused" in ended.why
    ready = iter([None, None, "approved by alice"])
    ended = analysis.run(cfg, [], lambda line: None, duration_s=None, clock=Clock(), ready=lambda: next(ready),
                         measure=scripted(PASS))
    assert ended.result == "ready" and ended.rounds == 3 and ended.why == "approved by alice"
    breach = analysis.run(cfg, [], lambda line: None, duration_s=None, clock=Clock(), ready=lambda: None,
                          measure=scripted(PASS, FAIL))
    assert breach.result == "breach" and breach.breach == "failed" and breach.rounds == 2


def test_watch_reads_the_mode_every_round_and_says_when_it_changed(world):
    """Someone pauses while watch guards a system in mock: every round records the modes, the change is said
    and audited, and the watch goes on guarding to its end."""
    from deploy_tool.commands.watch import watch
    from test_guard_clock import to_mock

    to_mock(world)
    cfg, channels = from_cli(world, "watch", "--interval", "1s", "--duration", "3s")

    def pause_after_round_2(clock: FakeClock) -> None:
        if len(clock.sleeps) == 2 and world.admin.mode == "mock":
            _pause_by_hand(world, str(world.audit_dir))

    lines: list[str] = []
    assert watch(cfg, channels, lines.append, clock=FakeClock(world.system, pause_after_round_2)) == 0
    assert [e["modes"] for e in events(world, "watch_round")] == [{"http": "mock", "file": "mock"}] * 2 + \
        [{"http": "paused", "file": "paused"}] * 2
    assert "watch: the mode changed: http mock -> paused, file mock -> paused; still watching" in lines
    (changed,) = events(world, "watch_mode_changed")
    assert changed["round"] == 3 and changed["to"] == {"http": "paused", "file": "paused"}


def test_a_wait_reads_the_audit_back_only_to_its_own_start(tmp_path):
    """A waiting ramp asks for its approval every round: it reads the audit from the end back to the wait's
    start, across midnight, never the whole history (a month of watch rounds)."""
    from deploy_tool import audit

    directory = tmp_path / "audit"
    directory.mkdir()

    def line(ts: str, event: str, **extra) -> str:
        return json.dumps({"ts": ts, "event": event, **extra}) + "\n"

    (directory / "deploy-2026-11-28.jsonl").write_text(line("2026-11-28T10:00:00.000Z", "ramp_approved", wait_id="old"))
    (directory / "deploy-2026-11-29.jsonl").write_text(
        line("2026-11-29T23:00:00.000Z", "ramp_approved", wait_id="before")
        + line("2026-11-29T23:59:59.000Z", "ramp_approved", wait_id="a") + "not json\n"
        + line("2026-11-29T23:59:59.500Z", "watch_round"))
    (directory / "deploy-2026-11-30.jsonl").write_text(line("2026-11-30T00:00:01.000Z", "ramp_approved", wait_id="b"))
    found = audit.read_since(str(directory), ("ramp_approved",), "2026-11-29T23:30:00.000Z")
    assert [e["wait_id"] for e in found] == ["a", "b"]
    (directory / "deploy-2026-11-28.jsonl").write_text("")  # an older file is never opened: a FIFO there waits
    os.remove(directory / "deploy-2026-11-28.jsonl")
    os.mkfifo(directory / "deploy-2026-11-28.jsonl")
    assert [e["wait_id"] for e in audit.read_since(str(directory), ("ramp_approved",),
                                                   "2026-11-29T00:00:00.000Z")] == ["before", "a", "b"]


# --- the ramp's waits ---------------------------------------------------------------------------------


def _approve_as_a_process(box, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*GD, "ramp", "approve", "--deploy-audit-dir", str(box.audit_dir), *extra],
                          capture_output=True, text=True, timeout=60)


def test_an_inconclusive_hold_never_advances_and_waits_for_a_person(live):
    """Every round finds too few orders (--min-orders 1000): step 1 holds on, past its time, until the
    streak goes over --inconclusive-limit; then the ramp waits, still guarding, until `ramp approve`."""
    approved: list[subprocess.CompletedProcess] = []

    def person(clock: FakeClock) -> None:
        waits = events(live, "ramp_waiting")
        if len(waits) > len(approved) and clock.now > waits[-1].get("_seen", 0) + 5 * len(waits):
            approved.append(_approve_as_a_process(live, "--reason", "quiet market, looked at the fills"))

    code, lines, clock = run_ramp(live, "--min-orders", "1000", "--inconclusive-limit", "2", hold="1s",
                                  on_sleep=person)
    out = "\n".join(lines)
    assert code == 0, out
    assert len(approved) == 2 and all(a.returncode == 0 for a in approved), approved
    assert "ramp approve: approved: step 2/2 (1%)" in approved[0].stdout
    assert "ramp approve: approved: completing the ramp" in approved[1].stdout
    assert "ramp: WAITING before completing the ramp: the hold of step 2/2 (1%) was inconclusive" in out
    assert lines[-1] == "ramp complete: allocation 1%"
    assert [bool(e.get("approved")) for e in events(live, "ramp_step_held")] == [True, True], \
        "an inconclusive step counts as held only once a person approved it"
    assert "ramp step 1/2 (0.5%): INCONCLUSIVE after 3 rounds: it does not advance on its own" in out
    assert "ramp: WAITING before step 2/2 (1%): the hold of step 1/2 (0.5%) was inconclusive" in out
    (waiting, *_) = events(live, "ramp_waiting")
    assert waiting["needs"] == ["approval"] and waiting["step_to"] == 2
    raised = [e for e in events(live, "ramp_step") if e["allocation"] == 0.01]
    approval = events(live, "ramp_approved")[0]
    assert raised and raised[0]["ts"] >= approval["ts"], "never raised before the approval"
    rounds_before = [e for e in events(live, "watch_round") if e["ts"] <= approval["ts"]]
    assert all(e["outcome"] == INCONCLUSIVE for e in rounds_before)
    assert len(rounds_before) > 3, "it went on guarding while it waited"


def test_wait_for_approval_asks_before_every_raise_and_an_old_approval_approves_nothing(live):
    first: list[subprocess.CompletedProcess] = []

    def person(clock: FakeClock) -> None:
        if events(live, "ramp_waiting") and not first:
            first.append(_approve_as_a_process(live, "--step", "2"))

    code, lines, _ = run_ramp(live, "--wait-for-approval", steps="0.5%,1%", hold="1s", on_sleep=person)
    assert code == 0, lines
    assert first[0].returncode == 0
    # the allocation is back at 0.5% and a second ramp waits again: the first approval was for the first wait
    live.admin.allocate({"allocation": 0.005, "actor": "test"})
    from deploy_tool.modes.channels import FileChannel

    assert FileChannel(str(live.control_file)).apply_allocation(0.005, 0.01, "test", "test").ok
    stopped: list[bool] = []

    def ctrl_c_once_waiting(clock: FakeClock) -> None:
        if len(events(live, "ramp_waiting")) == 2:
            stopped.append(True)
            raise KeyboardInterrupt

    code, lines, _ = run_ramp(live, "--wait-for-approval", steps="0.5%,1%", hold="1s", on_sleep=ctrl_c_once_waiting)
    assert code == 130 and stopped, lines
    assert live.admin.allocation == 0.005, "no raise without its own approval"


def test_approve_refuses_when_no_ramp_waits_or_the_step_is_not_the_one_waited_for(live, tmp_path):
    done = _approve_as_a_process(live)
    assert done.returncode == 1 and "no ramp is waiting for approval" in done.stderr, done
    assert "Traceback" not in done.stderr

    def wrong_step(clock: FakeClock) -> None:
        if events(live, "ramp_waiting") and not events(live, "ramp_stopped"):
            answer = _approve_as_a_process(live, "--step", "3")
            assert answer.returncode == 1 and "no open wait matches --step 3" in answer.stderr, answer
            assert "before step 2/2 (1%)" in answer.stderr
            raise KeyboardInterrupt

    code, _, _ = run_ramp(live, "--wait-for-approval", hold="0.5s", on_sleep=wrong_step)
    assert code == 130 and not events(live, "ramp_approved")


class Confirmer:
    """A confirm-traffic-increase webhook on loopback: answers the status it is told, keeps what it got."""

    def __init__(self) -> None:
        self.status = 503
        self.asked: list[dict] = []
        confirmer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                confirmer.asked.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0))))
                self.send_response(confirmer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/confirm"


@pytest.fixture
def confirmer() -> Iterator[Confirmer]:
    found = Confirmer()
    yield found
    found.server.shutdown()
    found.server.server_close()


def test_confirm_url_waits_until_the_webhook_answers_200_and_every_step_and_wait_is_told(live, confirmer):
    receiver = Receiver()
    try:
        def open_after_a_while(clock: FakeClock) -> None:
            if len(confirmer.asked) >= 3:
                confirmer.status = 200

        code, lines, clock = run_ramp(live, "--confirm-url", confirmer.url, "--notify", receiver.url, hold="1s",
                                      on_sleep=open_after_a_while)
        out = "\n".join(lines)
        assert code == 0, out
        assert "ramp: WAITING before step 2/2 (1%): confirmation before every raise; waiting for the --confirm-url " \
               "to answer HTTP 200" in out
        assert "ramp: confirmed before step 2/2 (1%): --confirm-url answered HTTP 200" in out
        asked = [a for a in confirmer.asked if a["step"] == 2]
        assert asked[0]["from"] == 0.005 and asked[0]["to"] == 0.01 and asked[0]["phase"] == "confirm-step"
        answers = [e["answer"] for e in events(live, "ramp_confirm") if e["wait_id"] == asked[0]["wait_id"]]
        assert answers == ["HTTP 503", "HTTP 200"], "every change of answer is audited"
        raised = [e for e in events(live, "ramp_step") if e["allocation"] == 0.01]
        assert raised[0]["ts"] >= [e for e in events(live, "ramp_confirm") if e["go"]][-1]["ts"]
        titles = [m["title"] for m in receiver.wait(4)]
        for expected in ("gradual-deploy ramp: waiting before step 2/2 (1%)",
                         "gradual-deploy ramp: step 2/2 (1%) taken",
                         "gradual-deploy ramp: step 1/2 (0.5%) held clean",
                         "gradual-deploy ramp: complete at 1%"):
            assert expected in titles, titles
    finally:
        receiver.released.set()
        receiver.server.shutdown()
        receiver.server.server_close()


def test_a_webhook_only_wait_is_not_approvable_and_its_answers_are_shown_and_status_says_it_waits(live, confirmer):
    """An approval cannot stand in for the webhook; each answer that changes is printed; `status` says the
    ramp waits and for what."""
    answers: list[subprocess.CompletedProcess] = []

    def look_while_waiting(clock: FakeClock) -> None:
        if events(live, "ramp_confirm") and not answers:
            answers.append(_approve_as_a_process(live))
            answers.append(subprocess.run([*GD, "status", "--http-admin-url", live.admin_url, "--admin-token-env",
                                           live.token_env, "--control-file", str(live.control_file),
                                           "--audit-dir", str(live.audit_dir), *live.gate_args()],
                                          capture_output=True, text=True, timeout=60,
                                          env={**os.environ, live.token_env: live.token}))
            raise KeyboardInterrupt

    code, lines, _ = run_ramp(live, "--confirm-url", confirmer.url, hold="1s", on_sleep=look_while_waiting)
    assert code == 130, lines
    approve_done, status = answers
    assert approve_done.returncode == 1 and "not for an approval" in approve_done.stderr, approve_done
    assert not events(live, "ramp_approved")
    assert "ramp: the --confirm-url answered HTTP 503: waiting; asking again every 0.5s" in lines
    assert not any(confirmer.url in line for line in lines), "the webhook's URL is a credential: never printed"
    assert "ramp: WAITING before step 2/2 (1%)" in status.stdout and "--confirm-url to answer HTTP 200" in status.stdout


def test_the_plan_names_the_confirmations_and_misbehave_without_a_sandbox_is_a_message(tmp_path):
    plan = subprocess.run([*GD, "ramp", "--plan", "--steps", "0.5%,1%", "--wait-for-approval"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert plan.returncode == 0 and "before every raise it waits for `gradual-deploy ramp approve`" in plan.stdout
    lost = subprocess.run([*GD, "sandbox", "--dir", str(tmp_path / "none"), "--misbehave", "failing-orders"],
                          capture_output=True, text=True, timeout=60)
    assert lost.returncode == 1 and "no sandbox in" in lost.stderr and "Traceback" not in lost.stderr


def test_a_webhook_that_is_down_waits_and_a_pause_during_the_wait_stops_the_ramp(live, tmp_path):
    def pause_while_waiting(clock: FakeClock) -> None:
        if events(live, "ramp_confirm") and live.admin.mode == "real":
            _pause_by_hand(live, str(live.audit_dir))

    code, lines, _ = run_ramp(live, "--confirm-url", "http://127.0.0.1:9/confirm", hold="1s",
                              on_sleep=pause_while_waiting)
    out = "\n".join(lines)
    assert code == 1, out
    assert "no answer (ConnectionError)" in events(live, "ramp_confirm")[0]["answer"]
    assert "ramp: STOPPED at step 1 (0.5%): the mode is no longer real" in out
    assert live.admin.allocation == 0.005 and file_doc(live)["allocation"] == 0.005
    # back in real, resumed: 0.5% was held clean, so the next raise is asked for again
    _back_to_real(live)
    code, lines, _ = run_ramp(live, "--confirm-url", "http://127.0.0.1:9/confirm", hold="1s",
                              on_sleep=lambda clock: (_ for _ in ()).throw(KeyboardInterrupt)
                              if len(events(live, "ramp_waiting")) == 2 else None)
    assert code == 130 and live.admin.allocation == 0.005


def test_a_breach_while_waiting_aborts_to_paused(live):
    def losses_while_waiting(clock: FakeClock) -> None:
        if events(live, "ramp_waiting") and live.system.fault != "losses":
            live.system.set_fault("losses")

    code, lines, _ = run_ramp(live, "--wait-for-approval", hold="1s", on_sleep=losses_while_waiting)
    out = "\n".join(lines)
    assert code == 1, out
    assert "RAMP ABORT at step 1 (0.5%)" in out and "observe_realized_pnl" in out
    assert modes(live) == ("paused", "paused") and live.admin.allocation == 0.005


# --- the ceiling ---------------------------------------------------------------------------------------


def test_the_risk_configurations_own_limit_is_a_ceiling_too(sandbox, run_suite):
    """The system's GET /config says max_allocation 0.75 %: a ramp to 1 % is refused without new evidence,
    whatever --max-allocation says; --force goes above it, audited as forced."""
    sandbox.admin.config["max_allocation"] = 0.0075
    run = run_suite(evidence_dir=sandbox.evidence_dir)
    assert run.evidence["verdict"] == "pass", run.output
    from test_guard_clock import to_mock
    from deploy_tool.modes.change import switch
    from deploy_tool.modes.gate import GateConfig

    cfg, channels = from_cli(sandbox, "ramp")
    to_mock(sandbox)
    gate = GateConfig(str(sandbox.evidence_dir), 3600, str(sandbox.trusted_keys), sandbox.okx_url,
                      sandbox.database_url, admin_token=sandbox.token)
    assert switch(channels, "real", force=False, reason="test", actor="test", gate=gate).ok
    sandbox.system.stop()
    code, lines, _ = run_ramp(sandbox, hold="0.5s")
    assert code == 1 and lines[-1].startswith("ramp: REFUSED: step(s) 1% above 0.75%, the risk configuration's "
                                              "max_allocation: a step above what the gate checked needs new evidence")
    code, lines, _ = run_ramp(sandbox, "--max-allocation", "0.05", hold="0.5s")
    assert code == 1 and "above 0.75%, the risk configuration's max_allocation" in lines[-1]
    code, lines, _ = run_ramp(sandbox, steps="0.5%,0.75%", hold="0.5s")
    assert code == 0, lines
    # the limit raised after the pass is a changed risk configuration: the gate refuses the evidence
    sandbox.admin.config["max_allocation"] = 0.05
    code, lines, _ = run_ramp(sandbox, hold="0.5s")
    assert code == 1 and "ramp: REFUSED: evidence gate" in lines[-1], lines


def test_time_left_is_said_one_way_all_the_way_down():
    """`watch` printed "10m left", then "598s left": one spelling now, whole seconds."""
    from deploy_tool.times import format_left

    assert [format_left(s) for s in (600, 598, 7199.6, 61, 59.4, -3)] == \
        ["10m 0s", "9m 58s", "2h 0m 0s", "1m 1s", "59s", "0s"]


def test_a_pause_that_comes_and_goes_while_the_last_step_waits_for_a_person_is_no_clean_hold(live):
    """The last step's hold was inconclusive; while the ramp waits for a person, someone pauses and goes back
    to real between two rounds, then approves: the step is not recorded as held."""
    done: list[bool] = []

    def incident_then_approve(clock: FakeClock) -> None:
        if events(live, "ramp_waiting") and not done:
            done.append(True)
            _pause_by_hand(live, str(live.audit_dir))
            _back_to_real(live)
            assert _approve_as_a_process(live).returncode == 0

    code, lines, _ = run_ramp(live, "--min-orders", "1000", "--inconclusive-limit", "0", steps="0.5%", hold="0.5s",
                              on_sleep=incident_then_approve)
    out = "\n".join(lines)
    assert code == 1 and done, out
    assert "while waiting: the channels changed during the hold" in out
    assert not events(live, "ramp_step_held") and not events(live, "ramp_done")
