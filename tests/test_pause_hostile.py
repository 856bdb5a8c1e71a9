"""The pause, attacked: bad environment values, a slow concurrent switch, symlinks, unusable lock files,
a control file nobody reads, a full disk. A pause must never say DONE while the system may still trade."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy_tool.modes.channels import FileChannel

GD = [sys.executable, "-m", "deploy_tool"]
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if k not in ("EXEC_HTTP_ADMIN_URL", "EXEC_HTTP_ADMIN_ENABLED", "EXEC_HTTP_HOST", "EXEC_HTTP_PORT",
                          "EXEC_CONTROL_FILE")}


def _gd(*args, env=None, timeout=60):
    return subprocess.run(GD + list(args), capture_output=True, text=True, timeout=timeout, env={**CLEAN_ENV, **(env or {})})


def _mode(path: Path) -> str:
    return json.loads(path.read_text())["mode"]


def _running(path: Path, mode: str = "real") -> Path:
    """A control file a running system reads, in `mode`."""
    FileChannel(str(path)).apply(mode, None, "test", "test", cas=False)
    return path


@pytest.mark.parametrize("env,variable", [
    ({"EXEC_HTTP_ADMIN_URL": "127.0.0.1:8001"}, "EXEC_HTTP_ADMIN_URL='127.0.0.1:8001' is unusable"),
    ({"EXEC_HTTP_ADMIN_ENABLED": "true"}, "EXEC_HTTP_ADMIN_ENABLED=true but EXEC_HTTP_PORT is not set"),
    ({"EXEC_HTTP_ADMIN_ENABLED": "true", "EXEC_HTTP_PORT": "abc"}, "EXEC_HTTP_PORT='abc' is not a TCP port"),
])
def test_a_bad_environment_value_for_one_channel_does_not_stop_the_pause(tmp_path, env, variable):
    control = _running(tmp_path / "mode.json")
    done = _gd("pause", "--control-file", str(control), "--audit-dir", str(tmp_path / "audit"), "--json", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads(done.stdout)
    assert record["result"] == "partial"
    http, file = record["channels"]
    assert not http["ok"] and variable in http["error"] and "--http-admin-url" not in http["error"]
    assert file["ok"] and _mode(control) == "paused"
    assert f"WARNING: pause through http (admin API) FAILED: {variable}" in done.stderr
    (line,) = [json.loads(x) for f in (tmp_path / "audit").glob("*.jsonl") for x in f.read_text().splitlines()]
    assert line["result"] == "partial" and variable in line["channels"][0]["error"]
    # a switch is no emergency: there the same value is a usage error; a switch to paused is a pause
    assert _gd("switch", "--to", "mock", "--control-file", str(control), env=env).returncode == 2
    _running(control)
    done = _gd("switch", "--to", "paused", "--control-file", str(control), "--audit-dir", str(tmp_path / "audit"),
               env=env)
    assert done.returncode == 1 and variable in done.stdout and _mode(control) == "paused"


def test_a_bad_channel_alone_is_a_failed_pause_not_a_refusal(tmp_path):
    done = _gd("pause", "--audit-dir", str(tmp_path / "audit"), env={"EXEC_HTTP_ADMIN_URL": "127.0.0.1:8001"})
    assert done.returncode == 1 and "pause: FAILED" in done.stdout
    assert "NO CHANNEL CONFIRMED THE PAUSE" in done.stderr
    assert list((tmp_path / "audit").glob("*.jsonl"))


# A switch on a slow disk: one of its fsyncs, while it holds the lock, returns only once a pause has written
# `paused` without the lock (the pause gives up on the lock after 1 s). A condition, not a duration: the
# pause's write lands inside the switch's write whatever the machine's load. It prints the version that
# pause wrote. Call 1 is the temp file's fsync (before the switch's rename), call 2 the directory's (after).
SLOW_SWITCH = """
import json, os, sys, time
control, audit, block_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
real_fsync, calls = os.fsync, [0]

def paused_version():
    with open(control, encoding="utf-8") as fh:
        doc = json.load(fh)
    return doc["version"] if doc["mode"] == "paused" else None

def slow(fd):
    calls[0] += 1
    if calls[0] == block_at:
        print("FSYNC", flush=True)
        deadline = time.monotonic() + 60
        while paused_version() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        print("PAUSED", paused_version(), flush=True)
    real_fsync(fd)

