"""The pytest plugin of the preflight suite: options, fixtures over the probes, and the evidence.

It is loaded in every pytest run of an environment where gradual-deploy is installed (entry point
`pytest11`), but stays inert unless the run targets the `preflight_tests` package: only then does it
resolve settings, write evidence and mask secrets. The measuring code lives in `deploy_tool`; this
module wires it to pytest.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

import deploy_tool
from deploy_tool import ProbeError
from deploy_tool import evidence as ev
from deploy_tool.redact import Redactor, mask_url
from deploy_tool.units import format_duration, iso_utc, utc_now
from preflight_tests import settings as settings_mod
from preflight_tests.settings import Settings

PACKAGE_DIR = Path(__file__).resolve().parent
MARKERS = {
    "okx": "needs the exchange REST API (health, latency, clock skew, maintenance)",
    "db": "needs the trades database (feed freshness)",
    "backtest": "needs the backtest summary (go-live thresholds)",
    "admin": "needs the trading system's admin HTTP API (skips when unconfigured)",
    "control": "needs the control file (skips when unconfigured)",
    "observe": "the watch period: reads the trading system's audit and risk events (only with -m observe or --observe)",
}
SKIP_FLAGS = {"db": "--skip-db-check", "backtest": "--skip-backtest-check"}
# Backstop for a probe that hangs despite its own timeouts; "signal" fails the test and keeps the
# session alive, so the evidence is still written ("thread" would kill the process).
BACKSTOP_TIMEOUT_S = 60.0


@dataclass
class RunState:
    """Everything the plugin keeps for one preflight run."""

    settings: Settings
    redactor: Redactor
    stem: Path
    started_at: dt.datetime
    checks: dict[str, dict] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    deselected: list[dict] = field(default_factory=list)
    summary_attempt: "Attempt | None" = None
    finished_at: dt.datetime | None = None
    written: bool = False

    def ordered_checks(self) -> list[dict]:
        return [self.checks[n] for n in self.order] + self.deselected

    def verdict(self) -> str:
        return ev.verdict(self.ordered_checks())


STATE_KEY = pytest.StashKey[RunState]()
CHECK_KEY = pytest.StashKey["CheckRecord"]()


class Attempt:
    """A probe run once; its value, or the reason it could not measure (which fails each check)."""

    def __init__(self, measure: Callable[[], Any], redactor: Redactor) -> None:
        self._value: Any = None
        self._error: str | None = None
        try:
            self._value = measure()
        except ProbeError as exc:
            self._error = redactor.scrub(str(exc))
        except Exception as exc:  # a probe bug must fail the check, never pass or skip it
            self._error = redactor.scrub(f"probe crashed: {type(exc).__name__}: {exc}")

    @property
    def error(self) -> str | None:
        return self._error

    def result(self) -> Any:
        if self._error is not None:
            pytest.fail(self._error, pytrace=False)
        return self._value


class CheckRecord:
    """What a check measured, against which threshold, for the evidence."""

    def __init__(self) -> None:
        self.measured: Any = None
        self.threshold: Any = None
        self.unit: str | None = None
        self.message: str | None = None

    def record(self, measured: Any, threshold: Any, unit: str | None, message: str) -> str:
        self.measured = _json_number(measured)
        self.threshold = _json_number(threshold)
        self.unit = unit
        self.message = message
        return message


def _json_number(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3) if math.isfinite(value) else None
    return value


# --- activation ---------------------------------------------------------------------------------


def targets_suite(config: pytest.Config) -> bool:
    """Does this run collect the preflight suite (by path or with --pyargs)?"""
    invocation = Path(config.invocation_params.dir)
    for arg in config.args:
        base = str(arg).split("::")[0]
        if config.option.pyargs and (base == "preflight_tests" or base.startswith("preflight_tests.")):
            return True
        path = (invocation / base).resolve()
        for candidate in (path, *path.parents):
            if candidate == PACKAGE_DIR or (candidate.name == "preflight_tests" and (candidate / "plugin.py").exists()):
                return True
    return False


def _state(config: pytest.Config) -> RunState | None:
    return config.stash.get(STATE_KEY, None)


def _ours(item: pytest.Item) -> bool:
    try:
        path = Path(str(item.path)).resolve()
    except OSError:
        return False
    return path.parent.name == "preflight_tests" and path.name.startswith("test_")


def _marker_of(item: pytest.Item) -> str | None:
    for name in MARKERS:
        if item.get_closest_marker(name):
            return name
    return None


def _check_id(item: pytest.Item) -> str:
    name = item.name
    return name[5:] if name.startswith("test_") else name


# --- hooks ----------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    settings_mod.add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Register the markers; when the suite runs, resolve settings and point pytest-html at the evidence."""
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    if not targets_suite(config) or hasattr(config, "workerinput"):
        return
    settings = settings_mod.resolve(config)
    redactor = Redactor.from_environ()
    redactor.add_url(settings.database_url)
    redactor.add_url(settings.http_admin_url)
    redactor.add(settings.admin_token())
    started = utc_now()
    try:
        stem = ev.reserve_stem(settings.evidence_dir, started)
    except ev.EvidenceError as exc:
        raise pytest.UsageError(f"{exc}: set --evidence-dir to a writable directory") from None
    config.stash[STATE_KEY] = RunState(settings=settings, redactor=redactor, stem=stem, started_at=started)
    config.option.htmlpath = str(stem.with_suffix(".html"))
    config.option.self_contained_html = True
    css = getattr(config.option, "css", None)
    if isinstance(css, list):
        css.append(str(PACKAGE_DIR / "report.css"))


