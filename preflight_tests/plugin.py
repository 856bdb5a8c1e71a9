"""The pytest plugin of the preflight suite: options, activation, and the run's evidence.

It is loaded in every pytest run of an environment where gradual-deploy is installed (entry point
`pytest11`), but stays inert unless the run targets the `preflight_tests` package: only then does it
resolve settings, collect each check's criterion into the evidence model (`deploy_tool.evidence`) and
mask secrets. The probe fixtures are in `fixtures.py`, the HTML report in `report.py`; the measuring and
judging code lives in `deploy_tool`.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import signal
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import deploy_tool
from deploy_tool import ProbeError, fileops
from deploy_tool.criteria import Criterion
from deploy_tool.attest import AttestError, SigningKey, load_signing_key, path_digest, secret_forms
from deploy_tool.evidence import (
    CheckEntry,
    Evidence,
    EvidenceError,
    attestation_path,
    reserve_stem,
    write_json_atomic,
)
from deploy_tool.manifest import NO_SUMMARY, Scope, check_id, group_of, required
from deploy_tool.audit import actor as current_actor
from deploy_tool.audit import host as current_host
from deploy_tool.redact import Redactor, mask_url
from deploy_tool.settings import SUITE_OPTIONS, OptionError, Settings, resolve
from deploy_tool.times import utc_now

if TYPE_CHECKING:
    from deploy_tool.probes import Attempt
    from deploy_tool.probes.backtest import Summary
    from deploy_tool.probes.riskconfig import RiskConfig

PACKAGE_DIR = Path(__file__).resolve().parent
MARKERS = {
    "okx": "needs the exchange REST API (health, latency, clock skew, maintenance)",
    "db": "needs the trades database (feed freshness)",
    "backtest": "needs the backtest summary (go-live thresholds)",
    "risk": "needs the trading system's risk configuration (allocation, loss limits, order cap)",
    "account": "needs an exchange API key: the key's permissions and the account (skips without a key)",
    "secrets": "scans the trading system's source for hard-coded keys (skips without --scan-path)",
    "admin": "needs the trading system's admin HTTP API (skips when unconfigured)",
    "control": "needs the control file (skips when unconfigured)",
    "observe": "the watch period: reads the trading system's audit and risk events (only with -m observe or --observe)",
}
SKIP_FLAGS = {"db": "--skip-db-check", "backtest": "--skip-backtest-check", "risk": "--skip-risk-check"}
PENDING = "pending"  # collected, not yet passed: what a check is until its call phase passes
# Backstop for a probe that hangs despite its own timeouts; "signal" fails the test and keeps the
# session alive, so the evidence is still written ("thread" would kill the process).
BACKSTOP_TIMEOUT_S = 60.0


def backstop_method() -> str:
    """pytest-timeout's method for the backstop. Windows has no SIGALRM: there only "thread" exists, which
    ends the whole process on a timeout; the run then leaves no JSON, and the gate refuses it as a run
    that never finished."""
    return "thread" if fileops.WINDOWS or not hasattr(signal, "SIGALRM") else "signal"


@dataclass
class RunState:
    """Everything the plugin keeps for one preflight run."""

    settings: Settings
    redactor: Redactor
    stem: Path
    started_at: dt.datetime
    entries: dict[str, CheckEntry] = field(default_factory=dict)  # by node id, in the order they ran
    deselected: list[CheckEntry] = field(default_factory=list)
    summary_attempt: Attempt[Summary] | None = None
    risk_attempt: Attempt[RiskConfig] | None = None
    finished_at: dt.datetime | None = None
    stopped: str | None = None  # why the run ended before every check ran
    written: bool = False
    signing_key: SigningKey | None = None
    extra_subjects: list[dict[str, Any]] = field(default_factory=list)  # --subject and --revision, hashed at start
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    manifest: list[str] = field(default_factory=list)
    scope: Scope | None = None
    foreign: list[str] = field(default_factory=list)  # collected tests that are not the suite's
    final: Evidence | None = None  # the evidence as the run ended: built once, then read by every reporter

    def checks(self) -> list[CheckEntry]:
        """Every check of the run; one that never completed a passing call phase has not passed. Every
        required check of the manifest is there: one the run did not collect is recorded as not run."""
        for entry in self.entries.values():
            if entry.status == PENDING:
                entry.status, entry.message = "failed", (
                    f"never completed: {self.stopped}" if self.stopped else
                    "never completed its check (run with --setup-only, --setup-plan or --collect-only?): "
                    "a check passes only by running")
        found = [*self.entries.values(), *self.deselected]
        present = {c.id for c in found}
        absent = [CheckEntry(cid, group_of(cid), "skipped", message="not run: this run did not collect it "
                             "(selected by node id, -k, -m or another test-name pattern); a go-live pass runs "
                             "the whole suite") for cid in self.manifest if cid not in present]
        wanted = set(self.manifest)
        for entry in (*found, *absent):
            entry.required = entry.id in wanted
        return [*found, *absent]

    def groups(self) -> list[str]:
        return [*MARKERS] if self.settings.observe else [m for m in MARKERS if m != "observe"]

    def evidence(self) -> Evidence:
        """The run as the evidence model holds it, secrets masked; once the run has ended (`final`), the
        evidence built then: the JSON, the HTML summary and the terminal all say the same."""
        if self.final is not None:
            return self.final
        settings = self.settings
        groups = self.groups()
        evidence = Evidence(
            started_at=self.started_at,
            finished_at=self.finished_at or utc_now(),
            checks=self.checks(),
            thresholds=settings.thresholds(groups),
            targets=targets(settings),
            inputs=self._inputs(),
            skips_requested=[flag for marker, flag in SKIP_FLAGS.items()
                             if getattr(settings, f"skip_{marker}_check")],
            html_report=self.stem.with_suffix(".html").name,
            tool_version=deploy_tool.__version__,
            host=current_host(),
            actor=current_actor(),
            run_id=self.run_id,
            manifest=list(self.manifest),
            scope=self.scope.as_dict() if self.scope is not None else {},
            threshold_sources=settings.threshold_sources(groups),
            subjects=self.subjects(),
            signed_by=self.signing_key.keyid if self.signing_key else None,
            attestation=attestation_path(self.stem.with_suffix(".json")).name if self.signing_key else None,
            foreign_tests=list(self.foreign),
        )
        evidence.opens_real = opens_real(evidence)
        return evidence

    def subjects(self) -> list[dict[str, Any]]:
        """What the run is bound to, by digest: the backtest and risk configuration it judged, and what
        --subject and --revision name."""
        from deploy_tool.attest import subject

        found = []
        attempt = self.summary_attempt
        if attempt is not None and attempt.error is None:
            summary = attempt.value()
            found.append(subject(os.path.abspath(summary.path), summary.sha256, "backtest"))
        risk = self.risk_attempt
        if risk is not None and risk.error is None and risk.value().sha256:
            config = risk.value()
            name = config.source if config.source.startswith("GET ") else os.path.abspath(config.source)
            found.append(subject(name, str(config.sha256), "risk_config"))
        return [*found, *self.extra_subjects]

    def _inputs(self) -> dict[str, Any]:
        """The backtest summary's fingerprint: of the very bytes the checks judged, when they read it."""
        path = self.settings.backtest_summary
        attempt = self.summary_attempt
        if attempt is not None and attempt.error is None:
            summary = attempt.value()  # the file read: a results directory resolves to its newest result
            figures = {s.name: s.provenance for s in summary.strategies if s.provenance}
            return {"backtest_summary": {"path": summary.path, "sha256": summary.sha256,
                                         **({"figures": figures} if figures else {})}, **self._config_input()}
        try:
            digest: str | None = path_digest(path) if not os.path.isdir(path) else None
        except AttestError:
            digest = None
        return {"backtest_summary": {"path": path, "sha256": digest}, **self._config_input()}

    def _config_input(self) -> dict[str, Any]:
        """Where the risk settings were read (the gate reads the allocation there again), and the
        gradual-deploy config file (--config) the thresholds may have come from, by digest."""
        found: dict[str, Any] = {"risk_config": {"path": self.settings.risk_config,
                                                 "section": self.settings.risk_config_section}}
        path = self.settings.config
        if not path:
            return found
        try:
            digest: str | None = path_digest(path)
        except AttestError:
            digest = None
        return {**found, "config": {"path": os.path.abspath(path), "sha256": digest}}


