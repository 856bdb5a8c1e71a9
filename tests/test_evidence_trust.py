"""Evidence that proves itself (issue 15): each way a hostile review opened `real` without the fact
behind it, kept as a test. The gate reads the run from a signed in-toto statement, recomputes what a
complete run is, compares every target, and hashes again what the run was bound to."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import preflight_tests
from conftest import SuiteRun
from deploy_tool import attest
from deploy_tool.modes.channels import FileChannel
from deploy_tool.sandbox import write_backtest_summary
from deploy_tool.times import iso_utc, utc_now

GD = [sys.executable, "-m", "deploy_tool"]
SUITE_DIR = Path(preflight_tests.__file__).parent
BAD_BACKTEST = {"sharpe": -3.0, "winrate": 0.05, "max_drawdown": 0.6}


def _gd(*args, cwd, env=None):
    return subprocess.run(GD + [str(a) for a in args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def _switch_real(sandbox, evidence_dir, tmp_path, *extra, control_file=None, gate_args=None):
    """`switch --to real` from mock, with the gate pointed at the sandbox's deployment unless `gate_args`
    says otherwise: through the sandbox's admin API and control file, or through `control_file` alone."""
    control = control_file or sandbox.control_file
    FileChannel(str(control)).apply("mock", None, "test", "test", cas=False)
    admin = []
    if control_file is None:
        sandbox.admin.mode = "mock"
        admin = ["--http-admin-url", sandbox.admin_url, "--admin-token-env", sandbox.token_env]
    done = _gd("switch", "--to", "real", "--control-file", control, *admin, "--evidence-dir", evidence_dir,
               "--audit-dir", tmp_path / "audit", *(sandbox.gate_args() if gate_args is None else gate_args), *extra,
               cwd=tmp_path, env={sandbox.token_env: sandbox.token})
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


def _refused(done, *phrases):
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "switch mock -> real: REFUSED" in done.stdout, out
    for phrase in phrases:
        assert phrase in out, out


def _opened(done):
    assert done.returncode == 0, done.stdout + done.stderr
    assert "switch mock -> real: DONE" in done.stdout


def _bad_backtest(tmp_path) -> Path:
    path = tmp_path / "bad-backtest.json"
    write_backtest_summary(path, strategy="bad", **BAD_BACKTEST)
    return path


def _passing(run_suite):
    run = run_suite()
    assert run.evidence["verdict"] == "pass", run.output
    assert len(run.attestations) == 1, run.output
    return run


# --- a complete run is the tool's definition -----------------------------------------------------


def test_a_run_selected_by_node_id_passes_but_does_not_open_real(pytester, monkeypatch, sandbox, tmp_path):
    monkeypatch.setenv(sandbox.token_env, sandbox.token)
    bad = _bad_backtest(tmp_path)
    evidence = tmp_path / "ev"
    result = pytester.runpytest(
        str(SUITE_DIR / "test_okx.py::test_okx_public_time_ok"), str(SUITE_DIR / "test_db.py"),
        str(SUITE_DIR / "test_backtest.py::test_backtest_summary_valid"),
        str(SUITE_DIR / "test_risk.py::test_risk_order_notional_cap"), "-p", "no:cacheprovider",
        *sandbox.preflight_args(), "--backtest-summary", str(bad), "--evidence-dir", str(evidence))
    run = SuiteRun(result, evidence)
    result.assert_outcomes(passed=4)
    assert run.evidence["verdict"] == "pass", run.output  # the run's own verdict: nothing it ran failed
    doc = run.evidence
    assert "backtest_sharpe[bad]" in doc["manifest"]
    assert run.check("backtest_sharpe[bad]")["status"] == "skipped"
    assert "not run" in run.check("backtest_sharpe[bad]")["message"]
    assert doc["opens_real"]["ok"] is False
    run.result.stdout.fnmatch_lines(["*this evidence does not open real*backtest_sharpe[[]bad[]] skipped*"])
    done = _switch_real(sandbox, run.evidence_dir, tmp_path)
    _refused(done, "is not a complete go-live pass", "backtest_sharpe[bad] skipped", "okx_clock_skew skipped",
             "risk_allocation skipped")


def test_the_same_selection_through_gradual_deploy_preflight_does_not_open_real(sandbox, tmp_path):
    bad = _bad_backtest(tmp_path)
    evidence = tmp_path / "ev"
    done = _gd("preflight", *sandbox.preflight_args(), "--backtest-summary", bad, "--evidence-dir", evidence,
               "-k", "okx_public_time_ok or trades_fresh or summary_valid or notional_cap",
               cwd=tmp_path, env={sandbox.token_env: sandbox.token})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "this evidence does not open real" in done.stdout
    (signed,) = evidence.glob("preflight-*.intoto.json")
    assert done.stdout.rstrip().endswith(f"  signed          : {signed}")  # said last, where an operator looks
    _refused(_switch_real(sandbox, evidence, tmp_path), "is not a complete go-live pass",
             "backtest_sharpe[bad] skipped")


