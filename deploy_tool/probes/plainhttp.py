"""One HTTP call with the standard library, ended within a whole-call deadline: the admin API's client.

`gradual-deploy pause --http-admin-url` is an emergency tool, and requests with urllib3 cost more to import
(70-100 ms here) than the whole pause may take. `http.client` is already half loaded by the interpreter's
own imports. The deadline is the one `probes.http.DeadlineSession` keeps for requests: connect, send,
headers and body together end within `deadline_s`, because a timer shuts the socket down, which ends the
read it is blocked in; the call is then reported as unanswered, never as a short answer. A trickling
server cannot stretch it.

What it does not do, by design: follow redirects, use HTTP(S)_PROXY (the admin API is the trading system's
own, on its host or network: a pause must not depend on a proxy), keep connections alive between calls,
or read an answer larger than MAX_BODY.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from typing import Any
from urllib.parse import unquote, urlsplit

MAX_BODY = 4 * 1024 * 1024  # an admin answer is a small JSON object; more is a misdirected URL


class CallError(Exception):
    """The call failed before a complete answer came: `kind` is "refused", "unreachable", "deadline",
    "url" or "protocol"; the message says what happened, without the URL."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Answer:
    """A complete answer: the status, the body as bytes, and the body parsed as JSON (None when it is not)."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.body = body

    def json(self) -> Any:
        try:
            return json.loads(self.body) if self.body.strip() else None
        except ValueError:
            return None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def call(method: str, url: str, *, payload: Any = None, headers: dict[str, str] | None = None,
         connect_s: float, deadline_s: float) -> Answer:
    """One request to `url` (http or https), its JSON `payload` as the body; the complete answer within
    `deadline_s`, or CallError."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallError("url", "not an http(s) URL with a host")
    try:
        port = parts.port
    except ValueError:
        raise CallError("url", "the URL's port is not a number from 0 to 65535") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    sent = {"Accept": "application/json", "Connection": "close", **(headers or {})}
    if parts.username is not None and "Authorization" not in sent:  # what requests did with the URL's user info
        import base64

        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode("latin-1", "replace")
        sent["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    body = None
    if payload is not None:
        body = json.dumps(payload).encode("utf-8")
        sent["Content-Type"] = "application/json"
    connect = min(connect_s, deadline_s)
    if parts.scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(parts.hostname, port, timeout=connect)
    else:
        conn = http.client.HTTPConnection(parts.hostname, port, timeout=connect)
    fired = threading.Event()

    def cut() -> None:
        fired.set()
        sock = conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    timer = threading.Timer(deadline_s, cut)
    timer.daemon = True
    timer.start()
    try:
        try:
            conn.connect()
            if conn.sock is not None:
                conn.sock.settimeout(deadline_s)  # each read; the timer bounds them all together
            if fired.is_set():  # the timer fired while connecting: it found no socket to shut
                raise CallError("deadline", f"no complete answer within {deadline_s:g} s")
            conn.request(method, target, body=body, headers=sent)
            response = conn.getresponse()
            data = response.read(MAX_BODY + 1)
        except CallError:
            raise
        except ConnectionRefusedError:
            raise CallError("refused", "connection refused") from None
        except (socket.timeout, TimeoutError):
            raise CallError("deadline", f"no complete answer within {deadline_s:g} s") from None
        except (http.client.HTTPException, OSError) as exc:
            if fired.is_set():
                raise CallError("deadline", f"no complete answer within {deadline_s:g} s") from None
            kind = "protocol" if isinstance(exc, http.client.HTTPException) else "unreachable"
            raise CallError(kind, type(exc).__name__) from None
        if fired.is_set():  # the cut may have ended the body early: what came is not the answer
            raise CallError("deadline", f"no complete answer within {deadline_s:g} s")
        if len(data) > MAX_BODY:
            raise CallError("protocol", f"an answer larger than {MAX_BODY // (1024 * 1024)} MiB")
        return Answer(response.status, data)
    finally:
        timer.cancel()
        conn.close()
