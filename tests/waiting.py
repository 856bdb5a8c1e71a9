"""Waiting in tests: on a condition, with a deadline, never for a fixed time."""

from __future__ import annotations

import subprocess
import time
from typing import Callable

import pytest


def wait_until(condition: Callable[[], object], what: str, timeout: float = 15.0, every: float = 0.01) -> None:
    """Poll `condition` until it holds; fail, saying `what` was awaited, after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:g} s for {what}", pytrace=False)
        time.sleep(every)


def holds_within(condition: Callable[[], object], timeout: float, every: float = 0.01) -> bool:
    """Whether `condition` comes true within `timeout` seconds (polled; a deadline, never a fixed wait)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(every)
    return True


def communicate_or_kill(proc: subprocess.Popen, timeout: float, what: str) -> tuple[str, str]:
    """The process's output once it has ended; if it has not within `timeout` seconds, kill it (a test
    never leaves a watch or a sandbox running) and fail, saying `what` was expected."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"{what} within {timeout:g} s; killed it. Output:\n{out}{err}", pytrace=False)