def test_a_check_fails_by_its_criterion_even_without_asserts(sandbox, tmp_path):
    """PYTHONOPTIMIZE=1 strips the tests' asserts and --assert=plain leaves them unrewritten: the status
    still follows the criterion."""
    bad = _bad_backtest(tmp_path)
    evidence = tmp_path / "ev"
    done = _gd("preflight", "--assert=plain", *sandbox.preflight_args(), "--backtest-summary", bad,
               "--evidence-dir", evidence, cwd=tmp_path,
               env={sandbox.token_env: sandbox.token, "PYTHONOPTIMIZE": "1", **sandbox.account_env()})
    assert done.returncode == 1, done.stdout + done.stderr
    (path,) = [p for p in evidence.glob("preflight-*.json") if not p.name.endswith(".intoto.json")]
    doc = json.loads(path.read_text())
    checks = {c["id"]: c for c in doc["checks"]}
    assert doc["verdict"] == "fail"
    for name in ("backtest_sharpe[bad]", "backtest_winrate[bad]", "backtest_max_drawdown[bad]"):
        assert checks[name]["status"] == "failed", checks[name]
    assert checks["backtest_sharpe[bad]"]["measured"] == -3.0
    assert "below the minimum" in checks["backtest_sharpe[bad]"]["message"]
    assert checks["okx_clock_skew"]["status"] == "passed"
    _refused(_switch_real(sandbox, evidence, tmp_path), "has verdict 'fail'")


# --- bound to this deployment ---------------------------------------------------------------------


def test_evidence_made_against_the_sandbox_does_not_open_production(run_suite, sandbox, tmp_path):
    """The sandbox's exchange stand-in and SQLite feed, but the production control file: only the control
    file and admin URL were compared before."""
    production = tmp_path / "prod" / "mode.json"
    FileChannel(str(production)).apply("mock", None, "test", "test", cas=False)
    args = sandbox.preflight_args()
    args[args.index("--control-file") + 1] = str(production)
    without_admin = [a for i, a in enumerate(args) if a != "--http-admin-url" and (i == 0 or args[i - 1] != "--http-admin-url")]
    run = run_suite(*without_admin, "--risk-config", str(_risk_file(tmp_path)), sandbox_args=False)
    assert run.evidence["verdict"] == "pass", run.output
    done = _switch_real(sandbox, run.evidence_dir, tmp_path, control_file=production,
                        gate_args=["--trusted-keys", sandbox.trusted_keys,
                                   "--database-url", "postgresql://app@db.prod:5432/trades"])
    _refused(done, f"it checked the exchange at {sandbox.okx_url}, this deployment uses https://www.okx.com",
             "this deployment uses db.prod:5432/trades")
    assert json.loads(production.read_text())["mode"] == "mock"
    # the gate cannot confirm a database it is not told about
    done = _switch_real(sandbox, run.evidence_dir, tmp_path, control_file=production,
                        gate_args=["--trusted-keys", sandbox.trusted_keys, "--okx-base-url", sandbox.okx_url])
    _refused(done, "cannot be matched with this deployment's trades database: this command names none; give "
             "--database-url URL (or DATABASE_URL)")


def _risk_file(tmp_path: Path) -> Path:
    path = tmp_path / "risk.json"
    path.write_text(json.dumps({"allocation": 0.005, "single_trade_max_loss_pct": 0.005,
                                "daily_max_loss_pct": 0.015, "max_order_notional": 50}))
    return path


# --- documents that only look like evidence ---------------------------------------------------------


HAND_WRITTEN = {
    "schema": "gradual-deploy/preflight-evidence/2", "verdict": "pass", "finished_at": "NOW",
    "targets": {}, "checks": [{"id": i, "marker": m, "status": "passed"} for i, m in (
        ("okx_public_time_ok", "okx"), ("trades_fresh", "db"), ("backtest_sharpe", "backtest"),
        ("risk_allocation", "risk"))],
}


def _hand_written(sandbox, directory: Path, **changes) -> Path:
    doc = json.loads(json.dumps(HAND_WRITTEN))
    doc["finished_at"] = iso_utc(utc_now())
    doc["targets"] = {"okx_base_url": sandbox.okx_url, "database_url": sandbox.database_url,
                      "control_file": str(sandbox.control_file)}
    doc.update(changes)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"preflight-{utc_now():%Y%m%dT%H%M%S}Z.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_hand_written_document_does_not_open_real(sandbox, tmp_path):
    path = _hand_written(sandbox, tmp_path / "ev")
    _refused(_switch_real(sandbox, path.parent, tmp_path), "is not signed", "--allow-unsigned")
    # even allowed unsigned, it is not a complete run: the manifest is the tool's, not the document's
    done = _switch_real(sandbox, path.parent, tmp_path, "--allow-unsigned")
    _refused(done, "is not a complete go-live pass", "okx_clock_skew did not run")


