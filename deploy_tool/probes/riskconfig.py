"""The trading system's risk configuration: its allocation and its loss and order limits.

Read from the admin API (`GET /config`) or from a file the system itself uses: JSON, YAML, or a
dotenv-style `KEY=VALUE` file such as its `.env`. Keys are matched without regard to case, so that
`SINGLE_TRADE_MAX_LOSS_PCT=0.01` in a `.env` and `"single_trade_max_loss_pct": 0.01` in JSON are the same
setting. Values are fractions and are never rescaled: a loss limit of 2 is rejected, not read as 2 %.

PyYAML and python-dotenv read the files (both well kept; dotenv's quoting, `export` prefixes and comments
are easy to get subtly wrong by hand).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

from deploy_tool import ProbeError

# setting -> the names a configuration may give it (lower case)
KEYS: dict[str, tuple[str, ...]] = {
    "allocation": ("allocation", "capital_allocation", "exec_allocation"),
    "max_order_notional": ("max_order_notional", "max_notional_per_order", "order_max_notional"),
    "single_trade_max_loss_pct": ("single_trade_max_loss_pct", "single_trade_max_loss"),
    "daily_max_loss_pct": ("daily_max_loss_pct", "daily_max_loss"),
}
FRACTIONS = ("allocation", "single_trade_max_loss_pct", "daily_max_loss_pct")


@dataclass(frozen=True)
class RiskConfig:
    """The risk settings found (None: absent), where they came from, and why any is unusable."""

    source: str
    values: dict[str, float | None]
    problems: dict[str, str] = field(default_factory=dict)
    sha256: str | None = None  # of the bytes read (a file) or of the canonical answer (GET /config)

    def key_hint(self, name: str) -> str:
        """How to set a missing value, in the source's own spelling."""
        if self.source.startswith("GET "):
            return f'"{name}" in the answer of {self.source}'
        if self.source.endswith((".env", ".txt")) or "env" in os.path.basename(self.source).lower():
            return f"{name.upper()}=... in {self.source}"
        return f"{name} in {self.source}"


def _number(name: str, raw: Any) -> float:
    if isinstance(raw, bool) or raw is None or (isinstance(raw, str) and not raw.strip()):
        raise ValueError(f"{name} is {raw!r}, not a number")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name} is {raw!r}, not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} is {raw!r}: expected a finite number >= 0")
    if name in FRACTIONS and value > 1:
        raise ValueError(f"{name} is {raw!r}: expected a fraction in [0, 1] (0.01 for 1 %), never rescaled")
    return value


def parse_config(doc: Any, source: str) -> RiskConfig:
    """The risk settings in a parsed document (a mapping of keys to values)."""
    if not isinstance(doc, dict):
        raise ProbeError(f"risk configuration {source} holds {type(doc).__name__}, expected keys and values")
    flat = {str(k).strip().lower(): v for k, v in _flatten(doc).items()}
    values: dict[str, float | None] = {}
    problems: dict[str, str] = {}
    for name, aliases in KEYS.items():
        key = next((a for a in aliases if a in flat), None)
        values[name] = None
        if key is None:
            continue
        try:
            values[name] = _number(key, flat[key])
        except ValueError as exc:
            problems[name] = str(exc)
    return RiskConfig(source, values, problems)


def served_config_digest(body: Any) -> str:
    """The digest that binds evidence to a risk configuration served by GET /config: every value but the
    allocation, which the ramp itself moves step by step (POST /allocation) under its own ceiling; any
    other change after the pass (a loss limit, the order cap) invalidates the evidence."""
    from deploy_tool.attest import config_digest

    allocation = set(KEYS["allocation"])
    if isinstance(body, dict):
        body = {k: v for k, v in body.items() if str(k).strip().lower() not in allocation}
    return config_digest(body)


def _flatten(doc: dict, prefix: str = "") -> dict[str, Any]:
    """Nested sections (`risk: {daily_max_loss_pct: ...}`) flattened; the innermost key wins."""
    found: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            found.update(_flatten(value, f"{prefix}{key}."))
        else:
            found.setdefault(str(key), value)
    return found


def read_file(path: str) -> RiskConfig:
    """The risk settings in a JSON, YAML or KEY=VALUE file."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ProbeError(f"risk configuration {path} does not exist: point --risk-config at the system's "
                         "configuration (JSON, YAML or .env)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProbeError(f"risk configuration {path} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    lower = path.lower()
    try:
        if lower.endswith(".json"):
            doc = json.loads(text)
        elif lower.endswith((".yaml", ".yml")):
            import yaml

            doc = yaml.safe_load(text)
        else:
            import io

            from dotenv import dotenv_values

            doc = dict(dotenv_values(stream=io.StringIO(text)))
    except Exception as exc:  # json, yaml and dotenv each raise their own
        raise ProbeError(f"risk configuration {path} cannot be parsed: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0][:160]}") from None
    import dataclasses
    import hashlib

    return dataclasses.replace(parse_config(doc or {}, path), sha256=hashlib.sha256(data).hexdigest())
