"""Hostile things at the paths the tool reads and writes, and a hostile environment and stdout: a FIFO, a
socket, a device or a directory where a file should be; a file too large to be one of ours; a flag value the
tool does not know; a reader that is gone before the tool prints. None of them may hold a pause or a guard
round, or make a pause say DONE while a channel it was given is not paused.

Every case that could hang on old code runs in its own process with a deadline (`communicate_or_kill`); the
in-process tests here only touch paths that cannot block.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from deploy_tool import fileops
from deploy_tool.evidence import SCHEMA
from deploy_tool.modes.channels import FileChannel
from deploy_tool.sandbox import AdminApi
from deploy_tool.settings import admin_url_from_env
from waiting import communicate_or_kill

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are a POSIX thing")

GD = [sys.executable, "-m", "deploy_tool"]
TOKEN, TOKEN_ENV = "hostile-files-token", "GD_TEST_HOSTILE_TOKEN"
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if k not in ("EXEC_HTTP_ADMIN_URL", "EXEC_HTTP_ADMIN_ENABLED", "EXEC_HTTP_HOST", "EXEC_HTTP_PORT",
                          "EXEC_CONTROL_FILE", "EXEC_HTTP_ADMIN_TOKEN")}
# A pause's own bounds: 1 s per HTTP call, two calls; the rest is the interpreter starting. The old code
# took 10.4 s on a FIFO control file (the pause's 10 s join), and forever on a FIFO audit file.
PAUSE_BOUND_S = 5.0


def _start(*args: str, env: dict | None = None, cwd: Path | None = None, **popen) -> subprocess.Popen:
    popen.setdefault("stdout", subprocess.PIPE)
    return subprocess.Popen(GD + list(args), stderr=subprocess.PIPE, text=True, cwd=cwd,
                            env={**CLEAN_ENV, TOKEN_ENV: TOKEN, **(env or {})}, **popen)


def _gd(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 30.0,
        what: str = "the command to end") -> tuple[subprocess.Popen, str, str, float]:
    """Run gradual-deploy; (process, stdout, stderr, seconds it took). Killed, and the test failed, when it
    does not end within `timeout`: what the old code did on every FIFO here."""
    started = time.monotonic()
    proc = _start(*args, env=env, cwd=cwd)
    out, err = communicate_or_kill(proc, timeout, what)
    return proc, out, err, time.monotonic() - started


def _python(code: str, *args: str, timeout: float = 30.0, what: str = "the snippet to end") -> str:
    """Run `code` in a fresh interpreter, bounded; its stdout. A snippet that raises fails the test."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=CLEAN_ENV)
    out, err = communicate_or_kill(proc, timeout, what)
    assert proc.returncode == 0, out + err
    return out


def _running(path: Path, mode: str = "real") -> Path:
    """A control file a running system reads, in `mode`."""
    FileChannel(str(path)).apply(mode, None, "test", "test", cas=False)
    return path


def _mode(path: Path) -> str:
    return json.loads(path.read_text())["mode"]


def _audit_lines(audit_dir: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(audit_dir.glob("deploy-*.jsonl")) if f.is_file()
            for line in f.read_text().splitlines()]


def _own_audit_fifos(audit_dir: Path) -> None:
    """gradual-deploy's audit file of today, and of tomorrow (a test that runs across midnight), as FIFOs."""
    audit_dir.mkdir(parents=True, exist_ok=True)
    today = dt.datetime.now(dt.timezone.utc).date()
    for day in (today, today + dt.timedelta(days=1)):
        os.mkfifo(audit_dir / f"deploy-{day:%Y-%m-%d}.jsonl")


@pytest.fixture
def admin():
    """A trading system's admin API on loopback, in `real`."""
    api = AdminApi(token=TOKEN, mode="real").start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture
def short_dir():
    """A directory with a short path: a Unix socket's name is limited to about 100 bytes."""
    with tempfile.TemporaryDirectory(prefix="gd-") as name:
        yield Path(name)


