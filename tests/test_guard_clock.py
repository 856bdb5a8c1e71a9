"""`watch`, `ramp` and the guard loop under them, in-process on a fake clock: their logic without the waiting.

Everything but time is real: the sandbox's admin API and exchange stand-in on loopback, its control file and
SQLite trades feed, the channels, the audit. The sandbox's simulated trading system does not tick on its own
thread here: the fake clock ticks it as often as it would have ticked in the time slept, so that every run
of a test sees the same rounds. `test_watch.py` and `test_ramp.py` keep a few runs of the real process on
the real clock.
"""

from __future__ import annotations

import json
from typing import Callable

import pytest

from waiting import wait_until
from deploy_tool.cli import COMMAND_SETTINGS, build_parser
from deploy_tool import analysis as analysis_mod
from deploy_tool.commands.ramp import ramp
from deploy_tool.commands.watch import WatchConfig, watch
from deploy_tool.criteria import trades_fresh
from deploy_tool.probes import measure_trades
from deploy_tool.modes.change import switch
from deploy_tool.modes.channels import Channel, FileChannel, build_channels
from deploy_tool.modes.gate import GateConfig
from deploy_tool.sandbox import Sandbox, TradingSystemSim
from deploy_tool.settings import resolve


class FakeClock:
    """A `watch.Clock` whose sleep returns at once, `monotonic()` moved on by exactly the time asked.

    What happens in the world while the loop waits happens inside the sleep: the simulated trading system
    ticks as often as it would have in that time, then `on_sleep` runs (a fault starts, Ctrl+C is pressed).
    """

    def __init__(self, system: TradingSystemSim | None = None,
                 on_sleep: Callable[["FakeClock"], None] | None = None) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.system = system
        self.on_sleep = on_sleep
        self._ticked_to = 0.0

    def monotonic(self) -> float:
        return self.now

    LIMIT_S = 3600.0  # a run that goes on past this on the fake clock waits for something that never comes

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0, f"asked to sleep {seconds} s"
        if self.now + seconds > self.LIMIT_S:
            raise RuntimeError(f"still running after {self.LIMIT_S:g} s on the fake clock: waiting forever?")
        self.sleeps.append(seconds)
        self.advance(seconds)
        if self.on_sleep is not None:
            self.on_sleep(self)

    def advance(self, seconds: float) -> None:
        """Time passes (in a sleep, or while a round measures)."""
        self.now += seconds
        while self.system is not None and self._ticked_to + self.system.interval <= self.now + 1e-9:
            self._ticked_to += self.system.interval
            self.system.tick()


@pytest.fixture
def world(sandbox: Sandbox) -> Sandbox:
    """The sandbox with its trading system's own thread stopped: the fake clock ticks it."""
    assert sandbox.system is not None
    sandbox.system.stop()
    return sandbox


def from_cli(box: Sandbox, command: str, *flags: str) -> tuple[WatchConfig, list[Channel]]:
    """What `gradual-deploy <command>` builds from the sandbox's arguments and `flags`: the CLI's parser and
    option table, the admin token from an environment of its own."""
    environ = {box.token_env: box.token or ""}
    gate = ["--trusted-keys", str(box.trusted_keys)] if command == "ramp" else []  # ramp opens the evidence gate
    args = build_parser().parse_args([command, *box.watch_args(), *gate, *flags])
    settings = resolve(COMMAND_SETTINGS[command], cli=lambda o: getattr(args, f"opt_{o.name}", None), environ=environ)
    channels = build_channels(settings, pause=command == "watch", environ=environ)
    return WatchConfig(settings, actor="test", redactor=settings.redactor(environ)), channels


def to_mock(box: Sandbox) -> None:
    box.admin.change({"mode": "mock"})
    FileChannel(str(box.control_file)).apply("mock", "paused", "test", "test")


def file_doc(box: Sandbox) -> dict:
    return json.loads(box.control_file.read_text())


def modes(box: Sandbox) -> tuple[str, str]:
    """The mode the admin API holds and the mode the control file says."""
    return box.admin.mode, file_doc(box)["mode"]


def events(box: Sandbox, *names: str) -> list[dict]:
    """gradual-deploy's own audit, in order (the trading system's audit beside it is not read)."""
    lines = [json.loads(x) for f in sorted(box.audit_dir.glob("deploy-*.jsonl")) for x in f.read_text().splitlines()]
    return [line for line in lines if not names or line["event"] in names]