STATE_KEY = pytest.StashKey[RunState]()
CRITERION_KEY = pytest.StashKey[Criterion]()
FROZEN_KEY = pytest.StashKey[bool]()


def targets(settings: Settings) -> dict[str, Any]:
    """What the run measured, URLs masked."""
    return {
        "okx_base_url": mask_url(settings.okx_base_url),
        "database_url": mask_url(settings.database_url),
        "trades_table": f"{settings.trades_table}.{settings.trades_time_column}",
        "http_admin_url": mask_url(settings.http_admin_url),
        "control_file": os.path.abspath(settings.control_file) if settings.control_file else None,
    }


def state_of(config: pytest.Config) -> RunState | None:
    """The run's state, or None when the plugin is inert for this run."""
    return config.stash.get(STATE_KEY, None)


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


OURS_KEY = pytest.StashKey[bool]()


def ours(item: pytest.Item) -> bool:
    """Is this item one of the suite's checks: a test module of this very package (a folder that only
    looks like it, elsewhere, holds no check of the suite)? Decided once per item: every hook asks."""
    found = item.stash.get(OURS_KEY, None)
    if found is None:
        try:
            path = Path(str(item.path)).resolve()
        except OSError:
            found = False
        else:
            found = path.parent == PACKAGE_DIR and path.name.startswith("test_")
        item.stash[OURS_KEY] = found
    return found


