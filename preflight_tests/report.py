"""The HTML evidence: pytest-html's report with the verdict first, then every check with measured value,
threshold, unit and status, then the run environment; secrets masked. Registered by the plugin when the
suite runs; reads the same evidence model the JSON twin is written from.

What a person reads in it, in any run (tests/test_report_html.py checks it in a browser):
- the verdict banner says whether this evidence opens real and, if not, why and what to run, in a colour of
  its own for each of: opens real (green), passed but does not open real (amber), failed (red);
- the run's start and finish in UTC, with the zone (also pytest-html's "Report generated" line);
- every threshold with its direction (`>=`, `<=`, `<`), durations as written (`1d`, never `86400.0`);
- the backtest summary's sha256;
- counts that agree with pytest-html's own filters (checks the run did not collect are counted apart);
- no Python repr (`<... object at 0x...>`, tuples, dicts): the results table's log holds the check's message,
  not a traceback with the test's arguments.
"""

from __future__ import annotations

import datetime as dt
import html
import math
import re
import shlex
import sys
from typing import Any

import pytest

import deploy_tool
from deploy_tool.evidence import CheckEntry, Evidence, json_number
from deploy_tool.redact import sanitise
from deploy_tool.times import format_duration, iso_utc
from preflight_tests.plugin import RunState, state_of

# How each check compares what it measured with its threshold, by the check's name (manifest.CHECKS). A
# check missing here shows a numeric threshold without a direction; tests/test_report_html.py holds the
# two tables equal.
DIRECTIONS: dict[str, str] = {
    "okx_public_time_ok": ">=", "okx_public_time_latency": "<", "okx_clock_skew": "<=", "okx_no_maintenance": "<=",
    "trades_fresh": "<",
    "backtest_summary_valid": "<=", "backtest_sharpe": ">=", "backtest_winrate": ">=", "backtest_max_drawdown": "<=",
    "backtest_fresh": "<=", "backtest_min_trades": ">=",
    "risk_allocation": "<=", "risk_single_trade_loss": "<=", "risk_daily_loss": "<=", "risk_order_notional_cap": "<=",
    "risk_min_order": ">=",
    "secrets_not_in_code": "<=",
    "admin_health": "<",
    "observe_audit_recent": "<", "observe_audit_parseable": "<=", "observe_risk_events": "<=",
    "observe_order_failure_rate": "<=", "observe_risk_block_rate": "<=", "observe_slippage": "<=",
    "observe_realized_pnl": "<", "observe_vs_backtest": ">=",
}
# Checks whose threshold is no number: a set of values, a range, a state (shown as words, not compared).
WORDED = {"account_no_withdraw", "account_ip_bound", "account_facts", "account_equity", "admin_mode",
          "control_file_valid", "control_dir_writable", "observe_signals"}
# Checks whose threshold is a duration option, in seconds: shown as written (`1d`), not as 86400.
DURATION_THRESHOLDS = {"backtest_fresh", "observe_audit_recent"}

# Threshold options as the environment shows them: direction (or what the value means) and unit.
OPTION_SHOWN: dict[str, tuple[str, str]] = {
    "api_latency_threshold_ms": ("median <", " ms"), "api_samples": ("calls:", ""),
    "max_clock_skew_ms": ("<=", " ms"), "maintenance_horizon": ("no maintenance within", ""),
    "data_latency_threshold": ("newest trade <", " s old"), "db_statement_timeout_ms": ("query <=", " ms"),
    "min_sharpe": (">=", ""), "min_winrate": (">=", ""), "max_drawdown": ("<=", ""), "min_trades": (">=", " trades"),
    "backtest_max_age": ("age <=", ""), "max_allocation": ("<=", ""), "max_single_trade_loss": ("<=", ""),
    "max_daily_loss": ("<=", ""), "observe_window": ("the last", ""), "audit_max_silence": ("silence <", ""),
    "max_bad_audit_lines": ("<=", " lines"), "max_risk_events": ("<=", " events"),
    "max_order_failure_rate": ("<=", ""), "max_risk_block_rate": ("<=", ""), "min_orders": ("judged on >=", " orders"),
    "min_signals": (">=", " intents"), "max_signals": ("<=", " intents"), "max_slippage_bps": ("<=", " bps"),
}

