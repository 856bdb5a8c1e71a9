"""A hostile review of the analysis run that `watch` and `ramp` drive (issue 17).

Each test is an attack, written as the SAFE behaviour it should meet: a test that fails shows a hole. The
attacks come as a hostile operator or a buggy environment would: a raise without the fact behind it (a),
a ramp that advances on an inconclusive or error hold (b), a failure hidden as an error or inconclusive (c),
a breach that does not pause (d), a secret that leaks (e), a traceback for a user mistake (f), an approval
that approves a wait it was not given for (g), a webhook that redirects, hangs, says no with a 200 or
answers slowly (h), and a risk limit spelled so that the ramp misses it (i).

The sandbox and the fake clock of `test_guard_clock.py` are used as they are; nothing is ordered by a fixed
sleep: what is awaited is awaited as a condition with a deadline.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator

import pytest

from deploy_tool import analysis as analysis_mod
from deploy_tool import audit
from deploy_tool.analysis import ERROR, FAIL, INCONCLUSIVE, PASS, Round, WatchConfig
from deploy_tool.commands.ramp import approve, ask_webhook
from deploy_tool.commands.watch import watch
from deploy_tool.criteria import Criterion, observe_audit_recent, observe_realized_pnl
from deploy_tool.modes.channels import FileChannel
from deploy_tool.probes.observe import observe
from deploy_tool.probes.riskconfig import parse_config
from deploy_tool.settings import defaults
from deploy_tool.times import utc_now
from test_analysis import Confirmer, confirmer  # noqa: F401  (fixture used by name)
from waiting import holds_within
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
    to_mock,
    world,
)
from test_ramp import ramp_args
from waiting import communicate_or_kill, wait_until
from sandboxes import into_real

GD = [sys.executable, "-m", "deploy_tool"]


# --- helpers ------------------------------------------------------------------------------------------


def incident_then_approval(box, incident: list[bool], reason: str) -> Callable[[FakeClock], None]:
    """Once the ramp waits: someone pauses and goes back to real between two rounds, then a person approves."""

    def act(clock: FakeClock) -> None:
        if events(box, "ramp_waiting") and not incident:
            incident.append(True)
            _pause_by_hand(box, str(box.audit_dir))
            _back_to_real(box)
            approve(str(box.audit_dir), "alice", reason)

    return act




def set_by_hand(box, value: float) -> None:
    """Someone (the risk desk) sets the allocation on both channels, outside any ramp."""
    before = file_doc(box).get("allocation")
    status, answer = box.admin.allocate({"allocation": value, "actor": "risk desk"})
    assert status == 200, answer
    assert FileChannel(str(box.control_file)).apply_allocation(value, before, "by hand", "risk desk").ok


def since_last_start(box) -> list[dict]:
    found = events(box)
    starts = [i for i, e in enumerate(found) if e["event"] == "ramp_start"]
    return found[starts[-1]:] if starts else []


def raised_without_a_hold(box, to: float) -> bool:
    """Did the last ramp set `to` before any step of it held clean (a raise with no fact behind it)?"""
    for event in since_last_start(box):
        if event["event"] == "ramp_step_held":
            return False
        if (event["event"] == "ramp_step" and event.get("ok") and "taken_back" not in event
                and abs(event["allocation"] - to) < 1e-12):
            return True
    return False


def paused(box) -> bool:
    return modes(box) == ("paused", "paused")


def ctrl_c_once(condition: Callable[[], bool]) -> Callable[[FakeClock], None]:
    """An on_sleep that presses Ctrl+C the first time `condition` holds."""
    def press(clock: FakeClock) -> None:
        if condition():
            raise KeyboardInterrupt
    return press


def criterion(outcome: str, id: str = "observe_order_failure_rate") -> Criterion:
    return Criterion(id, "observe", outcome in (PASS, INCONCLUSIVE), 0.0, 0.2, "fraction", f"{outcome} here",
                     outcome=outcome)


def cycling(pattern: str) -> Callable[[int, WatchConfig], Round]:
    """Rounds whose outcomes repeat `pattern` (P pass, F fail, E error, I inconclusive) for ever."""
    names = {"P": PASS, "F": FAIL, "E": ERROR, "I": INCONCLUSIVE}

    def measure(number: int, cfg: WatchConfig) -> Round:
        outcome = names[pattern[(number - 1) % len(pattern)]]
        return Round(number, utc_now(), [criterion(PASS, "okx_clock_skew"), criterion(outcome)])

    return measure


class Clock:
    """A clock whose sleep returns at once; it gives up (a BaseException the run pauses on) after `limit`."""

    def __init__(self, limit: int = 500) -> None:
        self.now, self.sleeps, self.limit = 0.0, 0, limit

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        if self.sleeps > self.limit:
            raise RuntimeError("the run never ended on its own")
        self.now += seconds


def scripted_cfg(tmp_path, **overrides) -> WatchConfig:
    return WatchConfig(defaults(interval=1.0, deploy_audit_dir=str(tmp_path / "audit"),
                                evidence_dir=str(tmp_path / "evidence"), **overrides), actor="test")


def waiting_record(wait_id: str, actor: str = "bob") -> dict:
    """What a ramp writes when it waits before step 2 of 0.5%,1% (`_wait`)."""
    return {"event": "ramp_waiting", "actor": actor, "wait_id": wait_id, "for": "step 2/2 (1%)", "step_to": 2,
            "allocation_to": 0.01, "held_allocation": 0.005, "needs": ["approval"],
            "reason": "confirmation before every raise"}


@pytest.fixture
def running(sandbox, run_suite):
    """The sandbox in real, its trading system ticking on its own thread, with passing signed evidence: for
    a ramp as a real process (as test_ramp.py's `live`)."""
    run = run_suite(evidence_dir=sandbox.evidence_dir)
    assert run.evidence["verdict"] == "pass", run.output
    return into_real(sandbox)


class Hook:
    """A webhook on loopback (a --confirm-url, or a json:// --notify target) whose answer a test scripts:
    `answer(n)` is called for the n-th POST (1-based, its body already in `asked`) and returns (status, body,
    headers); it may take its time."""

    def __init__(self, answer: Callable[[int], tuple[int, bytes, dict]]) -> None:
        self.asked: list[dict] = []
        self.paths: list[str] = []
        self.released = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hook.asked.append(json.loads(body or b"null"))
                hook.paths.append(self.path)
                status, content, headers = answer(len(hook.asked))
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    self.wfile.write(content)
                except OSError:
                    pass  # the ramp gave up on the answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.url = f"{self.base}/confirm"

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks() -> Iterator[list[Hook]]:
    made: list[Hook] = []
    yield made
    for hook in made:
        hook.close()


# --- (a) a raise without the fact behind it --------------------------------------------------------------


def test_a_pause_that_comes_and_goes_while_a_resumed_ramp_waits_stops_the_raise(live):
    """A ramp resumed after a clean hold waits for approval before its first raise; someone pauses and goes
    back to real between two of the wait's rounds (no round sees it), then approves. docs/watch-and-ramp.md: "a pause
    that came and went while it waited stops it before the raise"."""
    code, lines, _ = run_ramp(live, steps="0.5%", hold="1s")
    assert code == 0, lines
    incident: list[bool] = []

    def pause_and_back_then_approve(clock: FakeClock) -> None:
        if len(events(live, "ramp_waiting")) == 1 and not incident:
            incident.append(True)
            _pause_by_hand(live, str(live.audit_dir))
            _back_to_real(live)
            assert approve(str(live.audit_dir), "alice", "looks fine")[0]

    code, lines, _ = run_ramp(live, "--wait-for-approval", steps="0.5%,1%", hold="1s",
                              on_sleep=pause_and_back_then_approve)
    out = "\n".join(lines)
    assert incident, out
    assert live.admin.allocation == 0.005 and file_doc(live)["allocation"] == 0.005, \
        f"raised to 1% although a pause came and went while the resumed ramp waited:\n{out}"
    assert code == 1 and "while waiting" in out


def test_a_pause_between_the_rounds_of_a_wait_spoils_the_hold_for_the_resumed_ramp(live):
    """The ramp stops before the raise (a pause came and went while it waited), but records the stop against
    the step it did not take: the resumed ramp then finds step 1's clean hold as the newest record of 0.5%
    and raises at once, with no hold after the incident."""
    incident: list[bool] = []
    pause_and_back_then_approve = incident_then_approval(live, incident, "looks fine")

    code, lines, _ = run_ramp(live, "--wait-for-approval", steps="0.5%,1%", hold="1s",
                              on_sleep=pause_and_back_then_approve)
    assert code == 1 and "while waiting" in "\n".join(lines), lines
    assert live.admin.allocation == 0.005
    code, lines, _ = run_ramp(live, steps="0.5%,1%", hold="1s")
    assert not raised_without_a_hold(live, 0.01), \
        "the resumed ramp raised to 1% with no hold after the incident:\n" + "\n".join(lines)


def test_a_clean_hold_recorded_before_an_incident_does_not_let_a_later_ramp_raise_at_once(live):
    """0.5% held clean; then an incident: paused by hand, back to real. The next ramp finds the old clean
    hold and raises to 1% without holding 0.5% since the incident."""
    code, lines, _ = run_ramp(live, steps="0.5%", hold="1s")
    assert code == 0, lines
    _pause_by_hand(live, str(live.audit_dir))
    _back_to_real(live)
    code, lines, _ = run_ramp(live, steps="0.5%,1%", hold="1s")
    assert not raised_without_a_hold(live, 0.01), \
        "raised to 1% on a hold recorded before the pause:\n" + "\n".join(lines)


def test_a_ramp_that_did_nothing_leaves_no_record_a_later_ramp_raises_on(live):
    """A ramp run while the allocation is above its last step does nothing, yet records `ramp_done` at that
    step; once the allocation is back there, the next ramp takes that record for a clean hold."""
    set_by_hand(live, 0.01)
    code, lines, _ = run_ramp(live, steps="0.5%", hold="1s")
    assert code == 0 and "nothing to do" in lines[-1], lines
    set_by_hand(live, 0.005)
    code, lines, _ = run_ramp(live, steps="0.5%,1%", hold="1s")
    assert not raised_without_a_hold(live, 0.01), \
        "raised to 1% on the `ramp_done` of a ramp that held nothing:\n" + "\n".join(lines)


def test_an_abort_never_raises_an_allocation_someone_lowered_meanwhile(live):
    """During step 1's hold the risk desk lowers the allocation to 0.3%, then a breach: the abort sets the
    "stable" 0.5% without compare-and-swap, raising the allocation in the middle of a breach."""
    done: list[bool] = []

    def lowered_then_breach(line: str) -> None:
        if line.startswith("ramp step 1/2 (0.5%)") and "holding" in line and not done:
            done.append(True)
            set_by_hand(live, 0.003)
            live.system.set_fault("risk-burst")

    code, lines, _ = run_ramp(live, hold="30s", on_line=lowered_then_breach)
    out = "\n".join(lines)
    assert code == 1 and "RAMP ABORT" in out, out
    assert paused(live)
    assert live.admin.allocation <= 0.003 and file_doc(live)["allocation"] <= 0.003, \
        f"the abort raised 0.3% to {live.admin.allocation}:\n{out}"


def test_a_risk_limit_lowered_during_the_ramp_stops_the_next_raise(live):
    """The system's own max_allocation (GET /config) is lowered to 0.75% while step 1 holds: the ceiling was
    read once, at the start, and the ramp raises to 1%, above what the system now allows."""
    def lowered_limit(line: str) -> None:
        if line.startswith("ramp step 1/2 (0.5%)") and "holding" in line:
            live.admin.config["max_allocation"] = 0.0075

    code, lines, _ = run_ramp(live, hold="1s", on_line=lowered_limit)
    assert live.admin.allocation <= 0.0075 and file_doc(live)["allocation"] <= 0.0075, \
        "raised above the risk configuration's max_allocation of 0.75%:\n" + "\n".join(lines)


# --- (b) a ramp that advances on an inconclusive or error hold ---------------------------------------------


def test_a_hold_whose_rounds_cannot_measure_never_advances(live, monkeypatch):
    def blind(number, cfg):
        raise RuntimeError("the audit disk is gone")

    monkeypatch.setattr(analysis_mod, "measure_round", blind)
    code, lines, _ = run_ramp(live, hold="1s")
    out = "\n".join(lines)
    assert code == 1 and "RAMP ABORT" in out, out
    assert live.admin.allocation == 0.005 and not events(live, "ramp_step_held")
    assert paused(live)


def test_a_hold_that_never_passes_never_ends_held(tmp_path):
    """Inconclusive and error rounds in turn: no streak reaches its limit, no round passes."""
    ended = analysis_mod.run(scripted_cfg(tmp_path), [], lambda line: None, duration_s=2.0, clock=Clock(60),
                             need_pass=True, stop_inconclusive=True, measure=cycling("IE"))
    assert ended.result != "held"


def test_an_inconclusive_hold_approved_while_a_pause_came_and_went_is_not_recorded_held(live):
    """Step 1's hold is inconclusive (too few orders); while the ramp waits for a person, someone pauses and
    goes back to real between two rounds, then a person approves. The ramp stops before the raise, but it
    has already recorded the inconclusive hold as held (approved): a resumed ramp raises on it at once."""
    incident: list[bool] = []
    pause_and_back_then_approve = incident_then_approval(live, incident, "quiet market")

    code, lines, _ = run_ramp(live, "--min-orders", "1000", "--inconclusive-limit", "2", hold="1s",
                              on_sleep=pause_and_back_then_approve)
    out = "\n".join(lines)
    assert code == 1 and "while waiting" in out and live.admin.allocation == 0.005, out
    assert not events(live, "ramp_step_held"), "a hold a pause overlapped is recorded as held"
    code, lines, _ = run_ramp(live, hold="1s")
    assert not raised_without_a_hold(live, 0.01), \
        "the resumed ramp raised on the overlapped inconclusive hold:\n" + "\n".join(lines)


# --- (c) a failure hidden ---------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern,limits", [
    ("FE", {"failure_limit": 2}),  # every other round fails, the rounds between cannot measure
    ("FFE", {"failure_limit": 3}),
    ("EEEEF", {"failure_limit": 2, "consecutive_error_limit": 4}),  # no round ever passes
    ("FI", {"failure_limit": 2}),
])
def test_a_run_in_which_no_round_passes_breaches(tmp_path, pattern, limits):
    """A round that could not measure (or had too few orders) is no evidence that a failure went away, yet it
    resets the failure streak, and a failing round resets the error streak: a run that never passes a round
    never breaches. (Argo's failureLimit counts every failed measurement, not consecutive ones.)"""
    ended = analysis_mod.run(scripted_cfg(tmp_path, **limits), [], lambda line: None, duration_s=60.0,
                             clock=Clock(), measure=cycling(pattern))
    outcomes = ended.tally.summary() if ended.tally else {}
    assert ended.result == "breach", f"{pattern} for {ended.rounds} rounds ({outcomes}): {ended.result}"


