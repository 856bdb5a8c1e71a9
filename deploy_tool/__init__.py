"""gradual-deploy: the go-live gate and mode control for a small-capital live deployment."""

from __future__ import annotations

__version__ = "0.1.0"

MODES = ("mock", "real", "paused")


class DeployError(Exception):
    """Base of every error the library reports to a person."""


class ProbeError(DeployError):
    """A probe could not measure what it was asked to measure."""
