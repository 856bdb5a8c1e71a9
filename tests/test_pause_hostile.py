"""The pause, attacked: bad environment values, a slow concurrent switch, symlinks, unusable lock files,
a control file nobody reads, a full disk. A pause must never say DONE while the system may still trade."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def test_a_pause_without_the_lock_is_reasserted_over_a_slow_switch(tmp_path):
    control = _running(tmp_path / "mode.json", "mock")
    slow_switch = (
        "import os, sys, time\n"
        "real_fsync = os.fsync\n"
        "def slow(fd):\n"
        "    print('FSYNC', flush=True); time.sleep(2.5); real_fsync(fd)\n"
        "os.fsync = slow\n"
        "from deploy_tool.cli import main\n"
        "sys.exit(main(['switch', '--to', 'real', '--force', '--control-file', sys.argv[1], '--audit-dir', sys.argv[2]]))\n"
    )
    switch = subprocess.Popen([sys.executable, "-c", slow_switch, str(control), str(tmp_path / "a")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert switch.stdout.readline().strip() == "FSYNC"  # the switch holds the lock, having read `mock`
    done = _gd("pause", "--control-file", str(control), "--audit-dir", str(tmp_path / "a"))
    switch.communicate(timeout=30)
    assert done.returncode == 0 and "pause: DONE" in done.stdout, done.stdout + done.stderr
    assert "a concurrent write of 'real' replaced the pause, which was written again under the lock" in done.stdout
    assert _mode(control) == "paused"


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


@pytest.mark.parametrize("spoil", ["directory", "immutable"])
def test_an_unusable_lock_file_does_not_block_the_pause(tmp_path, spoil):
    control = _running(tmp_path / "mode.json")
    lock = tmp_path / "mode.json.lock"
    lock.unlink()
    if spoil == "directory":
        lock.mkdir()
    else:
        _immutable(lock)
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


def _elapsed(*args, env=None):
    import time

    started = time.monotonic()
    done = _gd(*args, env=env)
    return done, time.monotonic() - started


def test_a_trickling_admin_api_does_not_hold_pause_status_or_switch(sandbox, tmp_path):
    sandbox.admin.fault = "trickle"  # answers one header byte every 0.5 s, for 30 s
    control = _running(sandbox.control_file)
    env = {sandbox.token_env: sandbox.token}
    base = ["--http-admin-url", sandbox.admin_url, "--admin-token-env", sandbox.token_env]
    done, took = _elapsed("pause", *base, "--control-file", str(control), "--audit-dir", str(tmp_path / "a"),
                          "--json", env=env)
    assert took < 3.0, f"pause took {took:.1f} s against a trickling admin API"
    record = json.loads(done.stdout)
    http, file = record["channels"]
    assert record["result"] == "partial" and "no complete answer within 1 s" in http["error"] and file["ok"]
    done, took = _elapsed("status", *base, env=env)
    assert took < 4.0 and done.returncode == 1 and "no complete answer within 2 s" in done.stdout
    done, took = _elapsed("switch", "--to", "mock", *base, "--control-file", str(control), "--audit-dir",
                          str(tmp_path / "a"), env=env)
    assert took < 4.0 and done.returncode == 1 and "no complete answer within 2 s" in done.stdout


def test_a_trickling_exchange_does_not_hold_the_probe(sandbox):
    import time

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