def marker_of(item: pytest.Item) -> str | None:
    for name in MARKERS:
        if item.get_closest_marker(name):
            return name
    return None


def check_id_of(item: pytest.Item) -> str:
    """The check's id as the manifest spells it: its test's name, and the strategy or instrument it judges
    (from the parameter itself, not pytest's escaped test id)."""
    name = getattr(item, "originalname", None) or item.name.split("[")[0]
    name = name[5:] if name.startswith("test_") else name
    params = getattr(getattr(item, "callspec", None), "params", {})
    if "strategy" in params:
        strategy = params["strategy"]
        return check_id(name, strategy.name if strategy is not None else NO_SUMMARY)
    if "inst_id" in params:
        return check_id(name, params["inst_id"] if params["inst_id"] is not None else "none")
    return name


def _new_entry(item: pytest.Item, status: str = PENDING, message: str = "") -> CheckEntry:
    return CheckEntry(check_id_of(item), marker_of(item), status, message=message)


def opens_real(evidence: Evidence) -> dict[str, Any]:
    """Whether this evidence, by itself, can open real, and why not: what a person reading it wants to know.
    The gate decides again from the signed document, with the deployment's targets and subjects."""
    from deploy_tool.manifest import incomplete  # the gate's own rule, so that the two never disagree

    why = []
    if evidence.verdict != "pass":
        why.append("the verdict is FAIL")
    lacking = incomplete(evidence)
    if lacking:
        why.append(lacking)
    if not evidence.signed_by:
        why.append("it is not signed (--signing-key FILE or GD_SIGNING_KEY_FILE)")
    return {"ok": not why, "why": why}


# --- hooks ----------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """Every suite option as a flag (default None, so that its absence is visible) and an ini key."""
    group = parser.getgroup("gradual-deploy", "gradual-deploy preflight (go-live gate)")
    for option in SUITE_OPTIONS:
        if option.flag_only:
            group.addoption(option.flag, action="store_const", const="true", dest=f"gd_{option.name}", default=None,
                            help=option.help_text())
            continue
        group.addoption(option.flag, dest=f"gd_{option.name}", default=None, metavar="VALUE", help=option.help_text(),
                        action="append" if option.repeat else "store")
        if option.ini_key:
            parser.addini(option.name, option.help_text().replace("%%", "%"), default=None)


