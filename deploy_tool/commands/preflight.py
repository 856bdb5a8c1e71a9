"""Running the preflight suite from Python: `gradual-deploy preflight` and the demo use this.

The suite runs under its own configuration, whatever directory it runs in: in CI that directory is the
trading system's checkout, whose pytest.ini, conftest.py, `addopts` or installed pytest plugins would
otherwise decide which checks are collected (a `python_functions` line there once left four of them) and
which thresholds hold. So the run names its own ini (`preflight_tests/preflight.ini`) and rootdir, loads no
conftest, ignores PYTEST_ADDOPTS and PYTEST_PLUGINS, and loads only the plugins the suite needs. What the
operator puts on the command line (-m, -k, --skip-*, every suite option) still goes through; what would
replace that configuration or load code into the process (-c, -o, -p, --rootdir, ...) is refused.
"""

from __future__ import annotations

import importlib.util
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

# The plugins the suite needs, by module (their pytest11 entry points are not loaded: autoload is off), in an
# order that imports each before another imports it, so that pytest can rewrite its assertions: pytest-html
# needs pytest-metadata's hooks, and its plugin imports its fixtures module.
SUITE_PLUGINS = ("pytest_metadata.plugin", "pytest_html.fixtures", "pytest_html.plugin", "pytest_timeout",
                 "preflight_tests.plugin")
# Environment that would add options or plugins to the run behind the operator's back; removed for the run.
FOREIGN_ENV = ("PYTEST_ADDOPTS", "PYTEST_PLUGINS")


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


def suite_dir() -> Path:
    """The directory of the installed `preflight_tests` package, found without importing it (so that pytest
    can still rewrite the plugin's assertions when it loads it)."""
    spec = importlib.util.find_spec("preflight_tests")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the preflight_tests package is not installed: reinstall gradual-deploy")
    return Path(list(spec.submodule_search_locations)[0])


def own_configuration() -> list[str]:
    """pytest's arguments that make the run independent of the directory it starts in."""
    suite = suite_dir()
    plugins = [arg for name in SUITE_PLUGINS for arg in ("-p", name)]
    return ["-c", str(suite / "preflight.ini"), "--rootdir", str(suite.parent), "--noconftest", *plugins]


# Command-line flags that would replace the suite's own configuration; the tool's config is --config.
# -p: code loaded into the process that measures and signs could judge anything; the suite loads its own.
OVERRIDES = ("-c", "--config-file", "--rootdir", "-o", "--override-ini", "--confcutdir", "--noconftest", "-p")


def foreign_overrides(args: Sequence[str]) -> list[str]:
    """The arguments in `args` that would replace the suite's own configuration (ini, rootdir, conftest)."""
    found = []
    for arg in args:
        if arg == "--":
            break
        name = arg.split("=", 1)[0]
        if name in OVERRIDES or _cluster_names(arg):
            found.append(arg)
    return found


# pytest's short options that take a value: in a cluster (`-qp x`, `-rfE`) the rest of it is that value.
_TAKES_VALUE = set("kmrWcop")


def _cluster_names(arg: str) -> bool:
    """Does a cluster of short flags (`-qp evil`, `-qcmy.ini`, `-xo key=v`) hold -p, -c or -o?"""
    if not arg.startswith("-") or arg.startswith("--") or len(arg) < 2 or not arg[1].isalpha():
        return False
    for char in arg[1:]:
        if char in "pco":
            return True
        if char in _TAKES_VALUE or not char.isalpha():
            return False
    return False


