"""Exchange probes: OKX public time (health, latency, clock skew) and system status (maintenance).

Only the two public endpoints are used; no key is needed or sent.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from deploy_tool import ProbeError
from deploy_tool.redact import clip, mask_url, one_line
from deploy_tool.times import epoch_to_datetime, format_duration, iso_utc

TIME_PATH = "/api/v5/public/time"
STATUS_PATH = "/api/v5/system/status"
# (connect, whole call) seconds: a slow or trickling exchange must fail the check, not hang the gate.
DEFAULT_TIMEOUT = (3.05, 5.0)


@dataclass(frozen=True)
class TimeSample:
    """One timed call of the public time endpoint."""

    latency_ms: float
    http_status: int | None = None
    code: str | None = None
    skew_ms: float | None = None  # exchange ts minus local UTC at the midpoint of the call
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class TimeProbe:
    """The outcome of N calls of the public time endpoint."""

    url: str
    samples: tuple[TimeSample, ...]

    @property
    def good(self) -> list[TimeSample]:
        return [s for s in self.samples if s.ok]

    @property
    def failures(self) -> list[TimeSample]:
        return [s for s in self.samples if not s.ok]

    def no_good_call(self) -> str:
        """Why nothing could be timed: every call failed."""
        first = self.failures[0].error if self.failures else "no call made"
        return f"no successful call of {self.url} in {len(self.samples)} tries: {first}"

    def _latencies(self) -> list[float]:
        if not self.good:
            raise ProbeError(self.no_good_call())
        return sorted(s.latency_ms for s in self.good)

    @property
    def median_ms(self) -> float:
        import statistics

        return statistics.median(self._latencies())

    @property
    def p95_ms(self) -> float:
        values = self._latencies()
        return values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]

    @property
    def max_ms(self) -> float:
        return self._latencies()[-1]

    @property
    def skew_ms(self) -> float:
        """Median signed clock skew (exchange minus local) over the good calls."""
        import statistics

        self._latencies()
        return statistics.median(s.skew_ms for s in self.good if s.skew_ms is not None)


def probe_public_time(
    base_url: str, samples: int = 3, timeout: Any = DEFAULT_TIMEOUT, session: Any = None
) -> TimeProbe:
    """Call GET /api/v5/public/time `samples` times; time each call and compare the clocks."""
    from deploy_tool.probes.http import DeadlineSession, get_json

    url = base_url.rstrip("/") + TIME_PATH
    own_session = session is None
    session = session or DeadlineSession()
    results = []
    try:
        for _ in range(samples):
            wall_before = time.time()
            started = time.perf_counter()
            try:
                status, body = get_json(session, url, timeout)
            except ProbeError as exc:
                latency = (time.perf_counter() - started) * 1000
                results.append(TimeSample(latency_ms=latency, error=str(exc)))
                continue
            latency = (time.perf_counter() - started) * 1000
            midpoint_ms = wall_before * 1000 + latency / 2
            results.append(_time_sample(url, status, body, latency, midpoint_ms))
    finally:
        if own_session:
            session.close()
    return TimeProbe(url=mask_url(url) or url, samples=tuple(results))


def _time_sample(url: str, status: int, body: Any, latency: float, midpoint_ms: float) -> TimeSample:
    code = str(body.get("code")) if isinstance(body, dict) else None
    if status != 200:
        msg = one_line(clip(str(body.get("msg", "")), 200)) if isinstance(body, dict) else ""
        return TimeSample(latency, status, code, error=f"HTTP {status} (expected 200) {msg}".strip())
    if code != "0":
        msg = one_line(clip(str(body.get("msg", "")), 200)) if isinstance(body, dict) else ""
        return TimeSample(latency, status, code, error=f'code {code!r} (expected "0"): {msg}')
    try:
        exchange_ms = float(body["data"][0]["ts"])
    except (KeyError, IndexError, TypeError, ValueError):
        return TimeSample(latency, status, code, error="answer has no data[0].ts (not an OKX time answer)")
    return TimeSample(latency, status, code, skew_ms=exchange_ms - midpoint_ms)


@dataclass(frozen=True)
class MaintenanceEvent:
    """One entry of OKX's system status."""

    title: str
    state: str
    begin: dt.datetime | None
    end: dt.datetime | None
    service_type: str = ""
    href: str = ""

    def describe(self) -> str:
        begin = iso_utc(self.begin) if self.begin else "?"
        end = iso_utc(self.end) if self.end else "?"
        service = f", service type {self.service_type}" if self.service_type else ""
        return f"{self.state} '{self.title}' from {begin} to {end}{service}"


@dataclass(frozen=True)
class StatusProbe:
    """The exchange's maintenance calendar and which events block a go-live now."""

    url: str
    events: tuple[MaintenanceEvent, ...]
    blocking: tuple[MaintenanceEvent, ...] = field(default=())
    horizon_s: float = 0.0

    def summary(self) -> str:
        if self.blocking:
            return "; ".join(e.describe() for e in self.blocking)
        upcoming = [e for e in self.events if e.state in ("scheduled", "pre_open")]
        if upcoming:
            later = "; ".join(e.describe() for e in upcoming)
            return f"no maintenance within {format_duration(self.horizon_s)}; later: {later}"
        return f"no maintenance ongoing or scheduled within {format_duration(self.horizon_s)}"


