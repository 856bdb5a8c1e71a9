"""The Windows code paths, run here by their platform switch (`deploy_tool.fileops.WINDOWS`, the backstop
method, the terminating signals): what differs on Windows is exercised with the real OS where Linux can
produce the same failure (a file that cannot be replaced, concurrent appenders, a process ended by a
timeout), and the Windows job of the CI template runs the tool there for real."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deploy_tool import audit, fileops
from deploy_tool import analysis as watch  # the loop watch and ramp both run
from deploy_tool.modes.change import pause
from deploy_tool.modes.channels import FileChannel
from deploy_tool.modes.controlfile import read_control, write_control_atomic
from preflight_tests import plugin


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fileops, "WINDOWS", True)


def _running(path: Path) -> Path:
    write_control_atomic(str(path), {"mode": "real", "updated_at": "2026-11-25T00:00:00.000Z", "actor": "t",
                                     "reason": "t", "version": 3})
    return path


def test_pause_works_without_os_fchmod(windows, monkeypatch, tmp_path):
    """Python before 3.13 on Windows has no os.fchmod: the control-file write (and so a pause) used it."""
    control = _running(tmp_path / "mode.json")
    monkeypatch.delattr(os, "fchmod")
    outcome = pause([FileChannel(str(control))], reason="incident", actor="ops", audit_dir=str(tmp_path / "audit"))
    assert outcome.result == "done", outcome
    assert read_control(str(control)).mode == "paused"


def test_no_directory_is_opened_for_fsync_on_windows(windows, monkeypatch, tmp_path):
    opened = []
    real_open = os.open

    def watching_open(path, flags, *args):
        if os.path.isdir(path):
            opened.append(path)
            raise PermissionError(13, "Access is denied")  # what Windows says
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", watching_open)
    assert fileops.fsync_directory(tmp_path) is False
    _running(tmp_path / "mode.json")
    assert opened == [] and read_control(str(tmp_path / "mode.json")).mode == "real"


def _immutable(path: Path) -> None:
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this file system: no file that refuses os.replace")


def _mutable(path: Path) -> None:
    subprocess.run(["chattr", "-i", str(path)], capture_output=True)


def test_replace_waits_out_a_file_held_open_on_windows(windows, tmp_path):
    """A file that refuses to be replaced for a moment (on Windows: the trading system reading it) is
    replaced once it lets go, and the pause goes through."""
    control = _running(tmp_path / "mode.json")
    _immutable(control)  # os.replace over it fails with PermissionError, as over a held file on Windows
    try:
        threading.Timer(0.15, _mutable, (control,)).start()
        started = time.monotonic()
        outcome = pause([FileChannel(str(control))], reason="incident", actor="ops", audit_dir=str(tmp_path / "a"))
        took = time.monotonic() - started
    finally:
        _mutable(control)
    assert outcome.result == "done", outcome
    assert read_control(str(control)).mode == "paused"
    assert 0.1 < took < 1.5


def _held_target(tmp_path: Path) -> tuple[Path, Path]:
    """A new file and a target that refuses to be replaced (immutable), as a held file does on Windows."""
    target, source = tmp_path / "mode.json", tmp_path / "new.json"
    target.write_text("{}")
    source.write_text("{}")
    _immutable(target)
    return source, target


def test_replace_held_for_good_says_why_within_its_bound(windows, tmp_path):
    source, target = _held_target(tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(PermissionError, match="held open by another process and Windows cannot replace"):
            fileops.replace(source, target)
        assert time.monotonic() - started < fileops.REPLACE_RETRY_S + 0.5
    finally:
        _mutable(target)


def test_posix_replace_does_not_retry(tmp_path):
    source, target = _held_target(tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(PermissionError):
            fileops.replace(source, target)
        assert time.monotonic() - started < 0.1
    finally:
        _mutable(target)


APPENDER = """
import sys
from deploy_tool import audit, fileops
fileops.WINDOWS = True  # the Windows path: appends under the lock file
for i in range(int(sys.argv[3])):
    audit.append(sys.argv[1], {"event": "mode_switch", "writer": sys.argv[2], "i": i, "pad": "x" * 300})
