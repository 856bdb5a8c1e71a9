"""Client of the trading system's admin HTTP API (CONTRACT section 5).

Calls go through `probes.plainhttp` (the standard library, with a whole-call deadline): a `pause` through the
admin API does not pay for importing requests.
The bearer token is sent, never shown: errors carry the masked URL and the server's short answer, cut to
length only after what the client sent (the token, the URL's credentials) was masked in it.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple

from deploy_tool import MODES, ProbeError
from deploy_tool.redact import Redactor, mask_url

# (connect, whole call) seconds: every call ends within the second figure, however the server answers.
# The contract's health criterion: a 2xx within 2 s.
DEFAULT_TIMEOUT = (2.0, 2.0)


class AdminError(ProbeError):
    """The admin API could not be reached or gave an unusable answer."""


class AdminConflict(AdminError):
    """The admin API refused a change because its mode is no longer the expected one (HTTP 409)."""

    def __init__(self, message: str, mode: Any) -> None:
        super().__init__(message)
        self.mode = mode  # what the server says it holds now (a mode, or an allocation)


class AdminAnswer(NamedTuple):
    status: int
    body: Any
    latency_ms: float


class AdminClient:
    """Calls /health and /mode under a base URL that may carry a path prefix."""

    def __init__(self, base_url: str, token: str | None = None, timeout: Any = DEFAULT_TIMEOUT) -> None:
        base, _, query = base_url.partition("?")  # a query stays at the end of every call's URL
        self.base_url = base.rstrip("/")
        self._query = f"?{query}" if query else ""
        self.shown_url = mask_url(self.base_url) or self.base_url
        self._token = token or None
        # What this client sends, masked in a server's answer before the answer is cut to length: a server
        # that echoes the Authorization header across the cut would otherwise leave most of the token.
        self._redactor = Redactor.for_request(self.base_url + self._query, secrets=[self._token])
        self.timeout = timeout

    def close(self) -> None:
        """Nothing to release: every call opens and closes its own connection."""

    def __enter__(self) -> "AdminClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, payload: dict | None = None) -> AdminAnswer:
        from deploy_tool.probes.plainhttp import CallError, call

        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        url = self.base_url + path + self._query
        shown = f"{method} {self.shown_url}{path}"
        started = time.perf_counter()
        try:
            response = call(method, url, payload=payload, headers=headers, connect_s=self.timeout[0],
                            deadline_s=self.timeout[1])
        except CallError as exc:
            if exc.kind == "deadline":
                raise AdminError(f"{shown}: no complete answer within {self.timeout[1]:g} s (admin API hanging, "
                                 "overloaded or trickling)") from None
            if exc.kind == "refused":
                raise AdminError(f"{shown}: connection refused (is the trading system running? check "
                                 "--http-admin-url / EXEC_HTTP_ADMIN_URL)") from None
            if exc.kind == "unreachable":
                raise AdminError(f"{shown}: cannot connect ({exc}): check the host and port in --http-admin-url "
                                 "/ EXEC_HTTP_ADMIN_URL") from None
            if exc.kind == "header":
                raise AdminError(f"{shown}: {exc}: check EXEC_HTTP_ADMIN_TOKEN (or the variable --admin-token-env "
                                 "names; a token read from a file keeps its newline)") from None
            raise AdminError(f"{shown}: {exc}") from None
        latency_ms = (time.perf_counter() - started) * 1000
        if 300 <= response.status < 400:
            raise AdminError(f"{shown}: HTTP {response.status}, a redirect, not followed (a pause goes where it is "
                             "told): give the admin API's own URL in --http-admin-url / EXEC_HTTP_ADMIN_URL")
        body = response.json()
        if response.status == 401:
            raise AdminError(
                f"{shown}: HTTP 401 unauthorized: "
                + ("the admin token was rejected: check that EXEC_HTTP_ADMIN_TOKEN (or the variable "
                   "--admin-token-env names) holds the token the system requires" if self._token else
                   "no admin token was sent: set EXEC_HTTP_ADMIN_TOKEN (or the variable --admin-token-env names) to "
                   "the token the system requires")
            )
        if body is None:
            snippet = self._redactor.shorten(response.text.replace("\n", " "), 60)
            raise AdminError(f"{shown}: HTTP {response.status} with a non-JSON answer '{snippet}'")
        return AdminAnswer(response.status, body, latency_ms)

    def health(self) -> AdminAnswer:
        """GET /health; AdminError unless it answers 2xx with a JSON object."""
        answer = self._request("GET", "/health")
        if not 200 <= answer.status < 300:
            raise AdminError(f"GET {self.shown_url}/health: HTTP {answer.status} (expected 2xx): {self._error_text(answer.body)}")
        if not isinstance(answer.body, dict):
            raise AdminError(f"GET {self.shown_url}/health: answer is not a JSON object")
        return answer

    def get_mode(self) -> dict:
        """GET /mode; the answer object, whose mode is one of mock, real, paused."""
        answer = self._request("GET", "/mode")
        if answer.status != 200:
            raise AdminError(f"GET {self.shown_url}/mode: HTTP {answer.status} (expected 200): {self._error_text(answer.body)}")
        return _mode_object(answer.body, f"GET {self.shown_url}/mode")

    def set_mode(self, mode: str, expected_mode: str | None, reason: str, actor: str) -> dict:
        """POST /mode with compare-and-swap on expected_mode; AdminConflict on 409."""
        payload = {"mode": mode, "reason": reason, "actor": actor}
        if expected_mode is not None:
            payload["expected_mode"] = expected_mode
        answer = self._request("POST", "/mode", payload)
        shown = f"POST {self.shown_url}/mode"
        if answer.status == 409:
            current = answer.body.get("mode") if isinstance(answer.body, dict) else None
            raise AdminConflict(
                f"{shown}: HTTP 409, mode is now {current!r}, not {expected_mode!r}: someone changed it meanwhile",
                current if current in MODES else None,
            )
        if answer.status != 200:
            raise AdminError(f"{shown}: HTTP {answer.status}: {self._error_text(answer.body)}")
        return _mode_object(answer.body, shown)


    def get_config(self) -> dict:
        """GET /config: the system's risk configuration, a JSON object."""
        answer = self._request("GET", "/config")
        if answer.status != 200:
            raise AdminError(f"GET {self.shown_url}/config: HTTP {answer.status} (expected 200): "
                             f"{self._error_text(answer.body)}; serve the risk configuration there, or use --risk-config")
        if not isinstance(answer.body, dict):
            raise AdminError(f"GET {self.shown_url}/config: answer is not a JSON object")
        return answer.body

    def _error_text(self, body: Any) -> str:
        """The server's error text: masked, control characters written out, then cut to 120 characters."""
        text = str(body.get("error") or body.get("message") or body) if isinstance(body, dict) else str(body)
        return self._redactor.shorten(text, 120)

    def get_allocation(self) -> dict:
        """GET /allocation; the answer object, whose allocation is a fraction in (0, 1] or null."""
        answer = self._request("GET", "/allocation")
        if answer.status != 200:
            raise AdminError(f"GET {self.shown_url}/allocation: HTTP {answer.status} (expected 200): "
                             f"{self._error_text(answer.body)}")
        return _allocation_object(answer.body, f"GET {self.shown_url}/allocation")

    def set_allocation(self, allocation: float, expected: float | None, reason: str, actor: str) -> dict:
        """POST /allocation with compare-and-swap on expected_allocation; AdminConflict on 409."""
        payload: dict[str, Any] = {"allocation": allocation, "reason": reason, "actor": actor}
        if expected is not None:
            payload["expected_allocation"] = expected
        answer = self._request("POST", "/allocation", payload)
        shown = f"POST {self.shown_url}/allocation"
        if answer.status == 409:
            current = answer.body.get("allocation") if isinstance(answer.body, dict) else None
            raise AdminConflict(f"{shown}: HTTP 409, allocation is now {current!r}, not {expected!r}: someone "
                                "changed it meanwhile", current)
        if answer.status != 200:
            raise AdminError(f"{shown}: HTTP {answer.status}: {self._error_text(answer.body)}")
        return _allocation_object(answer.body, shown)


def _allocation_object(body: Any, shown: str) -> dict:
    if not isinstance(body, dict):
        raise AdminError(f"{shown}: answer is not a JSON object")
    value = body.get("allocation")
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1):
        raise AdminError(f"{shown}: allocation {value!r} is not a fraction in (0, 1]")
    return body




def _mode_object(body: Any, shown: str) -> dict:
    if not isinstance(body, dict):
        raise AdminError(f"{shown}: answer is not a JSON object")
    mode = body.get("mode")
    if mode not in MODES:
        raise AdminError(f"{shown}: mode {mode!r} is not one of {', '.join(MODES)}")
    return body