def rounds(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("round ")]


# --- the guard loop, through watch ----------------------------------------------------------------


def test_a_clean_watch_runs_one_round_per_interval_to_the_end_and_leaves_the_mode(world):
    to_mock(world)
    cfg, channels = from_cli(world, "watch", "--interval", "1s", "--duration", "2.5s")
    clock, lines = FakeClock(world.system), []
    assert watch(cfg, channels, lines.append, clock=clock) == 0
    # each round starts 0.1 s early (ACT_ALLOWANCE_S: judging and pausing), so that --interval bounds the
    # time from a fact to its pause
    assert clock.sleeps == pytest.approx([0.9, 0.9, 0.7]) and clock.now == pytest.approx(2.5)
    assert len(rounds(lines)) == 3 and all(" OK " in r for r in rounds(lines)), lines
    assert [r.rsplit("; ", 1)[1] for r in rounds(lines)] == ["2s left", "2s left", "1s left"]
    assert "order failures 0.0%" in lines[0]
    assert lines[-1] == "watch finished: no breach in 2.5s (3 rounds)"
    assert modes(world) == ("mock", "mock")
    assert [e["event"] for e in events(world)] == ["watch_start", *["watch_round"] * 3, "watch_end"]
    assert events(world, "watch_end")[0]["rounds"] == 3


@pytest.mark.parametrize("round_takes,sleeps,count", [(0.3, [0.3, 0.3, 0.3, 0.3], 5), (1.5, [0.0], 2)])
def test_a_slow_round_starts_the_next_one_earlier(world, monkeypatch, round_takes, sleeps, count):
    """A round starts before --interval is over by the time the last one took plus the allowance to act, at
    most half the interval (a fact that lands just after a round read it is acted on within --interval);
    one slower than the interval is followed at once by the next, and none starts after the duration."""
    cfg, channels = from_cli(world, "watch", "--interval", "1s", "--duration", "2.5s")
    clock, lines = FakeClock(world.system), []
    measure = analysis_mod.measure_round

    def slow_round(number, cfg):
        clock.advance(round_takes)
        return measure(number, cfg)

    monkeypatch.setattr(analysis_mod, "measure_round", slow_round)
    assert watch(cfg, channels, lines.append, clock=clock) == 0
    assert clock.sleeps == pytest.approx(sleeps)
    assert len(rounds(lines)) == count and lines[-1] == f"watch finished: no breach in 2.5s ({count} rounds)"


def test_consecutive_failures_reset_on_a_clean_round_and_breach_at_the_limit(world):
    to_mock(world)
    cfg, channels = from_cli(world, "watch", "--interval", "1s", "--duration", "1h", "--failure-limit", "3")
    skewed = {1, 2, 4, 5, 6}  # the rounds that find the exchange's clock 5 s off

    def next_round(clock: FakeClock) -> None:
        world.exchange.behaviour.skew_ms = 5000.0 if len(clock.sleeps) + 1 in skewed else 0.0

    world.exchange.behaviour.skew_ms = 5000.0
    clock, lines = FakeClock(world.system, next_round), []
    assert watch(cfg, channels, lines.append, clock=clock) == 1
    marks = [r.split(" ", 5)[3:5] for r in rounds(lines)]
    assert marks == [["FAIL", "(1/3)"], ["FAIL", "(2/3)"], ["OK", ""], ["FAIL", "(1/3)"], ["FAIL", "(2/3)"],
                     ["FAIL", "(3/3)"]], lines
    assert all("okx_clock_skew" in r for r in rounds(lines) if " FAIL " in r)
    assert [e["consecutive_failures"] for e in events(world, "watch_round")] == [1, 2, 0, 1, 2, 3]
    assert "BREACH after 3 failing round(s): pausing through every channel" in lines
    assert modes(world) == ("paused", "paused")
    (breach,) = events(world, "watch_breach")
    assert breach["round"] == 6 and breach["consecutive_failures"] == 3 and breach["failures"] == ["okx_clock_skew"]


@pytest.mark.parametrize("fault,limit,failing", [("risk-burst", "1", "observe_risk_events"),
                                                 ("failing-orders", "2", "observe_order_failure_rate"),
                                                 ("stall-feed", "1", "trades_fresh")])