def _resolve(config: pytest.Config) -> Settings:
    """Settings from flag > environment > the gradual-deploy config > ini > default; UsageError on a malformed
    value, an unusable --config and a threshold the ini sets looser than its default. `resolve` reads the
    config (--config, else GD_CONFIG) first: `config` is one of the suite's options."""
    markexpr = config.getoption("markexpr", "") or ""

    def cli(option: Any) -> Any:
        # Observe checks run when asked for by flag or by a marker expression that names them.
        if option.name == "observe" and "observe" in markexpr:
            return "true"
        return config.getoption(f"gd_{option.name}")

    try:
        return resolve([o.name for o in SUITE_OPTIONS], cli=cli, ini=lambda option: config.getini(option.name) if option.ini_key else None,
                       ini_source=config.inipath.name if config.inipath else "the ini file")
    except OptionError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Register the markers; when the suite runs, resolve settings and point pytest-html at the evidence."""
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    if not targets_suite(config) or hasattr(config, "workerinput"):
        return
    settings = _resolve(config)
    redactor = settings.redactor()
    try:  # every usage error before the run claims its name: a typo'd key path leaves no unfinished claim
        key = load_signing_key(settings.signing_key,
                               path_first=settings.sources.get("signing_key") == "the command line")
        extra = _extra_subjects(settings)
    except AttestError as exc:
        raise pytest.UsageError(redactor.scrub(str(exc))) from None
    started = utc_now()
    try:
        stem = reserve_stem(settings.evidence_dir, started)
    except EvidenceError as exc:
        raise pytest.UsageError(f"{exc}: set --evidence-dir to a writable directory") from None
    if key is not None:
        for form in secret_forms(os.environ.get("GD_SIGNING_KEY")):
            redactor.add(form)
    config.stash[STATE_KEY] = RunState(settings=settings, redactor=redactor, stem=stem, started_at=started,
                                       signing_key=key, extra_subjects=extra)
    from preflight_tests import fixtures, report

    config.pluginmanager.register(fixtures, "gradual-deploy-fixtures")
    config.pluginmanager.register(report, "gradual-deploy-report")
    config.option.htmlpath = str(stem.with_suffix(".html"))
    config.option.self_contained_html = True
    css = getattr(config.option, "css", None)
    if isinstance(css, list):
        css.append(str(PACKAGE_DIR / "report.css"))
    spare_the_collector(config)


def spare_the_collector(config: pytest.Config) -> None:
    """Keep what is alive now out of the garbage collector's full passes until the run ends (`gc.freeze`).

    pytest, the plugins, the suite's modules and the collected checks all live until the process ends, and
    a full collection walks every one of them: a preflight holds some 60,000 objects where a one-test run
    holds 40,000, and the automatic full collections while the checks run, then pytest's own two at the end
    (unraisable-exception detection), cost it about 100 ms for next to nothing freed (under a hundred
    objects). Called when the suite is set up and again after collection; objects made later are collected
    as usual. `gc.unfreeze` hands everything back as the run's last cleanup, after pytest's collections, so
    that an in-process run leaves the collector as it found it; and when the interpreter exits, everything
    is frozen again (`_exit_without_collecting`). A process that froze objects itself keeps its own
    arrangement: left alone."""
    owned = config.stash.get(FROZEN_KEY, None)
    if owned is None:
        owned = config.stash[FROZEN_KEY] = gc.get_freeze_count() == 0
        if owned:
            config.add_cleanup(gc.unfreeze)  # registered in the tryfirst configure: runs after pytest's own
            _exit_without_collecting()
    if owned:
        gc.freeze()


_AT_EXIT: list[bool] = []


def _exit_without_collecting() -> None:
    """At interpreter exit, freeze every object before Python's final collection: that collection finds the
    whole interpreter unreachable once the modules are gone and frees it object by object (about 100 ms for
    a preflight process), memory the operating system takes back at once anyway. Files and connections are
    closed by the code that opened them (the evidence is written, fsync'd and closed before the run ends;
    Python flushes stdout and stderr itself); only finalizers of objects that sit in reference cycles at
    exit are skipped. Registered once per process, by the first run that froze objects."""
    if not _AT_EXIT:
        import atexit

        atexit.register(gc.freeze)
        _AT_EXIT.append(True)


def _extra_subjects(settings: Settings) -> list[dict[str, Any]]:
    """--subject paths (files or directories) and --revision, hashed when the run starts."""
    from deploy_tool.attest import subject

    found = []
    for path in settings.subject or ():
        if not os.path.exists(path):
            raise AttestError(f"--subject {path} does not exist: name the trading system's code or config the "
                              "evidence is bound to")
        kind = "directory" if os.path.isdir(path) else "file"
        found.append(subject(os.path.abspath(path), path_digest(path), "subject", kind=kind))
    if settings.revision:
        found.append({"name": "revision", "digest": {"gitCommit": settings.revision},
                      "annotations": {"role": "revision"}})
    return found


def scope_of(state: RunState) -> Scope:
    """What the manifest of this run depends on."""
    settings = state.settings
    attempt = state.summary_attempt
    summary = attempt.value() if attempt is not None and attempt.error is None else None
    strategies = tuple(s.name for s in summary.strategies) if summary is not None else None
    if summary is not None and settings.strategy:
        # A go-live pass judges every strategy of the result; --strategy narrows a diagnostic run, whose
        # evidence then lacks the others and opens nothing.
        from deploy_tool import ProbeError
        from deploy_tool.probes.backtest import load_summary

        try:
            strategies = tuple(s.name for s in load_summary(summary.path, None).strategies)
        except ProbeError:
            strategies = None
    names = (settings.okx_api_key_env, settings.okx_api_secret_env, settings.okx_api_passphrase_env)
    account = settings.require_account_check or any(os.environ.get(n, "").strip() for n in names)
    inst_ids = tuple(i.strip() for i in (settings.inst_id or "").split(",") if i.strip())
    return Scope(strategies, inst_ids, settings.min_trades, bool(settings.http_admin_url),
                 bool(settings.control_file), bool(account), bool(settings.scan_path), settings.strategy)


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: what is left is what must run
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skips on request, the min-trades check only when asked for, and the timeout backstop."""
    state = state_of(config)
    if state is None:
        return
    settings = state.settings
    kept = []
    for item in items:
        if not ours(item):
            state.foreign.append(item.nodeid)  # runs, but is no check; and a run with it opens nothing
            kept.append(item)
            continue
        name = getattr(item, "originalname", item.name)
        if name == "test_backtest_min_trades" and settings.min_trades == 0:
            continue  # --min-trades 0 means off: no check rather than a check that cannot fail
        if name == "test_risk_min_order" and not settings.inst_id:
            continue  # no instrument named: nothing to size an order for
        marker = marker_of(item)
        if marker == "observe" and not settings.observe:
            continue  # a go-live preflight runs before the system has written any audit to observe
        if marker in SKIP_FLAGS and getattr(settings, f"skip_{marker}_check"):
            item.add_marker(pytest.mark.skip(reason=f"skipped on request: {SKIP_FLAGS[marker]}"))
        if item.get_closest_marker("timeout") is None and not _timeout_configured(config):
            item.add_marker(pytest.mark.timeout(BACKSTOP_TIMEOUT_S, method=backstop_method()))
        kept.append(item)
    # The runbook's order: exchange, data, backtest, then the admin API and the control file.
    rank = {name: index for index, name in enumerate(MARKERS)}
    kept.sort(key=lambda item: rank.get(marker_of(item) or "", len(rank)) if ours(item) else -1)
    items[:] = kept
    for item in kept:
        if ours(item):
            state.entries[item.nodeid] = _new_entry(item, PENDING)
    if state.summary_attempt is None:  # no backtest check was collected: read it for the manifest anyway
        from preflight_tests.fixtures import summary_attempt

        summary_attempt(state)
    state.scope = scope_of(state)
    state.manifest = required(state.scope)
    spare_the_collector(config)  # the collected checks live to the end of the run