def test_a_watch_in_which_no_round_measured_does_not_end_green(world, monkeypatch):
    """Every round errors (the probes cannot measure); the duration ends before the error limit: `watch
    finished: no breach`, exit 0, as if the period had been watched."""
    to_mock(world)

    def blind(number, cfg):
        raise RuntimeError("the audit disk is gone")

    monkeypatch.setattr(analysis_mod, "measure_round", blind)
    cfg, channels = from_cli(world, "watch", "--interval", "0.5s", "--duration", "1.5s")
    lines: list[str] = []
    code = watch(cfg, channels, lines.append, clock=FakeClock(world.system))
    assert code != 0, "a watch that never measured exits 0:\n" + "\n".join(lines)


@pytest.mark.parametrize("now", ["00:02:00", "00:30:00"])
def test_a_system_silent_since_before_midnight_fails_audit_recency(tmp_path, now):
    """The trading system wrote its last audit line at 23:50 and nothing since. Before midnight that is a
    failure (silence above --audit-max-silence); after it, "no audit file for today" is an error: the same
    dead system needs --consecutive-error-limit + 1 rounds to breach instead of --failure-limit."""
    directory = tmp_path / "audit"
    directory.mkdir()
    last = dt.datetime(2026, 11, 29, 23, 50, tzinfo=dt.timezone.utc)
    lines = [{"ts": (last - dt.timedelta(seconds=30 * n)).isoformat(), "event": "order_intent"} for n in range(20)]
    (directory / "audit-2026-11-29.jsonl").write_text("".join(json.dumps(x) + "\n" for x in reversed(lines)))
    (tmp_path / "risk.csv").write_text("ts,kind,detail\n")
    at = dt.datetime.fromisoformat(f"2026-11-30T{now}+00:00")
    obs = observe(str(directory), str(tmp_path / "risk.csv"), 600, now=at, recent_s=30)
    found = observe_audit_recent(obs, defaults())
    assert found.outcome == FAIL, f"{found.outcome}: {found.message}"


