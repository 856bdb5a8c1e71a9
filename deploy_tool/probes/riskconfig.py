"""The trading system's risk configuration: its allocation and its loss and order limits.

Read from the admin API (`GET /config`) or from a file the system itself uses: JSON, YAML, or a
dotenv-style `KEY=VALUE` file such as its `.env`. Keys are read only where the system reads them: at the top
level and in a `risk` section, or only in the section `--risk-config-section` names (`live.risk`). A copy
elsewhere (a `backtest:` or `paper:` section) is not the value the system uses and is not read. Keys are
matched without regard to case, so that `SINGLE_TRADE_MAX_LOSS_PCT=0.01` in a `.env` and
`"single_trade_max_loss_pct": 0.01` in JSON are the same setting; a setting found twice where it is read
(`ALLOCATION` and `allocation`, or the top level and `risk`) is ambiguous and fails, naming both places.
Values are fractions and are never rescaled: a loss limit of 2 is rejected, not read as 2 %.

PyYAML and python-dotenv read the files (both well kept; dotenv's quoting, `export` prefixes and comments
are easy to get subtly wrong by hand). The input is bounded: a file above 1 MB, a YAML document with more
than a few anchors' worth of aliases or nested too deep is refused before anything walks it.
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
    # optional: the most the system itself lets the allocation be; a ramp never goes above it
    "max_allocation": ("max_allocation", "allocation_limit", "max_capital_allocation", "exec_max_allocation",
                       "maxallocation", "max-allocation"),
}
FRACTIONS = ("allocation", "single_trade_max_loss_pct", "daily_max_loss_pct", "max_allocation")


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


def _number(name: str, raw: Any, setting: str | None = None) -> float:
    """The value of `name` (as spelled where it was found) for `setting` (default: the same)."""
    if isinstance(raw, (dict, list, tuple)):
        raise ValueError(f"{name} is {_shown(raw)}, not a number")
    if isinstance(raw, bool) or raw is None or (isinstance(raw, str) and not raw.strip()):
        raise ValueError(f"{name} is {_shown(raw)}, not a number")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name} is {_shown(raw)}, not a number") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} is {_shown(raw)}: expected a finite number >= 0")
    if (setting or name) in FRACTIONS and value > 1:
        raise ValueError(f"{name} is {_shown(raw)}: expected a fraction in [0, 1] (0.01 for 1 %), never rescaled")
    return value


DEFAULT_SECTIONS = ("", "risk")  # where a system reads its risk settings: the top level, a `risk` section


def _shown(value: Any) -> str:
    """A value for a message, never walked whole: a YAML alias bomb's repr would be billions of items."""
    if isinstance(value, dict):
        return f"an object of {len(value)} key(s)"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item(s)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _section(doc: dict, path: str, source: str) -> dict | None:
    """The mapping at the dotted `path` ("" is the document), None when absent. Two keys that both could be
    the section (`risk` and `RISK`, `risk ` with a space) are ambiguous: which one the system reads is not
    for the gate to guess."""
    node: Any = doc
    for part in [p for p in path.split(".") if p]:
        if not isinstance(node, dict):
            return None
        keys = [k for k in node if str(k).strip().lower() == part.lower()]
        if len(keys) > 1:
            raise ProbeError(f"risk configuration {source}: the section {part!r} is there {len(keys)} times "
                             f"({', '.join(repr(str(k)) for k in keys)}): ambiguous; keep the one the system reads")
        if not keys:
            return None
        node = node[keys[0]]
    if node is not None and not isinstance(node, dict):
        raise ProbeError(f"risk configuration {source}: {path or 'the document'} is {type(node).__name__}, expected "
                         "keys and values")
    return node


def parse_config(doc: Any, source: str, section: str | None = None) -> RiskConfig:
    """The risk settings in a parsed document, read where the system reads them: the `section` given
    (dotted), else the top level and a `risk` section. A setting found in two places there is ambiguous."""
    if not isinstance(doc, dict):
        raise ProbeError(f"risk configuration {source} holds {type(doc).__name__}, expected keys and values")
    places = (section,) if section else DEFAULT_SECTIONS
    found: dict[str, list[tuple[str, Any]]] = {name: [] for name in KEYS}
    for place in places:
        mapping = _section(doc, place, source)
        if mapping is None:
            if section:
                raise ProbeError(f"risk configuration {source} has no section {section!r} (--risk-config-section)")
            continue
        for key, value in mapping.items():
            spelled = str(key).strip().lower()
            for name, aliases in KEYS.items():
                if spelled in aliases:
                    found[name].append((f"{place}.{key}" if place else str(key), value))
    values: dict[str, float | None] = {}
    problems: dict[str, str] = {}
    for name, hits in found.items():
        values[name] = None
        if len(hits) > 1:
            shown = ", ".join(f"{where} = {_shown(value)}" for where, value in hits)
            problems[name] = (f"{name} is set {len(hits)} times where the system reads it ({shown}): ambiguous; "
                              "keep the one the system uses, or name its section with --risk-config-section")
            continue
        if hits:
            where, value = hits[0]
            if where.split(".")[-1] != where.split(".")[-1].strip():
                problems[name] = (f"the key {where!r} has spaces around it: a system reading {name!r} does not see "
                                  "it; write the key as the system reads it")
                continue
            try:
                values[name] = _number(where, value, name)
            except ValueError as exc:
                problems[name] = str(exc)
    return RiskConfig(source, values, problems)


