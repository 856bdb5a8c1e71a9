"""A local stand-in of the whole world for rehearsals and tests (CONTRACT section 6).

On loopback: an exchange stand-in speaking OKX's response shapes for /api/v5/public/time and
/api/v5/system/status, the admin HTTP API of CONTRACT section 5, a control file, a trades feed writing
into SQLite, and a fresh backtest summary. Every part can be told to misbehave, so that tests and
rehearsals can watch the gate fail. Production targets are real; this is never one of them.
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import os
import random
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, cast
from urllib.parse import parse_qs, urlsplit

from deploy_tool import MODES, fileops
from deploy_tool.modes.controlfile import write_control_atomic
from deploy_tool.times import iso_utc, utc_now


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)  # a client that gave up is no error of ours


class _JsonHandler(BaseHTTPRequestHandler):
    server_version = "gradual-deploy-sandbox"
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, keep-alive calls would wait ~40 ms for the
    # client's delayed ACK and the latency check would measure the stand-in, not the network.
    disable_nagle_algorithm = True
    service: _LoopbackService  # the service this handler answers for (set by `_LoopbackService._serve`)

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        if parsed:
            self.service._arrived()  # counted before any delay or fault: "a request is in progress"
        return parsed

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
        pass  # the sandbox is quiet; its state is inspected, not logged

    def send_json(self, status: int, body: Any, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if raw is None else "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def trickle(self, every_s: float = 0.5, for_s: float = 30.0) -> None:
        """A server that never finishes its answer: one header byte every `every_s`, each read succeeds."""
        self.close_connection = True
        deadline = time.monotonic() + for_s
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while time.monotonic() < deadline:
                self.wfile.write(b"z")
                self.wfile.flush()
                time.sleep(every_s)
        except OSError:
            pass  # the client gave up, as it should


# How often a server's loop looks for a shutdown request. The stdlib's 0.5 s made every stop wait up to
# half a second per server (a second per test using the sandbox); requests are served at once either way.
SHUTDOWN_POLL_S = 0.02


class _LoopbackService:
    """An HTTP server on its own daemon thread."""

    server: _QuietServer
    path_prefix = ""

    def _serve(self, host: str, port: int, handler: type[_JsonHandler], name: str) -> None:
        handler.service = self  # each service defines its own Handler class, so this is per service
        self.requests = 0  # requests received so far, counted as each arrives (before it is answered)
        self._arrivals = threading.Condition()
        self.server = _QuietServer((host, port), handler)
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": SHUTDOWN_POLL_S},
                                        name=name, daemon=True)

    def _arrived(self) -> None:
        with self._arrivals:
            self.requests += 1
            self._arrivals.notify_all()

    def wait_for_requests(self, count: int, timeout: float) -> bool:
        """Wait until `count` requests in all have arrived (the last may still be in progress: delayed,
        hanging); whether they did within `timeout` seconds. Lets a test act while a call is in flight."""
        with self._arrivals:
            return self._arrivals.wait_for(lambda: self.requests >= count, timeout)

    @property
    def url(self) -> str:
        host, port = cast("tuple[str, int]", self.server.server_address[:2])
        return f"http://{host}:{port}{self.path_prefix}"

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the exchange -----------------------------------------------------------------------------------


@dataclass
class ExchangeBehaviour:
    """What the exchange stand-in does; change the fields while it runs."""

    delay_ms: float = 0.0
    skew_ms: float = 0.0
    http_status: int = 200
    code: str = "0"
    msg: str = ""
    garbage: bool = False
    trickle: bool = False
    events: list[dict] = field(default_factory=list)
    # /api/v5/public/instruments entries (OKX's field names) and /api/v5/market/ticker last prices
    instruments: dict[str, dict] = field(default_factory=lambda: {
        "BTC-USDT": {"instType": "SPOT", "instId": "BTC-USDT", "baseCcy": "BTC", "quoteCcy": "USDT", "minSz": "0.00001",
                     "lotSz": "0.00000001", "tickSz": "0.1", "ctVal": "", "ctValCcy": "", "state": "live"},
        "ETH-USDT-SWAP": {"instType": "SWAP", "instId": "ETH-USDT-SWAP", "settleCcy": "USDT", "minSz": "0.01",
                          "lotSz": "0.01", "tickSz": "0.01", "ctVal": "0.1", "ctValCcy": "ETH", "state": "live"},
    })
    last_prices: dict[str, float] = field(default_factory=lambda: {"BTC-USDT": 97000.0, "ETH-USDT-SWAP": 3500.0})
    # API keys the private endpoints accept: key -> secret, passphrase, demo, and what /account/config says
    accounts: dict[str, dict] = field(default_factory=dict)
    ip_whitelisted: bool = True


def sandbox_account(key: str, secret: str, passphrase: str, *, demo: bool = False, perm: str = "read_only,trade",
                    ip: str = "127.0.0.1", uid: str = "4461111111111111", main_uid: str = "4461000000000000",
                    total_eq: str = "10250.5") -> dict:
    """One API key of the exchange stand-in, and its account in OKX's shapes."""
    return {"secret": secret, "passphrase": passphrase, "demo": demo,
            "config": {"uid": uid, "mainUid": main_uid, "acctLv": "2", "posMode": "net_mode", "perm": perm, "ip": ip,
                       "label": "gradual-deploy", "level": "Lv1", "autoLoan": False, "greeksType": "PA"},
            "balance": {"totalEq": total_eq, "adjEq": "", "isoEq": "0", "uTime": str(int(time.time() * 1000)),
                        "details": [{"ccy": "USDT", "eq": total_eq, "cashBal": total_eq, "availBal": total_eq}]}}