def _hostile(kind: str, path: Path) -> object:
    """Put a `kind` at `path`; what must stay open for it to stay there (a bound socket)."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
        return server
    elif kind == "device":
        path.symlink_to("/dev/zero")
    elif kind == "directory":
        path.mkdir()
    return None


KINDS = {"fifo": "a FIFO (named pipe)", "socket": "a socket", "device": "a character device",
         "directory": "a directory"}


# --- 1. a flag value the tool does not recognise --------------------------------------------------------


@pytest.mark.parametrize("value", ["y", "enabled", "ture"])
def test_an_unknown_admin_enabled_value_is_the_http_channel_failed_not_a_silent_done(admin, tmp_path, value):
    """EXEC_HTTP_ADMIN_ENABLED=y with host and port: the old code read `y` as off, paused through the control
    file alone and said DONE while GET /mode still said real."""
    control = _running(tmp_path / "mode.json")
    host, port = admin.server.server_address[:2]
    env = {"EXEC_HTTP_ADMIN_ENABLED": value, "EXEC_HTTP_HOST": host, "EXEC_HTTP_PORT": str(port)}
    proc, out, err, _ = _gd("pause", "--control-file", str(control), "--admin-token-env", TOKEN_ENV,
                            "--audit-dir", str(tmp_path / "audit"), "--json", env=env)
    record = json.loads(out)
    assert record["result"] == "partial", out + err  # never DONE: the admin API was named and is not paused
    assert proc.returncode == 0  # PARTIAL: paused through the file, the failed channel said on stderr
    http, file = record["channels"]
    assert not http["ok"] and file["ok"] and _mode(control) == "paused"
    reason = f"EXEC_HTTP_ADMIN_ENABLED={value!r} is neither on nor off: expected true or false (also 1/0, yes/no, on/off)"
    assert http["error"] == reason
    assert f"WARNING: pause through http (admin API) FAILED: {reason}" in err
    assert admin.mode == "real"  # what the operator must now see: the line says which channel
    (line,) = _audit_lines(tmp_path / "audit")
    assert line["result"] == "partial" and line["channels"][0]["error"] == reason
    # switch and status are no emergency: a usage error naming the variable
    for command in (["switch", "--to", "mock"], ["status"]):
        proc, out, err, _ = _gd(*command, "--control-file", str(control), "--audit-dir", str(tmp_path / "audit"),
                                env=env)
        assert proc.returncode == 2, out + err
        assert f"gradual-deploy: error: invalid --http-admin-url from the environment: {reason}" in err
        assert "Traceback" not in err


def test_a_known_admin_enabled_value_still_pauses_both(admin, tmp_path):
    control = _running(tmp_path / "mode.json")
    host, port = admin.server.server_address[:2]
    env = {"EXEC_HTTP_ADMIN_ENABLED": "Yes", "EXEC_HTTP_HOST": host, "EXEC_HTTP_PORT": str(port)}
    proc, out, err, _ = _gd("pause", "--control-file", str(control), "--admin-token-env", TOKEN_ENV,
                            "--audit-dir", str(tmp_path / "audit"), "--json", env=env)
    assert proc.returncode == 0 and json.loads(out)["result"] == "done", out + err
    assert admin.mode == "paused" and _mode(control) == "paused"


@pytest.mark.parametrize("value,expected", [
    ("", None), ("off", None), (" FALSE ", None), ("0", None), ("no", None),
    ("on", ("http://127.0.0.1:8001", "environment variables EXEC_HTTP_HOST/EXEC_HTTP_PORT")),
])
def test_admin_enabled_accepts_the_on_off_values(value, expected):
    assert admin_url_from_env({"EXEC_HTTP_ADMIN_ENABLED": value, "EXEC_HTTP_PORT": "8001"}) == expected


@pytest.mark.parametrize("value", ["y", "n", "enabled", "2", "flase"])
def test_admin_enabled_refuses_any_other_value_naming_the_variable(value):
    with pytest.raises(ValueError, match=rf"^EXEC_HTTP_ADMIN_ENABLED='{value}' is neither on nor off: expected "
                                         r"true or false \(also 1/0, yes/no, on/off\)$"):
        admin_url_from_env({"EXEC_HTTP_ADMIN_ENABLED": value, "EXEC_HTTP_PORT": "8001"})


def test_an_admin_url_needs_no_enabled_flag():
    """EXEC_HTTP_ADMIN_URL names the channel by itself; a stray EXEC_HTTP_ADMIN_ENABLED does not cost it."""
    found = admin_url_from_env({"EXEC_HTTP_ADMIN_URL": "http://h:1", "EXEC_HTTP_ADMIN_ENABLED": "y"})
    assert found == ("http://h:1", "environment variable EXEC_HTTP_ADMIN_URL")


# --- 2. what sits at a path: the one opener ---------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_opener_refuses_what_is_not_a_regular_file_at_once(short_dir, kind):
    path = short_dir / "thing"
    keep = _hostile(kind, path)
    try:
        out = _python(
            "import sys\nfrom deploy_tool import fileops\n"
            "for access in ('r', 'a', 'w', 'x'):\n"
            "    try:\n"
            "        fileops.open_fd(sys.argv[1], access)\n"
            "    except fileops.NotRegularFile as exc:\n"
            "        print(access, exc.strerror, '|', exc)\n"
            "    except FileExistsError:\n"
            "        print(access, 'exists')\n"
            "    else:\n"
            "        print(access, 'OPENED')\n",
            str(path), what=f"the opener to refuse {kind}")
    finally:
        if keep is not None:
            keep.close()  # type: ignore[attr-defined]
    words = KINDS[kind]
    assert out.splitlines() == [f"{access} it is {words}, not a regular file | {path} is {words}, not a regular file"
                                for access in ("r", "a", "w")] + ["x exists"]


def test_the_opener_refuses_a_fifo_someone_is_reading(tmp_path):
    """With a reader at the other end a FIFO opens for writing at once: the check after the open refuses it."""
    fifo = tmp_path / "audit.jsonl"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        out = _python("import sys\nfrom deploy_tool import fileops\n"
                      "try:\n    fileops.append(sys.argv[1], b'line\\n')\n"
                      "except fileops.NotRegularFile as exc:\n    print(exc)\n", str(fifo))
        assert out.strip() == f"{fifo} is a FIFO (named pipe), not a regular file"
        try:
            data = os.read(reader, 10)
        except BlockingIOError:
            data = b""
        assert data == b"", "nothing was written into it"
    finally:
        os.close(reader)


def test_the_opener_creates_and_reads_regular_files(tmp_path):
    path = tmp_path / "new.jsonl"
    with pytest.raises(FileNotFoundError):
        fileops.open_fd(path, "r")
    fileops.append(str(path), b"one\n")
    fileops.append(str(path), b"two\n")
    assert fileops.read_bytes(path) == b"one\ntwo\n"
    with fileops.open_regular(path, "w") as fh:
        fh.write("trunc\u00e9")
    assert fileops.read_text(path) == "trunc\u00e9"
    fd = fileops.open_fd(path, "r")
    try:
        assert os.get_blocking(fd), "a regular file is handed on blocking, as open() would"
    finally:
        os.close(fd)
    with pytest.raises(FileExistsError):
        fileops.open_fd(path, "x")


def test_a_read_is_bounded_in_size(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:
        fh.truncate(17 * 1024 * 1024)  # sparse: costs no disk
    with pytest.raises(fileops.FileTooLarge) as caught:
        fileops.read_bytes(big)
    assert str(caught.value) == f"{big} is larger than 16 MB, more than any file this tool reads"
    assert fileops.read_bytes(big, limit=32 * 1024 * 1024)[:4] == b"\0\0\0\0"


def test_on_windows_the_opener_asks_for_no_o_nonblock_and_still_refuses_devices(monkeypatch, tmp_path):
    monkeypatch.setattr(fileops, "WINDOWS", True)
    flags_seen: list[int] = []
    real_open = os.open

    def recording_open(path, flags, *args):
        flags_seen.append(flags)
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", recording_open)
    regular = tmp_path / "mode.json"
    regular.write_text("{}")
    assert fileops.read_bytes(regular) == b"{}"
    with pytest.raises(fileops.NotRegularFile, match="is a character device"):
        fileops.open_fd("/dev/null", "a")  # what CON or NUL are on Windows
    with pytest.raises(fileops.NotRegularFile, match="is a directory"):
        fileops.open_fd(tmp_path, "r")
    assert flags_seen and not any(flags & os.O_NONBLOCK for flags in flags_seen)


def test_an_atomic_write_never_replaces_what_is_not_a_file(tmp_path):
    fifo = tmp_path / "mode.json"
    os.mkfifo(fifo)
    with pytest.raises(fileops.NotRegularFile, match="is a FIFO"):
        fileops.write_atomic(fifo, b"{}")
    assert fifo.is_fifo() and not list(tmp_path.glob("*.tmp"))


# --- 2. the audit ---------------------------------------------------------------------------------------


def test_a_fifo_as_the_audit_file_does_not_hold_the_pause(tmp_path):
    """The old code paused, then waited forever for a reader of the FIFO to append its audit line."""
    control = _running(tmp_path / "mode.json")
    audit_dir = tmp_path / "audit"
    _own_audit_fifos(audit_dir)
    proc, out, err, took = _gd("pause", "--control-file", str(control), "--audit-dir", str(audit_dir),
                               what="the pause to end with a FIFO as its audit file")
    assert took < PAUSE_BOUND_S, f"pause took {took:.1f} s"
    assert proc.returncode == 0 and out.startswith("pause: DONE"), out + err  # the channels are what a pause is
    assert _mode(control) == "paused"
    warning = [line for line in err.splitlines() if "cannot append to the audit" in line]
    assert len(warning) == 1 and warning[0].startswith(f"gradual-deploy: WARNING: cannot append to the audit "
                                                       f"{audit_dir}/deploy-"), err
    assert warning[0].endswith(".jsonl: it is a FIFO (named pipe), not a regular file"), err
    assert "Traceback" not in err


@pytest.mark.parametrize("kind", ["socket", "device", "directory"])
def test_any_other_non_file_as_the_audit_is_a_warning_not_a_wait(short_dir, kind):
    control = _running(short_dir / "mode.json")
    audit_dir = short_dir / "a"
    audit_dir.mkdir()
    keep = [_hostile(kind, audit_dir / f"deploy-{day:%Y-%m-%d}.jsonl")
            for day in (dt.datetime.now(dt.timezone.utc).date() + dt.timedelta(days=n) for n in (0, 1))]
    try:
        proc, out, err, _ = _gd("pause", "--control-file", str(control), "--audit-dir", str(audit_dir))
    finally:
        for thing in keep:
            if thing is not None:
                thing.close()  # type: ignore[attr-defined]
    assert proc.returncode == 0 and out.startswith("pause: DONE"), out + err
    assert f"it is {KINDS[kind]}, not a regular file" in err


def test_status_reads_past_a_fifo_in_its_own_audit(tmp_path):
    """`status` reads the ramp's progress from the audit: a FIFO there held it for good."""
    control = _running(tmp_path / "mode.json")
    audit_dir = tmp_path / "audit"
    _own_audit_fifos(audit_dir)
    proc, out, err, _ = _gd("status", "--control-file", str(control), "--audit-dir", str(audit_dir), "--json",
                            what="status to end with a FIFO as its audit file")
    assert proc.returncode == 0, out + err
    assert json.loads(out)["mode"] == "real"