@pytest.hookimpl(optionalhook=True)
def pytest_metadata(metadata: dict, config: pytest.Config) -> None:
    """The environment of the report: what ran, where, by whom, against what; secrets masked."""
    state = _state(config)
    if state is None:
        return
    metadata["gradual-deploy"] = deploy_tool.__version__
    metadata["Host"] = ev.host()
    metadata["Actor"] = ev.actor()
    metadata["Thresholds"] = {k: str(v) for k, v in _thresholds(state.settings).items()}
    metadata["Targets"] = {k: str(v) for k, v in _targets(state.settings).items()}
    for key in list(metadata):
        metadata[key] = _escape_tree(state.redactor.scrub_data(metadata[key]))


def _escape_tree(value: Any) -> Any:
    # pytest-html's environment table inserts values as HTML; escape them.
    if isinstance(value, str):
        return html.escape(value)
    if isinstance(value, dict):
        return {k: _escape_tree(v) for k, v in value.items()}
    return value


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One backtest check per strategy in the summary file."""
    if "strategy" not in metafunc.fixturenames:
        return
    state = _state(metafunc.config)
    if state is None:
        return
    attempt = _summary_attempt(state)
    if attempt.error is not None:
        metafunc.parametrize("strategy", [None], ids=["summary"])
        return
    strategies = attempt.result().strategies
    metafunc.parametrize("strategy", list(strategies), ids=[s.name for s in strategies])


def _summary_attempt(state: RunState) -> Attempt:
    if state.summary_attempt is None:
        from deploy_tool.backtest import load_summary

        state.summary_attempt = Attempt(lambda: load_summary(state.settings.backtest_summary), state.redactor)
    return state.summary_attempt


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skips on request, the min-trades check only when asked for, and the timeout backstop."""
    state = _state(config)
    if state is None:
        return
    settings = state.settings
    kept = []
    for item in items:
        if not _ours(item):
            kept.append(item)
            continue
        if getattr(item, "originalname", item.name) == "test_backtest_min_trades" and settings.min_trades == 0:
            continue  # --min-trades 0 means off: no check rather than a check that cannot fail
        marker = _marker_of(item)
        if marker == "observe" and not settings.observe:
            continue  # a go-live preflight runs before the system has written any audit to observe
        if (marker == "db" and settings.skip_db_check) or (marker == "backtest" and settings.skip_backtest_check):
            item.add_marker(pytest.mark.skip(reason=f"skipped on request: {SKIP_FLAGS[marker]}"))
        if item.get_closest_marker("timeout") is None and not _timeout_configured(config):
            item.add_marker(pytest.mark.timeout(BACKSTOP_TIMEOUT_S, method="signal"))
        kept.append(item)
    # The runbook's order: exchange, data, backtest, then the admin API and the control file.
    rank = {name: index for index, name in enumerate(MARKERS)}
    kept.sort(key=lambda item: rank.get(_marker_of(item) or "", len(rank)) if _ours(item) else -1)
    items[:] = kept


