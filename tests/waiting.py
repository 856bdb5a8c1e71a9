"""Waiting in tests: on a condition, with a deadline, never for a fixed time."""

from __future__ import annotations

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