def _first_line(proc: subprocess.Popen, timeout: float = 30.0) -> str:
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    if not got:
        proc.kill()
        proc.communicate(timeout=30)
        pytest.fail(f"no line from the watch in {timeout:g} s: it hung before its first round")
    return got[0]


def _to_mock(sandbox) -> None:
    sandbox.admin.change({"mode": "mock"})
    FileChannel(str(sandbox.control_file)).apply("mock", None, "test", "test", cas=False)


def _watch(sandbox, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(GD + ["watch", *sandbox.watch_args(), *extra], text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**CLEAN_ENV, sandbox.token_env: sandbox.token})


def test_watch_with_a_fifo_as_its_audit_guards_and_pauses_on_a_breach(sandbox):
    """The old watch hung writing `watch_start`, before its first round: a risk burst then left it in real."""
    _to_mock(sandbox)
    _own_audit_fifos(sandbox.audit_dir)  # gradual-deploy's own audit; the trading system's beside it stays
    proc = _watch(sandbox, "--interval", "0.3s", "--duration", "10m", "--failure-limit", "1")
    first = _first_line(proc)
    assert first.startswith("round 1") and " OK " in first, first
    sandbox.system.set_fault("risk-burst")
    out, err = communicate_or_kill(proc, 60, "watch to pause on the risk burst")
    assert proc.returncode == 1, out + err
    assert "FAIL (1/1) observe_risk_events" in out and "BREACH" in out and "pause: DONE" in out
    assert sandbox.admin.mode == "paused" and _mode(sandbox.control_file) == "paused"
    assert "cannot append to the audit" in err and "a FIFO (named pipe), not a regular file; still watching" in err
    snapshot = [p for p in sandbox.evidence_dir.glob("watch-breach-*.json")]
    assert len(snapshot) == 1 and json.loads(snapshot[0].read_text())["pause"]["result"] == "done"