# What a group of checks needs, for the banner's "what to run" after a run that left some out.
GROUP_NEEDS = {"okx": "the exchange API", "db": "the trades database", "backtest": "the backtest summary",
               "risk": "the risk configuration", "account": "the exchange API key", "secrets": "the source to scan",
               "admin": "the admin API", "control": "the control file"}

# The verdict banner's own colours, one per state (report.css styles the rest of the page).
STYLE = """<style>
.gd-verdict.opens { background: #d4f4d4; color: #135713; border: 3px solid #2e8b2e; }
.gd-verdict.not-real { background: #ffe7ba; color: #5c3300; border: 3px solid #d46b08; }
.gd-verdict.fail { background: #fbd9d9; color: #7a1010; border: 3px solid #c62828; }
.gd-verdict .gd-headline { font-size: 1em; }
.gd-verdict .gd-why, .gd-verdict .gd-next, .gd-verdict .gd-counts, .gd-verdict .gd-times {
  font-size: 0.6em; font-weight: normal; margin: 0.3em 0 0; }
.gd-verdict ul { margin: 0.2em 0 0 1.2em; padding: 0; }
table.gd-checks td.not-run { color: #8a6d00; font-weight: bold; font-style: italic; }
</style>"""


def _number(value: float | int) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else "not a number"
    return str(value)


def _text(value: Any) -> str:
    """A value as words for a person, never a Python repr: numbers to 6 significant digits (the JSON holds
    them exactly), yes/no, lists joined, mappings as `key: value`."""
    value = json_number(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_text(v)}" for k, v in value.items())
    return str(value)


def _cell(value: Any) -> str:
    """A value for a table cell: `_text`, control characters written out, HTML-escaped."""
    return html.escape(sanitise(_text(value)))


def _base(check_id: str) -> str:
    return check_id.split("[", 1)[0]


def threshold_text(check_id: str, threshold: Any) -> str:
    """A check's threshold with its direction (`>= 0.2`, `< 300`), a duration as written (`<= 1d`), a set of
    values as `one of ...`; the unit stands in its own column."""
    name = _base(check_id)
    if threshold is None or isinstance(threshold, bool):
        return _text(threshold)
    if isinstance(threshold, (int, float)):
        duration = name in DURATION_THRESHOLDS and threshold > 0
        value = format_duration(float(threshold)) if duration else _number(threshold)
        direction = DIRECTIONS.get(name)
        return f"{direction} {value}" if direction else value
    text = _text(threshold)
    if "|" in text and " " not in text:
        return "one of " + ", ".join(text.split("|"))
    if name == "observe_signals":
        return f"within {text}"
    return text


def option_text(name: str, value: Any) -> str:
    """A threshold option's value as the environment shows it: direction, the value as written, unit."""
    from deploy_tool.settings import BY_NAME, duration

    option = BY_NAME.get(name)
    if value is None:
        return "off"
    if isinstance(value, (int, float)) and not isinstance(value, bool) and option is not None \
            and option.parse is duration:
        shown = format_duration(float(value))
    else:
        shown = _text(value)
    direction, unit = OPTION_SHOWN.get(name, ("", ""))
    if not direction and option is not None and option.looser:
        direction = "<=" if option.looser == "higher" else ">="
    return f"{direction} {shown}{unit}".strip()


def _utc(moment: dt.datetime) -> str:
    """A time in UTC with the zone, for a person, and machine-readable as the JSON writes it."""
    utc = moment.astimezone(dt.timezone.utc)
    shown = utc.strftime("%Y-%m-%d %H:%M:%S.") + f"{utc.microsecond // 1000:03d} UTC"
    return f'<time datetime="{iso_utc(moment)}">{shown}</time>'


# --- pytest-html's environment table ------------------------------------------------------------


def _escape_tree(value: Any) -> Any:
    # pytest-html's environment table inserts values as HTML; escape them (control characters too).
    if isinstance(value, str):
        return html.escape(sanitise(value))
    if isinstance(value, dict):
        return {k: _escape_tree(v) for k, v in value.items()}
    return value