def _timeout_configured(config: pytest.Config) -> bool:
    try:
        return config.getoption("timeout", None) is not None or bool(config.getini("timeout"))
    except (ValueError, KeyError):
        return False


def pytest_deselected(items: list[pytest.Item]) -> None:
    """A check deselected with -m is recorded as skipped: the evidence shows what did not run."""
    if not items:
        return
    state = _state(items[0].config)
    if state is None:
        return
    expression = items[0].config.getoption("markexpr", "") or ""
    keyword = items[0].config.getoption("keyword", "") or ""
    how = f"-m {expression!r}" if expression else (f"-k {keyword!r}" if keyword else "selection")
    for item in items:
        if _ours(item):
            marker = _marker_of(item)
            state.deselected.append(_new_check(item, marker, status="skipped", message=f"deselected by {how}"))


def _new_check(item: pytest.Item, marker: str | None, status: str = "passed", message: str = "") -> dict:
    return {
        "id": _check_id(item),
        "marker": marker,
        "required": marker in ev.REQUIRED_MARKERS,
        "status": status,
        "measured": None,
        "threshold": None,
        "unit": None,
        "message": message,
        "duration_s": 0.0,
    }


@pytest.fixture
def check(request: pytest.FixtureRequest) -> CheckRecord:
    """Where a check records its measurement, threshold and unit for the evidence."""
    record = CheckRecord()
    request.node.stash[CHECK_KEY] = record
    return record


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """Fold each phase of a check into its evidence entry; keep secrets out of the report."""
    report = yield
    state = _state(item.config)
    if state is None or not _ours(item):
        return report
    _scrub_report(report, state.redactor)
    entry = state.checks.get(item.nodeid)
    if entry is None:
        entry = state.checks[item.nodeid] = _new_check(item, _marker_of(item))
        state.order.append(item.nodeid)
    entry["duration_s"] = round(entry["duration_s"] + report.duration, 3)
    record = item.stash.get(CHECK_KEY, None)
    if record is not None and report.when == "call":
        entry.update(measured=record.measured, threshold=record.threshold, unit=record.unit)
        report.user_properties.append(("gd_check", dict(entry)))
    if report.skipped and entry["status"] != "failed":
        entry["status"] = "skipped"
        entry["message"] = _skip_reason(report)
    elif report.failed:
        entry["status"] = "failed"
        entry["message"] = state.redactor.scrub(_failure_message(call, report))
    elif report.when == "call" and record is not None and record.message and entry["status"] == "passed":
        entry["message"] = record.message
    return report


def _scrub_report(report: pytest.TestReport, redactor: Redactor) -> None:
    if not redactor:
        return
    if report.longrepr is not None and not isinstance(report.longrepr, tuple):
        text = report.longreprtext
        if redactor.contains_secret(text):
            report.longrepr = redactor.scrub(text)
    report.sections = [(title, redactor.scrub(content)) for title, content in report.sections]


def _skip_reason(report: pytest.TestReport) -> str:
    if isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason
    return str(report.longrepr or "skipped")