"""


def test_concurrent_audit_appends_on_the_windows_path_lose_no_line(tmp_path):
    audit_dir = tmp_path / "audit"
    writers = [subprocess.Popen([sys.executable, "-c", APPENDER, str(audit_dir), str(w), "150"], cwd=tmp_path)
               for w in range(4)]
    assert [w.wait(timeout=120) for w in writers] == [0, 0, 0, 0]
    (log,) = audit_dir.glob("deploy-*.jsonl")
    lines = log.read_bytes().split(b"\n")
    assert lines[-1] == b""
    records = [json.loads(line) for line in lines[:-1]]
    assert sorted((r["writer"], r["i"]) for r in records) == sorted((str(w), i) for w in range(4) for i in range(150))
    assert (audit_dir / (log.name + ".lock")).exists()  # the lock really was the path taken
    assert audit.read_events(str(audit_dir), {"mode_switch"})[0]["writer"] in "0123"


def test_windows_paths_compare_without_case_or_separator(windows, tmp_path):
    assert fileops.same_path(str(tmp_path / "Control" / "Mode.json"), str(tmp_path / "control" / "mode.json"))
    assert not fileops.same_path(str(tmp_path / "control" / "mode.json"), str(tmp_path / "control" / "other.json"))


def test_posix_paths_keep_their_case(tmp_path):
    assert not fileops.same_path(str(tmp_path / "Control" / "Mode.json"), str(tmp_path / "control" / "mode.json"))


def test_the_timeout_backstop_uses_threads_where_there_is_no_sigalrm(windows):
    assert plugin.backstop_method() == "thread"


def test_the_timeout_backstop_uses_signals_on_posix():
    assert plugin.backstop_method() == ("signal" if hasattr(signal, "SIGALRM") else "thread")


BACKSTOPPED_RUN = """
import sys, pytest
from deploy_tool import fileops
fileops.WINDOWS = True  # the Windows backstop: pytest-timeout's thread method, which ends the process
from preflight_tests import plugin
plugin.BACKSTOP_TIMEOUT_S = 1.0
sys.exit(pytest.main(sys.argv[1:]))
"""


def test_a_run_ended_by_the_windows_backstop_never_opens_real(sandbox, tmp_path):
    sandbox.exchange.behaviour.delay_ms = 4000  # the exchange hangs past the backstop
    evidence = tmp_path / "ev"
    run = subprocess.run([sys.executable, "-c", BACKSTOPPED_RUN, "--pyargs", "preflight_tests", "-p",
                          "no:cacheprovider", *sandbox.preflight_args(), "--evidence-dir", str(evidence)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path,
                         env={**os.environ, sandbox.token_env: sandbox.token or ""})
    assert run.returncode != 0
    assert "Timeout" in run.stderr + run.stdout  # pytest-timeout's thread method said so, then ended it
    assert list(evidence.glob("preflight-*.html")) and not list(evidence.glob("preflight-*.json"))
    sandbox.exchange.behaviour.delay_ms = 0
    FileChannel(str(sandbox.control_file)).apply("mock", None, "test", "test", cas=False)
    done = subprocess.run([sys.executable, "-m", "deploy_tool", "switch", "--to", "real", "--control-file",
                           str(sandbox.control_file), "--evidence-dir", str(evidence), "--audit-dir",
                           str(tmp_path / "audit"), *sandbox.gate_args()], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert done.returncode == 1 and "never finished" in done.stdout, done.stdout + done.stderr
    assert read_control(str(sandbox.control_file)).mode == "mock"


def test_watch_treats_sigbreak_as_termination(monkeypatch):
    """Windows sends SIGBREAK on Ctrl+Break and when the console window is closed: the watch pauses first."""
    monkeypatch.setattr(signal, "SIGBREAK", signal.SIGUSR1, raising=False)
    handlers = watch.catch_termination()
    try:
        assert signal.SIGUSR1 in handlers
        with pytest.raises(watch.Terminated):
            os.kill(os.getpid(), signal.SIGUSR1)
            # The handler raises in the main thread at its next check for signals: at once, or as soon as
            # that thread runs. Waited for with a deadline; pytest.raises says so if it never came.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        watch.restore_handlers(handlers)


@pytest.mark.parametrize("command", ["pause", "status"])
def test_a_cp1252_console_prints_a_chinese_path_escaped_not_a_traceback(tmp_path, command):
    """Windows' redirected output (CI logs, `> file`) is cp1252; the runbook's operators name folders in Chinese."""
    control = _running(tmp_path / "风控" / "mode.json")
    done = subprocess.run([sys.executable, "-m", "deploy_tool", command, "--control-file", str(control),
                           "--audit-dir", str(tmp_path / "audit")][: 6 if command == "status" else 8],
                          capture_output=True, timeout=60, env={**os.environ, "PYTHONIOENCODING": "cp1252"},
                          cwd=tmp_path)
    out = (done.stdout + done.stderr).decode("cp1252")
    assert done.returncode == 0, out
    assert "Traceback" not in out and "\\u98ce\\u63a7" in out
    if command == "pause":
        assert read_control(str(control)).mode == "paused"
