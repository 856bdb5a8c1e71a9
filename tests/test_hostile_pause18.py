"""The faster pause of issue 18, attacked as a hostile operator or a broken environment would.

Commits 818fc76, acbb1df and 847a3f8 made `gradual-deploy pause` faster: the admin API client speaks
http.client under a whole-call deadline (probes/plainhttp.py), the control-file lock is fcntl.flock
(fileops.Lock), Settings/Option are plain classes, only the named command's parser is built, audit.actor()
and host() no longer import getpass/socket, and every refusal names its fix before --force.

Every attack is a test here, against real processes and real loopback servers. A test that passes shows the
defence holds. Sixteen attacks got through at first (a deeply nested answer, an unusable URL, a non-ASCII
path prefix, a token with a newline, a silent resolver, a lock file the operator cannot write or that is
removed while held, text that is not UTF-8); their docstrings say what the attack did then, and commit
eaeb528 holds the fix. Nothing waits a fixed time to order events: each waits on a condition, with a deadline.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import pickle
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from deploy_tool.modes.channels import FileChannel
from waiting import wait_until

GD_TIMED = (
    "import sys, time\n"
    "started = time.monotonic()\n"
    "from deploy_tool.cli import main\n"
    "try:\n"
    "    rc = main(sys.argv[1:])\n"
    "finally:\n"
    "    sys.stdout.flush()\n"
    "    sys.stderr.write(f'\\nELAPSED {time.monotonic() - started:.3f}\\n')\n"
    "sys.exit(rc)\n"
)
# What a shell may hand down that would point a command somewhere the test did not choose, or through a proxy.
_DROP = ("DATABASE_URL", "OKX_BASE_URL", "BACKTEST_SUMMARY", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
         "http_proxy", "https_proxy", "all_proxy", "no_proxy", "COLUMNS")
CLEAN_ENV = {k: v for k, v in os.environ.items() if not k.startswith(("EXEC_", "GD_", "OKX_")) and k not in _DROP}

TOKEN = "CANARY-h18-token-5b0e7d91"
TOKEN_ENV = "GD_H18_TOKEN"
PASSWORD = "CANARY-h18-password-c4f1"
# The documented bound of a pause against a misbehaving admin API: "never waits ... for more than about 2 s"
# (docs/mode-control.md): 1 s per call, a POST and a GET at most. The slack is for a loaded machine.
PAUSE_HTTP_BOUND_S = 2.0
CALL_DEADLINE_S = 1.0
SLACK_S = 0.75
# A pause whose lock another process holds: 1 s for the lock, a write without it, then up to 5 s for the lock.
PAUSE_LOCK_BOUND_S = 1.0 + 5.0


class Ran:
    """One command, run as its own process: exit code, output, and the command's own running time."""

    def __init__(self, done: subprocess.CompletedProcess) -> None:
        self.returncode = done.returncode
        self.stdout = done.stdout
        found = re.search(r"\nELAPSED (\d+\.\d+)\n", done.stderr)
        self.elapsed = float(found.group(1)) if found else None
        self.stderr = done.stderr[:found.start()] + done.stderr[found.end():] if found else done.stderr

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> dict:
        return json.loads(self.stdout)


def gd(*args, env: dict | None = None, timeout: float = 60, cwd: Path | None = None, wrap: tuple = ()) -> Ran:
    """`gradual-deploy ARGS` in a process of its own (under `wrap`: setpriv, unshare), timed from inside."""
    done = subprocess.run([*wrap, sys.executable, "-c", GD_TIMED, *(str(a) for a in args)], capture_output=True,
                          encoding="utf-8", errors="backslashreplace", timeout=timeout,
                          env={**CLEAN_ENV, **(env or {})}, cwd=cwd)
    return Ran(done)


def gd_popen(*args, env: dict | None = None, cwd: Path | None = None, wrap: tuple = ()) -> subprocess.Popen:
    return subprocess.Popen([*wrap, sys.executable, "-c", GD_TIMED, *(str(a) for a in args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, encoding="utf-8", errors="backslashreplace",
                            env={**CLEAN_ENV, **(env or {})}, cwd=cwd)


def finished(proc: subprocess.Popen, timeout: float, what: str) -> Ran:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"{what} did not end within {timeout:g} s; killed it. Output:\n{out}{err}", pytrace=False)
    return Ran(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))


def mode_of(path: Path) -> str:
    return json.loads(path.read_text())["mode"]


def doc_of(path: Path) -> dict:
    return json.loads(path.read_text())


def running(path: Path, mode: str = "real") -> Path:
    """A control file a running system reads, in `mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    FileChannel(str(path)).apply(mode, None, "test", "test", cas=False)
    return path


def audit_lines(directory: Path) -> list[dict]:
    return [json.loads(line) for f in sorted(directory.glob("deploy-*.jsonl")) for line in f.read_text().splitlines()]


def no_traceback(ran: Ran) -> None:
    assert "Traceback (most recent call last)" not in ran.output, f"a traceback reached the operator:\n{ran.output}"


def admin_error(text: str, method: str) -> bool:
    """Is this an AdminError's text: `METHOD <shown url>/mode: what happened` (not a Python exception's words)?"""
    return re.match(rf"{method} \S+/mode: \S", text or "") is not None


# --- loopback servers that misbehave --------------------------------------------------------------------------


class Request:
    def __init__(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        self.method, self.target, self.headers, self.body = method, target, headers, body


def _read_request(conn: socket.socket) -> Request | None:
    conn.settimeout(15)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk or len(data) > 1 << 20:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target = (lines[0].split(" ") + ["", ""])[:2]
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length") or 0)
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return Request(method, target, headers, rest[:length])


class Loopback:
    """A TCP server on loopback: each connection runs `respond(server, conn)` on a thread of its own."""

    def __init__(self, respond: Callable[["Loopback", socket.socket], None], host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.05)  # so that the accept loop sees `stop`
        self.host, self.port = host, self.sock.getsockname()[1]
        self.respond = respond
        self.stop = threading.Event()
        self.requests: list[Request] = []
        self.accepted = 0
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(None)
            self.accepted += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.respond(self, conn)
        except OSError:
            pass  # the client gave up, as it should
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def request(self, conn: socket.socket) -> Request | None:
        req = _read_request(conn)
        if req is not None:
            self.requests.append(req)
        return req

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
        for conn in list(self._conns):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


@pytest.fixture
def serve():
    servers: list[Loopback] = []

    def start(respond, host: str = "127.0.0.1") -> Loopback:
        server = Loopback(respond, host)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _raw(data: bytes):
    def respond(srv: Loopback, conn: socket.socket) -> None:
        if srv.request(conn) is not None:
            conn.sendall(data)
    return respond


def _json(status: int, body, extra: bytes = b""):
    data = json.dumps(body).encode()
    return _raw(b"HTTP/1.1 %d Whatever\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%sConnection: close"
                b"\r\n\r\n" % (status, len(data), extra) + data)


def _trickle(prefix: bytes):
    """The answer's first bytes, then one more byte every 50 ms for as long as the client listens."""
    def respond(srv: Loopback, conn: socket.socket) -> None:
        if srv.request(conn) is None:
            return
        conn.sendall(prefix)
        while not srv.stop.wait(0.05):
            conn.sendall(b"z")
    return respond


def _silent(srv: Loopback, conn: socket.socket) -> None:
    srv.request(conn)
    srv.stop.wait(60)


def _close_at_once(srv: Loopback, conn: socket.socket) -> None:
    pass  # accepted, then closed without reading a byte


def _close_after_request(srv: Loopback, conn: socket.socket) -> None:
    srv.request(conn)