def test_losses_in_a_field_the_loss_check_does_not_read_are_not_a_pass(tmp_path):
    """Every fill carries its realized PnL, under another name than --audit-pnl-field (`realized_pnl`, not
    `pnl`): the loss check finds "no realized PnL" and passes every round, however much is lost. Slippage
    fails when its fields are missing ("cannot be measured"); the loss check should not pass unmeasured."""
    directory = tmp_path / "audit"
    directory.mkdir()
    now = utc_now()
    lines = []
    for n in range(10):
        at = (now - dt.timedelta(seconds=5 * n)).isoformat()
        lines.append({"ts": at, "event": "order_intent"})
        lines.append({"ts": at, "event": "order_result", "status": "filled", "side": "buy", "price": 100.0,
                      "fill_price": 100.01, "realized_pnl": -100.0})  # 10 x 100 = 10 % of capital lost
    (directory / f"audit-{now:%Y-%m-%d}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in reversed(lines)))
    (tmp_path / "risk.csv").write_text("ts,kind,detail\n")
    obs = observe(str(directory), str(tmp_path / "risk.csv"), 600, now=now, recent_s=30)
    found = observe_realized_pnl(obs, defaults(capital=10000.0))
    assert found.outcome != PASS, found.message


def test_a_criterion_with_an_unknown_outcome_never_passes_a_round():
    """A judge that returns an outcome the run does not know (a new one, a typo), not ok: the round passes."""
    try:
        odd = Criterion("observe_new_check", "observe", False, None, None, None, "skipped: no data",
                        outcome="skipped")
    except ValueError:
        return  # refused where it is made: fine
    assert Round(1, utc_now(), [criterion(PASS), odd]).outcome != PASS


# --- (d) a breach that does not pause ---------------------------------------------------------------------


def test_a_breach_is_paused_while_the_terminal_does_not_take_its_line(world):
    """The terminal does not take the breaching round's line at once (Ctrl+S, a full pipe, a slow `tee`):
    the round line is printed before the breach is acted on, so the pause waits for the terminal."""
    to_mock(world)
    cfg, channels = from_cli(world, "watch", "--interval", "0.5s", "--duration", "60s")
    world.system.set_fault("risk-burst")
    seen: dict[str, bool] = {}

    def stuck_terminal(line: str) -> None:
        if " FAIL " in line and "paused" not in seen:
            seen["paused"] = holds_within(lambda: paused(world), 2.0)

    code = watch(cfg, channels, stuck_terminal, clock=FakeClock(world.system))
    assert code == 1 and paused(world)
    assert seen.get("paused"), "the pause waited for the terminal to take the breaching round's line"


def test_a_sigterm_while_the_ramp_asks_its_webhook_pauses_first(running, hooks):
    """`ramp` as a process: step 1 held, it asks --confirm-url before step 2 and the webhook takes its time;
    SIGTERM then (a deploy tool's stop, a closed session). docs/watch-and-ramp.md: "a signal or a crash pauses first, as
    watch does": but the first ask of a wait runs outside the analysis run's signal handling."""
    hook = Hook(lambda n: (hook.released.wait(30), (503, b"", {}))[1])
    hooks.append(hook)
    proc = subprocess.Popen(GD + ramp_args(running) + ["--confirm-url", hook.url], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, running.token_env: running.token})
    try:
        wait_until(lambda: hook.asked or proc.poll() is not None, "the ramp to ask its webhook", 60)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = communicate_or_kill(proc, 30, "the ramp to end on SIGTERM")
    finally:
        hook.released.set()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert running.admin.mode == "paused" and file_doc(running)["mode"] == "paused", \
        f"exit {proc.returncode}, modes {modes(running)}: the ramp ended unguarded and unpaused\n{out}{err}"


