"""Observation: what the trading system's audit JSONL and risk-events CSV say about the last window.

The runbook's watch periods (10-30 min in mock, 1-2 h in real) ask a person to stare at
`data/audit/*.jsonl` and `data/risk_events.csv`; these readers do it. They read each file backwards
from its end, block by block, until the window is covered, so their cost follows the window and not
the size of the file, and their memory stays flat. A last line still being written (no newline yet) is
left for the next round; CRLF and blank lines are fine; timestamps may be ISO 8601 or epoch s/ms.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterator

from deploy_tool import ProbeError, fileops
from deploy_tool.audit import is_own_file
from deploy_tool.fileops import iter_lines_backwards
from deploy_tool.times import format_duration, parse_timestamp

BLOCK = 64 * 1024
# Lines are appended in time order, give or take writer threads: keep reading this many lines past the
# first one older than the window before deciding the window is covered.
DISORDER_TOLERANCE = 50
FAILED_STATUSES = {"rejected", "failed", "error"}
# How far ahead of this host's clock a line may be dated: beyond it, the line is bad, not fresh.
FUTURE_TOLERANCE_S = 1.0
_OFFSET = re.compile(r"(?:[zZ]|[+-]\d\d:?\d\d)$")
_EPOCH = re.compile(r"-?\d+(\.\d+)?")


def checked_moment(value: object, now: dt.datetime, future_tolerance_s: float) -> dt.datetime:
    """The time a line is dated at; ValueError when it cannot be read or lies in the future (a time
    written without an offset is read as UTC, and says so when that puts it in the future)."""
    moment = parse_timestamp(value)
    ahead = (moment - now).total_seconds()
    if ahead > future_tolerance_s:
        text = str(value).strip()
        naive = isinstance(value, str) and not _EPOCH.fullmatch(text) and not _OFFSET.search(text)
        raise ValueError(f"{'no UTC offset; read as UTC it' if naive else 'it'} lies {ahead:.0f} s in the future, "
                         f"beyond the {future_tolerance_s:g} s allowance" + (": write UTC with an offset" if naive else ""))
    return moment


@dataclass
class AuditWindow:
    """Counts over the audit lines that fall in the window."""

    files: list[str] = field(default_factory=list)
    today_file: str | None = None
    newest: dt.datetime | None = None
    lines: int = 0
    scanned: int = 0  # lines read, in the window or not: the cost follows the window, not the file
    bad_lines: int = 0
    bad_examples: list[str] = field(default_factory=list)
    order_intents: int = 0
    order_results: int = 0
    order_failures: int = 0
    risk_blocks: int = 0
    risk_events: int = 0
    fills: int = 0  # order results with an intended and a fill price
    unpriced_results: int = 0  # successful order results without them
    slippage_bps_total: float = 0.0  # adverse slippage, summed over the fills
    pnl_lines: int = 0
    pnl_total: float = 0.0  # realized PnL in the quote currency
    # per-trade returns: the realized PnL of each order result over its notional (size x fill price), where
    # it carries all three; what the judge compares with the backtest's own trades
    trade_returns: list[float] = field(default_factory=list)
    unreturned: int = 0  # results with a PnL whose return cannot be told (no usable size or price)
    # The latest slice of the window (since the last round): counted apart, so that a total outage shows in
    # the first round that sees it, not once it outweighs the whole window's history.
    recent: AuditWindow | None = None
    recent_start: dt.datetime | None = None

    @property
    def mean_slippage_bps(self) -> float | None:
        return self.slippage_bps_total / self.fills if self.fills else None


@dataclass(frozen=True)
class FillFields:
    """The names of an order_result's intended price, fill price and realized PnL."""

    price: str = "price"
    fill_price: str = "fill_price"
    pnl: str = "pnl"
    size: str = "sz"


def audit_files_for(audit_dir: str, day: dt.date) -> list[str]:
    """The trading system's audit files of one UTC day: names containing YYYY-MM-DD, not our own."""
    stamp = day.isoformat()
    try:
        names = os.listdir(audit_dir)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ProbeError(f"cannot list the audit directory {audit_dir}: {exc.strerror}") from None
    return sorted(
        os.path.join(audit_dir, n) for n in names
        if stamp in n and n.endswith((".jsonl", ".json", ".log")) and not is_own_file(n)
    )