def test_evidence_from_before_the_change_says_to_rerun(sandbox, tmp_path):
    path = _hand_written(sandbox, tmp_path / "ev", schema="gradual-deploy/preflight-evidence/1")
    for extra in ((), ("--allow-unsigned",)):
        _refused(_switch_real(sandbox, path.parent, tmp_path, *extra), "older gradual-deploy", "re-run the preflight")


def _resign(run, key_path: Path, change) -> None:
    """Change the signed predicate of `run` and sign it again with the key at key_path."""
    (envelope_path,) = run.attestations
    envelope = json.loads(envelope_path.read_text())
    doc = json.loads(base64.b64decode(envelope["payload"]))
    change(doc["predicate"])
    doc["subject"] = doc["predicate"]["subjects"]
    key = attest.load_signing_key(str(key_path), environ={})
    assert key is not None
    envelope_path.write_text(json.dumps(attest.sign(doc, key)))


def test_a_skipped_list_naming_a_required_check_by_id_alone_refuses_even_signed(run_suite, sandbox, tmp_path):
    run = _passing(run_suite)
    _resign(run, sandbox.signing_key, lambda p: p["skipped"].append({"id": "trades_fresh"}))
    _refused(_switch_real(sandbox, run.evidence_dir, tmp_path), "its skipped list names required checks: trades_fresh")


def test_a_trusted_signer_cannot_shrink_the_manifest(run_suite, sandbox, tmp_path):
    run = _passing(run_suite)

    def shrink(predicate):
        predicate["manifest"] = [m for m in predicate["manifest"] if not m.startswith("backtest")]
        predicate["checks"] = [c for c in predicate["checks"] if not c["id"].startswith("backtest")]

    _resign(run, sandbox.signing_key, shrink)
    _refused(_switch_real(sandbox, run.evidence_dir, tmp_path), "its manifest is not the tool's",
             "backtest_sharpe[sandbox-momentum] did not run")


def test_a_foreign_key_a_tampered_payload_and_another_type_are_refused(run_suite, sandbox, tmp_path):
    run = _passing(run_suite)
    (envelope_path,) = run.attestations
    original = envelope_path.read_text()
    # signed by a key nobody pinned
    other, _, _ = attest.write_key_pair(tmp_path / "other")
    _resign(run, other, lambda p: None)
    _refused(_switch_real(sandbox, run.evidence_dir, tmp_path), "no signature verifies with a trusted key")
    # the payload changed under the original signature
    envelope = json.loads(original)
    body = json.loads(base64.b64decode(envelope["payload"]))
    body["predicate"]["checks"][0]["measured"] = 1
    envelope["payload"] = base64.b64encode(json.dumps(body).encode()).decode()
    envelope_path.write_text(json.dumps(envelope))
    _refused(_switch_real(sandbox, run.evidence_dir, tmp_path), "no signature verifies with a trusted key")
    # a statement of another type, signed by the trusted key
    body["predicateType"] = "https://slsa.dev/provenance/v1"
    key = attest.load_signing_key(str(sandbox.signing_key), environ={})
    assert key is not None
    envelope_path.write_text(json.dumps(attest.sign(body, key)))
    _refused(_switch_real(sandbox, run.evidence_dir, tmp_path), "is not gradual-deploy preflight evidence")
    # the signature is over PAE(type, body): the same signature under another payloadType fails
    envelope = json.loads(original)
    envelope["payloadType"] = "application/json"
    envelope_path.write_text(json.dumps(envelope))
    _refused(_switch_real(sandbox, run.evidence_dir, tmp_path), "payloadType 'application/json'")
    # no pinned key at all
    envelope_path.write_text(original)
    done = _switch_real(sandbox, run.evidence_dir, tmp_path,
                        gate_args=[a if a != str(sandbox.trusted_keys) else str(tmp_path / "none.pem")
                                   for a in sandbox.gate_args()])
    _refused(done, "no trusted keys at", "gradual-deploy keygen")
    # and the untouched original still opens real
    _opened(_switch_real(sandbox, run.evidence_dir, tmp_path))


def test_unsigned_evidence_opens_only_with_allow_unsigned_and_is_audited_forced(run_suite, sandbox, tmp_path):
    run = _passing(run_suite)
    run.attestations[0].unlink()
    _refused(_switch_real(sandbox, run.evidence_dir, tmp_path), "is not signed")
    done = _switch_real(sandbox, run.evidence_dir, tmp_path, "--allow-unsigned")
    _opened(done)
    audit = [json.loads(line) for f in (tmp_path / "audit").glob("deploy-*.jsonl") for line in f.read_text().splitlines()]
    assert audit[-1]["result"] == "done" and audit[-1]["forced"] is True
    assert "UNSIGNED" in audit[-1]["detail"]


