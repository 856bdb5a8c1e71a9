"""The mode state machine (CONTRACT section 4): which transitions are allowed, forced or no-ops.

Pure decisions, no I/O: the gate in front of `real` is `gate.py`, the channels that carry a change
`channels.py`, the orchestration `change.py`.
"""

from __future__ import annotations

from typing import NamedTuple

from deploy_tool import MODES

ALLOWED = {("paused", "mock"), ("mock", "real"), ("real", "mock")}


class Decision(NamedTuple):
    """May a channel make this transition, and how. (A NamedTuple: `dataclasses` costs a pause 20 ms of
    imports.)"""

    allowed: bool
    reason: str = ""  # why not: what was found, then the fix; never --force (the caller says it, last)
    forced: bool = False
    noop: bool = False
    forceable: bool = False  # refused, but --force would allow it


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
            return Decision(False, "no mode yet: rehearse in mock first: `gradual-deploy switch --to mock`, then "
                                   "`--to real`", forceable=True)
        return Decision(True)
    if (current, target) in ALLOWED:
        return Decision(True)
    if force:
        return Decision(True, f"{current} -> {target} forced", forced=True)
    return Decision(False, f"{current} -> {target} is not allowed: rehearse in mock first (paused -> mock -> real): "
                           f"`gradual-deploy switch --to mock`, then `--to {target}`", forceable=True)