def _timeout_configured(config: pytest.Config) -> bool:
    try:
        return config.getoption("timeout", None) is not None or bool(config.getini("timeout"))
    except (ValueError, KeyError):
        return False


def pytest_deselected(items: list[pytest.Item]) -> None:
    """A check deselected with -m is recorded as skipped: the evidence shows what did not run."""
    if not items:
        return
    state = state_of(items[0].config)
    if state is None:
        return
    expression = items[0].config.getoption("markexpr", "") or ""
    keyword = items[0].config.getoption("keyword", "") or ""
    how = f"-m {expression!r}" if expression else (f"-k {keyword!r}" if keyword else "selection")
    for item in items:
        if ours(item):
            state.entries.pop(item.nodeid, None)
            state.deselected.append(_new_entry(item, "skipped", f"deselected by {how}"))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """Fold each phase of a check into its evidence entry; keep secrets out of the report."""
    report = yield
    state = state_of(item.config)
    if state is None or not ours(item):
        return report
    if call.excinfo is not None and isinstance(call.excinfo.value, ProbeError):
        report.longrepr = str(call.excinfo.value)  # could not measure: the reason, not a traceback
    entry = state.entries.get(item.nodeid)
    if entry is None:
        entry = state.entries[item.nodeid] = _new_entry(item, PENDING)
    entry.duration_s += report.duration
    criterion = item.stash.get(CRITERION_KEY, None)
    if report.when == "call" and report.passed:
        # The status follows the criterion, not an assert: under `python -O` or a rewritten test the assert
        # may be gone, and a check that recorded no criterion has judged nothing.
        if criterion is None:
            report.outcome, report.longrepr = "failed", "the check recorded no criterion: it judged nothing"
        elif not criterion.ok:
            report.outcome, report.longrepr = "failed", criterion.message
    _scrub_report(report, state.redactor)  # after the criterion's word: it may quote a server too
    if criterion is not None and report.when == "call":
        entry.measured, entry.threshold, entry.unit = criterion.measured, criterion.threshold, criterion.unit
        entry.details = state.redactor.scrub_data(criterion.details) if criterion.details is not None else None
        report.user_properties.append(("gd_check", entry.to_json()))
    if report.skipped and entry.status != "failed":
        entry.status, entry.message = "skipped", _skip_reason(report)
    elif report.failed:
        message = criterion.message if criterion is not None and report.when == "call" and not criterion.ok \
            else _failure_message(call, report)
        entry.status, entry.message = "failed", state.redactor.scrub(message)
    elif report.when == "call" and entry.status == PENDING:
        entry.status = "passed"  # the only way to pass: a call phase that ran and passed
        entry.message = state.redactor.scrub(criterion.message) if criterion is not None else ""
    return report


