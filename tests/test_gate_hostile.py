"""The gate in front of `real`, attacked: runs that did not measure, partial runs, forged, foreign and
malformed evidence. Each must leave `real` closed, with the reason, an audit line and no traceback."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import preflight_tests
from waiting import wait_until
from deploy_tool.modes.channels import FileChannel
from deploy_tool.sandbox import AdminApi
from deploy_tool.times import utc_now

GD = [sys.executable, "-m", "deploy_tool"]
SUITE_DIR = Path(preflight_tests.__file__).parent


def _wait_for_a_hanging_check(sandbox, proc, already: int, timeout: float = 60.0) -> None:
    """Return once the run in `proc` has called the (hanging) exchange: a check is in progress. The
    exchange had answered `already` requests before the run started."""
    if not sandbox.exchange.wait_for_requests(already + 1, timeout):
        proc.kill()
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"the run never called the exchange within {timeout:g} s:\n{out}{err}")


def _wait_until_past_the_second_of(evidence: Path, timeout: float = 5.0) -> None:
    """Wait until the UTC clock has left the whole second in the name of `evidence` (preflight-<stamp>...)."""
    stamp = dt.datetime.strptime(evidence.name[len("preflight-"):][:16], "%Y%m%dT%H%M%SZ")
    later = stamp.replace(tzinfo=dt.timezone.utc) + dt.timedelta(seconds=1)
    wait_until(lambda: utc_now() >= later, f"the clock to reach {later}", timeout)


def _gd(*args, cwd, env=None):
    """The command in a process of its own, run from `cwd` (a test's own directory: the defaults under
    data/ land there, never in the checkout)."""
    return subprocess.run(GD + list(args), capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})}, cwd=cwd)


def _channels(sandbox):
    """The sandbox's two channels (the admin API and the control file), as the suite checked them."""
    return ["--http-admin-url", sandbox.admin_url, "--admin-token-env", sandbox.token_env, "--control-file",
            str(sandbox.control_file)]


def _switch_real(sandbox, evidence_dir, tmp_path, *extra):
    """`switch --to real` through the sandbox's channels, from mock, compared with the sandbox's exchange,
    database and pinned key; the run and its audit lines."""
    FileChannel(str(sandbox.control_file)).apply("mock", None, "test", "test", cas=False)
    sandbox.admin.change({"mode": "mock"})
    done = _gd("switch", "--to", "real", *_channels(sandbox), "--evidence-dir", str(evidence_dir), "--audit-dir",
               str(tmp_path / "audit"), *sandbox.gate_args(), *extra, cwd=tmp_path,
               env={sandbox.token_env: sandbox.token})
    audit = [json.loads(line) for f in (tmp_path / "audit").glob("deploy-*.jsonl") for line in f.read_text().splitlines()]
    return done, audit


def _refused(done, audit, *phrases):
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "switch mock -> real: REFUSED" in done.stdout, out
    assert "Traceback" not in out
    for phrase in phrases:
        assert phrase in out, out
    assert audit and audit[-1]["result"] == "refused" and audit[-1]["to"] == "real"


@pytest.mark.parametrize("flag", ["--setup-plan", "--setup-only", "--collect-only"])
def test_a_run_that_never_called_a_check_is_no_pass(run_suite, sandbox, tmp_path, flag):
    run = run_suite(flag)
    assert run.result.ret != 0, run.output
    doc = run.evidence
    assert doc["verdict"] == "fail"
    assert {c["status"] for c in doc["checks"]} == {"failed"}
    assert all("never completed" in c["message"] for c in doc["checks"])
    done, audit = _switch_real(sandbox, run.evidence_dir, tmp_path)
    _refused(done, audit, "has verdict 'fail', not pass")


