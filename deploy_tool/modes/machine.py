"""The mode state machine (CONTRACT section 4): which transitions are allowed, forced or no-ops.

Pure decisions, no I/O: the gate in front of `real` is `gate.py`, the channels that carry a change
`channels.py`, the orchestration `change.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from deploy_tool import MODES

ALLOWED = {("paused", "mock"), ("mock", "real"), ("real", "mock")}


@dataclass(frozen=True)
class Decision:
    """May a channel make this transition, and how."""

    allowed: bool
    reason: str = ""
    forced: bool = False
    noop: bool = False


def decide(current: str | None, target: str, force: bool = False) -> Decision:
    """May a channel in `current` (None: no mode yet) go to `target`?"""
    if target not in MODES:
        return Decision(False, f"unknown mode {target!r}: one of {', '.join(MODES)}")
    if target == "paused":
        return Decision(True, noop=current == "paused")
    if current == target:
        return Decision(True, "already in this mode", noop=True)
    if current is None:
        if target == "real":
            if force:
                return Decision(True, "no mode yet -> real forced", forced=True)
            return Decision(False, "no mode yet: go to mock first to rehearse, or --force")
        return Decision(True)
    if (current, target) in ALLOWED:
        return Decision(True)
    if force:
        return Decision(True, f"{current} -> {target} forced", forced=True)
    return Decision(False, f"{current} -> {target} is not allowed: rehearse in mock first (paused -> mock -> real), or --force")