def test_a_breach_pauses_both_channels(world, fault, limit, failing):
    to_mock(world)
    threshold = "0.3" if fault == "stall-feed" else "1"
    cfg, channels = from_cli(world, "watch", "--interval", "0.5s", "--duration", "60s", "--failure-limit", limit,
                          "--data-latency-threshold", threshold)
    world.system.set_fault(fault)
    if fault == "failing-orders":
        for _ in range(10):  # nine rejected results against the few filled before the fault
            world.system.tick()
    if fault == "stall-feed":
        wait_until(lambda: not trades_fresh(measure_trades(cfg.settings).value(), cfg.settings).ok,
                   f"the stalled feed's newest trade to age past {threshold} s")
    clock, lines = FakeClock(world.system), []
    assert watch(cfg, channels, lines.append, clock=clock) == 1
    assert len(rounds(lines)) == int(limit) and clock.sleeps == [0.4] * (int(limit) - 1)
    assert f"FAIL ({limit}/{limit}) " in rounds(lines)[-1] and failing in rounds(lines)[-1]
    assert "pause: DONE" in lines[-1]
    assert modes(world) == ("paused", "paused")
    audit = events(world)
    breach = next(a for a in audit if a["event"] == "watch_breach")
    assert breach["pause"] == "done" and failing in breach["failures"] and breach["measurements"][failing]["ok"] is False
    switched = next(a for a in audit if a["event"] == "mode_switch")
    assert switched["to"] == "paused" and switched["channel"] == "http+file" and switched["reason"].startswith("watch:")
    snapshot = json.loads(open(breach["evidence"]).read())
    assert snapshot["schema"] == "gradual-deploy/watch-breach/1" and snapshot["pause"]["result"] == "done"


def test_ctrl_c_stops_the_watch_and_leaves_the_mode(world):
    to_mock(world)
    cfg, channels = from_cli(world, "watch", "--interval", "1s", "--duration", "10m")

    def ctrl_c(clock: FakeClock) -> None:
        if len(clock.sleeps) == 2:
            raise KeyboardInterrupt

    lines: list[str] = []
    assert watch(cfg, channels, lines.append, clock=FakeClock(world.system, ctrl_c)) == 130
    assert lines[-1] == "watch stopped by Ctrl+C after 2 round(s); the mode was left as it is"
    assert modes(world) == ("mock", "mock")
    last = events(world)[-1]
    assert last["event"] == "watch_stopped" and last["reason"] == "Ctrl+C" and last["rounds"] == 2


def test_a_termination_during_the_watch_pauses_first(world, capsys):
    to_mock(world)
    cfg, channels = from_cli(world, "watch", "--interval", "1s", "--duration", "10m")

    def terminated(clock: FakeClock) -> None:
        raise analysis_mod.Terminated("SIGTERM")

    assert watch(cfg, channels, lambda line: None, clock=FakeClock(world.system, terminated)) == 1
    err = capsys.readouterr().err
    assert "watch ended before its duration (terminated by SIGTERM)" in err and "pause DONE" in err
    assert modes(world) == ("paused", "paused")
    stopped = events(world, "watch_stopped")[-1]
    assert stopped["pause"] == "done" and stopped["reason"] == "terminated by SIGTERM" and stopped["rounds"] == 1


@pytest.mark.parametrize("limit", [0, 4])
def test_a_round_that_crashes_is_an_error_and_errors_past_the_limit_breach(world, monkeypatch, limit):
    """A round that cannot measure is not a failed criterion (--failure-limit 1 does not fire on it) and never
    a pass: one more than --consecutive-error-limit in a row pauses (Argo's consecutiveErrorLimit, default 4)."""
    def broken(number, cfg):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(analysis_mod, "measure_round", broken)
    cfg, _ = from_cli(world, "watch", "--interval", "0.1s", "--duration", "5s", "--failure-limit", "1",
                      *(["--consecutive-error-limit", str(limit)] if limit != 4 else []))
    lines: list[str] = []
    code = watch(cfg, [FileChannel(str(world.control_file))], emit=lines.append, clock=FakeClock(world.system))
    assert code == 1
    assert len(rounds(lines)) == limit + 1, lines
    assert "ERROR (1/" in lines[0] and "the round crashed: RuntimeError: disk on fire" in lines[0]
    assert file_doc(world)["mode"] == "paused"
    assert file_doc(world)["reason"].startswith(f"watch: {limit + 1} consecutive round(s) could not measure")
    (breach,) = events(world, "watch_breach")
    assert breach["breach"] == "errored" and breach["consecutive"]["error"] == limit + 1