def _reset_mid_body(srv: Loopback, conn: socket.socket) -> None:
    if srv.request(conn) is None:
        return
    conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n{"mode": "pau')
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close() sends a RST


def _endless_body(srv: Loopback, conn: socket.socket) -> None:
    if srv.request(conn) is None:
        return
    conn.sendall(b"HTTP/1.0 200 OK\r\n\r\n")
    block = b" " * 65536
    while not srv.stop.is_set():
        conn.sendall(block)


def _http10_held_open(srv: Loopback, conn: socket.socket) -> None:
    """A whole-looking JSON answer without a length, and a connection that never ends it."""
    if srv.request(conn) is None:
        return
    conn.sendall(b'HTTP/1.0 200 OK\r\n\r\n{"mode": "paused", "previous_mode": "real", "version": 9}')
    srv.stop.wait(60)


def _continue_forever(srv: Loopback, conn: socket.socket) -> None:
    if srv.request(conn) is None:
        return
    while not srv.stop.wait(0.02):
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")


def _slow_chunks(srv: Loopback, conn: socket.socket) -> None:
    if srv.request(conn) is None:
        return
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while not srv.stop.wait(0.05):
        conn.sendall(b"1\r\n \r\n")


def _echo_auth(srv: Loopback, conn: socket.socket) -> None:
    req = srv.request(conn)
    if req is None:
        return
    data = json.dumps({"error": f"rejected: Authorization: {req.headers.get('authorization')}"}).encode()
    conn.sendall(b"HTTP/1.1 500 X\r\nContent-Length: %d\r\n\r\n" % len(data) + data)


class MiniAdmin:
    """A well-behaved admin API (GET/POST {prefix}/mode) that answers in a chosen HTTP framing: `length`
    (Content-Length), `chunked`, or `http10` (no length, the end of the body is the connection's close)."""

    def __init__(self, prefix: str = "", style: str = "length", mode: str = "real", token: str | None = None) -> None:
        self.prefix, self.style, self.mode, self.token = prefix, style, mode, token
        self.version = 1

    def __call__(self, srv: Loopback, conn: socket.socket) -> None:
        req = srv.request(conn)
        if req is None:
            return
        path = req.target.partition("?")[0]
        if self.token and req.headers.get("authorization") != f"Bearer {self.token}":
            return self._send(conn, 401, {"error": "missing or wrong bearer token"})
        if path != self.prefix + "/mode":
            return self._send(conn, 404, {"error": f"no such endpoint: {req.method} {req.target}"})
        if req.method == "POST":
            body = json.loads(req.body)
            previous, self.mode = self.mode, body["mode"]
            self.version += 1
            return self._send(conn, 200, {"mode": self.mode, "previous_mode": previous, "version": self.version})
        self._send(conn, 200, {"mode": self.mode, "version": self.version})

    def _send(self, conn: socket.socket, status: int, body) -> None:
        data = json.dumps(body).encode()
        if self.style == "chunked":
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 7]), data[i:i + 7]) for i in range(0, len(data), 7))
            conn.sendall(b"HTTP/1.1 %d X\r\nTransfer-Encoding: chunked\r\n\r\n" % status + chunks + b"0\r\n\r\n")
        elif self.style == "http10":
            conn.sendall(b"HTTP/1.0 %d X\r\n\r\n" % status + data)
        else:
            conn.sendall(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n" % (status, len(data)) + data)


HOSTILE = {
    # name: (the server's behaviour, what the AdminError must say ("" when any clear AdminError will do))
    "trickled status line": (_trickle(b"HTTP/1.1 2"), "no complete answer within 1 s"),
    "trickled headers": (_trickle(b"HTTP/1.1 200 OK\r\nX-Slow: "), "no complete answer within 1 s"),
    "trickled body": (_trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n{"), "no complete answer within 1 s"),
    "never answers": (_silent, "no complete answer within 1 s"),
    "100 Continue forever": (_continue_forever, "no complete answer within 1 s"),
    "endless slow chunks": (_slow_chunks, "no complete answer within 1 s"),
    "HTTP/1.0 without length, held open": (_http10_held_open, "no complete answer within 1 s"),
    "accepts, then closes at once": (_close_at_once, ""),
    "closes after the request": (_close_after_request, ""),
    "resets the connection mid-body": (_reset_mid_body, ""),
    "huge body": (_raw(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (6 << 20) + b" " * (6 << 20)),
                  "larger than 4 MiB"),
    "endless body without length": (_endless_body, "larger than 4 MiB"),
    "huge header line": (_raw(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"), ""),
    "too many headers": (_raw(b"HTTP/1.1 200 OK\r\n" + b"X-H: y\r\n" * 300 + b"Content-Length: 2\r\n\r\n{}"), ""),
    "malformed status line": (_raw(b"HTTQ/9 abc\r\n\r\n"), ""),
    "bad chunk size": (_raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"), ""),
    "redirect 307": (_json(307, {"error": "moved"}, b"Location: http://127.0.0.1:9/mode\r\n"), "HTTP 307"),
    "redirect 302 without body": (_raw(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:9/\r\nContent-Length: 0"
                                       b"\r\n\r\n"), "HTTP 302"),
    "401": (_json(401, {"error": "no"}), "HTTP 401 unauthorized: the admin token was rejected"),
    "409": (_json(409, {"error": "taken", "mode": "real"}), "HTTP 409"),
    "500": (_json(500, {"error": "boom"}), "HTTP 500"),
    "HTML instead of JSON": (_raw(b"HTTP/1.1 200 OK\r\nContent-Length: 28\r\n\r\n<html>502 bad gateway</html>"),
                             "non-JSON answer"),
    "JSON null": (_json(200, None), ""),
    "deeply nested JSON": (_raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"[" * 100_000), ""),
    "echoes the Authorization header": (_echo_auth, "rejected: Authorization: Bearer ***"),
}


# --- 1. the admin API client: http.client under a whole-call deadline ------------------------------------------


@pytest.mark.parametrize("name", list(HOSTILE))
def test_the_admin_client_ends_every_hostile_answer_within_its_deadline_as_an_admin_error(serve, name):
    """Each call (a GET /mode and a POST /mode, as a pause makes them) ends within its 1 s deadline plus slack,
    as an AdminError that names the call, never as another exception, and never shows the token."""
    from deploy_tool.probes.admin import AdminClient, AdminError

    behaviour, says = HOSTILE[name]
    server = serve(behaviour)
    client = AdminClient(server.url, token=TOKEN, timeout=(CALL_DEADLINE_S, CALL_DEADLINE_S))
    for method, call in (("GET", client.get_mode), ("POST", lambda: client.set_mode("paused", None, "r", "a"))):
        started = time.monotonic()
        message, other = None, None
        try:
            call()
        except AdminError as exc:
            message = str(exc)
        except Exception as exc:  # noqa: BLE001 - this is what the test is looking for
            other = f"{type(exc).__name__}: {str(exc)[:200]}"
        took = time.monotonic() - started
        if other is not None:
            pytest.fail(f"{method}: not an AdminError but {other} (after {took:.2f} s)", pytrace=False)
        if message is None:
            pytest.fail(f"{method}: a hostile answer ({name}) was taken for a good one", pytrace=False)
        assert took <= CALL_DEADLINE_S + SLACK_S, f"{method} took {took:.2f} s against {name}"
        assert admin_error(message, method), message
        assert says in message, message
        assert TOKEN not in message and TOKEN[:12] not in message, message


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_pause_through_both_channels_pauses_the_file_whatever_the_admin_api_does(serve, tmp_path, name):
    """The pause goes through the control file, within the documented bound, and reports the admin API FAILED
    with a clear AdminError; the audit line is written; the token is shown nowhere."""
    behaviour, says = HOSTILE[name]
    server = serve(behaviour)
    control = running(tmp_path / "mode.json")
    audit = tmp_path / "audit"
    ran = gd("pause", "--http-admin-url", server.url, "--admin-token-env", TOKEN_ENV, "--control-file", control,
             "--audit-dir", audit, "--json", env={TOKEN_ENV: TOKEN})
    no_traceback(ran)
    assert mode_of(control) == "paused"
    assert ran.elapsed is not None and ran.elapsed <= PAUSE_HTTP_BOUND_S + SLACK_S, \
        f"the pause took {ran.elapsed} s against an admin API that {name}"
    record = ran.json()
    assert ran.returncode == 0 and record["result"] == "partial", ran.output
    http, file = record["channels"]
    assert file["ok"] and not http["ok"]
    assert admin_error(http["error"], "POST") and says in http["error"], \
        f"the http channel's error is not a clear AdminError: {http['error']!r}"
    assert "WARNING: pause through http" in ran.stderr and "paused through file only" in ran.stderr
    (line,) = audit_lines(audit)
    assert line["result"] == "partial" and line["channels"][1]["ok"]
    for text in (ran.output, json.dumps(line)):
        assert TOKEN not in text


@pytest.mark.parametrize("name", list(HOSTILE))
def test_status_against_a_hostile_admin_api_says_unreadable_without_a_traceback(serve, tmp_path, name):
    """`status` (and so `switch`, which reads the same way first) names the admin API unreadable, exit 1."""
    behaviour, _ = HOSTILE[name]
    server = serve(behaviour)
    control = running(tmp_path / "mode.json")
    ran = gd("status", "--http-admin-url", server.url, "--admin-token-env", TOKEN_ENV, "--control-file", control,
             "--evidence-dir", tmp_path / "ev", env={TOKEN_ENV: TOKEN})
    no_traceback(ran)
    assert ran.returncode == 1 and f"UNREADABLE: GET {server.url}/mode: " in ran.stdout, ran.output
    assert ran.elapsed is not None and ran.elapsed <= 2 * (2.0 + SLACK_S), ran.elapsed
    assert TOKEN not in ran.output


@pytest.mark.parametrize("style", ["chunked", "http10"])
def test_a_good_answer_in_another_framing_is_a_confirmed_pause(serve, tmp_path, style):
    """Chunked encoding, and HTTP/1.0 without a length (the body ends with the connection), are answers."""
    admin = MiniAdmin(style=style, token=TOKEN)
    server = serve(admin)
    control = running(tmp_path / "mode.json")
    ran = gd("pause", "--http-admin-url", server.url, "--admin-token-env", TOKEN_ENV, "--control-file", control,
             "--audit-dir", tmp_path / "a", env={TOKEN_ENV: TOKEN})
    no_traceback(ran)
    assert ran.returncode == 0 and "pause: DONE" in ran.stdout, ran.output
    assert admin.mode == "paused" and mode_of(control) == "paused"


def test_an_acknowledged_pause_whose_read_back_trickles_is_not_done(serve, tmp_path):
    """The admin API acknowledges the POST, then trickles its GET /mode: the pause does not take the
    acknowledgement for the fact (no DONE through http), and still ends within about 2 s."""
    admin = MiniAdmin(token=TOKEN)
    trickle = _trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")

    def respond(srv: Loopback, conn: socket.socket) -> None:
        if srv.requests and srv.requests[-1].method == "POST" and srv.accepted >= 2:
            return trickle(srv, conn)
        return admin(srv, conn)

    server = serve(respond)
    control = running(tmp_path / "mode.json")
    ran = gd("pause", "--http-admin-url", server.url, "--admin-token-env", TOKEN_ENV, "--control-file", control,
             "--audit-dir", tmp_path / "a", "--json", env={TOKEN_ENV: TOKEN})
    no_traceback(ran)
    http, file = ran.json()["channels"]
    assert admin.mode == "paused" and [r.method for r in server.requests][:1] == ["POST"]
    assert not http["ok"] and "GET" in http["error"] and "no complete answer within 1 s" in http["error"], http
    assert file["ok"] and ran.json()["result"] == "partial"
    assert ran.elapsed is not None and ran.elapsed <= PAUSE_HTTP_BOUND_S + SLACK_S, ran.elapsed


def test_a_redirect_is_not_followed(serve, tmp_path):
    """A 307 to another server: the pause does not go there (no redirect, by design), and says what it got."""
    elsewhere = MiniAdmin()
    target = serve(elsewhere)
    server = serve(_json(307, {"error": "moved"}, f"Location: {target.url}/mode\r\n".encode()))
    control = running(tmp_path / "mode.json")
    ran = gd("pause", "--http-admin-url", server.url, "--control-file", control, "--audit-dir", tmp_path / "a",
             "--json")
    no_traceback(ran)
    http = ran.json()["channels"][0]
    assert not http["ok"] and "HTTP 307" in http["error"], http
    assert target.accepted == 0 and elsewhere.mode == "real"
    assert mode_of(control) == "paused"


def test_http_proxy_in_the_environment_is_not_used_by_the_pause(serve, sandbox, tmp_path):
    """HTTP(S)_PROXY/ALL_PROXY point at a recording proxy: the pause goes direct, and pauses both."""
    proxy = serve(_json(502, {"error": "proxy says no"}))
    proxied = {name: proxy.url for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                                            "all_proxy")}
    control = running(tmp_path / "mode.json")
    sandbox.admin.change({"mode": "real"})
    ran = gd("pause", "--http-admin-url", sandbox.admin_url, "--admin-token-env", sandbox.token_env, "--control-file",
             control, "--audit-dir", tmp_path / "a", env={**proxied, sandbox.token_env: sandbox.token})
    no_traceback(ran)
    assert ran.returncode == 0 and "pause: DONE" in ran.stdout, ran.output
    assert sandbox.admin.mode == "paused" and mode_of(control) == "paused"
    assert proxy.accepted == 0, "the pause went through the proxy"


def test_an_admin_api_on_ipv6_loopback_is_paused(serve, tmp_path):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        server = serve(admin := MiniAdmin(token=TOKEN), host="::1")
    except OSError:
        pytest.skip("no ::1 here")
    control = running(tmp_path / "mode.json")
    ran = gd("pause", "--http-admin-url", server.url, "--admin-token-env", TOKEN_ENV, "--control-file", control,
             "--audit-dir", tmp_path / "a", env={TOKEN_ENV: TOKEN})
    no_traceback(ran)
    assert ran.returncode == 0 and "pause: DONE" in ran.stdout, ran.output
    assert admin.mode == "paused" and server.url.startswith("http://[::1]:")


def test_user_and_password_in_the_url_go_as_basic_auth_and_are_never_shown(serve, tmp_path):
    """Without a token, the URL's user info is sent as Basic authentication; its password is shown nowhere, not
    even when the server echoes the header back."""
    admin = MiniAdmin()
    server = serve(admin)
    url = server.url.replace("http://", f"http://ops:{PASSWORD}@")
    control = running(tmp_path / "mode.json")
    ran = gd("pause", "--http-admin-url", url, "--control-file", control, "--audit-dir", tmp_path / "a")
    no_traceback(ran)
    assert ran.returncode == 0 and "pause: DONE" in ran.stdout and admin.mode == "paused", ran.output
    sent = {r.headers.get("authorization") for r in server.requests}
    assert sent == {"Basic " + base64.b64encode(f"ops:{PASSWORD}".encode()).decode()}
    echo = serve(_echo_auth)
    ran2 = gd("pause", "--http-admin-url", echo.url.replace("http://", f"http://ops:{PASSWORD}@"), "--control-file",
              control, "--audit-dir", tmp_path / "a")
    no_traceback(ran2)
    basic = base64.b64encode(f"ops:{PASSWORD}".encode()).decode()
    for text in (ran.output, ran2.output, *(json.dumps(x) for x in audit_lines(tmp_path / "a"))):
        assert PASSWORD not in text and basic not in text and basic.rstrip("=") not in text


def test_https_to_a_plain_http_port_is_an_admin_error_within_the_deadline(serve, sandbox, tmp_path):
    control = running(tmp_path / "mode.json")
    for url in (sandbox.admin_url.replace("http://", "https://"),  # an HTTP server: answers the TLS hello with 400
                serve(_silent).url.replace("http://", "https://")):  # a server that never answers the hello
        ran = gd("pause", "--http-admin-url", url, "--admin-token-env", sandbox.token_env, "--control-file", control,
                 "--audit-dir", tmp_path / "a", "--json", env={sandbox.token_env: sandbox.token})
        no_traceback(ran)
        http = ran.json()["channels"][0]
        assert admin_error(http["error"], "POST"), http
        assert ran.elapsed is not None and ran.elapsed <= PAUSE_HTTP_BOUND_S + SLACK_S, ran.elapsed
        assert mode_of(control) == "paused"


URL_CASES = {
    # name: (the URL; what the AdminError must say)
    "port out of range": ("http://127.0.0.1:70000", "port is not a number from 0 to 65535"),
    "negative port": ("http://127.0.0.1:-1", "port is not a number"),
    "unresolvable host": ("http://no-such-host.invalid:8001", "cannot connect"),
    "unbalanced IPv6 bracket": ("http://[::1", ""),
    "IPv6 literal nobody listens on": ("http://[::1]:9", "connection refused"),
}


@pytest.mark.parametrize("name", list(URL_CASES))
def test_an_unusable_admin_url_is_an_admin_error_and_the_file_is_paused(tmp_path, name):
    """Attack: `--http-admin-url 'http://[::1'` (a typo). urlsplit raises ValueError inside plainhttp.call, which
    catches only http.client/OS errors: `pause` reports the http channel as 'ValueError: Invalid IPv6 URL' (no
    AdminError, no call named) and `status`/`switch` end in a traceback. requests turned it into InvalidURL."""
    url, says = URL_CASES[name]
    control = running(tmp_path / "mode.json")
    ran = gd("pause", "--http-admin-url", url, "--admin-token-env", TOKEN_ENV, "--control-file", control,
             "--audit-dir", tmp_path / "a", "--json", env={TOKEN_ENV: TOKEN})
    no_traceback(ran)
    assert mode_of(control) == "paused" and ran.returncode == 0, ran.output
    http = ran.json()["channels"][0]
    assert admin_error(http["error"], "POST") and says in http["error"], http["error"]
    assert ran.elapsed is not None and ran.elapsed <= PAUSE_HTTP_BOUND_S + SLACK_S, ran.elapsed
    status = gd("status", "--http-admin-url", url, "--admin-token-env", TOKEN_ENV, "--control-file", control,
                "--evidence-dir", tmp_path / "ev", env={TOKEN_ENV: TOKEN})
    no_traceback(status)
    assert status.returncode == 1 and "UNREADABLE: GET " in status.stdout, status.output


@pytest.mark.parametrize("prefix,given", [
    ("/%C3%A4dmin", "/ädmin"),  # requests percent-encoded a non-ASCII path; http.client refuses it
    ("/ops%20admin", "/ops admin"),  # ... and a space
    ("/ops/admin", "/ops/admin/"),  # a plain prefix, with a trailing slash
], ids=["non-ASCII", "space", "plain"])
def test_an_admin_api_under_a_path_prefix_is_paused(serve, tmp_path, prefix, given):
    """Attack: an admin API under a path prefix that is not plain ASCII. Before 818fc76, requests sent
    `/%C3%A4dmin/mode` and the pause went through both channels; http.client's putrequest raises
    UnicodeEncodeError ('ascii' codec) for 'ä' and InvalidURL for a space, so the http channel now always
    fails (pause: 'UnicodeEncodeError: ...', no AdminError), and `status` ends in a traceback."""
    admin = MiniAdmin(prefix=prefix, token=TOKEN)
    server = serve(admin)
    control = running(tmp_path / "mode.json")
    ran = gd("pause", "--http-admin-url", server.url + given, "--admin-token-env", TOKEN_ENV, "--control-file",
             control, "--audit-dir", tmp_path / "a", env={TOKEN_ENV: TOKEN})
    no_traceback(ran)
    assert mode_of(control) == "paused"
    assert ran.returncode == 0 and "pause: DONE" in ran.stdout, ran.output
    assert admin.mode == "paused"


def test_a_query_string_in_the_admin_url_is_a_clear_error_and_its_secret_stays_masked(serve, tmp_path):
    """A query string in --http-admin-url (`?api_token=...`): it once got `/mode` appended after it, so the call
    reached `/ops?api_token=.../mode` and a 404 (as with requests). Now the query stays at the end of every
    call's URL: the pause goes through both channels, and the query's secret is masked everywhere."""
    admin = MiniAdmin(prefix="/ops")
    server = serve(admin)
    control = running(tmp_path / "mode.json")
    ran = gd("pause", "--http-admin-url", f"{server.url}/ops?api_token={PASSWORD}", "--control-file", control,
             "--audit-dir", tmp_path / "a", "--json")
    no_traceback(ran)
    http = ran.json()["channels"][0]
    assert http["ok"] and http["after"] == "paused", http
    assert mode_of(control) == "paused"
    for text in (ran.output, *(json.dumps(x) for x in audit_lines(tmp_path / "a"))):
        assert PASSWORD not in text


@pytest.mark.parametrize("token", [TOKEN + "\n", TOKEN + "\r\nX-Injected: 1", TOKEN + "\u20ac"],
                         ids=["trailing newline", "header injection", "not latin-1"])
def test_a_token_that_cannot_go_in_a_header_is_an_admin_error_and_never_shown(serve, tmp_path, token):
    """Attack: EXEC_HTTP_ADMIN_TOKEN with a trailing newline (a token read from a file or a Kubernetes secret).
    http.client's putheader raises ValueError("Invalid header value b'Bearer <TOKEN>\\n'"), which plainhttp.call
    does not catch. `pause` reports 'ValueError: Invalid header value b'Bearer ***'' (masked, but no AdminError),
    and `status`/`switch` end in a traceback that prints the whole token on the terminal. requests raised
    InvalidHeader, which the old client turned into an AdminError naming only the class. (A token outside
    latin-1 raised UnicodeEncodeError before and after: a traceback in status/switch.)"""
    admin = MiniAdmin(token=TOKEN)
    server = serve(admin)
    control = running(tmp_path / "mode.json")
    ran = gd("pause", "--http-admin-url", server.url, "--admin-token-env", TOKEN_ENV, "--control-file", control,
             "--audit-dir", tmp_path / "a", "--json", env={TOKEN_ENV: token})
    no_traceback(ran)
    assert mode_of(control) == "paused"
    assert not any("x-injected" in r.headers for r in server.requests), "a header was injected"
    http = ran.json()["channels"][0]
    status = gd("status", "--http-admin-url", server.url, "--admin-token-env", TOKEN_ENV, "--control-file", control,
                "--evidence-dir", tmp_path / "ev", env={TOKEN_ENV: token})
    leaks = [where for where, text in (("pause", ran.output), ("status", status.output),
                                       ("audit", json.dumps(audit_lines(tmp_path / "a"))))
             if TOKEN in text or TOKEN[:12] in text]
    assert not leaks, f"the token reached: {leaks}\n{status.output[-600:]}"
    no_traceback(status)
    assert admin_error(http["error"], "POST"), f"not a clear AdminError: {http['error']!r}"


@pytest.fixture
def blackhole_dns():
    """A resolver that never answers: a UDP socket on a loopback address that reads and says nothing, and a
    resolv.conf naming it (bind-mounted over /etc/resolv.conf in a mount namespace of the command's own)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare to give one process its own /etc/resolv.conf")
    for last in range(77, 250):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind((f"127.0.0.{last}", 53))
            break
        except OSError:
            sock.close()
    else:
        pytest.skip("no loopback address with a free port 53")
    yield f"127.0.0.{last}"
    sock.close()


def test_a_resolver_that_never_answers_does_not_stretch_the_pause(blackhole_dns, tmp_path):
    """Attack: the admin API named by host name, and DNS down (the resolver does not answer). The whole-call
    deadline does not cover name resolution: http.client.HTTPConnection.connect -> socket.create_connection ->
    getaddrinfo blocks for the resolver's timeout (here 4 s; glibc's default is 5 s x 2 attempts), far past the
    1 s deadline and the documented 'about 2 s'. The file is paused meanwhile, but the pause returns only when
    the resolver gives up (or at the 10 s join)."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {blackhole_dns}\noptions timeout:4 attempts:1\n")
    control = running(tmp_path / "mode.json")
    wrap = ("unshare", "-m", "sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv))
    probe = subprocess.run([*wrap, "true"], capture_output=True, timeout=60)
    if probe.returncode != 0:
        pytest.skip(f"cannot bind-mount resolv.conf here: {probe.stderr[-200:]!r}")
    ran = gd("pause", "--http-admin-url", "http://admin.hostile18.example:8001", "--admin-token-env", TOKEN_ENV,
             "--control-file", control, "--audit-dir", tmp_path / "a", "--json", env={TOKEN_ENV: TOKEN}, wrap=wrap)
    no_traceback(ran)
    assert mode_of(control) == "paused"
    http = ran.json()["channels"][0]
    assert not http["ok"]
    assert ran.elapsed is not None and ran.elapsed <= PAUSE_HTTP_BOUND_S + SLACK_S, \
        f"the pause took {ran.elapsed:.1f} s with the resolver down (http: {http['error']})"


# --- 2. the control-file lock: fcntl.flock ---------------------------------------------------------------------

HOLDER = """
import fcntl, os, sys
path, how = sys.argv[1], sys.argv[2]
if how == "filelock":
    import filelock
    lock = filelock.FileLock(path)
    lock.acquire()
else:
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()
"""


class Holder:
    """Another process holding the lock file with filelock or a plain flock, until told or killed."""

    def __init__(self, path: Path, how: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), how], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "held"

    def release(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture
def holders():
    held: list[Holder] = []

    def hold(path: Path, how: str = "flock") -> Holder:
        holder = Holder(path, how)
        held.append(holder)
        return holder

    yield hold
    for holder in held:
        holder.kill()


@pytest.mark.parametrize("how", ["filelock", "flock"])
def test_a_lock_held_for_long_bounds_the_pause_and_still_writes_paused(tmp_path, holders, how):
    """Another process holds the lock and never lets go: the pause waits 1 s, writes `paused` without the lock,
    waits up to 5 s to write it again under the lock, then says it could not confirm: within its bound, the
    file paused, no DONE, the audit line written."""
    control = running(tmp_path / "mode.json")
    holder = holders(tmp_path / "mode.json.lock", how)
    ran = gd("pause", "--control-file", control, "--audit-dir", tmp_path / "a", "--json")
    no_traceback(ran)
    assert ran.elapsed is not None and ran.elapsed <= PAUSE_LOCK_BOUND_S + SLACK_S + 0.5, ran.elapsed
    assert mode_of(control) == "paused"
    (file,) = ran.json()["channels"]
    assert ran.returncode == 1 and not file["ok"] and "is still held after 5 s" in file["error"], ran.output
    (line,) = audit_lines(tmp_path / "a")
    assert line["result"] == "failed"
    holder.release()
    assert mode_of(control) == "paused"


def test_a_lock_holder_killed_mid_pause_lets_the_pause_reassert(tmp_path, holders):
    """The holder dies (SIGKILL) while the pause waits to re-assert: the kernel releases its flock, the pause
    takes the lock, writes again under it, and says DONE."""
    control = running(tmp_path / "mode.json")
    before = doc_of(control)["version"]
    holder = holders(tmp_path / "mode.json.lock", "flock")
    pause = gd_popen("pause", "--control-file", control, "--audit-dir", tmp_path / "a", "--json")
    wait_until(lambda: mode_of(control) == "paused", "the pause's write without the lock", timeout=30)
    holder.proc.send_signal(signal.SIGKILL)
    ran = finished(pause, 60, "the pause")
    no_traceback(ran)
    assert ran.returncode == 0 and ran.json()["result"] == "done", ran.output
    (file,) = ran.json()["channels"]
    assert "wrote paused without it, then again under the lock" in file["note"]
    assert doc_of(control)["version"] == file["version"] == before + 2


def test_a_symlinked_lock_file_locks_its_target_for_every_writer(tmp_path, holders):
    """mode.json.lock is a symlink to a lock file elsewhere, held there by its real name: the pause sees it held
    (the same inode), writes without it, and re-asserts once the holder lets go."""
    control = running(tmp_path / "sys" / "mode.json")
    (tmp_path / "sys" / "mode.json.lock").unlink()
    real_lock = tmp_path / "locks" / "mode.lock"
    real_lock.parent.mkdir()
    real_lock.touch()
    (tmp_path / "sys" / "mode.json.lock").symlink_to(real_lock)
    holder = holders(real_lock, "flock")
    pause = gd_popen("pause", "--control-file", control, "--audit-dir", tmp_path / "a", "--json")
    wait_until(lambda: mode_of(control) == "paused", "the pause's write without the lock", timeout=30)
    holder.release()
    ran = finished(pause, 60, "the pause")
    no_traceback(ran)
    (file,) = ran.json()["channels"]
    assert ran.returncode == 0 and file["ok"] and "lock was held elsewhere" in file["note"], ran.output
    assert (tmp_path / "sys" / "mode.json.lock").is_symlink()


def test_a_fifo_as_the_lock_file_with_a_reader_does_not_hold_the_pause(tmp_path):
    """A FIFO at the lock file's path that someone reads (so that an open for writing would succeed): the lock
    refuses it at once and the pause writes without it, saying so."""
    control = running(tmp_path / "mode.json")
    lock = tmp_path / "mode.json.lock"
    lock.unlink()
    os.mkfifo(lock)
    reader = os.open(lock, os.O_RDONLY | os.O_NONBLOCK)
    try:
        ran = gd("pause", "--control-file", control, "--audit-dir", tmp_path / "a")
    finally:
        os.close(reader)
    no_traceback(ran)
    assert ran.returncode == 0 and "pause: DONE" in ran.stdout, ran.output
    assert "is a FIFO (named pipe), not a regular file" in ran.stdout and "paused without it" in ran.stdout
    assert ran.elapsed is not None and ran.elapsed <= 1.0 + SLACK_S
    assert mode_of(control) == "paused"


# A switch on a slow disk (as in test_pause_hostile.py): its fsync of the temp file, while it holds the lock and
# after it read `mock` under it, returns only once the control file shows `paused`; then it renames `real` over.
SLOW_SWITCH = """
import json, os, sys, time
control, audit = sys.argv[1], sys.argv[2]
real_fsync, calls = os.fsync, [0]

def paused():
    with open(control, encoding="utf-8") as fh:
        return json.load(fh)["mode"] == "paused"

def slow(fd):
    calls[0] += 1
    if calls[0] == 1:
        print("FSYNC", flush=True)
        deadline = time.monotonic() + 60
        while not paused() and time.monotonic() < deadline:
            time.sleep(0.01)
        print("SAW PAUSED", paused(), flush=True)
    real_fsync(fd)

os.fsync = slow
from deploy_tool.cli import main
sys.exit(main(["switch", "--to", "real", "--force", "--control-file", control, "--audit-dir", audit]))
"""
NO_DAC = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search")


def _no_dac_or_skip() -> None:
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv: an operator without write permission on the lock file")
    probe = subprocess.run([*NO_DAC, "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"setpriv cannot drop CAP_DAC_OVERRIDE here: {probe.stderr!r}")


def test_a_lock_file_the_operator_cannot_write_still_locks_out_a_concurrent_switch(tmp_path):
    """Attack: the lock file belongs to another user, mode 0644 (Lock creates it so: the trading system's user,
    or a colleague who switched first), in a shared directory the operator may write. fileops.Lock opens it
    O_WRONLY|O_APPEND ("a") although flock needs no write access, gets EACCES, and the pause writes without the
    lock and never re-asserts (lock_usable=False). A switch that holds the lock and read `mock` before the pause
    then renames `real` over the pause: the pause said DONE, the file says real. An O_RDONLY lock file (or a
    fallback to it on EACCES/EROFS) would have made the pause wait 1 s, write, and re-assert after the switch."""
    _no_dac_or_skip()
    shared = tmp_path / "control"
    shared.mkdir()
    shared.chmod(0o777)
    control = running(shared / "mode.json", "mock")
    lock = shared / "mode.json.lock"
    os.chown(lock, 1, 1)  # another user's, 0644: readable, not writable by the operator
    lock.chmod(0o644)
    audit = tmp_path / "audit"
    audit.mkdir()
    audit.chmod(0o777)
    switch = subprocess.Popen([sys.executable, "-c", SLOW_SWITCH, str(control), str(audit)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=CLEAN_ENV, cwd=tmp_path)
    try:
        assert switch.stdout.readline().strip() == "FSYNC"  # the switch holds the lock, having read `mock`
        ran = gd("pause", "--control-file", control, "--audit-dir", audit, "--json", wrap=NO_DAC, cwd=tmp_path)
        out, err = switch.communicate(timeout=60)
    finally:
        if switch.poll() is None:
            switch.kill()
            switch.wait()
    no_traceback(ran)
    (file,) = ran.json()["channels"]
    final = doc_of(control)
    said = f"pause said {ran.json()['result'].upper()} ({file.get('note') or file.get('error')})"
    assert final["mode"] == "paused", f"lost pause: {said}; the switch then wrote {final['mode']} (version " \
                                      f"{final['version']}). switch: {out}{err}"


def test_a_lock_file_removed_while_a_switch_holds_it_does_not_cost_the_pause(tmp_path):
    """Attack: a switch holds the lock (a slow disk: it read `mock` under the lock and is writing `real`); an
    operator, told "locked by another process", removes the "stale" mode.json.lock. The pause opens the path,
    creates a new lock file, flocks it at once (another inode than the switch's), writes `paused` "under the
    lock", reads it back and says DONE without re-asserting; the switch then renames `real` over it. Nothing
    checks that the lock file a writer holds is still the one at the path."""
    control = running(tmp_path / "mode.json", "mock")
    switch = subprocess.Popen([sys.executable, "-c", SLOW_SWITCH, str(control), str(tmp_path / "a")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CLEAN_ENV, cwd=tmp_path)
    try:
        assert switch.stdout.readline().strip() == "FSYNC"  # the switch holds the lock, having read `mock`
        (tmp_path / "mode.json.lock").unlink()  # the hostile (or hurried) operator
        ran = gd("pause", "--control-file", control, "--audit-dir", tmp_path / "a", "--json", cwd=tmp_path)
        out, err = switch.communicate(timeout=60)
    finally:
        if switch.poll() is None:
            switch.kill()
            switch.wait()
    no_traceback(ran)
    final = doc_of(control)
    assert final["mode"] == "paused", f"lost pause: pause said {ran.json()['result'].upper()}, the switch then " \
                                      f"wrote {final['mode']} (version {final['version']}). switch: {out}{err}"


def test_an_audit_file_another_process_keeps_locked_still_gets_the_pause_line(tmp_path, holders):
    """Another process holds a flock on today's audit file and never lets go: the pause waits for it at most
    2 s, writes its line all the same, and says DONE."""
    from deploy_tool.times import utc_now

    control = running(tmp_path / "mode.json")
    audit = tmp_path / "a"
    audit.mkdir()
    today = audit / f"deploy-{utc_now():%Y-%m-%d}.jsonl"
    today.touch()
    holders(today, "flock")
    ran = gd("pause", "--control-file", control, "--audit-dir", audit)
    no_traceback(ran)
    assert ran.returncode == 0 and "pause: DONE" in ran.stdout, ran.output
    assert ran.elapsed is not None and ran.elapsed <= 2.0 + SLACK_S + 0.5, ran.elapsed
    (line,) = audit_lines(audit)
    assert line["result"] == "done" and mode_of(control) == "paused"


def test_a_read_only_control_directory_fails_the_file_channel_at_once_and_clearly(tmp_path):
    """The operator cannot write the control file's directory: the file channel FAILS at once naming the
    permission, nothing is replaced, and the audit line (elsewhere) is written."""
    _no_dac_or_skip()
    control = running(tmp_path / "ro" / "mode.json")
    (tmp_path / "ro" / "mode.json.lock").unlink()
    (tmp_path / "ro").chmod(0o555)
    try:
        ran = gd("pause", "--control-file", control, "--audit-dir", tmp_path / "a", "--json", wrap=NO_DAC)
    finally:
        (tmp_path / "ro").chmod(0o755)
    no_traceback(ran)
    (file,) = ran.json()["channels"]
    assert ran.returncode == 1 and "Permission denied" in file["error"], ran.output
    assert "NO CHANNEL CONFIRMED THE PAUSE" in ran.stderr
    assert ran.elapsed is not None and ran.elapsed <= 1.0 + SLACK_S
    assert mode_of(control) == "real" and audit_lines(tmp_path / "a")[0]["result"] == "failed"


SWITCHER = """
import json, sys
from deploy_tool.modes.channels import FileChannel
path, out, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
channel, versions, conflicts = FileChannel(path), [], 0
for _ in range(rounds):
    current = channel.read()
    if current == "paused":
        break
    result = channel.apply("real" if current == "mock" else "mock", current, "flip", "switcher", cas=True)
    if result.ok:
        versions.append(result.version)
    elif result.conflict:
        conflicts += 1
with open(out, "w") as fh:
    json.dump({"versions": versions, "conflicts": conflicts}, fh)
"""


def test_concurrent_switches_and_a_pause_count_versions_under_the_lock_and_lose_no_pause(tmp_path):
    """Six processes flip mock <-> real with compare-and-swap as fast as they can (never out of paused); a pause
    lands in the middle. Every write has its own version (one lockless pause write may share a number, as
    documented, but the pause's last write does not), none is skipped, and the pause stands at the end."""
    control = running(tmp_path / "mode.json", "mock")
    procs = [subprocess.Popen([sys.executable, "-c", SWITCHER, str(control), str(tmp_path / f"s{i}.json"), "400"],
                              stderr=subprocess.PIPE, text=True, env=CLEAN_ENV) for i in range(6)]
    try:
        wait_until(lambda: doc_of(control)["version"] >= 30, "the switchers to get going", timeout=60)
        ran = gd("pause", "--control-file", control, "--audit-dir", tmp_path / "a", "--json", timeout=120)
        errors = [p.communicate(timeout=120)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    no_traceback(ran)
    assert all(p.returncode == 0 for p in procs), errors
    assert ran.returncode == 0 and ran.json()["result"] == "done", ran.output
    (file,) = ran.json()["channels"]
    final = doc_of(control)
    assert final["mode"] == "paused", "a switch undid the pause"
    versions = [v for i in range(6) for v in json.loads((tmp_path / f"s{i}.json").read_text())["versions"]]
    versions.append(file["version"])
    assert len(set(versions)) == len(versions), "two writes under the lock share a version"
    assert final["version"] == max(versions) == file["version"]
    # a pause that wrote without the lock: that write's number may be one a switch under the lock also used
    lockless = "without it" in (file.get("note") or "")
    assert final["version"] - 1 - len(versions) in ((0, 1) if lockless else (0,)), \
        "a version was skipped or counted twice"


# --- 3. Settings and Option: plain classes now -------------------------------------------------------------------


def _secret_settings():
    from deploy_tool.settings import resolve

    cli = {"http_admin_url": f"http://ops:{PASSWORD}@127.0.0.1:8001", "database_url":
           f"postgresql://app:{PASSWORD}@db:5432/prod", "control_file": "/srv/mode.json",
           "notify": f"json://hooks.example/{PASSWORD}"}
    return resolve(list(cli), cli=lambda o: cli.get(o.name), environ={})


def test_settings_refuse_every_mutation():
    settings = _secret_settings()
    for attempt in (lambda: setattr(settings, "control_file", "/tmp/elsewhere"),
                    lambda: setattr(settings, "brand_new", 1),
                    lambda: delattr(settings, "control_file"),
                    lambda: setattr(settings, "problems", {})):
        with pytest.raises(AttributeError, match="immutable"):
            attempt()
    assert settings.control_file == "/srv/mode.json"


def test_settings_compare_copy_pickle_and_replace_like_the_dataclass_did():
    settings = _secret_settings()
    again = _secret_settings()
    assert settings == again and not settings != again and settings != object()
    with pytest.raises(TypeError):
        hash(settings)
    for clone in (copy.copy(settings), copy.deepcopy(settings), pickle.loads(pickle.dumps(settings))):
        assert clone == settings and clone is not settings
        with pytest.raises(AttributeError):
            clone.control_file = "x"
    changed = settings.replace(control_file="/srv/other.json")
    assert changed.control_file == "/srv/other.json" and settings.control_file == "/srv/mode.json"
    assert changed != settings and changed.sources == settings.sources
    with pytest.raises(TypeError):
        settings.replace(no_such_option=1)


def test_settings_repr_is_the_frozen_dataclass_repr_and_scrubs_clean():
    """repr shows exactly what the frozen dataclass's did (no more), and the redactor the commands and the
    suite's showlocals use masks every secret in it."""
    import dataclasses

    from deploy_tool.settings import OPTIONS

    settings = _secret_settings()
    old = dataclasses.make_dataclass("Settings", [(o.name, object) for o in OPTIONS]
                                     + [("problems", object), ("sources", object)], frozen=True)
    twin = old(**{o.name: getattr(settings, o.name) for o in OPTIONS}, problems=settings.problems,
               sources=settings.sources)
    assert repr(settings) == repr(twin)
    assert PASSWORD not in settings.redactor(environ={}).scrub(repr(settings))


def test_showlocals_of_a_failing_check_masks_the_settings(sandbox, tmp_path):
    """The suite under -l prints the test's locals, the Settings record among them (its repr is the dataclass's
    as before): a password in a URL setting is masked there, in the terminal and in the evidence."""
    args = sandbox.preflight_args()
    for option, url in (("--http-admin-url", sandbox.admin_url), ("--okx-base-url", sandbox.okx_url)):
        # the exchange's URL is the record's second field: within what pytest's saferepr keeps of it
        args[args.index(option) + 1] = url.replace("http://", f"http://ops:{PASSWORD}@")
    evidence = tmp_path / "ev"
    done = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "preflight_tests", "-p", "no:cacheprovider",
                           f"--basetemp={tmp_path / 'bt'}", *args, "--evidence-dir", str(evidence),
                           "--api-latency-threshold-ms", "0.001", "-l", "--tb=long", "-vv"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={**CLEAN_ENV, sandbox.token_env: sandbox.token, **sandbox.account_env()})
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    assert "settings = Settings(" in output, "no locals shown: the test did not reach what it attacks"
    assert "okx_base_url='http://ops:***@127.0.0.1" in output, "the record's repr was not shown where it matters"
    assert PASSWORD not in output
    for path in evidence.glob("preflight-*"):
        assert PASSWORD not in path.read_text(errors="replace"), path.name


# --- 4. the command line: only the named command's parser ----------------------------------------------------


def _sub(parser, name: str):
    (action,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return action.choices[name]


@pytest.mark.parametrize("command", ["preflight", "sandbox", "switch", "pause", "status", "watch", "ramp", "keygen",
                                     "verify", "demo"])
def test_a_command_alone_parses_and_helps_as_in_the_whole_parser(command, monkeypatch):
    from deploy_tool.cli import build_parser

    monkeypatch.setenv("COLUMNS", "100")
    whole, alone = build_parser(), build_parser(command)
    assert _sub(alone, command).format_help() == _sub(whole, command).format_help()
    assert _sub(alone, command).format_usage() == _sub(whole, command).format_usage()


@pytest.mark.parametrize("argv", [
    ["pause", "--contr", "x.json"], ["pause", "--control-file=x.json", "--reas", "r", "--js"],
    ["switch", "--to", "mock", "--forc", "--control-file", "x"], ["pause", "--co", "x"], ["pause", "--to", "mock"],
    ["status", "--json", "--json"], ["ramp", "approve", "--step", "2"], ["pause", "x.json"],
])
def test_abbreviations_and_mistakes_parse_as_in_the_whole_parser(argv, capsys):
    from deploy_tool.cli import build_parser

    def parse(parser):
        try:
            return vars(parser.parse_args(argv))
        except SystemExit as exc:
            return ("exit", exc.code, capsys.readouterr().err.split("\n")[-2])

    assert parse(build_parser(argv[0])) == parse(build_parser())


def test_a_misspelt_command_pauses_nothing(tmp_path):
    control = running(tmp_path / "mode.json")
    where = ["--control-file", control, "--audit-dir", tmp_path / "a"]
    for argv in (["paus", *where], ["Pause", *where], ["pause-now", *where], [], [*where, "pause"]):
        ran = gd(*argv)
        no_traceback(ran)
        assert ran.returncode == 2 and "usage: gradual-deploy" in ran.stderr, (argv, ran.output)
    assert mode_of(control) == "real" and not (tmp_path / "a").exists()
    ran = gd("pause", "--contr", control, "--audit-dir", tmp_path / "a")  # argparse's abbreviation, as before
    assert ran.returncode == 0 and mode_of(control) == "paused", ran.output


HELP_SCRIPT = """
import contextlib, io, json, sys
from deploy_tool.cli import main
for argv in ([], ["-h"], ["--help"], ["-h", "pause"], ["pause", "-h"], ["pause", "--help"], ["switch", "-h"],
             ["status", "-h"], ["watch", "-h"], ["ramp", "-h"], ["ramp", "approve", "-h"], ["sandbox", "-h"],
             ["keygen", "-h"], ["verify", "-h"], ["demo", "-h"], ["--version"], ["paus"], ["pause", "--nope"]):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    text = out.getvalue() + err.getvalue()
    print(json.dumps([argv, code, len(text), "Traceback" in text]), flush=True)
"""


@pytest.mark.parametrize("columns", ["0", "-5", "1", "3", "15", "garbage", "", "\u0663\u0660", "99999999",
                                     "9" * 30, "1e3"])
def test_help_at_every_level_under_any_columns(columns):
    """Help and usage errors at every level, with COLUMNS zero, negative, tiny, huge, garbage: the right exit
    code (0 for help, 2 for a usage error), never a traceback."""
    done = subprocess.run([sys.executable, "-c", HELP_SCRIPT], capture_output=True, text=True, timeout=120,
                          env={**CLEAN_ENV, "COLUMNS": columns})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 18, done.stdout
    for argv, code, size, traceback in rows:
        want = 2 if argv in ([], ["paus"], ["pause", "--nope"]) else 0
        assert code == want and size > 0 and not traceback, (columns, argv, code)


# --- 5. audit: actor() and host() without getpass and socket ----------------------------------------------------


@pytest.mark.parametrize("env,expected", [
    ({"LOGNAME": "", "USER": "alice", "LNAME": "bob"}, "alice"),
    ({"LOGNAME": "", "USER": "", "LNAME": "", "USERNAME": "carol"}, "carol"),
    ({"LOGNAME": "dave", "USER": "alice"}, "dave"),
])
def test_actor_follows_getpass_rule(monkeypatch, env, expected):
    import getpass

    from deploy_tool.audit import actor

    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert actor() == expected == getpass.getuser()


def test_no_login_variables_and_no_password_entry_still_pause_and_audit(tmp_path):
    """No LOGNAME/USER/LNAME/USERNAME and a uid the password database does not know (a container's random uid):
    the actor is `unknown`, the pause is DONE, the audit line is written."""
    if not shutil.which("unshare"):
        pytest.skip("needs unshare")
    probe = subprocess.run(["unshare", "--user", "--map-user=4242", "id", "-u"], capture_output=True, text=True)
    if probe.returncode != 0 or probe.stdout.strip() != "4242":
        pytest.skip(f"cannot enter a user namespace here: {probe.stderr[-200:]}")
    control = running(tmp_path / "mode.json")
    env = {k: v for k, v in CLEAN_ENV.items() if k not in ("LOGNAME", "USER", "LNAME", "USERNAME")}
    done = subprocess.run(["unshare", "--user", "--map-user=4242", sys.executable, "-c", GD_TIMED, "pause",
                           "--control-file", str(control), "--audit-dir", str(tmp_path / "a")], capture_output=True,
                          text=True, timeout=60, env=env)
    ran = Ran(done)
    no_traceback(ran)
    assert ran.returncode == 0 and "pause: DONE" in ran.stdout, ran.output
    (line,) = audit_lines(tmp_path / "a")
    assert line["actor"] == f"unknown@{os.uname().nodename}" and mode_of(control) == "paused"


@pytest.mark.parametrize("name", ["José", "用户", "evil\u202etxt.exe", "two\nlines", "tab\there", "  "],
                         ids=["accented", "cjk", "bidi-override", "newline", "tab", "blank"])
def test_a_unicode_login_name_reaches_the_audit_readable(tmp_path, name):
    """A login name in any script reaches the audit line as it is; a bidi override or other invisible character
    is written out there (`\\u202e`), as the redactor writes out everything that reaches a reader."""
    from deploy_tool.redact import sanitise

    control = running(tmp_path / "mode.json")
    ran = gd("pause", "--control-file", control, "--audit-dir", tmp_path / "a", env={"LOGNAME": name})
    no_traceback(ran)
    assert ran.returncode == 0 and "pause: DONE" in ran.stdout, ran.output
    (line,) = audit_lines(tmp_path / "a")
    assert line["actor"] == sanitise(f"{name}@{os.uname().nodename}")
    assert "\u202e" not in "".join(f.read_text() for f in (tmp_path / "a").glob("deploy-*.jsonl"))


NOT_UTF8 = "j\udcfcrgen"  # the bytes b"j\xfcrgen" (Latin-1 'jürgen') as Python decodes them from the environment


def lost(control: Path, audit_dir: Path, ran: Ran, done: bool = False) -> str:
    """What a pause lost: the control file not paused, no audit line, a traceback, (with `done`) no DONE."""
    problems = []
    if mode_of(control) != "paused":
        problems.append("the control file was NOT paused")
    if not list(audit_dir.glob("deploy-*.jsonl")):
        problems.append("no audit line")
    if "Traceback (most recent call last)" in ran.output:
        problems.append("a traceback: " + ran.output.strip().splitlines()[-1])
    if done and "pause: DONE" not in ran.stdout:
        problems.append(f"no DONE (exit {ran.returncode})")
    return "; ".join(problems)


def test_a_login_name_that_is_not_utf8_still_pauses_and_audits(tmp_path):
    """Attack: LOGNAME holds bytes that are not UTF-8 (a Latin-1 login name, b'j\\xfcrgen'). Python hands it on
    with a surrogate escape; actor() returns it as it is, and the control file's JSON
    (`json.dumps(..., ensure_ascii=False).encode('utf-8')` in controlfile.write_control_atomic) cannot be
    encoded: UnicodeEncodeError, which FileChannel does not catch. The file channel fails, nothing is paused
    through it, then audit.append fails the same way, uncaught: a traceback, no audit line, no report."""
    control = running(tmp_path / "mode.json")
    ran = gd("pause", "--control-file", control, "--audit-dir", tmp_path / "a", env={"LOGNAME": NOT_UTF8})
    assert not lost(control, tmp_path / "a", ran, done=True)


def test_a_host_name_that_is_not_utf8_still_pauses_and_audits(tmp_path):
    """Attack: the kernel's node name holds bytes that are not UTF-8 (set in a UTS namespace here). host() returns
    os.uname().nodename with a surrogate escape: as with the login name, the control file and the audit line
    cannot be encoded; the pause through the file fails and ends in a traceback."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a host name of its own")
    control = running(tmp_path / "mode.json")
    script = ("import socket, sys\nsocket.sethostname(b'ops-h\\xffx')\n" + GD_TIMED)
    done = subprocess.run(["unshare", "-u", sys.executable, "-c", script, "pause", "--control-file", str(control),
                           "--audit-dir", str(tmp_path / "a")], capture_output=True, encoding="utf-8",
                          errors="backslashreplace", timeout=60, env=CLEAN_ENV)
    ran = Ran(done)
    assert not lost(control, tmp_path / "a", ran)


def test_a_reason_typed_in_a_latin1_terminal_still_pauses_and_audits(tmp_path):
    """Attack: `pause --reason 'risque élevé'` from a terminal that sends Latin-1 (b'\\xe9'). The reason goes
    into the control file and the audit line with a surrogate escape and neither can be encoded: the file is
    NOT paused, the audit line is lost, the operator sees a traceback."""
    control = running(tmp_path / "mode.json")
    ran = gd("pause", "--control-file", control, "--audit-dir", tmp_path / "a", "--reason", "risque \udce9lev\udce9")
    assert not lost(control, tmp_path / "a", ran)


def test_a_control_file_path_that_is_not_utf8_keeps_its_audit_line(tmp_path):
    """Attack: the control file lives under a directory whose name is Latin-1 bytes. The file is paused (its
    JSON holds no path), but the audit record names the channel's target, audit.append cannot encode it
    (UnicodeEncodeError, uncaught by Outcome.write_audit): a traceback, the audit line lost, no report printed."""
    control = running(tmp_path / "tr\udce9ding" / "mode.json")
    ran = gd("pause", "--control-file", control, "--audit-dir", tmp_path / "a")
    assert not lost(control, tmp_path / "a", ran, done=True)


# --- 6. refusals: the fix first, --force last, no secret ------------------------------------------------------


def test_no_transition_refusal_offers_force_itself():
    from deploy_tool import MODES
    from deploy_tool.modes.machine import decide

    for current in (None, *MODES):
        for target in MODES:
            decision = decide(current, target)
            if not decision.allowed:
                assert "--force" not in decision.reason and decision.forceable, (current, target, decision)
                assert "`gradual-deploy switch --to mock`" in decision.reason


@pytest.mark.parametrize("database_url", [
    f"postgresql://app:{PASSWORD}@db.example:5432/prod",
    f"postgresql://app:{PASSWORD}@db.example:54x/prod",  # a port that is no number: `_shown_db` shows the rest
    f"postgresql://db.example:54x/prod?user=app&password={PASSWORD}",
    f"postgres://app:{PASSWORD}@db.example/prod?sslmode=require",
], ids=["userinfo", "bad-port-userinfo", "bad-port-query", "postgres-scheme"])
def test_a_gate_refusal_names_the_fix_first_and_leaks_no_database_password(sandbox, tmp_path, database_url):
    from test_refusals import _channels, _evidence, _gd, _mock, _reason, fix_first

    ev = tmp_path / "ev"
    _evidence(sandbox, ev, age_s=5)
    _mock(sandbox)
    gate = ["--okx-base-url", sandbox.okx_url, "--trusted-keys", sandbox.trusted_keys, "--database-url", database_url]
    done = _gd("switch", "--to", "real", *_channels(sandbox), *gate, "--evidence-dir", ev, "--audit-dir",
               tmp_path / "audit", cwd=tmp_path, env={sandbox.token_env: sandbox.token})
    assert done.returncode == 1 and "REFUSED" in done.stdout, done.stdout + done.stderr
    reason = _reason(done)
    assert "was made against another deployment" in reason and "(--database-url / DATABASE_URL)" in reason, reason
    fix_first(reason, "fix that option", "otherwise run the preflight again against this deployment")
    lines = audit_lines(tmp_path / "audit")
    for text in (done.stdout, done.stderr, json.dumps(lines)):
        assert PASSWORD not in text
    assert sandbox.admin.mode == "mock"


def test_a_refused_switch_leaks_neither_the_admin_url_password_nor_the_token(sandbox, tmp_path):
    """Evidence made against the admin API without user info; the switch names it with `ops:PASSWORD@`: a
    refusal naming both URLs, the fix first, and neither the password nor the token anywhere."""
    from test_refusals import _evidence, _gd, _mock, _reason, fix_first

    ev = tmp_path / "ev"
    _evidence(sandbox, ev, age_s=5)
    _mock(sandbox)
    url = sandbox.admin_url.replace("http://", f"http://ops:{PASSWORD}@")
    done = _gd("switch", "--to", "real", "--http-admin-url", url, "--admin-token-env", sandbox.token_env,
               "--control-file", sandbox.control_file, *sandbox.gate_args(), "--evidence-dir", ev, "--audit-dir",
               tmp_path / "audit", cwd=tmp_path, env={sandbox.token_env: sandbox.token})
    assert done.returncode == 1 and "REFUSED" in done.stdout, done.stdout + done.stderr
    reason = _reason(done)
    assert "(--http-admin-url / EXEC_HTTP_ADMIN_URL)" in reason, reason
    fix_first(reason, "fix that option")
    for text in (done.stdout, done.stderr, json.dumps(audit_lines(tmp_path / "audit"))):
        assert PASSWORD not in text and sandbox.token not in text
