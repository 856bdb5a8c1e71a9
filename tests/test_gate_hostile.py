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


def _switch_real(sandbox, evidence_dir, tmp_path, *extra):
    """`switch --to real` through the sandbox's control file, from mock; the run and its audit lines."""
    FileChannel(str(sandbox.control_file)).apply("mock", None, "test", "test", cas=False)
    done = _gd("switch", "--to", "real", "--control-file", str(sandbox.control_file), "--evidence-dir",
               str(evidence_dir), "--audit-dir", str(tmp_path / "audit"), *extra, cwd=tmp_path)
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
    (path,) = evidence.glob("preflight-*.json")
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
    assert result.ret == 0 and json.loads(next(evidence.glob("*.json")).read_text())["verdict"] == "pass"
    result.stdout.fnmatch_lines(["*required groups not run: okx, db, backtest*"])
    done, audit = _switch_real(sandbox, evidence, tmp_path)
    _refused(done, audit, "no okx check ran; no db check ran; no backtest check ran")

    ignored = run_suite("--ignore", str(SUITE_DIR / "test_db.py"))
    assert ignored.evidence["verdict"] == "pass"
    done, audit = _switch_real(sandbox, ignored.evidence_dir, tmp_path)
    _refused(done, audit, "no db check ran")


def _doc_from_a_real_run(run_suite):
    run = run_suite()
    assert run.evidence["verdict"] == "pass", run.output
    return run.json_files[0], run.evidence


@pytest.mark.parametrize("forgery,phrase", [
    (lambda d: d.update(checks=[]), "says pass but holds no passed check"),
    (lambda d: d["checks"][0].update(status="failed"), "says pass but holds failed checks: okx_public_time_ok"),
    (lambda d: d["skipped"].append({"id": "trades_fresh", "marker": "db", "required": True, "reason": "x"}),
     "its skipped list names required checks: trades_fresh"),
    (lambda d: d.update(skips_requested=["--skip-db-check"]), "required checks skipped on request: --skip-db-check"),
    (lambda d: d.update(checks=[c for c in d["checks"] if c["marker"] != "backtest"]), "no backtest check ran"),
    (lambda d: d.update(checks=[c for c in d["checks"] if c["marker"] != "risk"]), "no risk check ran"),
])
def test_forged_evidence_does_not_open_real(run_suite, sandbox, tmp_path, forgery, phrase):
    path, doc = _doc_from_a_real_run(run_suite)
    forgery(doc)
    path.write_text(json.dumps(doc))
    done, audit = _switch_real(sandbox, path.parent, tmp_path)
    _refused(done, audit, phrase)


def test_evidence_from_another_deployment_does_not_open_real(run_suite, sandbox, tmp_path):
    path, _ = _doc_from_a_real_run(run_suite)
    production = tmp_path / "prod" / "mode.json"
    FileChannel(str(production)).apply("mock", None, "test", "test", cas=False)
    done = _gd("switch", "--to", "real", "--control-file", str(production), "--evidence-dir", str(path.parent),
               "--audit-dir", str(tmp_path / "audit"), cwd=tmp_path)
    assert done.returncode == 1 and "REFUSED" in done.stdout
    assert f"it checked the control file {sandbox.control_file.resolve()}, this switch writes {production}" in done.stdout
    assert json.loads(production.read_text())["mode"] == "mock"
    # and the admin API: evidence that never checked it does not open a switch through it
    done = _gd("switch", "--to", "real", "--http-admin-url", "http://127.0.0.1:9/other", "--control-file",
               str(sandbox.control_file), "--evidence-dir", str(path.parent), "--audit-dir", str(tmp_path / "audit"),
               cwd=tmp_path)
    assert done.returncode == 1
    # the same evidence does open the sandbox's own channels
    done, _ = _switch_real(sandbox, path.parent, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("content,phrase", [
    ('{"schema": "gradual-deploy/preflight-evidence/1", "verdict": "pass", "finished_at": "NOW", "checks": "oops"}',
     "checks is str, not a list"),
    ('{"schema": "gradual-deploy/preflight-evidence/1", "verdict": "pass", "finished_at": "NOW", '
     '"checks": [{"id": "okx_clock_skew", "marker": "okx", "status": "passed", "duration_s": "slow"}]}',
     "duration_s 'slow' is not a number"),
    ('{"schema": "other/1", "verdict": "pass", "finished_at": "NOW", "checks": []}', "schema 'other/1' is not"),
    ('{"schema": "gradual-deploy/preflight-evidence/1", "verdict": "pass", "finished_at": 12, "checks": [7]}',
     "a check is int, not an object"),
    ("[[[[", "cannot be read as evidence"),
])
def test_malformed_newest_evidence_is_refused_with_the_reason(run_suite, sandbox, tmp_path, content, phrase):
    from deploy_tool.times import iso_utc

    path, _ = _doc_from_a_real_run(run_suite)  # a good, older evidence must not stand in for the broken newest
    newer = path.parent / f"preflight-{utc_now() + dt.timedelta(seconds=1):%Y%m%dT%H%M%S}Z-9.json"
    newer.write_text(content.replace("NOW", iso_utc(utc_now())))
    done, audit = _switch_real(sandbox, path.parent, tmp_path)
    _refused(done, audit, f"newest evidence {newer}", phrase)
    status = _gd("status", "--control-file", str(sandbox.control_file), "--evidence-dir", str(path.parent), cwd=tmp_path)
    assert "Traceback" not in status.stdout + status.stderr
    assert f"file {sandbox.control_file}: real" not in status.stdout and "real is closed" in status.stdout
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
    assert len(list(passed.evidence_dir.glob("preflight-*.json"))) == 1  # the killed run wrote none
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