def test_watch_goes_on_guarding_when_its_audit_cannot_be_written(world, tmp_path, capsys):
    to_mock(world)
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the audit directory should be")
    flags = ("--deploy-audit-dir", str(blocked / "audit"), "--interval", "0.5s")
    cfg, channels = from_cli(world, "watch", *flags, "--duration", "1.2s")
    clock, lines = FakeClock(world.system), []
    assert watch(cfg, channels, lines.append, clock=clock) == 0
    assert clock.sleeps == pytest.approx([0.4, 0.4, 0.4])
    assert [" OK " in r for r in rounds(lines)] == [True] * 3 and lines[-1].startswith("watch finished: no breach")
    err = capsys.readouterr().err
    assert "WARNING: cannot append to the audit" in err and "still watching" in err
    # and when a breach comes, it still pauses
    world.system.set_fault("risk-burst")
    cfg, channels = from_cli(world, "watch", *flags, "--duration", "30s")
    lines.clear()
    assert watch(cfg, channels, lines.append, clock=FakeClock(world.system)) == 1
    assert "pause: DONE" in lines[-1]
    assert modes(world) == ("paused", "paused")


# --- ramp -------------------------------------------------------------------------------------------


@pytest.fixture
def live(world, run_suite):
    """The sandbox in real, with a fresh passing evidence (risk group included) in its evidence dir."""
    run = run_suite(evidence_dir=world.evidence_dir)
    assert run.evidence["verdict"] == "pass", run.output
    cfg, channels = from_cli(world, "ramp")
    gate = GateConfig(str(world.evidence_dir), 3600, str(world.trusted_keys), world.okx_url, world.database_url,
                      admin_token=world.token)
    for target in ("mock", "real"):
        outcome = switch(channels, target, force=False, reason="test", actor="test", gate=gate,
                         audit_dir=str(world.audit_dir))
        assert outcome.ok, outcome.as_dict()
    return world


def run_ramp(box: Sandbox, *flags: str, steps: str = "0.5%,1%", hold: str = "1.5s",
             on_line: Callable[[str], None] = lambda line: None,
             on_sleep: Callable[[FakeClock], None] | None = None) -> tuple[int, list[str], FakeClock]:
    """`gradual-deploy ramp` in-process: its exit code, its lines and the clock it ran on."""
    cfg, channels = from_cli(box, "ramp", "--steps", steps, "--hold", hold, "--interval", "0.5s", *flags)
    clock, lines = FakeClock(box.system, on_sleep), []

    def emit(line: str) -> None:
        lines.append(line)
        on_line(line)

    return ramp(cfg, channels, emit=emit, clock=clock), lines, clock


def test_a_clean_ramp_holds_each_step_then_advances_to_full_allocation(live):
    code, lines, clock = run_ramp(live)
    out = "\n".join(lines)
    assert code == 0, out
    assert "allocation 0.5% has no clean hold on record: holding it again" in out
    assert "ramp step 1/2 (0.5%): held clean for 1.5s (5 rounds)" in out, "the last round judges the hold's end"
    assert "ramp step 2/2 (1%): allocation 0.5% -> 1% confirmed on http, file; holding 1.5s" in out
    assert "ramp step 2/2 (1%): held clean for 1.5s (5 rounds)" in out
    assert lines[-1] == "ramp complete: allocation 1%" and clock.now == pytest.approx(3.0)
    assert live.admin.allocation == 0.01 and file_doc(live)["allocation"] == 0.01
    assert file_doc(live)["mode"] == "real", "an allocation write keeps the mode"
    assert [(e["ramp_step"], e["allocation"]) for e in events(live, "watch_round")] == [(1, 0.005)] * 5 + [(2, 0.01)] * 5
    assert [e["allocation"] for e in events(live, "ramp_step_held")] == [0.005, 0.01]
    code, lines, clock = run_ramp(live)
    assert code == 0 and "nothing to do" in lines[-1] and clock.sleeps == []