@pytest.mark.parametrize("which", ["audit", "risk csv"])
def test_a_fifo_as_the_trading_systems_file_is_an_error_round_with_a_reason(sandbox, which):
    """The trading system's audit or risk-events file as a FIFO: the old round waited for a writer forever."""
    _to_mock(sandbox)
    extra: list[str] = []
    if which == "audit":
        fifo = sandbox.audit_dir / f"zz-system-{dt.datetime.now(dt.timezone.utc):%Y-%m-%d}.jsonl"
        os.mkfifo(fifo)
        tomorrow = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
        os.mkfifo(sandbox.audit_dir / f"zz-system-{tomorrow:%Y-%m-%d}.jsonl")
        reason = f"cannot read the audit file {fifo}: it is a FIFO (named pipe), not a regular file"
    else:
        fifo = sandbox.workdir / "risk-fifo.csv"
        os.mkfifo(fifo)
        extra = ["--risk-events-csv", str(fifo)]  # the later flag wins
        reason = f"cannot read the risk-events file {fifo}: it is a FIFO (named pipe), not a regular file"
    proc = _watch(sandbox, "--interval", "0.3s", "--duration", "10m", "--consecutive-error-limit", "1", "--json",
                  *extra)
    out, err = communicate_or_kill(proc, 60, f"watch to fail its round on a FIFO as the {which}")
    assert proc.returncode == 1, out + err
    rounds = [json.loads(line) for line in out.splitlines() if json.loads(line).get("event") == "watch_round"]
    # a file that cannot be read is a probe that cannot measure: an error round, never a pass; one more than
    # --consecutive-error-limit in a row pauses
    assert len(rounds) == 2 and [r["outcome"] for r in rounds] == ["error", "error"]
    messages = [m["message"] for m in rounds[-1]["measurements"].values() if m["outcome"] == "error"]
    assert any(reason in m for m in messages), messages
    assert sandbox.admin.mode == "paused" and _mode(sandbox.control_file) == "paused"