def _scrub_report(report: pytest.TestReport, redactor: Redactor) -> None:
    """Scrub what pytest prints of a check and pytest-html shows of it (its traceback or reason, a skip's
    reason, captured output), always: a server's escape sequence is harmful where no secret is known."""
    if isinstance(report.longrepr, tuple) and len(report.longrepr) == 3:
        path, lineno, reason = report.longrepr
        report.longrepr = (path, lineno, redactor.scrub(str(reason)))
    elif report.longrepr is not None:
        text = report.longreprtext
        scrubbed = redactor.scrub(text)
        if scrubbed != text:  # else pytest keeps its own rendering of the traceback
            report.longrepr = scrubbed
    report.sections = [(title, redactor.scrub(content)) for title, content in report.sections]


def _skip_reason(report: pytest.TestReport) -> str:
    """The reason of a skipped check, control characters written out (`_scrub_report` masked it)."""
    if isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
        return Redactor().scrub(reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason)
    return Redactor().scrub(str(report.longrepr or "skipped"))


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
    if isinstance(value, ProbeError):
        return str(value)
    return f"{excinfo.typename}: {value}"


@pytest.hookimpl(wrapper=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> Any:
    """Decide the verdict, fail a run in which nothing passed, write the JSON twin, scrub the HTML."""
    state = state_of(session.config)
    if state is None:
        return (yield)
    state.finished_at = utc_now()
    if session.exitstatus == pytest.ExitCode.INTERRUPTED or session.shouldstop or session.shouldfail:
        state.stopped = f"the run stopped early ({session.shouldstop or session.shouldfail or 'interrupted'})"
    state.final = None
    state.final = state.evidence()  # nothing the evidence holds changes after this point
    if state.final.verdict == "fail" and session.exitstatus in (pytest.ExitCode.OK,
                                                                pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    try:
        _write_json(state)
    finally:
        result = yield
        _scrub_file(state.stem.with_suffix(".html"), state.redactor)
    return result


def _write_json(state: RunState) -> None:
    if state.written:
        return
    doc = state.evidence().to_json()
    delivery = _tell_failure(state, doc)
    if delivery is not None:
        doc["notify"] = delivery
    doc = state.redactor.scrub_data(doc)
    json_path = state.stem.with_suffix(".json")
    if state.signing_key is not None:
        from deploy_tool.attest import sign, statement

        # The signed twin first: a JSON that names an attestation always has it beside it.
        envelope = sign(statement(doc["subjects"], doc), state.signing_key)
        write_json_atomic(attestation_path(json_path), envelope)
    write_json_atomic(json_path, doc)
    state.written = True


def _tell_failure(state: RunState, doc: dict[str, Any]) -> dict[str, Any] | None:
    """A failing gate tells the --notify targets which checks failed and where the evidence is."""
    if doc["verdict"] == "pass" or not state.settings.notify:
        return None
    from deploy_tool.notify import send

    failed = [f"{c['id']}: {c['message']}" for c in doc["checks"] if c["status"] == "failed"]
    lines = [f"{len(failed)} check(s) failed" if failed else "no check passed", *failed[:10],
             f"evidence: {state.stem.with_suffix('.json')}"]
    delivery = send(state.settings.notify, state.redactor.scrub(f"gradual-deploy preflight: FAIL ({doc['host']})"),
                    state.redactor.scrub("\n".join(lines)))
    return delivery.as_dict()


def _scrub_file(path: Path, redactor: Redactor) -> None:
    """Last line of defence: no secret value, nor a piece of one, nor a control character survives in the
    written HTML."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return
    scrubbed = redactor.scrub(text)
    if scrubbed != text:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(scrubbed, encoding="utf-8")
        fileops.replace(tmp, path)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Say the verdict and where the evidence went, last, where an operator looks."""
    state = state_of(config)
    if state is None:
        return
    evidence = state.evidence()
    checks, verdict = evidence.checks, evidence.verdict
    if not any(c.status in ("passed", "failed") for c in checks):
        terminalreporter.write_line("no check passed: a run that measured nothing is not a pass", red=True)
    if not evidence.opens_real.get("ok"):
        why = evidence.opens_real.get("why", [])
        steps = []
        if evidence.verdict != "pass":
            steps.append("fix what failed (each failing check says how)")
        lacking = any(w not in ("the verdict is FAIL",) and not w.startswith("it is not signed") for w in why)
        if lacking:  # in the gate's own words: the option and variable of each skip, signed, then switch
            from deploy_tool.manifest import complete_run

            steps.append(complete_run(evidence, "`gradual-deploy switch --to real`"))
        elif not evidence.signed_by:
            steps.append("run it again signed: --signing-key FILE (or GD_SIGNING_KEY_FILE; `gradual-deploy keygen` "
                         "makes a pair)")
        terminalreporter.write_line(state.redactor.scrub("this evidence does not open real: " + "; ".join(why)
                                                         + ". To open real: " + "; then ".join(steps)), yellow=True)
    terminalreporter.write_sep("=", f"preflight verdict: {verdict.upper()}", green=verdict == "pass", red=verdict != "pass")
    terminalreporter.write_line(f"evidence: {state.stem.with_suffix('.html')}")
    terminalreporter.write_line(f"evidence: {state.stem.with_suffix('.json')}")
    if state.signing_key is not None:
        terminalreporter.write_line(f"signed by key {state.signing_key.keyid[:16]}: "
                                    f"{attestation_path(state.stem.with_suffix('.json'))}")