def _failure_message(call: pytest.CallInfo, report: pytest.TestReport) -> str:
    excinfo = call.excinfo
    if excinfo is None:
        return report.longreprtext.strip().splitlines()[-1] if report.longreprtext else "failed"
    value = excinfo.value
    if isinstance(value, AssertionError):
        text = str(value).split("\nassert ")[0].strip()
        return text or "assertion failed"
    if isinstance(value, pytest.fail.Exception):
        return str(value.msg)
    return f"{excinfo.typename}: {value}"


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> Any:
    """Decide the verdict, fail a run in which nothing passed, write the JSON twin, scrub the HTML."""
    state = _state(session.config)
    if state is None:
        return (yield)
    state.finished_at = utc_now()
    if state.verdict() == "fail" and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    try:
        _write_json(state)
    finally:
        result = yield
        _scrub_file(state.stem.with_suffix(".html"), state.redactor)
    return result


def _thresholds(settings: Settings) -> dict[str, Any]:
    return {
        "min_sharpe": settings.min_sharpe,
        "min_winrate": settings.min_winrate,
        "max_drawdown": settings.max_drawdown,
        "min_trades": settings.min_trades,
        "backtest_max_age_s": settings.backtest_max_age,
        "data_latency_threshold": settings.data_latency_threshold,
        "db_statement_timeout_ms": settings.db_statement_timeout_ms,
        "api_latency_threshold_ms": settings.api_latency_threshold_ms,
        "api_samples": settings.api_samples,
        "max_clock_skew_ms": settings.max_clock_skew_ms,
        "maintenance_horizon_s": settings.maintenance_horizon,
        **({"observe_window_s": settings.observe_window, "audit_max_silence_s": settings.audit_max_silence,
            "max_bad_audit_lines": settings.max_bad_audit_lines, "max_risk_events": settings.max_risk_events,
            "max_order_failure_rate": settings.max_order_failure_rate,
            "max_risk_block_rate": settings.max_risk_block_rate, "min_signals": settings.min_signals,
            "max_signals": settings.max_signals} if settings.observe else {}),
    }


def _targets(settings: Settings) -> dict[str, Any]:
    return {
        "okx_base_url": mask_url(settings.okx_base_url),
        "database_url": mask_url(settings.database_url),
        "trades_table": f"{settings.trades_table}.{settings.trades_time_column}",
        "http_admin_url": mask_url(settings.http_admin_url),
        "control_file": settings.control_file,
    }


def _inputs(state: RunState) -> dict[str, Any]:
    """The backtest summary's fingerprint: of the very bytes the checks judged, when they read it."""
    path = state.settings.backtest_summary
    attempt = state.summary_attempt
    if attempt is not None and attempt.error is None:
        return {"backtest_summary": {"path": path, "sha256": attempt.result().sha256}}
    try:
        with open(path, "rb") as fh:
            digest: str | None = hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        digest = None
    return {"backtest_summary": {"path": path, "sha256": digest}}


def evidence_document(state: RunState) -> dict[str, Any]:
    checks = state.ordered_checks()
    finished = state.finished_at or utc_now()
    doc = {
        "schema": ev.SCHEMA,
        "verdict": ev.verdict(checks),
        "started_at": iso_utc(state.started_at),
        "finished_at": iso_utc(finished),
        "tool_version": deploy_tool.__version__,
        "host": ev.host(),
        "actor": ev.actor(),
        "thresholds": _thresholds(state.settings),
        "targets": _targets(state.settings),
        "inputs": _inputs(state),
        "checks": checks,
        "skipped": [{"id": c["id"], "marker": c["marker"], "required": c["required"], "reason": c["message"]}
                    for c in checks if c["status"] == "skipped"],
        "skips_requested": [flag for marker, flag in SKIP_FLAGS.items()
                            if getattr(state.settings, f"skip_{marker}_check")],
        "html_report": state.stem.with_suffix(".html").name,
    }
    return state.redactor.scrub_data(doc)