def test_observe_readers_refuse_a_fifo(tmp_path):
    """The readers themselves, in a process of their own (a regression would wait there, not in pytest)."""
    (tmp_path / "audit").mkdir()
    os.mkfifo(tmp_path / "audit" / "system-2026-11-29.jsonl")
    os.mkfifo(tmp_path / "risk.csv")
    out = _python(
        "import sys, datetime as dt\nfrom deploy_tool import ProbeError\nfrom deploy_tool.probes import observe\n"
        "now = dt.datetime(2026, 11, 29, 12, tzinfo=dt.timezone.utc)\n"
        "start = now - dt.timedelta(minutes=10)\n"
        "for call in (lambda: observe.read_audit_window(sys.argv[1], start, now),\n"
        "             lambda: observe.read_risk_events(sys.argv[2], start, now)):\n"
        "    try:\n        call()\n    except ProbeError as exc:\n        print(exc)\n",
        str(tmp_path / "audit"), str(tmp_path / "risk.csv"))
    assert out.splitlines() == [
        f"cannot read the audit file {tmp_path / 'audit' / 'system-2026-11-29.jsonl'}: it is a FIFO (named pipe), "
        "not a regular file",
        f"cannot read the risk-events file {tmp_path / 'risk.csv'}: it is a FIFO (named pipe), not a regular file",
    ]


# --- 2. the control file and its lock ----------------------------------------------------------------------


def test_a_fifo_as_the_control_file_fails_that_channel_at_once_and_the_http_pause_goes_through(admin, tmp_path):
    fifo = tmp_path / "mode.json"
    os.mkfifo(fifo)
    proc, out, err, took = _gd("pause", "--control-file", str(fifo), "--http-admin-url", admin.url,
                               "--admin-token-env", TOKEN_ENV, "--audit-dir", str(tmp_path / "a"), "--json",
                               what="the pause to end with a FIFO as its control file")
    assert took < PAUSE_BOUND_S, f"pause took {took:.1f} s"  # the old code: 10.4 s, its join's timeout
    record = json.loads(out)
    assert proc.returncode == 0 and record["result"] == "partial", out + err
    http, file = record["channels"]
    assert http["ok"] and admin.mode == "paused"
    assert file["error"] == (f"control file {fifo} is a FIFO (named pipe), not a regular file: point "
                             "--control-file (EXEC_CONTROL_FILE) at the file the trading system reads")
    assert fifo.is_fifo(), "a pause does not replace what is not a control file"
    assert f"WARNING: pause through file ({fifo}) FAILED: control file {fifo} is a FIFO" in err


@pytest.mark.parametrize("kind", ["device", "socket", "directory"])
def test_a_control_file_that_is_no_file_fails_that_channel(short_dir, kind):
    """/dev/zero as the control file read forever (a MemoryError in the end)."""
    path = short_dir / "mode.json"
    keep = _hostile(kind, path)
    # A pause writes through a symlink to its target: not into /dev (the device here is a link to /dev/zero).
    commands = [["switch", "--to", "mock"], ["status"]] + ([["pause"]] if kind != "device" else [])
    try:
        for command in commands:
            proc, out, err, _ = _gd(*command, "--control-file", str(path), "--audit-dir", str(short_dir / "a"),
                                    what=f"{command[0]} to end on {kind} as the control file")
            assert proc.returncode == 1, out + err
            shown = os.path.realpath(path) if command == ["pause"] else path
            assert f"control file {shown} is {KINDS[kind]}, not a regular file" in out, out
            assert "Traceback" not in err and "MemoryError" not in err
    finally:
        if keep is not None:
            keep.close()  # type: ignore[attr-defined]