def test_ctrl_c_during_a_hanging_check_leaves_no_pass(pytester, sandbox, tmp_path, monkeypatch):
    monkeypatch.setenv(sandbox.token_env, sandbox.token)
    sandbox.exchange.behaviour.delay_ms = 4000  # every exchange call hangs for 4 s
    evidence = tmp_path / "ev"
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "--pyargs", "preflight_tests", "-p", "no:cacheprovider",
                             *sandbox.preflight_args(), "--evidence-dir", str(evidence)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    _wait_for_a_hanging_check(sandbox, proc, already=0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out + err
    (path,) = [p for p in evidence.glob("preflight-*.json") if not p.name.endswith(".intoto.json")]
    doc = json.loads(path.read_text())
    assert doc["verdict"] == "fail"
    unfinished = [c for c in doc["checks"] if "never completed: the run stopped early" in c["message"]]
    assert unfinished and all(c["status"] == "failed" for c in unfinished)
    done, audit = _switch_real(sandbox, evidence, tmp_path)
    _refused(done, audit)


def test_evidence_of_a_partial_suite_does_not_open_real(run_suite, pytester, sandbox, tmp_path):
    evidence = tmp_path / "only-admin"
    result = pytester.runpytest("--pyargs", "preflight_tests.test_admin", "-p", "no:cacheprovider",
                                *sandbox.preflight_args(), "--evidence-dir", str(evidence))
    (path,) = [p for p in evidence.glob("preflight-*.json") if not p.name.endswith(".intoto.json")]
    doc = json.loads(path.read_text())
    assert result.ret == 0 and doc["verdict"] == "pass"
    # every check of the manifest the run did not collect is in the evidence, as not run
    absent = {c["id"]: c for c in doc["checks"] if c["id"] in doc["manifest"] and c["marker"] != "admin"}
    assert {"okx_public_time_ok", "trades_fresh", "backtest_sharpe[sandbox-momentum]", "risk_allocation"} <= set(absent)
    assert all(c["status"] == "skipped" and c["required"] and c["message"].startswith("not run: ")
               for c in absent.values())
    assert doc["opens_real"]["ok"] is False
    result.stdout.fnmatch_lines(["*this evidence does not open real: required checks not passed: "
                                 "okx_public_time_ok skipped, *trades_fresh skipped, "
                                 "backtest_summary_valid[[]sandbox-momentum[]] skipped*"])
    done, audit = _switch_real(sandbox, evidence, tmp_path)
    _refused(done, audit, "is not a complete go-live pass (required checks not passed: okx_public_time_ok skipped",
             "trades_fresh skipped", "backtest_summary_valid[sandbox-momentum] skipped", "risk_allocation skipped")

    ignored = run_suite("--ignore", str(SUITE_DIR / "test_db.py"))
    assert ignored.evidence["verdict"] == "pass"
    assert ignored.check("trades_fresh")["status"] == "skipped"
    done, audit = _switch_real(sandbox, ignored.evidence_dir, tmp_path)
    _refused(done, audit, "is not a complete go-live pass (required checks not passed: trades_fresh skipped)")


def _doc_from_a_real_run(run_suite):
    run = run_suite()
    assert run.evidence["verdict"] == "pass", run.output
    return run.json_files[0], run.evidence


def _resign(path, doc, key_dir):
    """Put `doc` in the JSON at `path` and its envelope beside it, signed with the private key in `key_dir`
    (made there when there is none)."""
    from deploy_tool.attest import PRIVATE_NAME, load_signing_key, sign, statement, write_key_pair
    from deploy_tool.evidence import attestation_path

    if not (Path(key_dir) / PRIVATE_NAME).exists():
        write_key_pair(key_dir)
    key = load_signing_key(str(Path(key_dir) / PRIVATE_NAME), environ={})
    path.write_text(json.dumps(doc))
    attestation_path(path).write_text(json.dumps(sign(statement(doc["subjects"], doc), key)))


@pytest.mark.parametrize("forgery,phrase", [
    (lambda d: d.update(checks=[]), "says pass but holds no passed check"),
    (lambda d: d["checks"][0].update(status="failed"), "says pass but holds failed checks: okx_public_time_ok"),
    (lambda d: d["skipped"].append({"id": "trades_fresh", "marker": "db", "required": True, "reason": "x"}),
     "its skipped list names required checks: trades_fresh"),
    (lambda d: d.update(skips_requested=["--skip-db-check"]), "checks skipped on request: --skip-db-check"),
    (lambda d: d.update(checks=[c for c in d["checks"] if c["marker"] != "backtest"]),
     "required checks not passed: backtest_summary_valid[sandbox-momentum] did not run"),
    (lambda d: d.update(checks=[c for c in d["checks"] if c["marker"] != "risk"]),
     "required checks not passed: risk_allocation did not run"),
])
def test_forged_evidence_does_not_open_real(run_suite, sandbox, tmp_path, forgery, phrase):
    from deploy_tool.evidence import attestation_path

    path, doc = _doc_from_a_real_run(run_suite)
    forgery(doc)
    # Re-signed by the forger's own key: the gate trusts only the pinned key.
    _resign(path, doc, tmp_path / "forger")
    done, audit = _switch_real(sandbox, path.parent, tmp_path)
    _refused(done, audit, "no signature verifies with a trusted key")
    # Unsigned, allowed for a rehearsal: the rules on the document itself refuse it.
    attestation_path(path).unlink()
    done, audit = _switch_real(sandbox, path.parent, tmp_path, "--allow-unsigned")
    _refused(done, audit, phrase)
    # Signed by the pinned key itself (a signer that signs whatever it is given): refused all the same.
    _resign(path, doc, sandbox.keys_dir)
    done, audit = _switch_real(sandbox, path.parent, tmp_path)
    _refused(done, audit, phrase)


def test_evidence_from_another_deployment_does_not_open_real(run_suite, sandbox, tmp_path):
    path, _ = _doc_from_a_real_run(run_suite)
    env = {sandbox.token_env: sandbox.token}
    production = tmp_path / "prod" / "mode.json"
    FileChannel(str(production)).apply("mock", None, "test", "test", cas=False)
    sandbox.admin.change({"mode": "mock"})
    done = _gd("switch", "--to", "real", "--http-admin-url", sandbox.admin_url, "--admin-token-env", sandbox.token_env,
               "--control-file", str(production), "--evidence-dir", str(path.parent),
               "--audit-dir", str(tmp_path / "audit"), *sandbox.gate_args(), cwd=tmp_path, env=env)
    assert done.returncode == 1 and "REFUSED" in done.stdout
    assert f"it checked the control file {sandbox.control_file.resolve()}, this switch writes {production}" in done.stdout
    assert json.loads(production.read_text())["mode"] == "mock" and sandbox.admin.mode == "mock"
    # and the admin API: evidence that never checked it does not open a switch through it
    other = AdminApi(token=sandbox.token, mode="mock").start()
    try:
        FileChannel(str(sandbox.control_file)).apply("mock", None, "test", "test", cas=False)
        done = _gd("switch", "--to", "real", "--http-admin-url", other.url, "--admin-token-env", sandbox.token_env,
                   "--control-file", str(sandbox.control_file), "--evidence-dir", str(path.parent), "--audit-dir",
                   str(tmp_path / "audit"), *sandbox.gate_args(), cwd=tmp_path, env=env)
        assert done.returncode == 1 and "REFUSED" in done.stdout, done.stdout + done.stderr
        assert f"it checked the admin API {sandbox.admin_url}, this switch goes through {other.url}" in done.stdout
        assert other.mode == "mock" and json.loads(sandbox.control_file.read_text())["mode"] == "mock"
    finally:
        other.stop()
    # the same evidence does open the sandbox's own channels
    done, _ = _switch_real(sandbox, path.parent, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("content,phrase", [
    ('{"schema": "gradual-deploy/preflight-evidence/2", "verdict": "pass", "finished_at": "NOW", "checks": "oops"}',
     "checks is str, not a list"),
    ('{"schema": "gradual-deploy/preflight-evidence/2", "verdict": "pass", "finished_at": "NOW", '
     '"checks": [{"id": "okx_clock_skew", "marker": "okx", "status": "passed", "duration_s": "slow"}]}',
     "duration_s 'slow' is not a number"),
    ('{"schema": "other/1", "verdict": "pass", "finished_at": "NOW", "checks": []}', "schema 'other/1' is not"),
    ('{"schema": "gradual-deploy/preflight-evidence/2", "verdict": "pass", "finished_at": 12, "checks": [7]}',
     "a check is int, not an object"),
    ("[[[[", "cannot be read as evidence"),
    # well-formed, but of the first schema: unsigned and without a manifest, it cannot stand for a run now
    ('{"schema": "gradual-deploy/preflight-evidence/1", "verdict": "pass", "finished_at": "NOW", '
     '"checks": [{"id": "okx_clock_skew", "marker": "okx", "status": "passed"}]}',
     ("written by an older gradual-deploy (schema gradual-deploy/preflight-evidence/1", "re-run the preflight")),
])
def test_malformed_newest_evidence_is_refused_with_the_reason(run_suite, sandbox, tmp_path, content, phrase):
    from deploy_tool.times import iso_utc

    path, _ = _doc_from_a_real_run(run_suite)  # a good, older evidence must not stand in for the broken newest
    newer = path.parent / f"preflight-{utc_now() + dt.timedelta(seconds=1):%Y%m%dT%H%M%S}Z-9.json"
    newer.write_text(content.replace("NOW", iso_utc(utc_now())))
    done, audit = _switch_real(sandbox, path.parent, tmp_path)
    phrases = phrase if isinstance(phrase, tuple) else (phrase,)
    _refused(done, audit, f"newest evidence {newer}", *phrases)
    # --allow-unsigned does not make an unreadable newest evidence readable
    done, audit = _switch_real(sandbox, path.parent, tmp_path, "--allow-unsigned")
    _refused(done, audit, f"newest evidence {newer}", *phrases)
    status = _gd("status", *_channels(sandbox), "--evidence-dir", str(path.parent), *sandbox.gate_args(),
                 cwd=tmp_path, env={sandbox.token_env: sandbox.token})
    assert "Traceback" not in status.stdout + status.stderr
    assert f"file {sandbox.control_file}: real" not in status.stdout and "the gate is closed to `switch --to real`" in status.stdout
    assert f"file {sandbox.control_file}: mock" in status.stdout


def test_a_killed_run_after_a_pass_keeps_real_closed(run_suite, sandbox, tmp_path):
    """kill -9 (or Windows' thread timeout backstop, which ends the process) during a newer run: the older
    pass must not stand in for the run that never finished."""
    passed = run_suite()
    assert passed.evidence["verdict"] == "pass", passed.output
    sandbox.exchange.behaviour.delay_ms = 4000  # the next run hangs on the exchange
    already = sandbox.exchange.requests
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "--pyargs", "preflight_tests", "-p", "no:cacheprovider",
                             *sandbox.preflight_args(), "--evidence-dir", str(passed.evidence_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                            env={**os.environ, sandbox.token_env: sandbox.token or ""})
    # Killed inside a check, with its name claimed. It may have claimed the passed run's second (then as
    # `-2`): the gate compares whole seconds and fails closed, so no wait for the clock is needed.
    _wait_for_a_hanging_check(sandbox, proc, already)
    (killed,) = [p for p in passed.evidence_dir.glob("preflight-*.html") if not p.with_suffix(".json").exists()]
    proc.kill()
    proc.communicate(timeout=30)
    # the killed run wrote no JSON (nor an envelope): only the pass's are there
    assert sorted(p.name for p in passed.evidence_dir.glob("preflight-*.json")) == sorted(
        [passed.json_files[0].name, *(a.name for a in passed.attestations)])
    sandbox.exchange.behaviour.delay_ms = 0

    done, audit = _switch_real(sandbox, passed.evidence_dir, tmp_path)
    _refused(done, audit, "never finished: the run was killed, crashed or is still running")
    # A run that then finishes is the newest again, once it finishes in a later second than the killed
    # run's name (whole seconds, compared failing closed).
    _wait_until_past_the_second_of(killed)
    rerun = run_suite(evidence_dir=passed.evidence_dir)
    assert rerun.result.ret == 0, rerun.output
    done, audit = _switch_real(sandbox, passed.evidence_dir, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