def test_a_breach_pauses_and_goes_back_to_the_stable_allocation(live):
    def losses_after_a_second(clock: FakeClock) -> None:
        if clock.now >= 1.0 and live.system.fault != "losses":
            live.system.set_fault("losses")  # each fill loses 0.5 % of capital: the daily limit of 2 % falls

    code, lines, clock = run_ramp(live, hold="30s", on_sleep=losses_after_a_second)
    out = "\n".join(lines)
    assert code == 1, out
    assert "RAMP ABORT at step 1 (0.5%)" in out and "observe_realized_pnl" in out
    assert "pause: DONE; allocation back to 0.5%: DONE" in out and clock.now < 30
    assert live.admin.mode == "paused" and live.admin.allocation == 0.005
    assert file_doc(live)["mode"] == "paused" and file_doc(live)["allocation"] == 0.005
    (abort,) = events(live, "ramp_abort")
    assert abort["pause"] == "done" and abort["restore"] == "done" and "observe_realized_pnl" in abort["failures"]
    snapshot = json.loads(open(abort["evidence"]).read())
    assert snapshot["schema"] == "gradual-deploy/ramp-abort/1" and snapshot["stable_allocation"] == 0.005


def test_an_abort_on_a_later_step_restores_the_first(live):
    def slippage_at_step_2(line: str) -> None:
        if "ramp step 2/2 (1%): allocation 0.5% -> 1% confirmed" in line:
            live.system.set_fault("slippage")  # fills 80 bps off the intended price

    code, lines, _ = run_ramp(live, "--max-slippage-bps", "20", hold="4s", on_line=slippage_at_step_2)
    out = "\n".join(lines)
    assert code == 1, out
    assert "RAMP ABORT at step 2 (1%)" in out and "observe_slippage" in out
    assert live.admin.allocation == 0.005 and file_doc(live)["allocation"] == 0.005
    assert modes(live) == ("paused", "paused")


def test_a_concurrent_allocation_change_stops_the_ramp_without_overwriting(live):
    def lowered_meanwhile(line: str) -> None:
        if "ramp step 1/2 (0.5%)" in line and "holding" in line:
            live.admin.allocate({"allocation": 0.003, "actor": "risk desk"})  # someone lowers it meanwhile

    code, lines, _ = run_ramp(live, on_line=lowered_meanwhile)
    out = "\n".join(lines)
    assert code == 1, out
    assert "ramp: STOPPED at step 2/2 (1%)" in out and "HTTP 409, allocation is now 0.003" in out
    assert live.admin.allocation == 0.003, "the concurrent change stands"


def test_ctrl_c_during_a_hold_leaves_allocation_and_mode_and_the_next_ramp_holds_again(live):
    def ctrl_c_at_step_2(clock: FakeClock) -> None:
        if live.admin.allocation == 0.01:
            raise KeyboardInterrupt

    code, lines, _ = run_ramp(live, on_sleep=ctrl_c_at_step_2)
    assert code == 130, lines
    assert lines[-1].startswith("ramp stopped by Ctrl+C during step 2/2 (1%); allocation and mode left as they are")
    assert modes(live) == ("real", "real") and live.admin.allocation == 0.01 and file_doc(live)["allocation"] == 0.01
    assert events(live)[-1]["event"] == "ramp_stopped" and events(live)[-1]["reason"] == "Ctrl+C"
    code, lines, _ = run_ramp(live)
    assert code == 0 and "allocation 1% has no clean hold on record: holding it again" in "\n".join(lines)
    assert [e["allocation"] for e in events(live, "ramp_step_held")] == [0.005, 0.01]


def test_a_ramp_resumed_after_a_clean_hold_sets_the_next_step_before_holding_it(live):
    """A ramp that ended after a step's clean hold (here: a one-step ramp) and is run again with more steps
    takes the next step (set on both channels, read back) before it holds it; it never reports a step that
    no channel holds."""
    code, lines, _ = run_ramp(live, steps="0.5%")
    assert code == 0 and lines[-1] == "ramp complete: allocation 0.5%", lines
    code, lines, _ = run_ramp(live, steps="0.5%,1%")
    out = "\n".join(lines)
    assert code == 0, out
    assert "allocation 0.5% was held clean" in out
    assert "ramp step 2/2 (1%): allocation 0.5% -> 1% confirmed on http, file" in out
    assert "already 1%" not in out
    assert live.admin.allocation == 0.01 and file_doc(live)["allocation"] == 0.01
    assert [e["allocation"] for e in events(live, "ramp_step") if e["ok"]][-1] == 0.01


# --- a pause always wins (issue 17, point 2) ---------------------------------------------------------


def _pause_by_hand(box: Sandbox, tmp_path_audit: str) -> None:
    """`gradual-deploy pause` from another terminal: both channels, audited where the ramp audits."""
    from deploy_tool.modes.change import pause

    cfg, channels = from_cli(box, "watch")
    outcome = pause(channels, reason="operator: incident", actor="alice", audit_dir=tmp_path_audit)
    assert outcome.result == "done", outcome.as_dict()