def _write_json(state: RunState) -> None:
    if state.written:
        return
    ev.write_json_atomic(state.stem.with_suffix(".json"), evidence_document(state))
    state.written = True


def _scrub_file(path: Path, redactor: Redactor) -> None:
    """Last line of defence: no secret value survives in the written HTML."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return
    if redactor.contains_secret(text):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(redactor.scrub(text), encoding="utf-8")
        os.replace(tmp, path)


# --- pytest-html ----------------------------------------------------------------------------------


@pytest.hookimpl(optionalhook=True)
def pytest_html_report_title(report: Any) -> None:
    report.title = "gradual-deploy go-live preflight"


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_summary(prefix: list, summary: list, postfix: list, session: pytest.Session) -> None:
    """Verdict first, then every check with measured value, threshold, unit and status."""
    state = _state(session.config)
    if state is None:
        return
    checks = state.ordered_checks()
    verdict = ev.verdict(checks)
    counts = {s: sum(1 for c in checks if c["status"] == s) for s in ("passed", "failed", "skipped")}
    why = "" if verdict == "pass" else (
        " (no check passed)" if counts["passed"] == 0 else f" ({counts['failed']} check(s) failed)"
    )
    prefix.append(
        f'<div class="gd-verdict {verdict}" id="gd-verdict">Verdict: {verdict.upper()}{html.escape(why)}'
        f" &mdash; {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped</div>"
    )
    rows = "".join(
        "<tr>"
        f'<td class="{c["status"]}">{c["status"]}</td><td>{html.escape(c["id"])}</td>'
        f'<td>{html.escape(str(c["marker"] or ""))}{" (required)" if c["required"] else ""}</td>'
        f"<td>{_cell(c['measured'])}</td><td>{_cell(c['threshold'])}</td><td>{_cell(c['unit'])}</td>"
        f"<td>{html.escape(c['message'] or '')}</td>"
        "</tr>"
        for c in checks
    )
    prefix.append(
        '<table class="gd-checks" id="gd-checks"><thead><tr><th>Status</th><th>Check</th><th>Group</th>'
        "<th>Measured</th><th>Threshold</th><th>Unit</th><th>Message</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
    settings = state.settings
    env_rows = {
        "tool version": deploy_tool.__version__,
        "host": ev.host(),
        "actor": ev.actor(),
        "python": sys.version.split()[0],
        **{f"threshold {k}": v for k, v in _thresholds(settings).items()},
        **{f"target {k}": v for k, v in _targets(settings).items()},
        "backtest max age": format_duration(settings.backtest_max_age),
    }
    env_html = "".join(f"<tr><th>{html.escape(k)}</th><td>{_cell(v)}</td></tr>" for k, v in env_rows.items())
    postfix.append(f'<h3>Run environment</h3><table class="gd-env" id="gd-env">{env_html}</table>')
    for part in (prefix, postfix):
        part[:] = [state.redactor.scrub(p) for p in part]


def _cell(value: Any) -> str:
    return "" if value is None else html.escape(str(value))


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_header(cells: list) -> None:
    cells.insert(2, '<th class="sortable" data-column-type="measured">Measured</th>')
    cells.insert(3, "<th>Threshold</th>")
    cells.insert(4, "<th>Unit</th>")


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_row(report: pytest.TestReport, cells: list) -> None:
    found = dict(report.user_properties).get("gd_check") if report.user_properties else None
    entry: dict[str, Any] = found if isinstance(found, dict) else {}
    cells.insert(2, f'<td class="col-measured">{_cell(entry.get("measured"))}</td>')
    cells.insert(3, f"<td>{_cell(entry.get('threshold'))}</td>")
    cells.insert(4, f"<td>{_cell(entry.get('unit'))}</td>")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Say the verdict and where the evidence went, last, where an operator looks."""
    state = _state(config)
    if state is None:
        return
    checks = state.ordered_checks()
    verdict = ev.verdict(checks)
    if not any(c["status"] in ("passed", "failed") for c in checks):
        terminalreporter.write_line("no check passed: a run that measured nothing is not a pass", red=True)
    required_skips = [c["id"] for c in checks if c["status"] == "skipped" and c["required"]]
    if required_skips:
        terminalreporter.write_line(
            f"required checks skipped: {', '.join(required_skips)} (switch --to real will refuse this evidence)",
            yellow=True,
        )
    terminalreporter.write_sep("=", f"preflight verdict: {verdict.upper()}", green=verdict == "pass", red=verdict != "pass")
    terminalreporter.write_line(f"evidence: {state.stem.with_suffix('.html')}")
    terminalreporter.write_line(f"evidence: {state.stem.with_suffix('.json')}")