@contextmanager
def own_environment() -> Iterator[None]:
    """For the duration of an in-process run: no PYTEST_ADDOPTS or PYTEST_PLUGINS, no plugin autoload; the
    environment as it was afterwards."""
    names = (*FOREIGN_ENV, "PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    saved = {name: os.environ.get(name) for name in names}
    try:
        for name in FOREIGN_ENV:
            os.environ.pop(name, None)
        os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_preflight(args: Sequence[str]) -> PreflightResult:
    """Run the suite in this process, under its own configuration, with the given pytest/suite options."""
    import pytest  # the suite's own engine; not loaded for the other commands

    collector = _Collector()
    with own_environment():
        code = pytest.main(
            [*own_configuration(), "--pyargs", "preflight_tests", "-p", "no:cacheprovider", "--strict-markers",
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


# --- `gradual-deploy preflight --help`: the tool's options first, by group ------------------------------------

# The suite's option groups, in the order a go-live reads them, with what each is about and its -m marker.
HELP_GROUPS = (
    ("okx", "the exchange: API health, latency, clock skew, maintenance (-m okx)"),
    ("db", "the trades feed's freshness, in PostgreSQL or SQLite (-m db; --skip-db-check skips it)"),
    ("backtest", "the backtest's go-live thresholds (-m backtest; --skip-backtest-check skips it)"),
    ("risk", "the trading system's risk configuration (-m risk; --skip-risk-check skips it)"),
    ("admin", "the trading system's admin API (-m admin; its checks skip without --http-admin-url)"),
    ("control", "the control file (-m control; skips without --control-file)"),
    ("account", "the exchange account, read-only with an API key (-m account; skips without a key)"),
    ("secrets", "hard-coded keys in the trading system's source (-m secrets; skips without --scan-path)"),
    ("observe", "the observation period's checks (only with -m observe or --observe)"),
    ("evidence", "the evidence: where it goes, signing, the config file"),
    ("notify", "notifications"),
)


def suite_help(prog: str = "gradual-deploy preflight") -> str:
    """The preflight's own options by group: each with its default, env vars and whether a pytest ini may set
    it; then where pytest's own options are. Built from the option table, like the options themselves."""
    import textwrap

    from deploy_tool.settings import SUITE_OPTIONS

    width = 100
    lines = [f"usage: {prog} [OPTIONS] [pytest options]", "",
             "Run the go-live checks (the preflight suite) and write the evidence: an HTML report, its JSON twin and,",
             "with a signing key, a signed envelope. Each option also comes from its environment variable, the",
             "gradual-deploy config (--config FILE) or, where marked [ini], the pytest ini; a flag wins.",
             "exit codes (pytest's): 0 every check that ran passed (the verdict line says whether the evidence "
             "opens real), 1 a check failed,",
             "  2 interrupted or an option that would replace the suite's configuration, 3 internal error, "
             "4 usage error (a malformed option), 5 no check selected",
             "example:",
             "  gradual-deploy preflight --database-url postgresql://user@db-host/trades --backtest-summary "
             "data/backtest_summary.json \\",
             "      --http-admin-url http://127.0.0.1:8001 --control-file data/control/mode.json "
             "--signing-key data/keys/signing-key.pem", ""]
    grouped: dict[str, list] = {}
    for option in SUITE_OPTIONS:
        grouped.setdefault(option.group, []).append(option)
    known = [name for name, _ in HELP_GROUPS]
    titles = dict(HELP_GROUPS) | {g: g for g in grouped if g not in known}
    for group in [*known, *sorted(g for g in grouped if g not in known)]:
        if group not in grouped:
            continue
        lines.append(f"{group}: {titles[group]}")
        for option in grouped[group]:
            head = f"  {option.flag}" + ("" if option.flag_only else " VALUE")
            facts = []
            if option.default not in (None, "false"):
                facts.append(f"default {option.default}")
            if option.env:
                facts.append(f"env {', '.join(option.env)}")
            elif option.name == "http_admin_url":  # the trading system's own variables (settings.admin_url_from_env)
                facts.append("env EXEC_HTTP_ADMIN_URL, or EXEC_HTTP_ADMIN_ENABLED=true with EXEC_HTTP_HOST and "
                             "EXEC_HTTP_PORT")
            if option.ini_key and not option.flag_only:
                facts.append("ini")
            text = option.help + (f" [{'; '.join(facts)}]" if facts else "")
            lines.append(head)
            lines.extend(textwrap.wrap(text, width, initial_indent=" " * 6, subsequent_indent=" " * 6))
        lines.append("")
    lines += ["pytest's own options (-m MARKEXPR, -k EXPR, -x, -v, --html, ...): "
              f"`{prog} --help-pytest` shows them all.",
              "Refused, because they would replace the suite's own configuration: " + ", ".join(OVERRIDES) + "."]
    return "\n".join(lines) + "\n"