def verify_signed(behaviour: "ExchangeBehaviour", method: str, path: str, headers: Any, body: str = "") -> tuple[str, dict | None]:
    """OKX's checks of a signed request, in its order: ('0', account) or (error code, None)."""
    key = headers.get("OK-ACCESS-KEY", "")
    if not key:
        return "50103", None
    account = behaviour.accounts.get(key)
    if account is None:
        return "50111", None
    if not headers.get("OK-ACCESS-PASSPHRASE"):
        return "50104", None
    if headers.get("OK-ACCESS-PASSPHRASE") != account["passphrase"]:
        return "50105", None
    stamp = headers.get("OK-ACCESS-TIMESTAMP", "")
    try:
        sent = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return "50102", None
    if abs((utc_now() - sent).total_seconds()) > 30:
        return "50102", None
    if (headers.get("x-simulated-trading") == "1") != account["demo"]:
        return "50101", None
    from deploy_tool.probes.okxaccount import sign

    if not hmac.compare_digest(headers.get("OK-ACCESS-SIGN", ""), sign(account["secret"], stamp, method, path, body)):
        return "50113", None
    if not behaviour.ip_whitelisted:
        return "50110", None
    if "read_only" not in account["config"]["perm"] and "read" not in account["config"]["perm"].split(","):
        return "50120", None
    return "0", account


OKX_MESSAGES = {"50101": "APIKey does not match current environment.", "50102": "Timestamp request expired.",
                "50103": "Request header OK-ACCESS-KEY cannot be empty.",
                "50104": "Request header OK-ACCESS-PASSPHRASE cannot be empty.", "50105": "Request header "
                "OK-ACCESS-PASSPHRASE incorrect.", "50110": "Your IP is not in linking trusted IP addresses.",
                "50111": "Invalid OK-ACCESS-KEY.", "50113": "Invalid Sign.",
                "50120": "API key doesn't have permission to access this."}


def maintenance_event(state: str, begin: dt.datetime, end: dt.datetime, title: str = "System upgrade",
                      service_type: str = "5") -> dict:
    """One /api/v5/system/status entry in OKX's shape."""
    return {
        "begin": str(int(begin.timestamp() * 1000)),
        "end": str(int(end.timestamp() * 1000)),
        "href": "",
        "preOpenBegin": "",
        "scheDesc": "",
        "serviceType": service_type,
        "state": state,
        "maintType": "1",
        "env": "1",
        "system": "unified",
        "title": title,
    }