def test_a_slow_notification_after_a_raise_does_not_delay_the_guard(live):
    """--notify with a receiver that hangs: the step just raised is told from a thread of its own, so the
    hold's first round (the riskiest moment, right after the raise) follows the raise at once instead of
    after the notification's 5 s bound."""
    import time

    from test_notify import Receiver

    receiver = Receiver()
    receiver.hang_s = 30.0
    seen: dict[str, float] = {}

    def when(line: str) -> None:
        if "step 2/2 (1%): allocation 0.5% -> 1% confirmed" in line:
            seen["raised"] = time.monotonic()
        elif "raised" in seen and "first" not in seen and line.startswith("round 1 "):
            seen["first"] = time.monotonic()

    try:
        code, lines, _ = run_ramp(live, "--notify", receiver.url, hold="1s", on_line=when)
    finally:
        receiver.released.set()
        receiver.server.shutdown()
        receiver.server.server_close()
    assert code == 0, lines
    assert seen["first"] - seen["raised"] < 2.0, f"the first round came {seen['first'] - seen['raised']:.1f} s after the raise"
# --- (e) secrets --------------------------------------------------------------------------------------


def test_confirm_url_credentials_never_reach_the_terminal_the_audit_or_the_payload(live, confirmer, capsys):
    secrets = ("hookpass-s3cret-777", "tok-s3cret-888", "sig-s3cret-999")
    port = confirmer.server.server_port
    url = f"http://hookuser:{secrets[0]}@127.0.0.1:{port}/confirm?token={secrets[1]}&sig={secrets[2]}"

    def open_after_two(clock: FakeClock) -> None:
        if len(confirmer.asked) >= 2:
            confirmer.status = 200

    code, lines, _ = run_ramp(live, "--confirm-url", url, hold="1s", on_sleep=open_after_two)
    assert code == 0, lines
    # the CLI prints the ramp's lines through the settings' redactor (cli.cmd_ramp): so does this test
    redactor = from_cli(live, "ramp", "--steps", "0.5%,1%", "--confirm-url", url)[0].redactor
    shown = redactor.scrub("\n".join(lines)) + capsys.readouterr().err
    written = "".join(p.read_text(errors="replace") for p in live.audit_dir.glob("deploy-*.jsonl"))
    written += live.control_file.read_text() + "".join(p.read_text() for p in live.evidence_dir.glob("ramp-*.json"))
    sent = json.dumps(confirmer.asked)
    for secret in secrets:
        assert secret not in shown and secret not in written
    assert live.token not in sent and live.token not in shown and live.token not in written


