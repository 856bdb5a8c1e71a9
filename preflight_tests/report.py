"""The HTML evidence: pytest-html's report with the verdict first, then every check with measured value,
threshold, unit and status, then the run environment; secrets masked. Registered by the plugin when the
suite runs; reads the same evidence model the JSON twin is written from.
"""

from __future__ import annotations

import html
import sys
from typing import Any

import pytest

import deploy_tool
from deploy_tool.evidence import Evidence, json_number
from deploy_tool.redact import sanitise
from deploy_tool.times import format_duration
from preflight_tests.plugin import state_of


def _cell(value: Any) -> str:
    """A value for a person: floats to 6 significant digits (the JSON holds them exactly); a measured text
    (a server's mode) with its control characters written out, then HTML-escaped."""
    if isinstance(value, float):
        return html.escape(f"{value:.6g}")
    return "" if value is None else html.escape(sanitise(str(json_number(value))))


def _plain(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _escape_tree(value: Any) -> Any:
    # pytest-html's environment table inserts values as HTML; escape them (control characters too).
    if isinstance(value, str):
        return html.escape(sanitise(value))
    if isinstance(value, dict):
        return {k: _escape_tree(v) for k, v in value.items()}
    return value


@pytest.hookimpl(optionalhook=True)
def pytest_metadata(metadata: dict, config: pytest.Config) -> None:
    """The environment of the report: what ran, where, by whom, against what; secrets masked."""
    state = state_of(config)
    if state is None:
        return
    evidence = state.evidence()
    metadata["gradual-deploy"] = deploy_tool.__version__
    metadata["Host"] = evidence.host
    metadata["Actor"] = evidence.actor
    metadata["Thresholds"] = {k: str(v) for k, v in evidence.thresholds.items()}
    metadata["Targets"] = {k: str(v) for k, v in evidence.targets.items()}
    for key in list(metadata):
        metadata[key] = _escape_tree(state.redactor.scrub_data(metadata[key]))


@pytest.hookimpl(optionalhook=True)
def pytest_html_report_title(report: Any) -> None:
    report.title = "gradual-deploy go-live preflight"


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_summary(prefix: list, summary: list, postfix: list, session: pytest.Session) -> None:
    """Verdict first, then every check with measured value, threshold, unit and status."""
    state = state_of(session.config)
    if state is None:
        return
    evidence = state.evidence()
    checks = evidence.checks
    verdict = evidence.verdict
    counts = {s: sum(1 for c in checks if c.status == s) for s in ("passed", "failed", "skipped")}
    why = "" if verdict == "pass" else (
        " (no check passed)" if counts["passed"] == 0 else f" ({counts['failed']} check(s) failed)"
    )
    prefix.append(
        f'<div class="gd-verdict {verdict}" id="gd-verdict">Verdict: {verdict.upper()}{html.escape(why)}'
        f" &mdash; {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped</div>"
    )
    prefix.append(_trust_html(evidence))
    rows = "".join(
        "<tr>"
        f'<td class="{c.status}">{c.status}</td><td>{html.escape(c.id)}</td>'
        f'<td>{html.escape(str(c.marker or ""))}{" (required)" if c.required else ""}</td>'
        f"<td>{_cell(c.measured)}</td><td>{_cell(c.threshold)}</td><td>{_cell(c.unit)}</td>"
        f"<td>{html.escape(c.message or '')}</td>"
        "</tr>"
        for c in checks
    )
    prefix.append(
        '<table class="gd-checks" id="gd-checks"><thead><tr><th>Status</th><th>Check</th><th>Group</th>'
        "<th>Measured</th><th>Threshold</th><th>Unit</th><th>Message</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )
    env_rows = {
        "tool version": evidence.tool_version,
        "host": evidence.host,
        "actor": evidence.actor,
        "python": sys.version.split()[0],
        **{f"threshold {k}": f"{_plain(v)} ({evidence.threshold_sources.get(k, 'unknown source')})"
           for k, v in evidence.thresholds.items()},
        **{f"target {k}": v for k, v in evidence.targets.items()},
        "backtest max age": format_duration(state.settings.backtest_max_age),
    }
    env_html = "".join(f"<tr><th>{html.escape(k)}</th><td>{_cell(v)}</td></tr>" for k, v in env_rows.items())
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
    cells.insert(2, f'<td class="col-measured">{_cell(entry.get("measured"))}</td>')
    cells.insert(3, f"<td>{_cell(entry.get('threshold'))}</td>")
    cells.insert(4, f"<td>{_cell(entry.get('unit'))}</td>")
