"""HTTP calls with a whole-call deadline.

requests' timeouts bound each socket operation, not the call: a server that trickles one byte every half
second keeps a call alive for as long as it likes. Here every call ends within its deadline (connect,
send, headers and body together): a timer shuts down the sockets the call is using, which ends the read
it is blocked in, and the call is reported as unanswered. The sockets are found through urllib3's
connection class, which requests lets us choose per session (`DeadlineSession`).

Imported only when an HTTP call is made: requests and urllib3 are heavy for `gradual-deploy pause`.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection

from deploy_tool import ProbeError
from deploy_tool.redact import Redactor, mask_url

_LOCAL = threading.local()  # the connections the calling thread's current call uses


class DeadlineExceeded(requests.Timeout):
    """The call did not complete within its deadline."""


def _watch(conn: HTTPConnection) -> None:
    calls = getattr(_LOCAL, "conns", None)
    if calls is not None:
        calls.append(conn)


class _HTTPConnection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        _watch(self)
        super().request(*args, **kwargs)


class _HTTPSConnection(HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        _watch(self)
        super().request(*args, **kwargs)


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


class _Adapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _POOLS

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
        manager = super().proxy_manager_for(*args, **kwargs)
        manager.pool_classes_by_scheme = _POOLS
        return manager


class DeadlineSession(requests.Session):
    """A requests session whose calls can be held to a whole-call deadline (`call`)."""

    def __init__(self) -> None:
        super().__init__()
        self.mount("http://", _Adapter())
        self.mount("https://", _Adapter())

    def call(self, method: str, url: str, *, deadline_s: float, connect_s: float | None = None,
             **kwargs: Any) -> requests.Response:
        """One request, body included, that ends within `deadline_s`; DeadlineExceeded when it did not."""
        connect = min(connect_s or deadline_s, deadline_s)
        conns: list[HTTPConnection] = []
        fired = threading.Event()

        def cut() -> None:
            fired.set()
            for conn in conns:
                sock = getattr(conn, "sock", None)
                if sock is not None:
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        timer = threading.Timer(deadline_s, cut)
        timer.daemon = True
        _LOCAL.conns = conns
        timer.start()
        try:
            response = self.request(method, url, timeout=(connect, deadline_s), **kwargs)
        except requests.RequestException:
            if fired.is_set():
                raise DeadlineExceeded(f"no complete answer within {deadline_s:g} s") from None
            raise
        finally:
            timer.cancel()
            _LOCAL.conns = None
        if fired.is_set():  # the cut may have ended the body early: what came is not the answer
            response.close()
            raise DeadlineExceeded(f"no complete answer within {deadline_s:g} s")
        return response


def get_json(session: DeadlineSession, url: str, timeout: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """(HTTP status, parsed JSON body) of one GET within the deadline; ProbeError saying what went wrong,
    the URL masked, and what the call sent (its URL's and headers' credentials) masked in a quoted answer before
    the answer is cut to length."""
    sent = Redactor.for_request(url, headers)
    try:
        response = session.call("GET", url, connect_s=timeout[0], deadline_s=timeout[1],
                                headers=headers or {"Accept": "application/json"})
    except requests.Timeout:
        raise ProbeError(f"no complete answer from {mask_url(url)} within {timeout[1]:g} s") from None
    except requests.RequestException as exc:
        raise ProbeError(f"cannot reach {mask_url(url)}: {_short(exc, sent)}") from None
    try:
        body = response.json()
    except ValueError:
        snippet = sent.shorten(response.text.replace("\n", " "), 80)
        raise ProbeError(
            f"{mask_url(url)} answered HTTP {response.status_code} with non-JSON body '{snippet}'"
        ) from None
    return response.status_code, body


def _short(exc: BaseException, sent: Redactor) -> str:
    """The innermost reason of a requests error, without the urllib3 pool noise; what was sent masked in it
    before it is cut (urllib3 quotes the URL, query included)."""
    reason = exc
    while reason.__context__ is not None and reason.__context__ is not reason:
        reason = reason.__context__
    text = str(reason) or type(reason).__name__
    if "Connection refused" in str(exc):
        return "connection refused"
    if "Name or service not known" in str(exc) or "Temporary failure in name resolution" in str(exc):
        return "host name does not resolve (no network or wrong --okx-base-url)"
    return sent.shorten(text, 200)
