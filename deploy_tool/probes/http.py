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