class ExchangeStandIn(_LoopbackService):
    """OKX's two public endpoints on loopback."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.behaviour = ExchangeBehaviour()
        stand_in = self

        class Handler(_JsonHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                b = stand_in.behaviour
                if b.trickle:
                    self.trickle()
                    return
                if b.delay_ms:
                    time.sleep(b.delay_ms / 1000)
                parts = urlsplit(self.path)
                if b.garbage:
                    self.send_json(b.http_status, None, raw=b"<html>upstream error</html>")
                    return
                if parts.path in ("/api/v5/account/config", "/api/v5/account/balance"):
                    code, account = verify_signed(b, "GET", self.path, self.headers)
                    if account is None:
                        self.send_json(401, {"code": code, "msg": OKX_MESSAGES[code], "data": []})
                        return
                    section = "config" if parts.path.endswith("config") else "balance"
                    self.send_json(200, {"code": "0", "msg": "", "data": [account[section]]})
                    return
                if parts.path == "/api/v5/public/time":
                    ts = str(int(time.time() * 1000 + b.skew_ms))
                    body = {"code": b.code, "msg": b.msg, "data": [{"ts": ts}] if b.code == "0" else []}
                elif parts.path == "/api/v5/public/instruments":
                    inst = (parse_qs(parts.query).get("instId") or [""])[0]
                    found = b.instruments.get(inst)
                    body = {"code": "0" if found else "51001", "msg": "" if found else "Instrument ID does not exist",
                            "data": [found] if found else []}
                elif parts.path == "/api/v5/market/ticker":
                    inst = (parse_qs(parts.query).get("instId") or [""])[0]
                    last = b.last_prices.get(inst)
                    body = {"code": "0" if last else "51001", "msg": "" if last else "Instrument ID does not exist",
                            "data": [{"instType": "SPOT", "instId": inst, "last": str(last), "ts": str(int(time.time() * 1000))}]
                            if last else []}
                elif parts.path == "/api/v5/system/status":
                    wanted = parse_qs(parts.query).get("state")
                    events = [e for e in b.events if not wanted or e["state"] in wanted]
                    body = {"code": b.code, "msg": b.msg, "data": events if b.code == "0" else []}
                else:
                    self.send_json(404, {"code": "50000", "msg": "Not Found", "data": []})
                    return
                self.send_json(b.http_status, body)

        self._serve(host, port, Handler, "okx-stand-in")


# --- the admin API ----------------------------------------------------------------------------------


class AdminApi(_LoopbackService):
    """The admin HTTP API of CONTRACT section 5, as a trading system exposes it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, token: str | None = None,
                 prefix: str = "", mode: str = "paused") -> None:
        self.token = token
        # "ok", or a fault to rehearse: "error500", "hang", "garbage", "trickle", "echo_auth", "ack_no_change"
        self.fault = "ok"
        self.hang_s = 30.0
        self.on_get_mode: Any = None  # test seam: runs after a GET /mode is answered
        self.prefix = self.path_prefix = prefix.rstrip("/")
        self.mode = mode
        self.version = 1
        self.updated_at = iso_utc(utc_now())
        self.lock = threading.Lock()
        # The risk configuration GET /config serves; the allocation is also POST /allocation's.
        self.config: dict[str, Any] = dict(SANDBOX_RISK_CONFIG)
        api = self

        class Handler(_JsonHandler):
            def _route(self) -> str | None:
                path = urlsplit(self.path).path
                if api.prefix and not path.startswith(api.prefix + "/"):
                    return None
                return path[len(api.prefix):]

            def _authorized(self) -> bool:
                if not api.token:
                    return True
                if self.headers.get("Authorization", "") == f"Bearer {api.token}":
                    return True
                self.send_json(401, {"error": "missing or wrong bearer token"})
                return False

            def _faulty(self) -> bool:
                if api.fault == "error500":
                    self.send_json(500, {"error": "internal error"})
                elif api.fault == "hang":
                    time.sleep(api.hang_s)
                    self.close_connection = True
                elif api.fault == "garbage":
                    self.send_json(200, None, raw=b"<html>502 bad gateway</html>")
                elif api.fault == "trickle":
                    self.trickle()
                elif api.fault == "echo_auth":  # a careless server that repeats the request's headers
                    self.send_json(500, {"error": f"rejected: Authorization: {self.headers.get('Authorization')}"})
                else:
                    return False
                return True

            def do_GET(self) -> None:  # noqa: N802
                route = self._route()
                if not self._authorized() or self._faulty():
                    return
                with api.lock:
                    if route == "/health":
                        self.send_json(200, {"status": "ok", "mode": api.mode})
                    elif route == "/mode":
                        self.send_json(200, {"mode": api.mode, "updated_at": api.updated_at, "version": api.version})
                    elif route == "/config":
                        self.send_json(200, dict(api.config))
                    elif route == "/allocation":
                        self.send_json(200, {"allocation": api.config.get("allocation"), "updated_at": api.updated_at,
                                             "version": api.version})
                    else:
                        self.send_json(404, {"error": f"no such endpoint: GET {self.path}"})
                if route == "/mode" and api.on_get_mode is not None:
                    # Runs before this connection's next request is read: it lands between a read and a write.
                    hook, api.on_get_mode = api.on_get_mode, None
                    hook()

            def do_POST(self) -> None:  # noqa: N802
                route = self._route()
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if not self._authorized() or self._faulty():
                    return
                if route not in ("/mode", "/allocation"):
                    self.send_json(404, {"error": f"no such endpoint: POST {self.path}"})
                    return
                try:
                    body = json.loads(raw or b"null")
                except ValueError:
                    body = None
                if not isinstance(body, dict):
                    self.send_json(400, {"error": f"body must be a JSON object with a {route[1:]}"})
                    return
                status, answer = api.change(body) if route == "/mode" else api.allocate(body)
                self.send_json(status, answer)

        self._serve(host, port, Handler, "admin-api")

    def change(self, body: dict) -> tuple[int, dict]:
        """Apply a POST /mode body with compare-and-swap on expected_mode."""
        with self.lock:
            mode = body.get("mode")
            if mode not in MODES:
                return 400, {"error": f"unknown mode {mode!r}: one of {', '.join(MODES)}", "mode": self.mode}
            expected = body.get("expected_mode")
            if expected is not None and expected != self.mode:
                return 409, {"error": f"mode is {self.mode}, not {expected}", "mode": self.mode}
            previous = self.mode
            if self.fault == "ack_no_change":  # a broken system: says yes, changes nothing
                return 200, {"mode": mode, "previous_mode": previous, "updated_at": self.updated_at, "version": self.version}
            self.mode = mode
            self.version += 1
            self.updated_at = iso_utc(utc_now())
            return 200, {"mode": mode, "previous_mode": previous, "updated_at": self.updated_at, "version": self.version}

    @property
    def allocation(self) -> float | None:
        return self.config.get("allocation")

    def allocate(self, body: dict) -> tuple[int, dict]:
        """Apply a POST /allocation body with compare-and-swap on expected_allocation."""
        with self.lock:
            value, current = body.get("allocation"), self.config.get("allocation")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                return 400, {"error": f"allocation {value!r} is not a fraction in (0, 1]", "allocation": current}
            if "expected_allocation" in body and not _same(body["expected_allocation"], current):
                return 409, {"error": f"allocation is {current}, not {body['expected_allocation']}",
                             "allocation": current}
            self.config["allocation"] = float(value)
            self.version += 1
            self.updated_at = iso_utc(utc_now())
            return 200, {"allocation": float(value), "previous_allocation": current, "updated_at": self.updated_at,
                         "version": self.version}