def served_config_digest(body: Any, section: str | None = None) -> str:
    """The digest that binds evidence to a risk configuration served by GET /config: every value but the
    allocation, wherever the system reads it (the top level and `risk`, or `section`), which the ramp itself
    moves step by step (POST /allocation) under its own ceiling; any other change after the pass (a loss
    limit, the order cap) invalidates the evidence."""
    from deploy_tool.attest import config_digest

    allocation = set(KEYS["allocation"])

    def without(node: Any, path: list[str]) -> Any:
        if not isinstance(node, dict):
            return node
        if not path:
            return {k: v for k, v in node.items() if str(k).strip().lower() not in allocation}
        return {k: without(v, path[1:]) if str(k).strip().lower() == path[0].lower() else v for k, v in node.items()}

    for place in ((section,) if section else DEFAULT_SECTIONS):
        body = without(body, [p for p in place.split(".") if p])
    return config_digest(body)


MAX_BYTES = 1_000_000
MAX_ALIASES = 100
MAX_DEPTH = 64


def _load_yaml(text: str) -> Any:
    """safe_load with bounds: a document whose aliases or nesting could make walking it explode (an alias
    bomb) is refused while it is read, before anything walks it."""
    import yaml

    class Bounded(yaml.SafeLoader):
        aliases = 0
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                Bounded.aliases += 1
                if Bounded.aliases > MAX_ALIASES:
                    raise ValueError(f"more than {MAX_ALIASES} YAML aliases: refused (an alias bomb?)")
            Bounded.depth += 1
            try:
                if Bounded.depth > MAX_DEPTH:
                    raise ValueError(f"nested deeper than {MAX_DEPTH} levels: refused")
                return super().compose_node(parent, index)
            finally:
                Bounded.depth -= 1

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            _no_duplicates([self.construct_object(k, deep=True) for k, _ in node.value
                            if not (isinstance(k, yaml.ScalarNode) and k.tag == "tag:yaml.org,2002:merge")])
            return super().construct_mapping(node, deep=deep)

    return yaml.load(text, Loader=Bounded)  # noqa: S506 - a SafeLoader subclass


def _no_duplicates(keys: list) -> None:
    """A key written twice in one mapping: YAML and JSON readers keep the last silently; the system might
    read the first. Ambiguous, so refused."""
    seen = set()
    for key in keys:
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise ValueError(f"the key {key!r} is written twice in one mapping: ambiguous, keep one")
        if isinstance(key, (str, int, float, bool)):
            seen.add(key)


def _json_object(pairs: list) -> dict:
    _no_duplicates([k for k, _ in pairs])
    return dict(pairs)


def read_file(path: str, section: str | None = None) -> RiskConfig:
    """The risk settings in a JSON, YAML or KEY=VALUE file."""
    try:
        from deploy_tool import fileops

        data = fileops.read_bytes(path, limit=MAX_BYTES)  # a FIFO or device refused, more than 1 MB too
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ProbeError(f"risk configuration {path} does not exist: point --risk-config at the system's "
                         "configuration (JSON, YAML or .env)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProbeError(f"risk configuration {path} cannot be read: {getattr(exc, 'strerror', None) or exc}") from None
    lower = path.lower()
    try:
        if lower.endswith(".json"):
            doc = json.loads(text, object_pairs_hook=_json_object)
        elif lower.endswith((".yaml", ".yml")):
            doc = _load_yaml(text)
        else:
            import io

            from dotenv import dotenv_values
            from dotenv.parser import parse_stream

            names = [b.key for b in parse_stream(io.StringIO(text)) if b.key is not None]
            _no_duplicates(names)  # dotenv keeps the last of two ALLOCATION= lines; the system might not
            # ${VAR} is not expanded: the gate's own environment is not the trading system's
            doc = dict(dotenv_values(stream=io.StringIO(text), interpolate=False))
    except Exception as exc:  # json, yaml and dotenv each raise their own
        raise ProbeError(f"risk configuration {path} cannot be parsed: {type(exc).__name__}: "
                         f"{(str(exc).splitlines() or [''])[0]}") from None  # masked whole by the Attempt, never cut first
    import dataclasses
    import hashlib

    return dataclasses.replace(parse_config(doc or {}, path, section), sha256=hashlib.sha256(data).hexdigest())