def _flat(value: Any) -> Any:
    # pytest-html renders a mapping one level deep and anything else with JavaScript's String(): words only.
    if isinstance(value, dict):
        return {str(k): _text(v) for k, v in value.items()}
    return _text(value)


METADATA_DONE = pytest.StashKey[bool]()


@pytest.hookimpl(optionalhook=True)
def pytest_metadata(metadata: dict, config: pytest.Config) -> None:
    """The environment of the report: what ran, where, by whom, against what; secrets masked."""
    state = state_of(config)
    if state is None or config.stash.get(METADATA_DONE, False):
        return
    config.stash[METADATA_DONE] = True
    evidence = state.evidence()
    metadata["gradual-deploy"] = deploy_tool.__version__
    metadata["Host"] = evidence.host
    metadata["Actor"] = evidence.actor
    metadata["Started (UTC)"] = iso_utc(evidence.started_at)
    metadata["Thresholds"] = {k: option_text(k, v) for k, v in evidence.thresholds.items()}
    metadata["Targets"] = {k: "not set" if v is None else str(v) for k, v in evidence.targets.items()}
    for key in list(metadata):
        metadata[key] = _escape_tree(state.redactor.scrub_data(_flat(metadata[key])))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """pytest-metadata asks for the environment when it is configured, which may be before the plugin
    registered this module (plugin load order): then it is filled here, before pytest-html reads it."""
    try:
        from pytest_metadata.plugin import metadata_key
    except ImportError:
        return
    metadata = session.config.stash.get(metadata_key, None)
    if isinstance(metadata, dict):
        pytest_metadata(metadata, session.config)


@pytest.hookimpl(optionalhook=True)
def pytest_html_report_title(report: Any) -> None:
    report.title = "gradual-deploy go-live preflight"


# --- the summary: verdict banner, trust, checks, environment --------------------------------------

# pytest-html's filters, in its order, with the words the banner uses (terminal reporter categories).
TABLE_OUTCOMES = (("passed", "passed"), ("failed", "failed"), ("skipped", "skipped"), ("error", "errors"),
                  ("xfailed", "expected failures"), ("xpassed", "unexpected passes"), ("rerun", "reruns"))