def _back_to_real(box: Sandbox) -> None:
    """After the incident: mock, then real through the gate, as an operator would."""
    to_mock(box)
    cfg, channels = from_cli(box, "ramp")
    gate = GateConfig(str(box.evidence_dir), 3600, str(box.trusted_keys), box.okx_url, box.database_url,
                      admin_token=box.token)
    assert switch(channels, "real", force=False, reason="after the incident", actor="alice", gate=gate).ok


def test_a_pause_during_a_hold_stops_the_ramp_and_nothing_is_raised(live):
    def pause_in_step_1(clock: FakeClock) -> None:
        if clock.now >= 0.5 and live.admin.mode == "real":
            _pause_by_hand(live, str(live.audit_dir))

    code, lines, _ = run_ramp(live, steps="0.5%,0.75%,1%", hold="4s", on_sleep=pause_in_step_1)
    out = "\n".join(lines)
    assert code == 1, out
    assert "ramp: STOPPED at step 1 (0.5%): the mode is no longer real (http paused" in out
    assert live.admin.allocation == 0.005 and file_doc(live)["allocation"] == 0.005, "never raised after a pause"
    assert modes(live) == ("paused", "paused")
    assert [e["allocation"] for e in events(live, "ramp_step_held")] == [] and not events(live, "ramp_done")
    (stopped,) = events(live, "ramp_stopped")
    assert "no longer real" in stopped["reason"]
    # resumed once back in real: the step whose hold the pause cut is held again, from its start
    _back_to_real(live)
    code, lines, _ = run_ramp(live, steps="0.5%,0.75%,1%", hold="1s")
    out = "\n".join(lines)
    assert code == 0, out
    assert "allocation 0.5% has no clean hold on record: holding it again" in out


@pytest.mark.parametrize("audit", ["the ramp's", "another", "none"])
def test_a_pause_that_comes_and_goes_between_rounds_spoils_the_hold(live, tmp_path, audit):
    """Paused and back to real between two rounds: no round saw it. Whatever audit the pause went to (the
    ramp's, another directory, or one it could not write), the channels' write counters moved."""
    where = {"the ramp's": str(live.audit_dir), "another": str(tmp_path / "elsewhere"),
             "none": str(tmp_path / "fifo")}[audit]
    if audit == "none":
        import os

        os.mkfifo(where)  # an audit directory that is a FIFO: the pause's line is lost

    def pause_and_back(clock: FakeClock) -> None:
        if 0.3 < clock.now < 0.5:
            _pause_by_hand(live, where)
            _back_to_real(live)

    code, lines, _ = run_ramp(live, steps="0.5%,1%", hold="1.5s", on_sleep=pause_and_back)
    out = "\n".join(lines)
    assert code == 1, out
    assert "the hold was not clean: the channels changed during the hold (" in out
    assert live.admin.allocation == 0.005 and not events(live, "ramp_step_held")


def test_a_pause_during_a_steps_write_takes_the_raise_back(live):
    """The pause lands between the ramp's mode check and its allocation write: the raise is set back."""
    from deploy_tool.modes.channels import HttpChannel

    original = HttpChannel.apply_allocation

    def pause_then_write(self, *args, **kwargs):
        if args and args[0] == 0.01 and live.admin.mode == "real":
            _pause_by_hand(live, str(live.audit_dir))
        return original(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(HttpChannel, "apply_allocation", pause_then_write)
        code, lines, _ = run_ramp(live, steps="0.5%,1%", hold="1s")
    out = "\n".join(lines)
    assert code == 1, out
    assert "ramp: STOPPED at step 2 (1%): the mode is no longer real" in out
    assert "the allocation was set back to 0.5%" in out
    assert live.admin.allocation == 0.005 and file_doc(live)["allocation"] == 0.005
    assert modes(live) == ("paused", "paused")
    # resumed once back in real: the step below the taken-back raise is held again before the raise
    _back_to_real(live)
    code, lines, _ = run_ramp(live, steps="0.5%,1%", hold="1s")
    out = "\n".join(lines)
    assert code == 0, out
    assert "allocation 0.5% has no clean hold on record: holding it again" in out
    assert "ramp step 2/2 (1%): allocation 0.5% -> 1% confirmed on http, file" in out
    assert live.admin.allocation == 0.01 and file_doc(live)["allocation"] == 0.01