# --- exact numbers ------------------------------------------------------------------------------------


def test_measured_values_and_thresholds_are_written_unrounded(run_suite, sandbox, tmp_path):
    summary = tmp_path / "dd.json"
    write_backtest_summary(summary, strategy="dd", max_drawdown=0.0198735, sharpe=1.23456789)
    run = run_suite("--backtest-summary", str(summary), "--max-drawdown", "0.0198", "--min-sharpe", "0.0004")
    dd = run.check("backtest_max_drawdown[dd]")
    assert (dd["measured"], dd["threshold"], dd["status"]) == (0.0198735, 0.0198, "failed")
    sharpe = run.check("backtest_sharpe[dd]")
    assert (sharpe["measured"], sharpe["threshold"]) == (1.23456789, 0.0004)
    assert run.evidence["thresholds"]["min_sharpe"] == 0.0004
    assert run.evidence["threshold_sources"]["min_sharpe"] == "the command line"
    assert run.evidence["threshold_sources"]["min_winrate"] == "the default"


# --- bound to what goes live --------------------------------------------------------------------------


@pytest.mark.parametrize("what", ["backtest", "risk-file", "risk-api", "subject"])
def test_a_change_after_the_pass_invalidates_the_evidence(run_suite, sandbox, tmp_path, what):
    risk = _risk_file(tmp_path)
    extra = ["--risk-config", str(risk)] if what == "risk-file" else []
    run = run_suite(*extra)
    assert run.evidence["verdict"] == "pass", run.output
    roles = {(s["annotations"]["role"], s["name"]) for s in run.evidence["subjects"]}
    assert ("backtest", str(sandbox.backtest_summary.resolve())) in roles
    assert ("subject", str(sandbox.source_dir.resolve())) in roles
    if what == "backtest":
        write_backtest_summary(sandbox.backtest_summary, sharpe=0.9)
        changed = f"backtest {sandbox.backtest_summary.resolve()} changed since the run"
    elif what == "risk-file":
        risk.write_text(risk.read_text().replace("0.015", "0.019"))
        changed = f"risk_config {risk.resolve()} changed since the run"
    elif what == "risk-api":
        sandbox.admin.config["daily_max_loss_pct"] = 0.019
        changed = f"risk_config GET {sandbox.admin_url}/config changed since the run"
    else:
        (sandbox.source_dir / "strategies" / "momentum.py").write_text("def signal(bar):\n    return True\n")
        changed = f"subject {sandbox.source_dir.resolve()} changed since the run"
    done = _switch_real(sandbox, run.evidence_dir, tmp_path)
    _refused(done, "no longer matches what goes live", changed, "run the preflight again")


def test_one_run_opens_one_deployment(run_suite, sandbox, tmp_path):
    run = _passing(run_suite)
    _opened(_switch_real(sandbox, run.evidence_dir, tmp_path))
    _opened(_switch_real(sandbox, run.evidence_dir, tmp_path))  # the same deployment again: fine
    # a second deployment whose evidence dir is shared, pointed at the very same targets but another
    # control file: the targets refuse it first; with --allow-unsigned and the plain JSON edited to name
    # it, the ledger still does
    other = tmp_path / "other" / "mode.json"
    doc = json.loads(run.json_files[0].read_text())
    doc["targets"].update(control_file=str(other), http_admin_url=None)
    doc["subjects"] = [s for s in doc["subjects"] if s["annotations"]["role"] != "risk_config"]
    doc["manifest"] = [m for m in doc["manifest"] if not m.startswith("admin_")]
    doc["checks"] = [c for c in doc["checks"] if not c["id"].startswith("admin_")]
    doc["scope"]["admin"] = False
    run.json_files[0].write_text(json.dumps(doc))
    run.attestations[0].unlink()
    done = _switch_real(sandbox, run.evidence_dir, tmp_path, "--allow-unsigned", control_file=other)
    _refused(done, "this run already opened real on another deployment")


