"""Notifications: delivered to a webhook receiver on loopback, with what happened and never a secret;
a receiver that hangs never holds up a pause."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from waiting import wait_until

GD = [sys.executable, "-m", "deploy_tool"]


class Receiver:
    """A webhook endpoint on loopback that keeps what it is sent (or hangs, when told to)."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.arrivals: list[float] = []  # time.monotonic() of each POST as it arrived, before any hang
        self.hang_s = 0.0
        self.released = threading.Event()  # ends a hang early: set when the test is done
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.arrivals.append(time.monotonic())
                if receiver.hang_s:
                    receiver.released.wait(receiver.hang_s)
                receiver.messages.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address) -> None:
                if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                    super().handle_error(request, client_address)  # a sender that gave up is no error

        self.server = Server(("127.0.0.1", 0), Handler)
        # a short poll: shutdown() waits for the loop to look, 0.5 s by default
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        self.url = f"json://127.0.0.1:{self.server.server_port}/hook"

    def wait(self, count: int = 1, timeout: float = 10.0) -> list[dict]:
        """The messages, once `count` have come; fails saying so after `timeout` seconds."""
        wait_until(lambda: len(self.messages) >= count, f"{count} message(s) (have {len(self.messages)})", timeout)
        return self.messages

    def wait_for_arrival(self, timeout: float = 30.0) -> float:
        """When the first POST arrived (monotonic), waiting up to `timeout` seconds for it."""
        wait_until(lambda: self.arrivals, "a notification to arrive", timeout)
        return self.arrivals[0]


@pytest.fixture
def receiver():
    found = Receiver()
    yield found
    found.released.set()
    found.server.shutdown()
    found.server.server_close()


def _audit(directory):
    return [json.loads(x) for f in directory.glob("deploy-*.jsonl") for x in f.read_text().splitlines()]


def test_a_pause_tells_who_confirmed(sandbox, receiver, tmp_path):
    env = {**os.environ, sandbox.token_env: sandbox.token}
    done = subprocess.run(GD + ["pause", "--http-admin-url", sandbox.admin_url, "--admin-token-env", sandbox.token_env,
                                "--control-file", str(sandbox.control_file), "--audit-dir", str(tmp_path / "a"),
                                "--reason", "risk blocks spiking", "--notify", receiver.url],
                          capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    (message,) = receiver.wait()
    assert message["title"].startswith("gradual-deploy: pause DONE")
    assert "paused confirmed" in message["message"] and sandbox.admin_url in message["message"]
    assert sandbox.token not in json.dumps(message)
    notify = [a for a in _audit(tmp_path / "a") if a["event"] == "notify"]
    assert notify == [{**notify[0], "about": "pause", "result": "sent"}]


def test_a_hanging_receiver_never_holds_up_the_pause(sandbox, receiver, tmp_path):
    receiver.hang_s = 30
    sandbox.admin.change({"mode": "real"})
    proc = subprocess.Popen(GD + ["pause", "--control-file", str(sandbox.control_file), "--audit-dir",
                                  str(tmp_path / "a"), "--notify", receiver.url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    first = proc.stdout.readline()
    said_paused = time.monotonic()
    assert first.startswith("pause: DONE") and json.loads(sandbox.control_file.read_text())["mode"] == "paused"
    out, err = proc.communicate(timeout=30)
    ended = time.monotonic()
    # Timed from the notification's arrival, not from the start: a loaded machine stretches the interpreter's
    # start-up, and that is not what is bounded here. A pause that waited for the notification would say
    # DONE only when the wait ended, 5 s after it began.
    arrived = receiver.wait_for_arrival()
    assert not receiver.messages, "the receiver was to hang"
    assert said_paused - arrived < 3.0, f"the pause said DONE {said_paused - arrived:.1f} s after notifying"
    assert ended - arrived < 8.0, (f"the process ended {ended - arrived:.1f} s after notifying a hanging "
                                   "receiver (bound: 5 s)")
    assert proc.returncode == 0
    assert "the pause notification was not delivered (" in err  # apprise's own timeout, or ours at 5 s
    assert [a["result"] for a in _audit(tmp_path / "a") if a["event"] == "notify"] in (["timeout"], ["failed"])


def test_a_watch_breach_tells_what_was_measured(sandbox, receiver):
    sandbox.system.set_fault("risk-burst")
    done = subprocess.run(GD + ["watch", *sandbox.watch_args(), "--interval", "0.5s", "--duration", "30s"],
                          capture_output=True, text=True, timeout=60, cwd=sandbox.workdir,
                          env={**os.environ, sandbox.token_env: sandbox.token, "GD_NOTIFY_URLS": receiver.url})
    assert done.returncode == 1, done.stdout + done.stderr
    (message,) = receiver.wait()
    assert "BREACH" in message["title"] and "observe_risk_events" in message["message"]
    assert "evidence snapshot:" in message["message"] and "real -> paused confirmed" not in message["title"]


def test_a_failing_gate_tells_which_checks_failed(run_suite, receiver):
    run = run_suite("-m", "backtest", "--min-sharpe", "5", "--notify", receiver.url)
    assert run.result.ret == 1
    (message,) = receiver.wait()
    assert message["title"].startswith("gradual-deploy preflight: FAIL")
    assert "backtest_sharpe[sandbox-momentum]" in message["message"] and str(run.json_files[0]) in message["message"]
    assert run.evidence["notify"] == {"result": "sent", "detail": ""}
    passing = run_suite("-m", "backtest", "--notify", receiver.url)
    assert passing.result.ret == 0 and "notify" not in passing.evidence and len(receiver.messages) == 1


def test_a_bad_notification_url_is_a_usage_error_without_echoing_it(tmp_path):
    done = subprocess.run(GD + ["pause", "--control-file", str(tmp_path / "m.json"), "--notify", "hooks.example/SECRET-T0KEN"],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert done.returncode == 2 and "invalid --notify '***'" in done.stderr and "SECRET-T0KEN" not in done.stderr


def test_the_wait_is_bounded_whatever_the_library_does(receiver):
    from deploy_tool.notify import send

    receiver.hang_s = 10
    started = time.monotonic()
    delivery = send([receiver.url], "t", "b", timeout_s=0.5)
    assert delivery.result == "timeout" and delivery.detail == "no answer within 0.5 s"
    assert time.monotonic() - started < 1.5
