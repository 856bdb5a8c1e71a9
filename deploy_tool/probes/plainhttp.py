"""One HTTP call with the standard library, ended within a whole-call deadline: the admin API's client.

`gradual-deploy pause --http-admin-url` is an emergency tool, and requests with urllib3 cost more to import
(70-100 ms here) than the whole pause may take. `http.client` is already half loaded by the interpreter's
own imports. The deadline is the one `probes.http.DeadlineSession` keeps for requests: the name lookup,
connect, send, headers and body together end within `deadline_s` (the exchange runs on a daemon thread the
caller waits for; at the deadline the socket is shut down, which ends the read it is blocked in); the call
is then reported as unanswered, never as a short answer. A trickling server or a silent resolver cannot
stretch it.

What it does not do, by design: follow redirects, use HTTP(S)_PROXY (the admin API is the trading system's
own, on its host or network: a pause must not depend on a proxy), keep connections alive between calls,
or read an answer larger than MAX_BODY.
"""

from __future__ import annotations

import binascii
import http.client
import json
import socket
import threading
from typing import Any
from urllib.parse import quote, unquote, urlsplit

MAX_BODY = 4 * 1024 * 1024  # an admin answer is a small JSON object; more is a misdirected URL
_SAFE = "!#$%&'()*+,/:;=?@[]~"  # requests' requote_uri: what stays as written in a path and query


class CallError(Exception):
    """The call failed before a complete answer came: `kind` is "refused", "unreachable", "broken", "deadline",
    "url", "header" or "protocol"; the message says what happened, without the URL or what was sent."""

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
        except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
            return None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def call(method: str, url: str, *, payload: Any = None, headers: dict[str, str] | None = None,
         connect_s: float, deadline_s: float) -> Answer:
    """One request to `url` (http or https), its JSON `payload` as the body; the complete answer within
    `deadline_s`, or CallError.

    The exchange runs on a daemon thread that this one waits for at most `deadline_s`: a resolver that does not
    answer (getaddrinfo cannot be interrupted) stretches nothing; the socket is shut when the deadline passes,
    which ends the worker's read."""
    prepared = _prepare(method, url, payload, headers)
    conns: list[http.client.HTTPConnection] = []
    outcome: list[Any] = []
    finished = threading.Event()
    cut = threading.Event()

    def work() -> None:
        try:
            outcome.append(_exchange(prepared, min(connect_s, deadline_s), deadline_s, conns, cut))
        except BaseException as exc:  # handed to the caller's thread, which decides what it means
            outcome.append(exc)
        finally:
            finished.set()

    worker = threading.Thread(target=work, name="gd-http", daemon=True)
    worker.start()
    if not finished.wait(deadline_s):
        cut.set()
        for conn in conns:
            _shut(conn)
        raise CallError("deadline", f"no complete answer within {deadline_s:g} s")
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _prepare(method: str, url: str, payload: Any, headers: dict[str, str] | None) -> tuple:
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # an unbalanced [ of an IPv6 host
        raise CallError("url", "not a usable URL (its host cannot be read)") from None
    try:
        port = parts.port
    except ValueError:
        raise CallError("url", "the URL's port is not a number from 0 to 65535") from None
    if parts.scheme not in ("http", "https") or not host:
        raise CallError("url", "not an http(s) URL with a host")
    # what requests did (requote_uri): a space or a non-ASCII letter in the path or query is %-encoded
    target = quote(parts.path or "/", safe=_SAFE) + (f"?{quote(parts.query, safe=_SAFE)}" if parts.query else "")
    sent = {"Accept": "application/json", "Connection": "close", **(headers or {})}
    if parts.username is not None and "Authorization" not in sent:  # what requests did with the URL's user info
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode("latin-1", "replace")
        sent["Authorization"] = "Basic " + binascii.b2a_base64(pair, newline=False).decode("ascii")
    for value in sent.values():  # a token read from a file with its newline, or outside Latin-1
        if any(c in value for c in "\r\n\0") or not value.isprintable():
            raise CallError("header", "a header value (the admin token?) holds a line break or a control character")
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise CallError("header", "a header value (the admin token?) holds a character HTTP headers cannot "
                                      "carry (outside Latin-1)") from None
    body = json.dumps(payload).encode("utf-8") if payload is not None else None
    if body is not None:
        sent["Content-Type"] = "application/json"
    return parts.scheme, host, port, method, target, sent, body


def _exchange(prepared: tuple, connect_s: float, deadline_s: float, conns: list, cut: threading.Event) -> Answer:
    scheme, host, port, method, target, sent, body = prepared
    if scheme == "https":
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=connect_s)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=connect_s)
    conns.append(conn)
    connected = False
    try:
        conn.connect()
        connected = True
        if cut.is_set():
            raise CallError("deadline", f"no complete answer within {deadline_s:g} s")
        if conn.sock is not None:
            conn.sock.settimeout(deadline_s)  # each read; the caller's wait bounds them all together
        conn.request(method, target, body=body, headers=sent)
        response = conn.getresponse()
        data = response.read(MAX_BODY + 1)
    except CallError:
        raise
    except ConnectionRefusedError:
        raise CallError("refused", "connection refused") from None
    except (socket.timeout, TimeoutError):
        raise CallError("deadline", f"no complete answer within {deadline_s:g} s") from None
    except (http.client.HTTPException, OSError, ValueError, UnicodeError) as exc:
        if cut.is_set():
            raise CallError("deadline", f"no complete answer within {deadline_s:g} s") from None
        if not connected:
            raise CallError("unreachable", type(exc).__name__) from None
        # never str(exc): http.client quotes what it was given, a header (the token) included
        raise CallError("broken", f"the connection broke off ({type(exc).__name__})") from None
    finally:
        _shut(conn)
        conn.close()
    if cut.is_set():  # the cut may have ended the body early: what came is not the answer
        raise CallError("deadline", f"no complete answer within {deadline_s:g} s")
    if len(data) > MAX_BODY:
        raise CallError("protocol", f"an answer larger than {MAX_BODY // (1024 * 1024)} MiB")
    return Answer(response.status, data)


def _shut(conn: http.client.HTTPConnection) -> None:
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