def table_counts(config: pytest.Config) -> dict[str, int] | None:
    """What pytest-html's filters count, by outcome: the call (and collection) reports, and setup or teardown
    reports that did not pass; from the terminal reporter's tally, which sorts the same reports the same way."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    stats = getattr(reporter, "stats", None)
    if not isinstance(stats, dict):
        return None
    return {key: sum(1 for r in stats.get(key, ()) if hasattr(r, "outcome")) for key, _ in TABLE_OUTCOMES}


def _not_run(state: RunState, checks: list[CheckEntry]) -> list[CheckEntry]:
    """The checks of the evidence the run did not collect (deselected, or not selected): not in pytest-html's
    results table. (`RunState.checks` returns the very entries it keeps for the checks that ran.)"""
    ran = {id(entry) for entry in state.entries.values()}
    return [c for c in checks if id(c) not in ran]


def _narrowed_by(state: RunState, config: pytest.Config, evidence: Evidence, not_run: list[CheckEntry]) -> list[str]:
    """What narrowed this run, as the options to leave out next time."""
    found = list(evidence.skips_requested)
    markexpr = config.getoption("markexpr", "") or ""
    keyword = config.getoption("keyword", "") or ""
    if markexpr:
        found.append(f"-m {shlex.quote(markexpr)}")
    if keyword:
        found.append(f"-k {shlex.quote(keyword)}")
    if state.settings.strategy:
        found.append(f"--strategy {shlex.quote(state.settings.strategy)}")
    if any(c.message.startswith("not run") for c in not_run) and not (markexpr or keyword):
        found.append("node ids or other test selection")
    if evidence.foreign_tests:
        found.append("the test paths that are not the suite's")
    return found


def _banner(state: RunState, config: pytest.Config, evidence: Evidence) -> str:
    """The verdict, whether this evidence opens real and why not, what to run, the counts, the times."""
    checks, verdict = evidence.checks, evidence.verdict
    opens = bool(evidence.opens_real.get("ok"))
    state_class = "opens" if opens else ("not-real" if verdict == "pass" else "fail")
    headline = {"opens": "this evidence opens real",
                "not-real": "but this evidence does NOT open real",
                "fail": "this evidence does not open real"}[state_class]
    parts = [f'<div class="gd-headline">Verdict: {verdict.upper()} &mdash; {headline}</div>']
    not_run = _not_run(state, checks)
    not_run_ids = {id(c) for c in not_run}
    if not opens:
        why = "; ".join(str(w) for w in evidence.opens_real.get("why", [])) or "see the checks below"
        failed = [c for c in checks if c.status == "failed"]
        lacking = [c for c in checks if c.required and c.status not in ("passed", "failed")]
        items = [f"<b>{html.escape(c.id)}</b>{' (' + html.escape(c.marker) + ')' if c.marker else ''} failed: "
                 f"{html.escape(c.message)}" for c in failed[:10]]
        if len(failed) > 10:
            items.append(f"and {len(failed) - 10} more failed (see the checks below)")
        items += [f"<b>{html.escape(c.id)}</b>{' (' + html.escape(c.marker) + ')' if c.marker else ''} "
                  f"{'not run' if id(c) in not_run_ids else c.status}: {html.escape(c.message)}" for c in lacking]
        parts.append(f'<div class="gd-why" id="gd-why">Why it does not open real: {html.escape(why)}.'
                     + ("<ul>" + "".join(f"<li>{item}</li>" for item in items) + "</ul>" if items else "")
                     + "</div>")
        steps = []
        if failed:
            steps.append("fix what failed (each failing check says how)")
        elif verdict != "pass":
            steps.append("make the checks run: a run in which no check passed does not pass")
        narrowed = _narrowed_by(state, config, evidence, not_run)
        if narrowed:
            what = list(dict.fromkeys(GROUP_NEEDS[c.marker] for c in lacking if c.marker in GROUP_NEEDS))
            ready = f"once {' and '.join(what)} {'is' if len(what) == 1 else 'are'} ready" if what else \
                "once what was left out is ready"
            from deploy_tool.manifest import SKIP_FIXES

            given = [f"<code>{html.escape(SKIP_FIXES[n][1])}</code> (or <code>{html.escape(SKIP_FIXES[n][2])}</code>)"
                     for n in narrowed if n in SKIP_FIXES]
            steps.append(f"run <code>gradual-deploy preflight</code> again with the same options but without "
                         f"<code>{html.escape(', '.join(narrowed))}</code>, {ready}"
                         + (f", giving {' and '.join(given)}" if given else ""))
        elif verdict != "pass":
            steps.append("run <code>gradual-deploy preflight</code> again with the same options")
        if not evidence.signed_by:
            steps.append("sign it: <code>--signing-key FILE</code> or <code>GD_SIGNING_KEY_FILE</code>")
        parts.append('<div class="gd-next" id="gd-next">To open real: ' + "; then ".join(steps) + ".</div>")
    counts = table_counts(config)
    if counts is not None:
        shown = [f"{counts[k]} {label}" for k, label in TABLE_OUTCOMES
                 if k in ("passed", "failed", "skipped") or counts[k]]
        line = f"In the results table below: {', '.join(shown)}"
    else:
        evidence_counts = {s: sum(1 for c in checks if c.status == s and id(c) not in not_run_ids)
                           for s in ("passed", "failed", "skipped")}
        line = "Checks run: " + ", ".join(f"{n} {s}" for s, n in evidence_counts.items())
    if not_run:
        line += (f"; not run, so not in the results table: {len(not_run)} "
                 f"({html.escape(', '.join(c.id for c in not_run))})")
    parts.append(f'<div class="gd-counts" id="gd-counts">{line}.</div>')
    elapsed = (evidence.finished_at - evidence.started_at).total_seconds()
    parts.append(f'<div class="gd-times" id="gd-times">Started {_utc(evidence.started_at)}, finished '
                 f"{_utc(evidence.finished_at)} ({elapsed:.1f} s)</div>")
    return (f'<div class="gd-verdict {verdict} {state_class}" id="gd-verdict" data-state="{state_class}">'
            + "".join(parts) + "</div>")


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_summary(prefix: list, summary: list, postfix: list, session: pytest.Session) -> None:
    """Verdict first, then every check with measured value, threshold, unit and status."""
    state = state_of(session.config)
    if state is None:
        return
    evidence = state.evidence()
    checks = evidence.checks
    not_run = {id(c) for c in _not_run(state, checks)}
    prefix.append(STYLE)
    prefix.append(_banner(state, session.config, evidence))
    prefix.append(_trust_html(evidence))

    def status(c: CheckEntry) -> tuple[str, str]:
        return ("not-run", "not run") if id(c) in not_run else (c.status, c.status)

    rows = "".join(
        "<tr>"
        f'<td class="{status(c)[0]}">{status(c)[1]}</td><td>{html.escape(c.id)}</td>'
        f'<td>{html.escape(str(c.marker or ""))}{" (required)" if c.required else ""}</td>'
        f"<td>{_cell(c.measured)}</td><td>{html.escape(sanitise(threshold_text(c.id, c.threshold)))}</td>"
        f"<td>{_cell(c.unit)}</td><td>{html.escape(c.message or '')}</td>"
        "</tr>"
        for c in checks
    )
    prefix.append(
        '<table class="gd-checks" id="gd-checks"><thead><tr><th>Status</th><th>Check</th><th>Group</th>'
        "<th>Measured</th><th>Threshold</th><th>Unit</th><th>Message</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
    backtest = evidence.inputs.get("backtest_summary") or {}
    config_input = evidence.inputs.get("config")
    env_rows: dict[str, str] = {
        "started (UTC)": _utc(evidence.started_at),
        "finished (UTC)": _utc(evidence.finished_at),
        "tool version": _cell(evidence.tool_version),
        "host": _cell(evidence.host),
        "actor": _cell(evidence.actor),
        "python": _cell(sys.version.split()[0]),
        "backtest summary": _cell(backtest.get("path") or "not set"),
        "backtest summary sha256": (f"<code>{_cell(backtest['sha256'])}</code>" if backtest.get("sha256")
                                    else "not read (no such file, or not readable)"),
    }
    if isinstance(config_input, dict):
        env_rows["config"] = _cell(config_input.get("path"))
        env_rows["config sha256"] = f"<code>{_cell(config_input.get('sha256') or 'not readable')}</code>"
    for k, v in evidence.thresholds.items():
        env_rows[f"threshold {k}"] = (f"{_cell(option_text(k, v))} "
                                      f"({_cell(evidence.threshold_sources.get(k, 'unknown source'))})")
    for k, v in evidence.targets.items():
        env_rows[f"target {k}"] = _cell("not set" if v is None else v)
    env_html = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in env_rows.items())
    postfix.append(f'<h3>Run environment</h3><table class="gd-env" id="gd-env">{env_html}</table>')
    for part in (prefix, postfix):
        part[:] = [state.redactor.scrub(p) for p in part]


def _trust_html(evidence: Evidence) -> str:
    """Whether this evidence opens real and why not, who signed it, and what it is bound to."""
    opens = evidence.opens_real
    if opens.get("ok"):
        gate = ('<p class="gd-opens yes" id="gd-opens">Opens real: yes, for the deployment it names, while '
                "every subject below still hashes the same and the evidence is younger than the gate's maximum "
                "age.</p>")
    else:
        reasons = "".join(f"<li>{html.escape(str(r))}</li>" for r in opens.get("why", []))
        gate = f'<div class="gd-opens no" id="gd-opens">Opens real: no<ul>{reasons}</ul></div>'
    signer = (f"Signed by key <code>{html.escape(evidence.signed_by)}</code> in "
              f"<code>{html.escape(str(evidence.attestation))}</code> (in-toto statement, DSSE envelope, Ed25519)"
              if evidence.signed_by else "Not signed: no --signing-key or GD_SIGNING_KEY was given")
    rows = "".join(
        f"<tr><td>{html.escape(str((s.get('annotations') or {}).get('role', '')))}</td>"
        f"<td>{html.escape(str(s.get('name')))}</td>"
        f"<td><code>{html.escape(', '.join(f'{k}:{v}' for k, v in (s.get('digest') or {}).items()))}</code></td></tr>"
        for s in evidence.subjects)
    subjects = ('<table class="gd-subjects" id="gd-subjects"><thead><tr><th>Role</th><th>Subject</th><th>Digest</th>'
                f"</tr></thead><tbody>{rows}</tbody></table>" if rows else "<p>Bound to no subject.</p>")
    return (f'<div class="gd-trust" id="gd-trust">{gate}<p class="gd-signer" id="gd-signer">{signer}; run '
            f"<code>{html.escape(evidence.run_id)}</code></p>{subjects}</div>")


# --- pytest-html's results table ----------------------------------------------------------------


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_header(cells: list) -> None:
    cells.insert(2, '<th class="sortable" data-column-type="measured">Measured</th>')
    cells.insert(3, "<th>Threshold</th>")
    cells.insert(4, "<th>Unit</th>")


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_row(report: pytest.TestReport, cells: list) -> None:
    properties = getattr(report, "user_properties", None)  # a collection error's report has none
    found = dict(properties).get("gd_check") if properties else None
    entry: dict[str, Any] = found if isinstance(found, dict) else {}
    threshold = threshold_text(str(entry.get("id") or ""), entry.get("threshold"))
    cells.insert(2, f'<td class="col-measured">{_cell(entry.get("measured"))}</td>')
    cells.insert(3, f"<td>{html.escape(sanitise(threshold))}</td>")
    cells.insert(4, f"<td>{_cell(entry.get('unit'))}</td>")


LOG_KEY = "_gd_html_log"  # the report's attribute holding what its row's log shows


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outside the plugin's wrapper: its entry is final for the phase
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Any:
    """Note, for the results table's log, what the check concluded in this phase, in words."""
    report = yield
    state = state_of(item.config)
    entry = state.entries.get(item.nodeid) if state is not None else None
    if state is None or entry is None or (report.passed and report.when != "call"):
        return report
    outcome = "error" if report.failed and report.when != "call" else report.outcome
    phase = "" if report.when == "call" else f" (in {report.when})"
    message = entry.message if entry.status != "pending" else ""
    setattr(report, LOG_KEY, state.redactor.scrub(f"{outcome.capitalize()}{phase}: {message or outcome}"))
    return report


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_html(report: pytest.TestReport, data: list) -> None:
    """A check's log is what it concluded and what it printed; never a traceback, whose frames show the
    test's arguments as Python reprs (`<deploy_tool.probes.Attempt object at 0x...>`, a Settings dump). The
    terminal keeps the traceback."""
    text = getattr(report, LOG_KEY, None)
    if not isinstance(text, str):
        return
    lines = [html.escape(text) + "\n"]
    for header, content in report.sections:
        lines.append(f"{' ' + html.escape(header) + ' ':-^80}\n{html.escape(content)}")
    data[:] = lines