# --- fixtures over the probes ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def settings(pytestconfig: pytest.Config) -> Settings:
    """The resolved settings of this run."""
    state = _state(pytestconfig)
    if state is None:
        pytest.fail("the gradual-deploy plugin is not active for this run", pytrace=False)
    return state.settings


@pytest.fixture(scope="session")
def redactor(pytestconfig: pytest.Config) -> Redactor:
    state = _state(pytestconfig)
    return state.redactor if state else Redactor()


@pytest.fixture(scope="session")
def okx_time(settings: Settings, redactor: Redactor) -> Attempt:
    """N timed calls of the exchange's public time endpoint."""
    from deploy_tool.okx import probe_public_time

    return Attempt(lambda: probe_public_time(settings.okx_base_url, settings.api_samples), redactor)


@pytest.fixture(scope="session")
def okx_status(settings: Settings, redactor: Redactor) -> Attempt:
    """The exchange's maintenance calendar."""
    from deploy_tool.okx import probe_system_status

    return Attempt(lambda: probe_system_status(settings.okx_base_url, settings.maintenance_horizon), redactor)


def _no_database() -> Any:
    raise ProbeError(
        "no trades database configured: set --database-url (or DATABASE_URL, or database_url in pytest.ini), "
        "or pass --skip-db-check to go without this check"
    )


@pytest.fixture(scope="session")
def trades_freshness(settings: Settings, redactor: Redactor) -> Attempt:
    """Age of the newest trade in the trades table."""
    from deploy_tool.freshness import probe_trades_freshness

    database_url = settings.database_url
    if not database_url:
        return Attempt(_no_database, redactor)
    return Attempt(
        lambda: probe_trades_freshness(
            database_url, settings.trades_table, settings.trades_time_column,
            statement_timeout_s=settings.db_statement_timeout_ms / 1000,
        ),
        redactor,
    )


@pytest.fixture(scope="session")
def backtest_summary(pytestconfig: pytest.Config) -> Attempt:
    """The parsed backtest summary file."""
    state = _state(pytestconfig)
    assert state is not None
    return _summary_attempt(state)


@pytest.fixture(scope="session")
def observation(settings: Settings, redactor: Redactor) -> Attempt:
    """The last --observe-window of the trading system's audit and risk events."""
    from deploy_tool.observe import observe

    return Attempt(
        lambda: observe(
            settings.audit_dir, settings.risk_events_csv, settings.observe_window,
            ts_field=settings.audit_ts_field, event_field=settings.audit_event_field,
            status_field=settings.audit_status_field, risk_ts_column=settings.risk_events_ts_column,
        ),
        redactor,
    )


@pytest.fixture(scope="session")
def admin_url(settings: Settings) -> str:
    if not settings.http_admin_url:
        pytest.skip(
            "admin API not configured: set --http-admin-url (or EXEC_HTTP_ADMIN_URL) to check it"
        )
    return settings.http_admin_url


@pytest.fixture(scope="session")
def control_file(settings: Settings) -> str:
    if not settings.control_file:
        pytest.skip("control file not configured: set --control-file (or EXEC_CONTROL_FILE) to check it")
    return settings.control_file