def _ms_time(value: Any) -> dt.datetime | None:
    try:
        return epoch_to_datetime(float(value)) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def probe_system_status(
    base_url: str,
    horizon_s: float,
    now: dt.datetime | None = None,
    timeout: Any = DEFAULT_TIMEOUT,
    session: Any = None,
) -> StatusProbe:
    """GET /api/v5/system/status and find maintenance ongoing or beginning within the horizon."""
    from deploy_tool.probes.http import DeadlineSession, get_json

    url = base_url.rstrip("/") + STATUS_PATH
    own_session = session is None
    session = session or DeadlineSession()
    try:
        status, body = get_json(session, url, timeout)
    finally:
        if own_session:
            session.close()
    shown = mask_url(url) or url
    if status != 200:
        raise ProbeError(f"{shown} answered HTTP {status} (expected 200)")
    if not isinstance(body, dict) or str(body.get("code")) != "0" or not isinstance(body.get("data"), list):
        raise ProbeError(f"{shown} did not answer with OKX's shape code \"0\" and a data list: {one_line(clip(str(body), 120))}")
    now = now or dt.datetime.now(dt.timezone.utc)
    events = []
    for item in body["data"]:
        if not isinstance(item, dict):
            raise ProbeError(f"{shown}: data entry {item!r} is not an object")
        pre_open = _ms_time(item.get("preOpenBegin"))
        events.append(
            MaintenanceEvent(
                title=str(item.get("title", "")),
                state=str(item.get("state", "")),
                begin=(pre_open if item.get("state") == "pre_open" and pre_open else _ms_time(item.get("begin"))),
                end=_ms_time(item.get("end")),
                service_type=str(item.get("serviceType", "")),
                href=str(item.get("href", "")),
            )
        )
    limit = now + dt.timedelta(seconds=horizon_s)
    blocking = []
    for event in events:
        if event.state == "ongoing":
            blocking.append(event)
        elif event.state in ("scheduled", "pre_open"):
            starts_soon = event.begin is None or event.begin <= limit
            not_over = event.end is None or event.end > now
            if starts_soon and not_over:
                blocking.append(event)
    return StatusProbe(url=shown, events=tuple(events), blocking=tuple(blocking), horizon_s=horizon_s)


INSTRUMENTS_PATH = "/api/v5/public/instruments"
TICKER_PATH = "/api/v5/market/ticker"


@dataclass(frozen=True)
class MinOrder:
    """The smallest order the exchange accepts for one instrument, in the quote currency."""

    inst_id: str
    inst_type: str
    min_size: float
    contract_value: float | None
    last: float
    notional: float  # min_size (x contract value) x last price, in the quote currency

    def describe(self) -> str:
        size = f"{self.min_size:g} contracts x {self.contract_value:g}" if self.contract_value else f"{self.min_size:g}"
        return f"{self.inst_id}: minimum order {size} at last {self.last:g} = {self.notional:g}"


def inst_type_of(inst_id: str) -> str:
    """OKX's instrument type from the id's shape: BTC-USDT spot, BTC-USDT-SWAP, BTC-USDT-250328 futures."""
    parts = inst_id.upper().split("-")
    if len(parts) == 3 and parts[2] == "SWAP":
        return "SWAP"
    if len(parts) == 3 and parts[2].isdigit():
        return "FUTURES"
    return "SPOT"


def _first(session: Any, url: str, timeout: Any, what: str) -> dict:
    from deploy_tool.probes.http import get_json

    status, body = get_json(session, url, timeout)
    shown = mask_url(url) or url
    if status != 200 or not isinstance(body, dict) or str(body.get("code")) != "0":
        msg = one_line(clip(str(body.get("msg", "")), 200)) if isinstance(body, dict) else ""
        raise ProbeError(f"{shown} answered HTTP {status} code {body.get('code') if isinstance(body, dict) else None!r} "
                         f"{msg}".rstrip())
    data = body.get("data")
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise ProbeError(f"{shown}: no {what} in the answer (unknown instrument?)")
    return data[0]


def _positive(item: dict, key: str, shown: str) -> float:
    try:
        value = float(item[key])
    except (KeyError, TypeError, ValueError):
        raise ProbeError(f"{shown}: {key} {item.get(key)!r} is not a number") from None
    if not value > 0 or value != value:
        raise ProbeError(f"{shown}: {key} {item.get(key)!r} is not above 0")
    return value


def probe_min_order(base_url: str, inst_id: str, timeout: Any = DEFAULT_TIMEOUT, session: Any = None) -> MinOrder:
    """The exchange's minimum order for `inst_id` (instruments' minSz, ctVal) at the ticker's last price."""
    from deploy_tool.probes.http import DeadlineSession

    root = base_url.rstrip("/")
    inst_type = inst_type_of(inst_id)
    own_session = session is None
    session = session or DeadlineSession()
    try:
        url = f"{root}{INSTRUMENTS_PATH}?instType={inst_type}&instId={inst_id}"
        instrument = _first(session, url, timeout, "instrument")
        ticker_url = f"{root}{TICKER_PATH}?instId={inst_id}"
        ticker = _first(session, ticker_url, timeout, "ticker")
    finally:
        if own_session:
            session.close()
    shown = mask_url(url) or url
    min_size = _positive(instrument, "minSz", shown)
    last = _positive(ticker, "last", mask_url(ticker_url) or ticker_url)
    contract_value = None
    if inst_type != "SPOT":
        contract_value = _positive(instrument, "ctVal", shown)
        quote = inst_id.upper().split("-")[1]
        in_quote = str(instrument.get("ctValCcy", "")).upper() in (quote, "USD")  # inverse: ctVal is in USD
        notional = min_size * contract_value * (1 if in_quote else last)
    else:
        notional = min_size * last
    return MinOrder(inst_id, inst_type, min_size, contract_value, last, notional)
