"""Parsing of durations and timestamps as operators and trading systems write them."""

from __future__ import annotations

import datetime as dt
import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in `90s`, `30m`, `2h`, `7d` or plain seconds; ValueError with a hint otherwise."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError("a duration such as 90s, 30m, 2h, 7d or plain seconds")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of a duration, e.g. 7200 -> '2h'."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def format_left(seconds: float) -> str:
    """Time left, one way all the way down, whole seconds: '1h 59m 58s', '9m 58s', '58s', '10m 0s'."""
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def format_age(seconds: float) -> str:
    """A human age: '4.2 s', '12 min', '3.5 h'."""
    if abs(seconds) < 120:
        return f"{seconds:.1f} s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.0f} min"
    if abs(seconds) < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso_utc(moment: dt.datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z, as the evidence and control file write it."""
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


def epoch_to_datetime(value: float) -> dt.datetime:
    """An epoch number in s, ms, us or ns, told apart by magnitude, as an aware UTC datetime."""
    if not math.isfinite(value):
        raise ValueError(f"epoch value {value!r} is not a finite number")
    magnitude = abs(value)
    if magnitude < 1e11:  # seconds until the year 5138
        seconds = value
    elif magnitude < 1e14:
        seconds = value / 1e3
    elif magnitude < 1e17:
        seconds = value / 1e6
    else:
        seconds = value / 1e9
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def parse_timestamp(value: object) -> dt.datetime:
    """An aware UTC datetime from an ISO 8601 string, an epoch number (s/ms/us) or a datetime.

    A naive datetime or an ISO string without an offset is taken as UTC.
    """
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a timestamp")
    if isinstance(value, (int, float)):
        return epoch_to_datetime(float(value))
    if hasattr(value, "__float__") and not isinstance(value, str):  # Decimal from numeric columns
        return epoch_to_datetime(float(value))  # type: ignore[arg-type]
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            return epoch_to_datetime(float(text))
        try:
            parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"{value!r} is neither ISO 8601 nor an epoch number") from None
        return parsed.replace(tzinfo=dt.timezone.utc) if parsed.tzinfo is None else parsed
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    raise ValueError(f"{value!r} is not a timestamp")