@pytest.mark.parametrize("where", ["flag", "environment"])
def test_a_malformed_confirm_url_is_not_echoed_with_its_key(tmp_path, where):
    """A webhook URL is a credential (whoever has it can post): --notify's is never echoed, but a mistyped
    --confirm-url is, with a key in a query parameter the masking does not know (Azure Functions' `code`)."""
    key = "AzFuncKey-s3cret-0001"
    bad = f"htps://fn.example.net/api/confirm?code={key}"
    args = ["ramp", "--steps", "0.5%", "--deploy-audit-dir", str(tmp_path / "audit")]
    env = {**os.environ}
    if where == "flag":
        args += ["--confirm-url", bad]
    else:
        env["GD_CONFIRM_URL"] = bad
    done = subprocess.run(GD + args, capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done
    assert key not in done.stdout + done.stderr, done.stderr


def test_approve_keeps_a_secret_in_its_reason_out_of_the_audit(tmp_path):
    """Every audit line the run writes is scrubbed; `ramp approve` appends its --reason as typed."""
    token = "sandbox-token-1234567"
    audit_dir = tmp_path / "audit"
    audit.append(str(audit_dir), waiting_record("a1a1a1a1a1a1"))
    done = subprocess.run(GD + ["ramp", "approve", "--deploy-audit-dir", str(audit_dir), "--admin-token-env",
                                "GD_TEST_ADMIN_TOKEN", "--reason", f"checked with token {token}"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GD_TEST_ADMIN_TOKEN": token}, cwd=tmp_path)
    assert done.returncode == 0, done
    assert token not in done.stdout + done.stderr
    written = "".join(p.read_text() for p in audit_dir.glob("deploy-*.jsonl"))
    assert token not in written, "the admin token went into the audit with the approval's reason"


# --- (f) a traceback for a user mistake ---------------------------------------------------------------


def _approve(audit_dir: str, *extra: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(GD + ["ramp", "approve", "--deploy-audit-dir", audit_dir, *extra], capture_output=True,
                          text=True, timeout=60, cwd=cwd)


@pytest.mark.parametrize("mistake", ["missing dir", "a file for the dir", "a FIFO for the dir",
                                     "a FIFO for today's audit", "--step 0", "--step -1", "--step x"])
def test_ramp_approve_user_mistakes_end_without_a_traceback(tmp_path, mistake):
    audit_dir = tmp_path / "audit"
    extra: list[str] = []
    if mistake == "a file for the dir":
        audit_dir.write_text("not a directory")
    elif mistake == "a FIFO for the dir":
        os.mkfifo(audit_dir)
    elif mistake == "a FIFO for today's audit":
        audit_dir.mkdir()
        yesterday = utc_now().date() - dt.timedelta(days=1)
        (audit_dir / f"deploy-{yesterday:%Y-%m-%d}.jsonl").write_text(
            json.dumps({"ts": f"{yesterday}T23:00:00.000Z", **waiting_record("a1a1a1a1a1a1")}) + "\n")
        os.mkfifo(audit_dir / f"deploy-{utc_now():%Y-%m-%d}.jsonl")
    elif mistake.startswith("--step"):
        audit.append(str(audit_dir), waiting_record("a1a1a1a1a1a1"))
        extra = mistake.split()
    done = _approve(str(audit_dir), *extra, cwd=tmp_path)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode in (1, 2), done
    assert not audit.read_events(str(audit_dir), ("ramp_approved",)), "a mistaken approve approved"


def test_ramp_approve_with_an_approval_but_no_wait_on_record_says_so(tmp_path):
    """The wait's line is gone (an older audit file archived); its approval is left."""
    audit_dir = tmp_path / "audit"
    audit.append(str(audit_dir), {"event": "ramp_approved", "actor": "alice", "wait_id": "a1a1a1a1a1a1",
                                  "for": "step 2/2 (1%)", "step_to": 2, "reason": ""})
    done = _approve(str(audit_dir), cwd=tmp_path)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1 and "no ramp is waiting" in done.stderr, done


def test_a_confirm_url_with_a_malformed_host_is_no_crash(live, capsys):
    """A typo in the webhook's host name (`hooks..example.com`): requests raises urllib3's LocationParseError,
    which is no RequestException, from the first ask of the wait: the ramp crashes (a traceback at the
    command line, nothing paused)."""
    try:
        code, lines, _ = run_ramp(live, "--confirm-url", "http://hookuser:hookpass-s3cret@hooks..example.com/c",
                                  hold="1s", on_sleep=ctrl_c_once(lambda: bool(events(live, "ramp_confirm"))))
    except Exception as exc:  # what the CLI would print as a traceback
        pytest.fail(f"the ramp crashed on a mistyped --confirm-url: {type(exc).__name__}: {exc}")
    out = "\n".join(lines) + capsys.readouterr().err
    assert live.admin.allocation == 0.005 and "hookpass-s3cret" not in out


# --- (g) an approval that approves a wait it was not given for --------------------------------------------


def test_approve_never_approves_another_ramps_wait_in_a_shared_audit_dir(live):
    """Two deployments ramp with one audit directory. Alice's ramp waits before step 2; Bob's waits too, a
    moment later. Alice approves hers (`--step 2`): the newest wait is Bob's, and Bob's ramp is raised."""
    bob = "b0b0b0b0b0b0"
    tried: list[tuple[bool, str]] = []

    def two_ramps_wait(clock: FakeClock) -> None:
        if tried:
            raise KeyboardInterrupt  # alice's ramp was not let go: stop it
        if events(live, "ramp_waiting"):
            audit.append(str(live.audit_dir), waiting_record(bob))  # bob's ramp, the other deployment
            tried.append(approve(str(live.audit_dir), "alice", "my ramp looks fine", step=2))

    run_ramp(live, "--wait-for-approval", hold="1s", on_sleep=two_ramps_wait)
    assert tried
    approved = [e["wait_id"] for e in events(live, "ramp_approved")]
    assert bob not in approved, f"alice's approval approved bob's wait ({tried[0][1]})"


def test_an_approval_given_before_the_wait_approves_nothing(live):
    """A ramp that died in a wait left its `ramp_waiting` as the newest ramp event. A new ramp starts and
    holds step 1; the operator runs `ramp approve --step 2` too early: it "approves" the dead wait and says the
    waiting ramp goes on; the new ramp's own wait must still wait."""
    set_by_hand(live, 0.005)  # both channels hold 0.5% already: the new ramp writes no step before its hold
    audit.append(str(live.audit_dir), waiting_record("dead0dead0de", actor="test"))
    early: list[tuple[bool, str]] = []

    def too_early_then_stop(clock: FakeClock) -> None:
        if not early:
            early.append(approve(str(live.audit_dir), "alice", "go", step=2))
        elif len(events(live, "ramp_waiting")) >= 2:
            raise KeyboardInterrupt

    code, lines, _ = run_ramp(live, "--wait-for-approval", hold="1s", on_sleep=too_early_then_stop)
    assert code == 130, lines
    assert live.admin.allocation == 0.005, "raised on an approval given before its wait"
    assert early and early[0][0] is False, f"approve said {early[0][1]!r} while no ramp waited"


# --- (h) webhooks that redirect, say no with a 200, hang or trickle ----------------------------------------


def test_a_redirecting_webhook_does_not_confirm(live, hooks):
    """The webhook redirects (307) to a URL that answers 200: only the webhook's own 200 goes on."""
    def answer(n: int):
        return (200, b"", {}) if hook.paths[-1] == "/ok" else (307, b"", {"Location": f"{hook.base}/ok"})

    hook = Hook(answer)
    hooks.append(hook)
    code, lines, _ = run_ramp(live, "--confirm-url", hook.url, hold="1s",
                              on_sleep=ctrl_c_once(lambda: len(hook.asked) >= 3))
    assert code == 130 and live.admin.allocation == 0.005, lines
    assert "/ok" not in hook.paths


def test_a_slow_webhook_does_not_delay_a_breachs_pause(live, hooks):
    """While the ramp waits before step 2 a breach lands (a risk burst) as the webhook takes its time (under
    its 5 s timeout) to answer: the rounds wait on the webhook, so the pause waits too; --interval (0.5 s)
    no longer bounds fact to pause."""
    seen: dict[str, bool] = {}

    def answer(n: int):
        if n == 2:  # the wait's first ask inside its rounds
            live.system.set_fault("risk-burst")
            seen["paused"] = holds_within(lambda: paused(live), 2.5)
        return 503, b"", {}

    hook = Hook(answer)
    hooks.append(hook)
    code, lines, _ = run_ramp(live, "--confirm-url", hook.url, hold="1s",
                              on_sleep=ctrl_c_once(lambda: len(hook.asked) >= 6))
    assert "paused" in seen, lines
    assert code == 1 and paused(live), lines
    assert seen["paused"], "the breach was paused only once the slow webhook had answered"


def test_the_webhook_timeout_bounds_an_answer_that_trickles(tmp_path):
    """requests' timeout bounds each read, not the answer: a webhook that sends a byte every 0.1 s holds the
    ramp (and every round of its wait) as long as it likes."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            try:
                for byte in b"HTTP/1.1 200 OK\r\n":
                    if stop.is_set():
                        return
                    conn.sendall(bytes([byte]))
                    stop.wait(0.1)
                conn.sendall(b"Content-Length: 0\r\n\r\n")
            except OSError:
                pass

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        go, answer = ask_webhook(f"http://127.0.0.1:{server.getsockname()[1]}/confirm", {"phase": "confirm-step"},
                                 timeout_s=0.3)
        took = time.monotonic() - started
    finally:
        stop.set()
        thread.join(5)
        server.close()
    assert took < 1.0, f"asked with a 0.3 s timeout, answered {answer} after {took:.1f} s"
    assert not go


# --- (i) a risk limit spelled so that the ramp misses it ----------------------------------------------------


@pytest.mark.parametrize("doc", [
    {"MAX_ALLOCATION": 0.0075},                                   # cased: read
    {"RISK": {"Max_Allocation": "0.0075"}},                       # cased section and key: read
    {"allocation_limit": 0.0075},                                 # an alias: read
    {"max_allocation": "0.75%"},                                  # a percent string: refused
    {"max_allocation": 0.05, "risk": {"max_allocation": 0.0075}},  # two places: refused
    {"EXEC_MAX_ALLOCATION": "0.0075"},                            # the system's EXEC_ prefix (as EXEC_ALLOCATION)
    {"maxAllocation": 0.0075},                                    # camelCase, as a JSON API writes it
    {"max-allocation": 0.0075},                                   # dashed, as a YAML file writes it
], ids=["cased", "cased-section", "alias", "percent", "two-places", "exec-prefix", "camelCase", "dashed"])
def test_the_ramp_never_misses_the_systems_allocation_limit(doc):
    """The ramp's ceiling reads the risk configuration's max_allocation (`ramp.risk_limit`: parse_config, a
    problem refuses the start). A limit of 0.75% the system reads must either be read or refuse the ramp,
    never be silently left out (then the ceiling is --max-allocation's 1%)."""
    config = parse_config({"allocation": 0.005, **doc}, "GET /config")
    refused = "max_allocation" in config.problems
    limit = config.values.get("max_allocation")
    assert refused or (limit is not None and limit <= 0.0075), \
        f"{doc}: the ramp's ceiling ignores it (read {limit})"