def _same(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    return abs(float(a) - float(b)) < 1e-12


SANDBOX_API_KEY = "sandbox-api-key-0001"
SANDBOX_API_SECRET = "sandbox-api-secret-0001"
SANDBOX_API_PASSPHRASE = "sandbox-passphrase-0001"

SANDBOX_RISK_CONFIG = {"allocation": 0.005, "max_order_notional": 50, "single_trade_max_loss_pct": 0.01,
                       "daily_max_loss_pct": 0.02}



# --- the trades feed --------------------------------------------------------------------------------


class TradesFeed:
    """Writes a trade into SQLite every `interval` seconds, as a market-data recorder would."""

    def __init__(self, path: Path, interval: float = 0.2) -> None:
        self.path = Path(path)
        self.interval = interval
        self.stalled = threading.Event()
        self._stop = threading.Event()
        self._writing = threading.Lock()  # held by the feed's thread while it decides to write and writes
        conn = sqlite3.connect(self.path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS trades (id INTEGER PRIMARY KEY, inst_id TEXT NOT NULL, px REAL NOT NULL, "
            "sz REAL NOT NULL, side TEXT NOT NULL, ts INTEGER NOT NULL)"
        )
        conn.execute("CREATE INDEX IF NOT EXISTS trades_ts ON trades (ts)")
        conn.commit()
        conn.close()
        self.write_one()
        self._thread = threading.Thread(target=self._run, name="trades-feed", daemon=True)

    def write_one(self) -> None:
        conn = sqlite3.connect(self.path, timeout=5)
        try:
            conn.execute(
                "INSERT INTO trades (inst_id, px, sz, side, ts) VALUES (?, ?, ?, ?, ?)",
                ("BTC-USDT", round(60000 + random.uniform(-50, 50), 1), round(random.uniform(0.001, 0.05), 4),
                 random.choice(("buy", "sell")), int(time.time() * 1000)),
            )
            conn.commit()
        finally:
            conn.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._writing:
                if not self.stalled.is_set():
                    try:
                        self.write_one()
                    except sqlite3.Error:
                        pass  # a locked moment; the next tick writes

    def stall(self) -> None:
        """Stop writing trades; returns once a write already under way has landed, so that the newest
        trade in the table stays the newest from now on."""
        self.stalled.set()
        with self._writing:
            pass

    def resume(self) -> None:
        """Write trades again, from the next tick."""
        self.stalled.clear()

    def start(self) -> "TradesFeed":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


FAULTS = ("none", "failing-orders", "risk-burst", "stall-feed", "silence", "slippage", "losses")
SANDBOX_CAPITAL = 10000.0  # USDT: the capital of the simulated system, for --capital


class TradingSystemSim:
    """Writes what a live trading system writes: an audit JSONL per UTC day and a risk-events CSV.

    Every tick: an order intent and its result; every tenth intent a risk block. A fault makes it
    misbehave as a real system would: `failing-orders` (every result rejected), `risk-burst` (a burst of
    risk events, once), `stall-feed` (the trades feed stops), `silence` (the audit stops), `slippage`
    (fills 80 bps off), `losses` (each fill loses 0.5 % of capital); `none` recovers. Orders are sized by
    the admin API's allocation.
    """

    def __init__(self, audit_dir: Path, risk_csv: Path, feed: "TradesFeed | None", interval: float = 0.25,
                 fault_file: Path | None = None, allocation: Callable[[], float | None] = lambda: 0.005) -> None:
        self.allocation = lambda: allocation() or 0.005
        self.audit_dir = Path(audit_dir)
        self.risk_csv = Path(risk_csv)
        self.feed = feed
        self.interval = interval
        self.fault_file = fault_file
        self.fault = "none"
        self._fault_seen: float | None = None
        self._stop = threading.Event()
        self._n = 0
        self.audit_dir.mkdir(parents=True, exist_ok=True)
        if not self.risk_csv.exists():
            self.risk_csv.write_text("ts,kind,detail\n", encoding="utf-8")
        self._thread = threading.Thread(target=self._run, name="trading-system", daemon=True)

    def set_fault(self, fault: str) -> None:
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}: one of {', '.join(FAULTS)}")
        self.fault = fault
        if self.feed is not None:
            (self.feed.stall if fault == "stall-feed" else self.feed.resume)()
        if fault == "risk-burst":
            now = utc_now()
            with open(self.risk_csv, "a", encoding="utf-8") as fh:
                for i in range(10):
                    fh.write(f"{iso_utc(now)},drawdown_limit,burst {i}\n")
            for i in range(10):
                self._audit({"event": "risk_event", "kind": "drawdown_limit", "detail": f"burst {i}"})

    def _audit(self, record: dict) -> None:
        now = utc_now()
        line = json.dumps({"ts": iso_utc(now), **record}) + "\n"
        with open(self.audit_dir / f"audit-{now:%Y-%m-%d}.jsonl", "a", encoding="utf-8") as fh:
            fh.write(line)

    def tick(self) -> None:
        self._poll_fault_file()
        if self.fault == "silence":
            return
        self._n += 1
        order_id = f"sim-{self._n}"
        self._audit({"event": "order_intent", "order_id": order_id, "inst_id": "BTC-USDT", "side": "buy", "sz": "0.001"})
        if self._n % 10 == 0:
            self._audit({"event": "risk_block", "order_id": order_id, "rule": "max_notional"})
            return
        if self.fault == "failing-orders":
            self._audit({"event": "order_result", "order_id": order_id, "status": "rejected"})
            return
        # Sized by the allocation, filled with a little slippage (much more with `slippage`), and a small
        # realized PnL (a steady loss with `losses`).
        price = 97000.0 * (1 + random.uniform(-0.001, 0.001))
        notional = SANDBOX_CAPITAL * self.allocation() * 0.2
        slip_bps = 80.0 if self.fault == "slippage" else random.uniform(0.0, 3.0)
        pnl = -SANDBOX_CAPITAL * 0.005 if self.fault == "losses" else notional * random.uniform(-0.0005, 0.001)
        self._audit({"event": "order_result", "order_id": order_id, "status": "filled", "side": "buy",
                     "sz": f"{notional / price:.8f}", "price": round(price, 1),
                     "fill_price": round(price * (1 + slip_bps / 1e4), 2), "pnl": round(pnl, 4)})

    def _poll_fault_file(self) -> None:
        if self.fault_file is None:
            return
        try:
            mtime = self.fault_file.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime != self._fault_seen:
            self._fault_seen = mtime
            try:
                fault = json.loads(self.fault_file.read_text(encoding="utf-8")).get("fault", "none")
                self.set_fault(fault)
            except (ValueError, OSError, AttributeError):
                pass  # a half-written request; the next tick reads it again

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except OSError:
                pass

    HISTORY_TICKS = 4  # a second of trading at start: enough orders (--min-orders 3) for a first round to judge

    def start(self) -> "TradingSystemSim":
        for _ in range(self.HISTORY_TICKS):
            self.tick()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def request_fault(workdir: str | os.PathLike, fault: str) -> Path:
    """Tell a running sandbox (in another process) to misbehave: it polls this file every tick."""
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}: one of {', '.join(FAULTS)}")
    path = Path(workdir) / "misbehave.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"fault": fault, "at": iso_utc(utc_now())}), encoding="utf-8")
    fileops.replace(tmp, path)
    return path