def read_audit_window(
    audit_dir: str,
    start: dt.datetime,
    now: dt.datetime,
    ts_field: str = "ts",
    event_field: str = "event",
    status_field: str = "status",
    future_tolerance_s: float = FUTURE_TOLERANCE_S,
    fields: FillFields = FillFields(),
    recent_start: dt.datetime | None = None,
) -> AuditWindow:
    """Count the audit events in [start, now], reading today's file (and the days back to `start`); those in
    [recent_start, now] also apart, in `.recent`."""
    result = AuditWindow()
    if recent_start is not None:
        result.recent, result.recent_start = AuditWindow(), max(recent_start, start)
    day = now.date()
    first = True
    while day >= start.date():
        paths = audit_files_for(audit_dir, day)
        if first:
            result.today_file = paths[-1] if paths else None
            first = False
        covered = False
        for path in paths:
            result.files.append(path)
            covered = _scan_audit(path, start, now, ts_field, event_field, status_field, result,
                                  future_tolerance_s, fields) or covered
        if covered:
            break
        day -= dt.timedelta(days=1)
    return result


def _price(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _size(value: object) -> float | None:
    """A filled size, its sign dropped (a sell may be written negative); None when it is no usable number."""
    try:
        number = abs(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _fill(obj: dict, fields: FillFields, out: AuditWindow) -> None:
    """Slippage and realized PnL of one successful order result, where it carries them."""
    intended, filled = _price(obj.get(fields.price)), _price(obj.get(fields.fill_price))
    if intended is None or filled is None:
        out.unpriced_results += 1
    else:
        move = (filled - intended) / intended * 1e4
        side = str(obj.get("side", "")).lower()
        out.slippage_bps_total += -move if side == "sell" else (move if side == "buy" else abs(move))
        out.fills += 1
    if fields.pnl in obj:
        try:
            pnl = float(obj[fields.pnl])
        except (TypeError, ValueError):
            return
        if math.isfinite(pnl):
            out.pnl_lines += 1
            out.pnl_total += pnl
            size, price = _size(obj.get(fields.size)), filled if filled is not None else intended
            notional = size * price if size is not None and price is not None else 0.0
            if notional > 0 and math.isfinite(pnl / notional):  # a sell's size may be written negative
                out.trade_returns.append(pnl / notional)
            else:
                out.unreturned += 1


def _count(obj: dict, event: Any, status_field: str, fields: FillFields, out: AuditWindow) -> None:
    if event == "order_intent":
        out.order_intents += 1
    elif event == "order_result":
        out.order_results += 1
        if str(obj.get(status_field, "")).lower() in FAILED_STATUSES:
            out.order_failures += 1
        else:
            _fill(obj, fields, out)
    elif event == "risk_block":
        out.risk_blocks += 1
    elif event == "risk_event":
        out.risk_events += 1


def _scan_audit(path: str, start: dt.datetime, now: dt.datetime, ts_field: str, event_field: str,
                status_field: str, out: AuditWindow, future_tolerance_s: float,
                fields: FillFields = FillFields()) -> bool:
    """Add one file's window to `out`; True when the file reached back past the window's start."""
    older_seen = 0
    try:
        for raw in iter_lines_backwards(path):
            text = raw.rstrip(b"\r").strip()
            if not text:
                continue
            out.scanned += 1
            try:
                obj = json.loads(text)
                if not isinstance(obj, dict):
                    raise ValueError("not an object")
                if ts_field not in obj:
                    raise ValueError(f"no {ts_field!r} field")
                moment = checked_moment(obj[ts_field], now, future_tolerance_s)
            except (ValueError, TypeError, OverflowError, OSError, UnicodeDecodeError, RecursionError) as exc:
                out.bad_lines += 1  # a future-dated line is bad too: it must not pass for a fresh one
                if len(out.bad_examples) < 3:
                    out.bad_examples.append(f"{text[:80].decode('utf-8', 'replace')} ({exc})")
                continue
            if out.newest is None or moment > out.newest:
                out.newest = moment
            if moment < start:
                older_seen += 1
                if older_seen > DISORDER_TOLERANCE:
                    return True
                continue
            out.lines += 1
            event = obj.get(event_field, obj.get("type"))
            try:
                _count(obj, event, status_field, fields, out)
                if out.recent is not None and out.recent_start is not None and moment >= out.recent_start:
                    _count(obj, event, status_field, fields, out.recent)
            except (ArithmeticError, TypeError, ValueError):  # one odd line is a bad line, not a blind round
                out.bad_lines += 1
    except OSError as exc:
        raise ProbeError(f"cannot read the audit file {path}: {exc.strerror}") from None
    return older_seen > 0


@dataclass
class RiskWindow:
    """Counts over the risk-events CSV rows that fall in the window."""

    path: str
    exists: bool = False
    events: int = 0
    bad_rows: int = 0
    bad_example: str | None = None


def read_risk_events(path: str, start: dt.datetime, now: dt.datetime, ts_column: str = "ts",
                     future_tolerance_s: float = FUTURE_TOLERANCE_S) -> RiskWindow:
    """Count the risk-events CSV rows whose ts falls in [start, now], reading from the end."""
    result = RiskWindow(path)
    try:
        with fileops.open_regular(path, "rb") as fh:
            header_line = fh.readline().decode("utf-8", "replace").rstrip("\r\n")
    except FileNotFoundError:
        return result
    except OSError as exc:
        raise ProbeError(f"cannot read the risk-events file {path}: {exc.strerror}") from None
    result.exists = True
    header = next(csv.reader([header_line]), [])
    if ts_column not in header:
        raise ProbeError(f"risk-events file {path} has no {ts_column!r} column (header: {header_line[:120]!r}): "
                         "set --risk-events-ts-column")
    index = header.index(ts_column)
    older_seen = 0
    for raw in list_header_excluded(path):
        text = raw.rstrip(b"\r").decode("utf-8", "replace")
        if not text.strip():
            continue
        try:
            row = next(csv.reader(io.StringIO(text)))
            moment = checked_moment(row[index], now, future_tolerance_s)
        except (ValueError, IndexError, StopIteration, OverflowError, OSError) as exc:
            result.bad_rows += 1  # a row that cannot be dated may be the risk event that matters
            if result.bad_example is None:
                result.bad_example = f"{text[:80]} ({exc or 'no ' + repr(ts_column) + ' value'})"
            continue
        if moment < start:
            older_seen += 1
            if older_seen > DISORDER_TOLERANCE:
                break
            continue
        result.events += 1
    return result


def list_header_excluded(path: str) -> Iterator[bytes]:
    """Lines of the CSV from the end, without its header line."""
    lines = iter_lines_backwards(path)
    previous = None
    for line in lines:
        if previous is not None:
            yield previous
        previous = line
    # `previous` is now the file's first line: the header


@dataclass
class Observation:
    """The last window, as the observe checks and `watch` judge it."""

    window_s: float
    now: dt.datetime
    audit_dir: str
    audit: AuditWindow
    risk: RiskWindow
    recent_s: float | None = None  # the latest slice the rates are judged on too (`audit.recent`)

    @property
    def window(self) -> str:
        return f"in the last {format_duration(self.window_s)}"


def observe(audit_dir: str, risk_events_csv: str, window_s: float, now: dt.datetime | None = None,
            ts_field: str = "ts", event_field: str = "event", status_field: str = "status",
            risk_ts_column: str = "ts", future_tolerance_s: float = FUTURE_TOLERANCE_S,
            fields: FillFields = FillFields(), recent_s: float | None = None) -> Observation:
    """Read the last `window_s` seconds of the audit and the risk events; the last `recent_s` of the audit
    apart as well."""
    now = now or dt.datetime.now(dt.timezone.utc)
    start = now - dt.timedelta(seconds=window_s)
    recent_start = now - dt.timedelta(seconds=recent_s) if recent_s else None
    audit = read_audit_window(audit_dir, start, now, ts_field, event_field, status_field, future_tolerance_s, fields,
                              recent_start)
    risk = read_risk_events(risk_events_csv, start, now, risk_ts_column, future_tolerance_s)
    return Observation(window_s, now, audit_dir, audit, risk, recent_s if recent_s else None)