os.fsync = slow
from deploy_tool.cli import main
sys.exit(main(["switch", "--to", "real", "--force", "--control-file", control, "--audit-dir", audit]))
"""


@pytest.mark.parametrize("block_at,lockless,switch_ok,note", [
    # the switch read `mock` (version 1) under the lock; the pause reads it too and writes 2 without the
    # lock; the switch then replaces it with its own 2 (the same number: nothing without the lock can
    # reserve one) and confirms; the pause, under the lock at last, finds `real` and writes 3
    (1, 2, True, "a concurrent write of 'real' replaced the pause, which was written again under the lock"),
    # the switch renamed `real` 2 and holds the lock; the pause reads 2 and writes 3 without the lock; the
    # switch reads back the pause and fails; the pause writes again under the lock, as 4
    (2, 3, False, "wrote paused without it, then again under the lock (version 4)"),
], ids=["pause-before-the-switch-rename", "pause-after-the-switch-rename"])
def test_a_pause_without_the_lock_is_reasserted_over_a_slow_switch(tmp_path, block_at, lockless, switch_ok, note):
    control = _running(tmp_path / "mode.json", "mock")
    assert json.loads(control.read_text())["version"] == 1
    switch = subprocess.Popen([sys.executable, "-c", SLOW_SWITCH, str(control), str(tmp_path / "a"), str(block_at)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    assert switch.stdout.readline().strip() == "FSYNC"  # the switch holds the lock, having read `mock`
    done = _gd("pause", "--control-file", str(control), "--audit-dir", str(tmp_path / "a"), "--json")
    out, err = switch.communicate(timeout=60)
    assert out.splitlines()[0] == f"PAUSED {lockless}", out + err
    record = json.loads(done.stdout)
    assert done.returncode == 0 and record["result"] == "done", done.stdout + done.stderr
    (file,) = record["channels"]
    assert note in file["note"]
    # The version: the lockless write numbered what it read plus one; the pause's last write, under the
    # lock, one more than the file then held.
    final = json.loads(control.read_text())
    assert final["mode"] == "paused" and final["version"] == file["version"] == lockless + 1
    (switched,) = [line["channels"][0] for f in (tmp_path / "a").glob("*.jsonl")
                   for line in map(json.loads, f.read_text().splitlines()) if line["action"] == "switch"]
    assert switched["ok"] is switch_ok and (switch.returncode == 0) is switch_ok, out + err
    if switch_ok:
        assert switched["version"] == 2
    else:
        assert "read back 'paused' (version 3) after writing 'real' (version 2)" in switched["error"]


def test_a_symlinked_control_file_is_paused_through_the_link(tmp_path):
    target = _running(tmp_path / "system" / "mode.json")
    link = tmp_path / "ops" / "mode.json"
    link.parent.mkdir()
    link.symlink_to(target)
    done = _gd("pause", "--control-file", str(link), "--audit-dir", str(tmp_path / "a"))
    assert done.returncode == 0 and "pause: DONE" in done.stdout, done.stdout + done.stderr
    assert _mode(target) == "paused" and link.is_symlink()
    assert not list(link.parent.glob(".mode.json.*.tmp")) and not list(target.parent.glob("*.tmp"))


def test_a_control_file_nobody_was_reading_is_no_confirmed_pause(tmp_path):
    fresh = tmp_path / "typo" / "mode.json"
    done = _gd("pause", "--control-file", str(fresh), "--audit-dir", str(tmp_path / "a"))
    assert done.returncode == 1 and "pause: UNCONFIRMED" in done.stdout
    assert "did not exist before this pause: no running trading system was reading it" in done.stdout
    assert "NO CHANNEL CONFIRMED THE PAUSE" in done.stderr
    assert _mode(fresh) == "paused"  # written all the same, for a system that reads it on start


def _immutable(path: Path) -> None:
    path.touch()
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this file system")


def test_an_immutable_lock_file_still_locks(tmp_path):
    """flock needs no write access, so the lock file is opened read-only: an immutable (or another user's
    read-only) lock file still excludes writers, and the pause and a switch use it as they would any."""
    control = _running(tmp_path / "mode.json")
    lock = tmp_path / "mode.json.lock"
    lock.unlink()
    _immutable(lock)
    try:
        done = _gd("pause", "--control-file", str(control), "--audit-dir", str(tmp_path / "a"))
        assert done.returncode == 0 and "pause: DONE" in done.stdout, done.stdout + done.stderr
        assert "cannot use the lock file" not in done.stdout and _mode(control) == "paused"
        switch = _gd("switch", "--to", "mock", "--control-file", str(control), "--audit-dir", str(tmp_path / "a"))
        assert switch.returncode == 0 and _mode(control) == "mock", switch.stdout + switch.stderr
    finally:
        subprocess.run(["chattr", "-i", str(lock)], capture_output=True)


@pytest.mark.parametrize("spoil", ["directory"])
def test_an_unusable_lock_file_does_not_block_the_pause(tmp_path, spoil):
    control = _running(tmp_path / "mode.json")
    lock = tmp_path / "mode.json.lock"
    lock.unlink()
    lock.mkdir()
    try:
        done = _gd("pause", "--control-file", str(control), "--audit-dir", str(tmp_path / "a"))
        assert done.returncode == 0 and "pause: DONE" in done.stdout, done.stdout + done.stderr
        assert f"cannot use the lock file {lock}" in done.stdout and "paused without it" in done.stdout
        assert _mode(control) == "paused"
        switch = _gd("switch", "--to", "mock", "--control-file", str(control), "--audit-dir", str(tmp_path / "a"))
        assert switch.returncode == 1 and f"cannot lock {control}" in switch.stdout
    finally:
        subprocess.run(["chattr", "-i", str(lock)], capture_output=True)


def _suite_control(pytester, control: Path):
    return pytester.runpytest("--pyargs", "preflight_tests", "-p", "no:cacheprovider", "-m", "control",
                              "--control-file", str(control), "--evidence-dir", str(pytester.path / "ev"))


def test_control_dir_writable_fails_on_an_unusable_lock(pytester, tmp_path):
    control = _running(tmp_path / "mode.json")
    (tmp_path / "mode.json.lock").unlink()
    (tmp_path / "mode.json.lock").mkdir()
    result = _suite_control(pytester, control)
    assert result.ret == 1
    result.stdout.fnmatch_lines([f"*lock file {tmp_path}/mode.json.lock cannot be taken*"])


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB file system, filled to the last byte."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        if os.environ.get("CI", "").lower() == "true" and os.geteuid() == 0:
            pytest.fail("CI runs as root and could not mount a tmpfs for the full-disk test")
        pytest.skip("cannot mount a tmpfs here (needs root): the full-disk test needs a small file system")
    try:
        _running(mount / "mode.json")
        with open(mount / "filler", "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"x" * 512)
            except OSError:
                pass
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_control_dir_writable_fails_on_a_full_disk(pytester, full_disk):
    result = _suite_control(pytester, full_disk / "mode.json")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*is not writable (No space left on device)*"])


def test_a_pause_on_a_full_disk_says_so(full_disk, tmp_path):
    done = _gd("pause", "--control-file", str(full_disk / "mode.json"), "--audit-dir", str(tmp_path / "a"))
    assert done.returncode == 1 and "pause: FAILED" in done.stdout
    assert "No space left on device" in done.stdout and "NO CHANNEL CONFIRMED THE PAUSE" in done.stderr
    assert _mode(full_disk / "mode.json") == "real"


def test_a_trickling_admin_api_does_not_hold_pause_status_or_switch(sandbox, tmp_path, monkeypatch, capsys):
    sandbox.admin.fault = "trickle"  # answers one header byte every 0.5 s, for 30 s
    control = _running(sandbox.control_file)
    for name in ("EXEC_HTTP_ADMIN_URL", "EXEC_CONTROL_FILE", "EXEC_HTTP_ADMIN_ENABLED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(sandbox.token_env, sandbox.token)
    base = ["--http-admin-url", sandbox.admin_url, "--admin-token-env", sandbox.token_env]

    def elapsed(*args: str) -> tuple[int, str, float]:
        """The command run in-process, timed from the call: the bound is on the command, not on the
        interpreter's start-up, which a loaded machine stretches."""
        from deploy_tool.cli import main

        started = time.monotonic()
        rc = main(list(args))
        took = time.monotonic() - started
        return rc, capsys.readouterr().out, took

    rc, out, took = elapsed("pause", *base, "--control-file", str(control), "--audit-dir", str(tmp_path / "a"), "--json")
    assert took < 3.0, f"pause took {took:.1f} s against a trickling admin API"
    record = json.loads(out)
    http, file = record["channels"]
    assert record["result"] == "partial" and "no complete answer within 1 s" in http["error"] and file["ok"]
    rc, out, took = elapsed("status", *base)
    assert took < 4.0 and rc == 1 and "no complete answer within 2 s" in out
    rc, out, took = elapsed("switch", "--to", "mock", *base, "--control-file", str(control), "--audit-dir",
                            str(tmp_path / "a"))
    assert took < 4.0 and rc == 1 and "no complete answer within 2 s" in out


def test_a_trickling_exchange_does_not_hold_the_probe(sandbox):
    from deploy_tool.probes.okx import probe_public_time, probe_system_status
    from deploy_tool import ProbeError

    sandbox.exchange.behaviour.trickle = True
    started = time.monotonic()
    probe = probe_public_time(sandbox.okx_url, samples=2, timeout=(1.0, 1.5))
    assert time.monotonic() - started < 4.0
    assert not probe.good and all("no complete answer" in s.error for s in probe.samples)
    started = time.monotonic()
    with pytest.raises(ProbeError, match="no complete answer from .* within 1.5 s"):
        probe_system_status(sandbox.okx_url, 3600, timeout=(1.0, 1.5))
    assert time.monotonic() - started < 2.5
