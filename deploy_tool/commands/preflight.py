"""Running the preflight suite from Python: `gradual-deploy preflight` and the demo use this."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence


@dataclass(frozen=True)
class PreflightResult:
    exit_code: int
    verdict: str | None
    html: Path | None
    json: Path | None


class _Collector:
    """Keeps the pytest config of the run so that its evidence paths can be read afterwards."""

    def __init__(self) -> None:
        self.config: Any = None

    def pytest_configure(self, config: Any) -> None:
        self.config = config


def run_preflight(args: Sequence[str]) -> PreflightResult:
    """Run the suite in this process with the given pytest/suite options."""
    import pytest  # the suite's own engine; not loaded for the other commands

    collector = _Collector()
    code = pytest.main(
        ["--pyargs", "preflight_tests", "-p", "preflight_tests.plugin", "-p", "no:cacheprovider",
         "--strict-markers",
         # Installed from a wheel, pytest marks every package of the distribution that registers the plugin
         # for assertion rewriting, deploy_tool included, which this command has already imported; nothing
         # in deploy_tool asserts for a check, so the warning is only noise in the operator's output.
         "-W", "ignore:Module already imported so cannot be rewritten; deploy_tool:pytest.PytestAssertRewriteWarning",
         *args],
        plugins=[collector],
    )
    # Imported after the run, so that pytest can rewrite the plugin's assertions when it loads it.
    from preflight_tests.plugin import STATE_KEY

    state = collector.config.stash.get(STATE_KEY, None) if collector.config is not None else None
    if state is None:
        return PreflightResult(int(code), None, None, None)
    json_path = state.stem.with_suffix(".json")
    verdict = None
    try:
        verdict = json.loads(json_path.read_text(encoding="utf-8")).get("verdict")
    except (OSError, ValueError):
        pass
    return PreflightResult(int(code), verdict, state.stem.with_suffix(".html"), json_path)