# --- the written file -----------------------------------------------------------------------------

GENERATED = re.compile(r"<p>Report generated on (\d{2}-\w{3}-\d{4}) at (\d{2}:\d{2}:\d{2}) by ")


@pytest.hookimpl(wrapper=True, trylast=True)  # inside the plugin's wrapper, which scrubs the file after this
def pytest_sessionfinish(session: pytest.Session) -> Any:
    """pytest-html dates its report in local time without a zone: written over in UTC, with the zone."""
    result = yield
    state = state_of(session.config)
    if state is None:
        return result
    path = state.stem.with_suffix(".html")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return result

    def utc(match: re.Match[str]) -> str:
        try:
            local = dt.datetime.strptime(f"{match.group(1)} {match.group(2)}", "%d-%b-%Y %H:%M:%S")
            moment = local.astimezone(dt.timezone.utc)  # a naive time is taken as this host's local time
        except ValueError:
            moment = dt.datetime.now(dt.timezone.utc)
        return f"<p>Report generated on {moment.strftime('%Y-%m-%d %H:%M:%S')} UTC by "

    patched = GENERATED.sub(utc, text, count=1)
    if patched != text:
        from deploy_tool import fileops

        tmp = path.with_name(f".{path.name}.utc.tmp")
        tmp.write_text(patched, encoding="utf-8")
        fileops.replace(tmp, path)
    return result