def test_a_fifo_as_the_lock_file_is_an_unusable_lock(tmp_path):
    """filelock would lock a FIFO as well as a file; only a regular file is a lock file here, as for a
    directory: a pause writes without it and says so, a switch refuses."""
    control = _running(tmp_path / "mode.json")
    lock = tmp_path / "mode.json.lock"
    lock.unlink()
    os.mkfifo(lock)
    proc, out, err, _ = _gd("pause", "--control-file", str(control), "--audit-dir", str(tmp_path / "a"))
    assert proc.returncode == 0 and out.startswith("pause: DONE"), out + err
    assert (f"cannot use the lock file {lock} (it is a FIFO (named pipe), not a regular file): paused without it"
            in out)
    assert _mode(control) == "paused"
    proc, out, err, _ = _gd("switch", "--to", "mock", "--control-file", str(control), "--audit-dir", str(tmp_path / "a"))
    assert proc.returncode == 1 and f"cannot lock {control} with {lock}: it is a FIFO" in out, out + err


# --- 2. the evidence and the ledger --------------------------------------------------------------------------


NEWEST = "preflight-29991231T235959Z"


def _evidence_dir(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """An evidence directory whose newest file is hostile; what the gate must say about it."""
    evidence = tmp_path / "ev"
    evidence.mkdir()
    path = evidence / f"{NEWEST}.json"
    if kind == "too large":
        with open(path, "wb") as fh:
            fh.truncate(17 * 1024 * 1024)
        return evidence, f"newest evidence {path} cannot be read as evidence: it is larger than 16 MB"
    if kind == "envelope fifo":
        path.write_text(json.dumps({"schema": SCHEMA, "finished_at": "2999-12-31T23:59:59Z", "checks": []}))
        envelope = evidence / f"{NEWEST}.intoto.json"
        os.mkfifo(envelope)
        return evidence, (f"newest evidence {path} has an unreadable signature file {envelope.name}: "
                          f"{envelope} is a FIFO (named pipe), not a regular file")
    _hostile(kind, path)
    return evidence, f"newest evidence {path} cannot be read as evidence: it is {KINDS[kind]}, not a regular file"


@pytest.mark.parametrize("kind", ["fifo", "device", "too large", "envelope fifo"])
def test_hostile_evidence_closes_the_gate_with_a_reason(tmp_path, kind):
    """A FIFO or /dev/zero named like the newest evidence held switch and status, or ended them in a
    MemoryError; now the gate refuses, naming the file and what it is."""
    evidence, reason = _evidence_dir(tmp_path, kind)
    control = _running(tmp_path / "mode.json", "mock")
    gate = ["--evidence-dir", str(evidence), "--database-url", "sqlite:///trades.db"]
    proc, out, err, _ = _gd("switch", "--to", "real", "--control-file", str(control), "--audit-dir",
                            str(tmp_path / "a"), *gate, what=f"switch to refuse {kind} evidence")
    assert proc.returncode == 1 and reason in out, out + err
    assert _mode(control) == "mock"
    proc, out, err, _ = _gd("status", "--control-file", str(control), *gate, "--json",
                            what=f"status to report {kind} evidence")
    report = json.loads(out)
    assert report["evidence"]["gate_open"] is False and reason in report["evidence"]["gate"], out + err
    assert "MemoryError" not in err and "Traceback" not in err


def test_a_fifo_as_the_ledger_neither_holds_the_gate_nor_the_switch_that_used_it(tmp_path):
    os.mkfifo(tmp_path / "opened-real.jsonl")
    out = _python(
        "import sys, datetime as dt\n"
        "from deploy_tool.evidence import Evidence\n"
        "from deploy_tool.modes.channels import FileChannel\n"
        "from deploy_tool.modes.gate import Gate, _ledger, mark_used\n"
        "now = dt.datetime.now(dt.timezone.utc)\n"
        "gate = Gate(True, 'ok', 'x.json', Evidence(now, now, run_id='run-1'))\n"
        "mark_used(gate, [FileChannel(sys.argv[1] + '/mode.json')], sys.argv[1])\n"
        "print('LEDGER', _ledger(sys.argv[1]))\n",
        str(tmp_path), what="the ledger to be refused")
    # unreadable, it cannot say the run was not used elsewhere: the gate refuses on it (the reason, not a wait)
    assert out.strip().startswith("LEDGER the ledger ") and "is a FIFO (named pipe), not a regular file" in out
    assert (tmp_path / "opened-real.jsonl").is_fifo()


# --- 3. a reader gone before the tool prints ------------------------------------------------------------------


def _closed_stdout(*args: str, env: dict, cwd: Path) -> subprocess.CompletedProcess:
    """Run gradual-deploy with stdout a pipe whose reading end is already closed: its first write meets a
    broken pipe, as behind `| head -1` once head has its line (decided here, not by a race with head)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = _start(*args, env=env, cwd=cwd, stdout=write_end)
    finally:
        os.close(write_end)
    out, err = communicate_or_kill(proc, 30, f"{args[0]} to end with its stdout gone")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("command,code", [
    (["status"], 0),
    (["status", "--json"], 0),
    (["switch", "--to", "mock"], 0),
    (["pause"], 0),
    (["pause", "--json"], 0),
    (["switch", "--to", "live"], 2),
])
def test_a_closed_stdout_ends_no_command_in_a_traceback(tmp_path, command, code, buffered):
    control = _running(tmp_path / "mode.json")
    env = {"PYTHONUNBUFFERED": "" if buffered else "1"}
    done = _closed_stdout(*command, "--control-file", str(control), "--audit-dir", str(tmp_path / "a"),
                          env=env, cwd=tmp_path)
    for word in ("Traceback", "BrokenPipeError", "Exception ignored"):
        assert word not in done.stderr, done.stderr
    assert done.returncode == code, done.stderr  # the command's own code: it went on to its end
    if command[0] == "pause":
        assert _mode(control) == "paused"
        (line,) = _audit_lines(tmp_path / "a")
        assert line["action"] == "pause" and line["result"] == "done"


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
def test_a_partial_pause_with_stdout_gone_still_warns_on_stderr(admin, tmp_path, buffered):
    """Behind `| head -1` the operator sees stderr: which channel is not paused must reach it."""
    control = _running(tmp_path / "mode.json")
    env = {"PYTHONUNBUFFERED": "" if buffered else "1", "EXEC_HTTP_ADMIN_URL": "127.0.0.1:8001"}
    done = _closed_stdout("pause", "--control-file", str(control), "--audit-dir", str(tmp_path / "a"),
                          env=env, cwd=tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "WARNING: pause through http (admin API) FAILED: EXEC_HTTP_ADMIN_URL='127.0.0.1:8001'" in done.stderr
    assert "WARNING: paused through file only" in done.stderr
    assert _mode(control) == "paused"


def test_help_into_a_closed_pipe_is_quiet(tmp_path):
    done = _closed_stdout("--help", env={"PYTHONUNBUFFERED": ""}, cwd=tmp_path)
    assert done.returncode == 0 and not done.stderr, done.stderr


def test_watch_still_ends_paused_when_its_stdout_is_gone(sandbox):
    """`watch` is no print-once command: a lost stdout ends it, paused first (test_watch.py has the
    terminal closed mid-run; here the reader is gone before its first line), and without a traceback."""
    _to_mock(sandbox)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.Popen(GD + ["watch", *sandbox.watch_args(), "--interval", "0.3s", "--duration", "10m"],
                                text=True, stdout=write_end, stderr=subprocess.PIPE,
                                env={**CLEAN_ENV, sandbox.token_env: sandbox.token, "PYTHONUNBUFFERED": ""})
    finally:
        os.close(write_end)
    _, err = communicate_or_kill(proc, 60, "watch to end, paused, with its stdout gone")
    assert proc.returncode == 1, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert "watch ended before its duration" in err and "pause DONE" in err
    assert sandbox.admin.mode == "paused" and _mode(sandbox.control_file) == "paused"



# --- what the gate and the suite read: keys, config, summaries, the ledger ------------------------------


def test_a_fifo_where_the_gate_or_the_suite_reads_a_file_is_refused_not_waited_on(tmp_path, sandbox, run_suite):
    """The trusted keys, the --config file, the risk configuration, the backtest summary: a FIFO at any of
    them ends in a message, never a wait for a writer that never comes."""
    passed = run_suite()
    assert passed.evidence["verdict"] == "pass", passed.output
    keys = tmp_path / "keys.pem"
    os.mkfifo(keys)
    FileChannel(str(sandbox.control_file)).apply("mock", None, "test", "test", cas=False)
    sandbox.admin.mode = "mock"
    proc, out, err, _ = _gd("switch", "--to", "real", "--control-file", str(sandbox.control_file), "--evidence-dir",
                            str(passed.evidence_dir), "--okx-base-url", sandbox.okx_url, "--database-url",
                            sandbox.database_url, "--trusted-keys", str(keys), "--audit-dir", str(tmp_path / "a"),
                            "--http-admin-url", sandbox.admin_url, "--admin-token-env", sandbox.token_env,
                            env={sandbox.token_env: sandbox.token}, cwd=tmp_path)
    assert proc.returncode == 1 and "is a FIFO (named pipe), not a regular file" in out + err, out + err
    for flag in ("--config", "--risk-config", "--backtest-summary"):
        fifo = tmp_path / f"fifo{flag.replace('-', '_')}"
        os.mkfifo(fifo)
        proc, out, err, _ = _gd("preflight", *sandbox.preflight_args(), flag, str(fifo), "--evidence-dir",
                                str(tmp_path / f"ev{flag}"), env={sandbox.token_env: sandbox.token}, cwd=tmp_path,
                                timeout=60, what=f"a preflight with a FIFO as {flag} to end")
        assert proc.returncode in (1, 4) and "FIFO" in out + err, (flag, out[-2000:] + err[-2000:])
        assert "Traceback" not in err and "INTERNALERROR" not in out + err


def test_a_ledger_the_gate_cannot_read_refuses_real(tmp_path, sandbox, run_suite):
    passed = run_suite()
    os.mkfifo(passed.evidence_dir / "opened-real.jsonl")
    FileChannel(str(sandbox.control_file)).apply("mock", None, "test", "test", cas=False)
    sandbox.admin.mode = "mock"
    proc, out, err, _ = _gd("switch", "--to", "real", "--control-file", str(sandbox.control_file), "--evidence-dir",
                            str(passed.evidence_dir), *sandbox.gate_args(), "--audit-dir", str(tmp_path / "a"),
                            "--http-admin-url", sandbox.admin_url, "--admin-token-env", sandbox.token_env,
                            env={sandbox.token_env: sandbox.token}, cwd=tmp_path)
    assert proc.returncode == 1 and "opened-real.jsonl cannot be read" in out, out + err


def test_a_fifo_as_the_sqlite_trades_database_fails_the_check_and_holds_no_round(tmp_path, sandbox):
    fifo = tmp_path / "trades.db"
    os.mkfifo(fifo)
    proc, out, err, took = _gd("preflight", "-m", "db", "--database-url", f"sqlite:///{fifo}", "--evidence-dir",
                               str(tmp_path / "ev"), cwd=tmp_path, timeout=60, what="a preflight on a FIFO database to end")
    assert proc.returncode == 1 and "is a FIFO (named pipe), not a regular file" in out, out + err
    args = [a for a in sandbox.watch_args()]
    args[args.index("--database-url") + 1] = f"sqlite:///{fifo}"
    # a database that cannot be read is a probe that cannot measure: an error round; with no error tolerated
    # (--consecutive-error-limit 0) the first one pauses
    proc, out, err, took = _gd("watch", *args, "--interval", "0.2s", "--duration", "10s",
                               "--consecutive-error-limit", "0", env={sandbox.token_env: sandbox.token}, cwd=tmp_path,
                               timeout=60, what="a watch on a FIFO database to breach")
    assert proc.returncode == 1 and "BREACH" in out and "FIFO" in out, out + err


# --- the lock file: fcntl.flock on POSIX, shared with filelock ------------------------------------------------


@pytest.mark.skipif(os.name == "nt", reason="POSIX flock; Windows goes through filelock itself")
def test_the_lock_excludes_filelock_holders_and_is_excluded_by_them(tmp_path):
    """`fileops.Lock` takes the primitive filelock's UnixFileLock takes, so a writer using either waits for the
    other: another process holding the lock with filelock keeps ours out until it lets go, and the reverse."""
    from filelock import FileLock, Timeout

    path = str(tmp_path / "mode.json.lock")
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, filelock\n"
                               f"lock = filelock.FileLock({path!r}); lock.acquire()\n"
                               "print('held', flush=True); sys.stdin.readline()\n"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        ours = fileops.Lock(path, timeout=0.2)
        started = time.monotonic()
        with pytest.raises(fileops.LockTimeout):
            ours.acquire(poll_interval=0.01)
        assert time.monotonic() - started >= 0.2, "gave up before its timeout"
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=30)
        ours.acquire(timeout=5, poll_interval=0.01)  # free now
        try:
            with pytest.raises(Timeout):
                FileLock(path).acquire(timeout=0.1)  # and while we hold it, filelock waits
        finally:
            ours.release()
        theirs = FileLock(path)
        theirs.acquire(timeout=1)  # released: filelock gets it
        theirs.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_the_lock_is_taken_again_after_release_and_refuses_a_directory(tmp_path):
    lock = fileops.Lock(str(tmp_path / "a.lock"), timeout=1)
    for _ in range(3):
        lock.acquire()
        lock.release()
    (tmp_path / "d.lock").mkdir()
    with pytest.raises(OSError):
        fileops.Lock(str(tmp_path / "d.lock"), timeout=1).acquire()