def write_backtest_summary(path: Path, **overrides: Any) -> None:
    """A fresh summary that meets the default thresholds."""
    doc = {
        "strategy": "sandbox-momentum",
        "sharpe": 1.35,
        "winrate": 0.56,
        "max_drawdown": -0.031,
        "trades": 412,
        "generated_at": iso_utc(utc_now()),
        "params_hash": "sandbox",
    }
    doc.update(overrides)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


# --- all of it --------------------------------------------------------------------------------------


class Sandbox:
    """Everything a rehearsal needs, on loopback, under one working directory."""

    def __init__(self, workdir: str | os.PathLike, *, token: str | None = None, token_env: str = "EXEC_HTTP_ADMIN_TOKEN",
                 host: str = "127.0.0.1", okx_port: int = 0, admin_port: int = 0, mode: str = "paused",
                 feed_interval: float = 0.2) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.token_env = token_env
        self.exchange = ExchangeStandIn(host, okx_port)
        # A read-and-trade API key bound to loopback, as the runbook advises: the account checks pass with it.
        self.exchange.behaviour.accounts[SANDBOX_API_KEY] = sandbox_account(
            SANDBOX_API_KEY, SANDBOX_API_SECRET, SANDBOX_API_PASSPHRASE)
        self.admin = AdminApi(host, admin_port, token=token, mode=mode)
        self.control_file = self.workdir / "control" / "mode.json"
        self.database_path = self.workdir / "trades.db"
        self.backtest_summary = self.workdir / "backtest_summary.json"
        self.audit_dir = self.workdir / "audit"
        self.risk_events_csv = self.workdir / "risk_events.csv"
        self.evidence_dir = self.workdir / "evidence"
        self.source_dir = self.workdir / "src"
        # The sandbox's own signing key, pinned in its own trusted-keys file: a rehearsal signs and verifies
        # like production, with a key that opens nothing else.
        self.keys_dir = self.workdir / "keys"
        self.signing_key = self.keys_dir / "signing-key.pem"
        self.trusted_keys = self.keys_dir / "trusted-keys.pem"
        self.system: TradingSystemSim | None = None
        self._initial_mode = mode
        self._feed_interval = feed_interval
        self.feed: TradesFeed | None = None
        self._started = False

    @property
    def okx_url(self) -> str:
        return self.exchange.url

    @property
    def admin_url(self) -> str:
        return self.admin.url

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.database_path.resolve()}"

    def start(self) -> "Sandbox":
        write_backtest_summary(self.backtest_summary)
        if not self.signing_key.exists():
            from deploy_tool.attest import write_key_pair

            _, public, _ = write_key_pair(self.keys_dir)
            self.trusted_keys.write_bytes(public.read_bytes())
        # The simulated system's source, for the secrets check: its key comes from the environment.
        (self.source_dir / "strategies").mkdir(parents=True, exist_ok=True)
        (self.source_dir / "strategies" / "momentum.py").write_text(
            "import os\n\nAPI_KEY = os.environ['OKX_API_KEY']  # never hard-coded\n\n\n"
            "def signal(bar):\n    return bar.close > bar.open\n", encoding="utf-8")
        if not self.control_file.exists():
            write_control_atomic(str(self.control_file), {
                "mode": self._initial_mode, "updated_at": iso_utc(utc_now()), "actor": "sandbox",
                "reason": "sandbox start", "version": 1,
            })
        self.audit_dir.mkdir(parents=True, exist_ok=True)
        self.feed = TradesFeed(self.database_path, self._feed_interval).start()
        fault_file = self.workdir / "misbehave.json"
        if fault_file.exists():
            fault_file.unlink()  # a new sandbox starts healthy
        self.system = TradingSystemSim(self.audit_dir, self.risk_events_csv, self.feed,
                                       fault_file=fault_file, allocation=lambda: self.admin.allocation).start()
        self.exchange.start()
        self.admin.start()
        self._started = True
        return self

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        if self.system:
            self.system.stop()
        if self.feed:
            self.feed.stop()
        self.exchange.stop()
        self.admin.stop()

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def account_env(self) -> dict[str, str]:
        """The environment that hands the sandbox's API key to the account checks (never a real key)."""
        return {"OKX_API_KEY": SANDBOX_API_KEY, "OKX_API_SECRET": SANDBOX_API_SECRET,
                "OKX_API_PASSPHRASE": SANDBOX_API_PASSPHRASE}

    def preflight_args(self) -> list[str]:
        """The suite's options that point it at this sandbox."""
        return [
            "--okx-base-url", self.okx_url,
            "--database-url", self.database_url,
            "--backtest-summary", str(self.backtest_summary),
            "--http-admin-url", self.admin_url,
            "--admin-token-env", self.token_env,
            "--control-file", str(self.control_file),
            "--scan-path", str(self.source_dir),
            "--subject", str(self.source_dir),
            "--signing-key", str(self.signing_key),
            "--capital", f"{SANDBOX_CAPITAL:g}",
            "--evidence-dir", str(self.evidence_dir),  # its own: never the production data/evidence
        ]

    def gate_args(self) -> list[str]:
        """What `switch --to real`, `status` and `ramp` compare the evidence with: this sandbox's exchange and
        trades database, and its own pinned key (the evidence directory is the caller's: `evidence_dir`)."""
        return ["--okx-base-url", self.okx_url, "--database-url", self.database_url,
                "--trusted-keys", str(self.trusted_keys)]

    def observe_args(self) -> list[str]:
        """The observe options that point `watch` or `-m observe` at this sandbox's audit and risk events."""
        return ["--audit-dir", str(self.audit_dir), "--risk-events-csv", str(self.risk_events_csv),
                "--capital", f"{SANDBOX_CAPITAL:g}"]

    def watch_args(self) -> list[str]:
        """Everything `gradual-deploy watch` needs to watch this sandbox and pause it."""
        return [
            *self.observe_args(),
            "--okx-base-url", self.okx_url,
            "--database-url", self.database_url,
            "--http-admin-url", self.admin_url,
            "--admin-token-env", self.token_env,
            "--control-file", str(self.control_file),
            "--evidence-dir", str(self.evidence_dir),
            "--deploy-audit-dir", str(self.audit_dir),
        ]