# --- keygen and verify --------------------------------------------------------------------------------


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(tmp_path):
    done = _gd("keygen", "--out", tmp_path / "keys", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    private, public = tmp_path / "keys" / "signing-key.pem", tmp_path / "keys" / "signing-key.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert "PRIVATE KEY" not in done.stdout + done.stderr
    for line in private.read_text().splitlines()[1:-1]:
        assert line not in done.stdout
    key = attest.load_signing_key(str(private), environ={})
    assert key is not None and key.keyid in done.stdout
    assert set(attest.load_trusted(public)) == {key.keyid}
    again = _gd("keygen", "--out", tmp_path / "keys", cwd=tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_verify_offline_with_the_public_key(run_suite, sandbox, tmp_path):
    run = _passing(run_suite)
    envelope = run.attestations[0]
    ok = _gd("verify", envelope, "--trusted-keys", sandbox.trusted_keys, "--subject", sandbox.backtest_summary,
             cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    key = attest.load_signing_key(str(sandbox.signing_key), environ={})
    assert key is not None
    for phrase in ("VERIFIED", f"signer   : {key.keyid}", "verdict  : PASS", f"okx_base_url = {sandbox.okx_url}",
                   "finished :", "matches  :"):
        assert phrase in ok.stdout, ok.stdout
    as_json = _gd("verify", run.json_files[0], "--trusted-keys", sandbox.trusted_keys, "--json", cwd=tmp_path)
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 0 and report["ok"] is True and report["signer"] == key.keyid
    # a file that is not a subject, a key that is not the signer's, a failed run: exit 1 with the reason
    (tmp_path / "other.json").write_text("{}")
    mismatch = _gd("verify", envelope, "--trusted-keys", sandbox.trusted_keys, "--subject", tmp_path / "other.json",
                   cwd=tmp_path)
    assert mismatch.returncode == 1 and "matches no subject of the evidence" in mismatch.stdout
    _, other_public, _ = attest.write_key_pair(tmp_path / "other")
    foreign = _gd("verify", envelope, "--trusted-keys", other_public, cwd=tmp_path)
    assert foreign.returncode == 1 and "no signature verifies with a trusted key" in foreign.stdout
    failing = run_suite("--min-sharpe", "99")
    failed = _gd("verify", failing.attestations[0], "--trusted-keys", sandbox.trusted_keys, cwd=tmp_path)
    assert failed.returncode == 1 and "verdict  : FAIL" in failed.stdout
    missing = _gd("verify", tmp_path / "nope.json", "--trusted-keys", sandbox.trusted_keys, cwd=tmp_path)
    assert missing.returncode == 2 and "no such file" in missing.stderr and "Traceback" not in missing.stderr


def test_the_signing_key_never_reaches_output_or_evidence(run_suite, sandbox, tmp_path, monkeypatch):
    pem = sandbox.signing_key.read_text()
    monkeypatch.setenv("GD_SIGNING_KEY", pem)
    args = sandbox.preflight_args()
    i = args.index("--signing-key")
    del args[i:i + 2]
    run = run_suite(*args, "-v", "--min-sharpe", "99", sandbox_args=False)  # a failing run prints the most
    assert run.attestations, run.output
    lines = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    written = run.output + run.html + run.json_files[0].read_text() + run.attestations[0].read_text()
    for line in lines:
        assert line not in written
    assert run.evidence["signed_by"]
    monkeypatch.setenv("GD_SIGNING_KEY", "-----BEGIN PRIVATE KEY-----\nnot a key at all, secret\n-----END PRIVATE KEY-----")
    unusable = run_suite(*args, sandbox_args=False)
    assert unusable.result.ret == pytest.ExitCode.USAGE_ERROR
    assert "not an unencrypted PEM private key" in unusable.output
    assert "not a key at all" not in unusable.output


def test_the_html_says_who_signed_what_it_is_bound_to_and_whether_it_opens_real(run_suite, sandbox):
    run = _passing(run_suite)
    page = run.html
    doc = run.evidence
    assert 'id="gd-opens"' in page and "Opens real: yes" in page
    assert page.index('id="gd-verdict"') < page.index('id="gd-opens"') < page.index('id="gd-checks"')
    assert doc["signed_by"] in page and doc["attestation"] in page
    for item in doc["subjects"]:
        assert item["name"] in page and item["digest"]["sha256"] in page
    partial = run_suite("-m", "not db")
    assert partial.evidence["verdict"] == "pass"
    assert "Opens real: no" in partial.html and "trades_fresh skipped" in partial.html
    args = sandbox.preflight_args()
    i = args.index("--signing-key")
    unsigned = run_suite(*args[:i], *args[i + 2:], sandbox_args=False)
    assert not unsigned.attestations
    assert "Not signed" in unsigned.html and "it is not signed" in unsigned.html


def test_a_ramp_verifies_the_evidence_as_switch_does(run_suite, sandbox, tmp_path):
    run = _passing(run_suite)
    _opened(_switch_real(sandbox, run.evidence_dir, tmp_path))

    def ramp(*extra):
        return _gd("ramp", *sandbox.watch_args(), "--evidence-dir", run.evidence_dir, "--steps", "0.5%",
                   "--hold", "0.2s", "--interval", "0.1s", *extra, cwd=tmp_path, env={sandbox.token_env: sandbox.token})

    other, _, _ = attest.write_key_pair(tmp_path / "other")
    original = run.attestations[0].read_text()
    _resign(run, other, lambda p: None)
    done = ramp("--trusted-keys", sandbox.trusted_keys)
    assert done.returncode == 1 and "ramp: REFUSED: evidence gate" in done.stdout, done.stdout + done.stderr
    assert "no signature verifies with a trusted key" in done.stdout
    run.attestations[0].write_text(original)
    write_backtest_summary(sandbox.backtest_summary, sharpe=0.9)
    done = ramp("--trusted-keys", sandbox.trusted_keys)
    assert done.returncode == 1 and "changed since the run" in done.stdout, done.stdout + done.stderr


def test_an_older_signed_pass_put_beside_a_newer_run_does_not_stand_in_for_it(run_suite, sandbox, tmp_path):
    passed = _passing(run_suite)
    failed = run_suite("--min-sharpe", "99", evidence_dir=passed.evidence_dir)
    assert failed.result.ret == 1
    (older,) = passed.attestations
    (newer,) = [p for p in passed.evidence_dir.glob("preflight-*.intoto.json") if p != older]
    newer.write_text(older.read_text())
    _refused(_switch_real(sandbox, passed.evidence_dir, tmp_path), "belongs to another run")
    # and named like the newer run's stem as well: the plain JSON's run id still tells them apart
    newer_json = newer.with_name(newer.name.replace(".intoto.json", ".json"))
    doc = json.loads(newer_json.read_text())
    doc["html_report"] = older.name.replace(".intoto.json", ".html")
    newer_json.write_text(json.dumps(doc))
    _refused(_switch_real(sandbox, passed.evidence_dir, tmp_path), "belongs to another run")


@pytest.mark.parametrize("override", [["-c", "other.ini"], ["--rootdir=/tmp"], ["-o", "python_functions=test_okx*"],
                                      ["-opython_functions=x"], ["--override-ini=addopts=-k okx"], ["--noconftest"],
                                      ["-p", "evil_gd"], ["-pevil_gd"], ["-qp", "evil_gd"], ["-qcmy.ini"],
                                      ["-xo", "python_functions=x"]])
def test_gradual_deploy_preflight_refuses_to_replace_its_own_configuration(tmp_path, override):
    done = _gd("preflight", *override, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "runs under its own pytest configuration" in done.stderr and "--config FILE" in done.stderr
    assert not (tmp_path / "data").exists()  # refused before anything ran


def test_a_signing_key_file_on_the_command_line_wins_over_the_environment(run_suite, sandbox, tmp_path, monkeypatch):
    other, _, _ = attest.write_key_pair(tmp_path / "env-key")
    monkeypatch.setenv("GD_SIGNING_KEY", other.read_text())
    run = run_suite()  # the sandbox's --signing-key is on the command line
    key = attest.load_signing_key(str(sandbox.signing_key), environ={})
    assert key is not None and run.evidence["signed_by"] == key.keyid
    args = sandbox.preflight_args()
    i = args.index("--signing-key")
    from_env = run_suite(*args[:i], *args[i + 2:], sandbox_args=False)
    env_key = attest.load_signing_key(str(other), environ={})
    assert env_key is not None and from_env.evidence["signed_by"] == env_key.keyid


def test_a_forced_switch_elsewhere_does_not_use_up_the_run(run_suite, sandbox, tmp_path):
    run = _passing(run_suite)
    elsewhere = tmp_path / "elsewhere" / "mode.json"
    done = _switch_real(sandbox, run.evidence_dir, tmp_path, "--force", control_file=elsewhere)
    assert done.returncode == 0 and "forced past the evidence gate" in done.stdout, done.stdout + done.stderr
    _opened(_switch_real(sandbox, run.evidence_dir, tmp_path))


def test_the_ramps_own_allocation_keeps_the_evidence_but_a_loss_limit_does_not(run_suite, sandbox, tmp_path):
    run = _passing(run_suite)
    sandbox.admin.config["allocation"] = 0.0075  # what POST /allocation does at a ramp step
    _opened(_switch_real(sandbox, run.evidence_dir, tmp_path))
    sandbox.admin.config["single_trade_max_loss_pct"] = 0.009
    _refused(_switch_real(sandbox, run.evidence_dir, tmp_path), "risk_config GET", "changed since the run")


def test_an_unsigned_document_cannot_drop_the_channel_checks_from_its_scope(run_suite, sandbox, tmp_path):
    run = _passing(run_suite)
    doc = json.loads(run.json_files[0].read_text())
    doc["scope"].update(admin=False, control=False)
    dropped = {"admin_health", "admin_mode", "control_file_valid", "control_dir_writable"}
    doc["manifest"] = [m for m in doc["manifest"] if m not in dropped]
    doc["checks"] = [c for c in doc["checks"] if c["id"] not in dropped]
    run.json_files[0].write_text(json.dumps(doc))
    run.attestations[0].unlink()
    _refused(_switch_real(sandbox, run.evidence_dir, tmp_path, "--allow-unsigned"), "admin_health did not run",
             "control_file_valid did not run")


# --- the second hostile review -------------------------------------------------------------------------


LOOK_ALIKE = """
import pytest
from deploy_tool.criteria import Criterion

pytestmark = pytest.mark.backtest


def _ok(name, check):
    check(Criterion(name, "backtest", True, 1.0, 0.0, "ratio", "looks fine"))


def test_backtest_summary_valid(strategy, check): _ok("backtest_summary_valid", check)
def test_backtest_sharpe(strategy, check): _ok("backtest_sharpe", check)
def test_backtest_winrate(strategy, check): _ok("backtest_winrate", check)
def test_backtest_max_drawdown(strategy, check): _ok("backtest_max_drawdown", check)
def test_backtest_fresh(strategy, check): _ok("backtest_fresh", check)
"""


def test_a_look_alike_suite_module_is_no_check_and_closes_real(sandbox, tmp_path):
    fake = tmp_path / "fake" / "preflight_tests"  # no __init__.py: as a package it would not even import
    fake.mkdir(parents=True)
    (fake / "test_backtest.py").write_text(LOOK_ALIKE)
    evidence = tmp_path / "ev"
    done = _gd("preflight", *sandbox.preflight_args(), "--backtest-summary", _bad_backtest(tmp_path),
               "--evidence-dir", evidence, "--ignore", SUITE_DIR / "test_backtest.py", fake, cwd=tmp_path,
               env={sandbox.token_env: sandbox.token})
    assert "INTERNALERROR" not in done.stdout + done.stderr, done.stdout + done.stderr
    (path,) = [p for p in evidence.glob("preflight-*.json") if not p.name.endswith(".intoto.json")]
    doc = json.loads(path.read_text())
    checks = {c["id"]: c["status"] for c in doc["checks"]}
    assert checks["backtest_sharpe[bad]"] == "skipped"
    assert sorted(doc["foreign_tests"]) == sorted(f"test_backtest.py::test_{name}[bad]" for name in (
        "backtest_summary_valid", "backtest_sharpe", "backtest_winrate", "backtest_max_drawdown", "backtest_fresh"))
    _refused(_switch_real(sandbox, evidence, tmp_path), "backtest_sharpe[bad] skipped", "not the suite's")


def test_a_strategy_filter_is_a_diagnostic_run_that_opens_nothing(run_suite, sandbox, tmp_path):
    summary = tmp_path / "two.json"
    now = iso_utc(utc_now())
    summary.write_text(json.dumps({"strategies": [
        {"strategy": "good", "sharpe": 1.5, "winrate": 0.6, "max_drawdown": 0.02, "trades": 200, "generated_at": now},
        {"strategy": "bad", **BAD_BACKTEST, "trades": 200, "generated_at": now}]}))
    run = run_suite("--backtest-summary", str(summary), "--strategy", "good")
    assert run.evidence["verdict"] == "pass", run.output
    assert "backtest_sharpe[bad]" in run.evidence["manifest"]
    _refused(_switch_real(sandbox, run.evidence_dir, tmp_path), "backtest_sharpe[bad] skipped")


def test_a_decoy_risk_file_beside_an_admin_api_that_serves_config_does_not_open_real(run_suite, sandbox, tmp_path):
    sandbox.admin.config["allocation"] = 0.5  # what the system really runs with
    run = run_suite("--risk-config", str(_risk_file(tmp_path)))
    assert run.evidence["verdict"] == "pass", run.output
    _refused(_switch_real(sandbox, run.evidence_dir, tmp_path), "serves its risk configuration at GET /config",
             "the system's allocation is 0.5 now, above the 0.01 the run allowed")


def test_an_allocation_raised_after_the_pass_does_not_open_real(run_suite, sandbox, tmp_path):
    run = _passing(run_suite)
    sandbox.admin.config["allocation"] = 1.0
    _refused(_switch_real(sandbox, run.evidence_dir, tmp_path), "the system's allocation is 1.0 now")


def test_a_subject_is_hashed_through_its_symlinks(run_suite, sandbox, tmp_path):
    system = tmp_path / "system"
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "strategy.py").write_text("A = 1\n")
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "strategy.py").write_text("A = 2\n")
    (tmp_path / "params.py").write_text("LIMIT = 1\n")
    system.mkdir()
    os.symlink(tmp_path / "v1", system / "strategies")
    os.symlink(tmp_path / "params.py", system / "params.py")
    run = run_suite("--subject", str(system))
    assert run.evidence["verdict"] == "pass", run.output
    _opened(_switch_real(sandbox, run.evidence_dir, tmp_path))
    (tmp_path / "params.py").write_text("LIMIT = 100\n")  # the linked file's content
    _refused(_switch_real(sandbox, run.evidence_dir, tmp_path), f"subject {system} changed since the run")
    (tmp_path / "params.py").write_text("LIMIT = 1\n")
    _opened(_switch_real(sandbox, run.evidence_dir, tmp_path))
    (system / "strategies").unlink()  # the linked directory, re-pointed
    os.symlink(tmp_path / "v2", system / "strategies")
    _refused(_switch_real(sandbox, run.evidence_dir, tmp_path), f"subject {system} changed since the run")


def test_a_newer_failed_run_backdated_by_hand_still_is_the_newest(run_suite, sandbox, tmp_path):
    passed = _passing(run_suite)
    failed = run_suite("--min-sharpe", "99", evidence_dir=passed.evidence_dir)
    assert failed.result.ret == 1
    (newer,) = [p for p in passed.evidence_dir.glob("preflight-*.json")
                if not p.name.endswith(".intoto.json") and p != passed.json_files[0]]
    doc = json.loads(newer.read_text())
    doc["finished_at"] = doc["started_at"] = "2020-01-01T00:00:00.000Z"
    newer.write_text(json.dumps(doc))
    _refused(_switch_real(sandbox, passed.evidence_dir, tmp_path), str(newer))


def test_verify_of_a_json_refuses_another_runs_signature_copied_beside_it(run_suite, sandbox, tmp_path):
    passed = _passing(run_suite)
    failed = run_suite("--min-sharpe", "99", evidence_dir=tmp_path / "failed")
    failed.attestations[0].write_text(passed.attestations[0].read_text())
    done = _gd("verify", failed.json_files[0], "--trusted-keys", sandbox.trusted_keys, cwd=tmp_path)
    assert done.returncode == 1, done.stdout
    assert "is the signature of another run" in done.stdout
    as_json = json.loads(_gd("verify", passed.json_files[0], "--trusted-keys", sandbox.trusted_keys, "--json",
                             cwd=tmp_path).stdout)
    assert as_json["ok"] and as_json["run_id"] == passed.evidence["run_id"]


def test_user_mistakes_end_in_a_message_not_a_traceback(sandbox, tmp_path):
    config = tmp_path / "gd.toml"
    config.write_bytes(b"[gradual-deploy]\nmin_sharpe = 0.3 # \xff\xfe\n")
    done = _gd("preflight", *sandbox.preflight_args(), "--config", config, "--evidence-dir", tmp_path / "ev",
               cwd=tmp_path, env={sandbox.token_env: sandbox.token})
    assert done.returncode == 4 and "is not valid TOML" in done.stdout + done.stderr, done.stdout + done.stderr
    assert "INTERNALERROR" not in done.stdout + done.stderr
    typo = _gd("preflight", *sandbox.preflight_args(), "--evidence-dir", tmp_path / "ev", cwd=tmp_path,
               env={sandbox.token_env: sandbox.token, "GD_CONFIG": str(_toml(tmp_path, 'skip_db_check = "flase"'))})
    assert typo.returncode == 4 and "expected true or false" in typo.stdout + typo.stderr, typo.stdout + typo.stderr
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "test_broken.py").write_text("import no_such_module\n")
    collected = _gd("preflight", *sandbox.preflight_args(), "--evidence-dir", tmp_path / "ev2", broken, cwd=tmp_path,
                    env={sandbox.token_env: sandbox.token})
    assert "INTERNALERROR" not in collected.stdout + collected.stderr, collected.stdout + collected.stderr
    assert collected.returncode != 0


def _toml(tmp_path: Path, line: str) -> Path:
    path = tmp_path / "typo.toml"
    path.write_text(f"[gradual-deploy]\n{line}\n")
    return path



def test_allow_unsigned_never_waves_through_a_signature_that_fails(run_suite, sandbox, tmp_path):
    run = _passing(run_suite)
    other, _, _ = attest.write_key_pair(tmp_path / "other")
    _resign(run, other, lambda p: None)  # present, but signed by a key nobody pinned
    _refused(_switch_real(sandbox, run.evidence_dir, tmp_path, "--allow-unsigned"),
             "no signature verifies with a trusted key")


def test_a_ledger_line_the_gate_cannot_read_refuses_real(run_suite, sandbox, tmp_path):
    run = _passing(run_suite)
    (run.evidence_dir / "opened-real.jsonl").write_text('{"run_id": "x", "deployment": "y"}\n{torn\n')
    _refused(_switch_real(sandbox, run.evidence_dir, tmp_path), "has a line it cannot read (line 2)",
             "fix or restore that file")


@pytest.mark.parametrize("database_url,phrase", [
    ("postgresql://u:p@db:54x2/t", "it checked the trades database"),
    ("postgresql://app@/trades?host=db.prod", "this deployment uses db.prod:5432/trades"),
])
def test_a_database_url_the_gate_cannot_match_refuses_without_a_traceback(run_suite, sandbox, tmp_path,
                                                                           database_url, phrase):
    run = _passing(run_suite)
    gate = [a if a != sandbox.database_url else database_url for a in sandbox.gate_args()]
    _refused(_switch_real(sandbox, run.evidence_dir, tmp_path, gate_args=gate), phrase)
