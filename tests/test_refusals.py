"""Every refusal and failure names the fix first, and `--force` last (issue 18, point 2).

A new user followed the runbook ("database not ready: --skip-db-check"): the preflight passed, `switch --to
real` was refused, and the only next step it offered was --force. Each test here drives the real command
(a process of its own, as operators run it) into one refusal and checks that the text names the option,
variable or command that fixes it, before `--force` where --force applies (and not at all where it does
not), with the contract's exit code: 1 refused or failed, 2 usage error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from deploy_tool.modes.change import Outcome
from deploy_tool.modes.channels import FileChannel
from deploy_tool.modes.gate import LEDGER
from deploy_tool.sandbox import write_backtest_summary
from deploy_tool.settings import defaults
from test_modes import sandbox_targets, write_evidence
from sandboxes import into_real

GD = [sys.executable, "-m", "deploy_tool"]
FORCE_LAST = "(or --force, audited as forced)"
# what a shell may hand down that would point a command at a target the test did not choose
TARGET_ENV = ("DATABASE_URL", "OKX_BASE_URL", "BACKTEST_SUMMARY", "EXEC_HTTP_ADMIN_URL", "EXEC_CONTROL_FILE",
              "EXEC_HTTP_ADMIN_ENABLED", "EXEC_HTTP_HOST", "EXEC_HTTP_PORT", "GD_SIGNING_KEY", "GD_SIGNING_KEY_FILE",
              "GD_TRUSTED_KEYS", "GD_CONFIG")


def _gd(*args, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in TARGET_ENV}
    done = subprocess.run(GD + [str(a) for a in args], capture_output=True, text=True, timeout=180,
                          env={**base, **(env or {})}, cwd=cwd)
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


def _without(args: list[str], option: str) -> list[str]:
    """`args` without `option` and its value."""
    i = args.index(option)
    return args[:i] + args[i + 2:]


def _reason(done: subprocess.CompletedProcess) -> str:
    """The `reason:` line a refused or failed switch prints."""
    found = [line.strip()[len("reason: "):] for line in done.stdout.splitlines() if line.strip().startswith("reason: ")]
    assert len(found) == 1, done.stdout + done.stderr
    return found[0]


def fix_first(text: str, *fixes: str) -> None:
    """Each fix is named, and before --force, which comes once, at the very end."""
    for fix in fixes:
        assert fix in text, f"{fix!r} not named in: {text}"
        assert text.index(fix) < text.index("--force"), f"{fix!r} comes after --force in: {text}"
    assert text.count("--force") == 1 and text.endswith(FORCE_LAST), text


def no_force(text: str, *fixes: str) -> None:
    """Each fix is named, and --force, which would not help here, is not offered."""
    for fix in fixes:
        assert fix in text, f"{fix!r} not named in: {text}"
    assert "--force" not in text, text


def _evidence(sandbox, directory: Path, change=None, signed: bool = True, **kwargs) -> Path:
    """Evidence of a complete passing run against the sandbox, as the suite writes it, changed by `change`
    (a function of the document) and then signed with the sandbox's pinned key (unless `signed` is False)."""
    path = write_evidence(directory, backtest=sandbox.backtest_summary, key=None, served_config=sandbox.admin.config,
                          targets=kwargs.pop("targets", sandbox_targets(sandbox)), **kwargs)
    doc = json.loads(path.read_text())
    if change is not None:
        change(doc)
    if signed:
        from deploy_tool.attest import load_signing_key, sign, statement
        from deploy_tool.evidence import attestation_path, write_json_atomic

        key = load_signing_key(str(sandbox.signing_key), environ={})
        assert key is not None
        doc.update(signed_by=key.keyid, attestation=attestation_path(path).name)
        write_json_atomic(attestation_path(path), sign(statement(doc["subjects"], doc), key))
    path.write_text(json.dumps(doc))
    return path


def _failed(doc: dict) -> None:
    doc["verdict"] = "fail"
    (skew,) = [c for c in doc["checks"] if c["id"] == "okx_clock_skew"]
    skew.update(status="failed", message="exchange clock 2500 ms from local UTC, max 1000 ms")


def _skipped_db(doc: dict) -> None:
    """What `--skip-db-check` leaves in the evidence."""
    (trades,) = [c for c in doc["checks"] if c["id"] == "trades_fresh"]
    trades.update(status="skipped", message="skipped on request: --skip-db-check")
    doc["skips_requested"] = ["--skip-db-check"]
    doc["targets"]["database_url"] = None


def _mock(sandbox) -> None:
    FileChannel(str(sandbox.control_file)).apply("mock", None, "test", "test", cas=False)
    sandbox.admin.change({"mode": "mock"})


def _channels(sandbox) -> list[str]:
    return ["--http-admin-url", sandbox.admin_url, "--admin-token-env", sandbox.token_env,
            "--control-file", sandbox.control_file]


# --- the runbook's dead end -------------------------------------------------------------------------


def test_the_runbooks_skip_db_check_leads_to_the_database_not_to_force(sandbox, tmp_path):
    """Preflight with --skip-db-check passes (exit 0); `switch --to real` is refused, and says to run the
    preflight again with the trades database (--database-url or DATABASE_URL), signed, before --force. Done
    as it says, real opens."""
    env = {sandbox.token_env: sandbox.token, **sandbox.account_env()}
    evidence = tmp_path / "ev"
    no_db = _without(sandbox.preflight_args(), "--database-url")
    ran = _gd("preflight", *no_db, "--skip-db-check", "--evidence-dir", evidence, cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "gradual-deploy preflight: verdict PASS (exit 0)" in ran.stdout

    # the runbook's switch: the channels, and this deployment's exchange and pinned key; no database yet
    gate = ["--okx-base-url", sandbox.okx_url, "--trusted-keys", sandbox.trusted_keys]
    _mock(sandbox)
    done = _gd("switch", "--to", "real", *_channels(sandbox), *gate, "--evidence-dir", evidence,
               "--audit-dir", tmp_path / "audit", cwd=tmp_path, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "switch mock -> real: REFUSED" in done.stdout
    reason = _reason(done)
    assert "checks skipped on request: --skip-db-check" in reason  # what was found, first
    fix_first(reason, "run the preflight again with the trades database once it is ready",
              "`gradual-deploy preflight --database-url URL` (or DATABASE_URL) without --skip-db-check",
              "signed (--signing-key FILE or GD_SIGNING_KEY_FILE)", "then switch again with the same --database-url")
    assert sandbox.admin.mode == "mock"

    # the step it names is the honest one: done as it says, real opens, without --force
    ran = _gd("preflight", *sandbox.preflight_args(), "--evidence-dir", evidence, cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    done = _gd("switch", "--to", "real", *_channels(sandbox), *gate, "--database-url", sandbox.database_url,
               "--evidence-dir", evidence, "--audit-dir", tmp_path / "audit", cwd=tmp_path, env=env)
    assert done.returncode == 0 and "switch mock -> real: DONE" in done.stdout, done.stdout + done.stderr


# --- the evidence gate ---------------------------------------------------------------------------------


def _other_deployment(sandbox, ev: Path, tmp_path: Path) -> None:
    targets = {**sandbox_targets(sandbox), "control_file": str(tmp_path / "elsewhere" / "mode.json")}
    _evidence(sandbox, ev, age_s=5, targets=targets)


def _changed_backtest(sandbox, ev: Path, tmp_path: Path) -> None:
    _evidence(sandbox, ev, age_s=5)
    write_backtest_summary(sandbox.backtest_summary, sharpe=0.9)


def _used_elsewhere(sandbox, ev: Path, tmp_path: Path) -> None:
    path = _evidence(sandbox, ev, age_s=5)
    run_id = json.loads(path.read_text())["run_id"]
    (ev / LEDGER).write_text(json.dumps({"ts": "2026-01-01T00:00:00.000Z", "run_id": run_id,
                                         "deployment": "file=/srv/other/mode.json"}) + "\n")


GATE_CASES = {
    # case: (make the evidence, what was found, the fixes it must name before --force)
    "no evidence": (lambda sandbox, ev, tmp: None, "no preflight evidence in",
                    ["`gradual-deploy preflight --evidence-dir", "--signing-key FILE` (or GD_SIGNING_KEY_FILE) first",
                     "or point --evidence-dir at where it wrote its evidence"]),
    "too old": (lambda sandbox, ev, tmp: _evidence(sandbox, ev, age_s=2 * 3600),
                "old, max 60 min",
                ["(--max-evidence-age): run the preflight again, signed: `gradual-deploy preflight --signing-key FILE`",
                 "then switch again within 60 min of it", "or a longer --max-evidence-age"]),
    "unsigned": (lambda sandbox, ev, tmp: _evidence(sandbox, ev, age_s=5, signed=False),
                 "is not signed",
                 ["run the preflight again signed, with --signing-key FILE or GD_SIGNING_KEY_FILE",
                  "`gradual-deploy keygen` makes a pair", "its public key pinned in {trusted_keys} (--trusted-keys",
                  "or --allow-unsigned for a rehearsal"]),
    "failed": (lambda sandbox, ev, tmp: _evidence(sandbox, ev, _failed, age_s=5),
               "has verdict 'fail', not pass (failed: okx_clock_skew)",
               ["fix what failed (each failed check says how", "run the preflight again, signed: `gradual-deploy "
                "preflight --signing-key FILE`"]),
    "incomplete": (lambda sandbox, ev, tmp: _evidence(sandbox, ev, age_s=5, skipped_required=True),
                   "is not a complete go-live pass (required checks not passed: trades_fresh skipped",
                   ["run the preflight again as the whole suite: `gradual-deploy preflight` without -m, -k, "
                    "--strategy, --ignore or test paths, signed"]),
    "database skipped": (lambda sandbox, ev, tmp: _evidence(sandbox, ev, _skipped_db, age_s=5),
                         "checks skipped on request: --skip-db-check",
                         ["run the preflight again with the trades database once it is ready: `gradual-deploy "
                          "preflight --database-url URL` (or DATABASE_URL) without --skip-db-check, signed"]),
    "another deployment": (_other_deployment, "was made against another deployment",
                           ["this switch writes {control_file} (--control-file / EXEC_CONTROL_FILE)",
                            "where this command names the wrong target, fix that option",
                            "otherwise run the preflight again against this deployment"]),
    "subject changed": (_changed_backtest, "no longer matches what goes live",
                        ["run the preflight again against what goes live now, signed", "or put back what changed"]),
    "ledger": (_used_elsewhere, "this run already opened real on another deployment",
               ["run the preflight again for this deployment, signed"]),
}


@pytest.mark.parametrize("case", list(GATE_CASES))
def test_each_gate_refusal_names_its_fix_before_force(sandbox, tmp_path, case):
    make, found, fixes = GATE_CASES[case]
    ev = tmp_path / "ev"
    make(sandbox, ev, tmp_path)
    _mock(sandbox)
    done = _gd("switch", "--to", "real", *_channels(sandbox), *sandbox.gate_args(), "--evidence-dir", ev,
               "--audit-dir", tmp_path / "audit", cwd=tmp_path, env={sandbox.token_env: sandbox.token})
    assert done.returncode == 1 and "switch mock -> real: REFUSED" in done.stdout, done.stdout + done.stderr
    reason = _reason(done)
    assert reason.startswith("evidence gate: ") and found in reason, reason
    assert reason.index(found) < min(reason.index(f.split("{")[0]) for f in fixes), "what was found comes first"
    fix_first(reason, *(f.format(trusted_keys=sandbox.trusted_keys, control_file=sandbox.control_file) for f in fixes))
    assert sandbox.admin.mode == "mock"
    (line,) = [json.loads(x) for f in (tmp_path / "audit").glob("deploy-*.jsonl") for x in f.read_text().splitlines()]
    assert line["result"] == "refused" and line["detail"] == reason  # the audit holds the same words


# --- the transitions and the channels --------------------------------------------------------------


def test_paused_to_real_names_the_rehearsal_in_mock_before_force(sandbox, tmp_path):
    done = _gd("switch", "--to", "real", *_channels(sandbox), *sandbox.gate_args(), "--evidence-dir", tmp_path / "ev",
               cwd=tmp_path, env={sandbox.token_env: sandbox.token})
    assert done.returncode == 1 and "switch paused -> real: REFUSED" in done.stdout, done.stdout + done.stderr
    reason = _reason(done)
    assert reason.startswith("http, file: paused -> real is not allowed"), "both channels, said once"
    fix_first(reason, "rehearse in mock first (paused -> mock -> real): `gradual-deploy switch --to mock`, then "
                      "`--to real`")


def test_no_mode_yet_names_the_rehearsal_in_mock_before_force(tmp_path):
    control = tmp_path / "control" / "mode.json"
    done = _gd("switch", "--to", "real", "--control-file", control, "--evidence-dir", tmp_path / "ev", cwd=tmp_path)
    assert done.returncode == 1 and "REFUSED" in done.stdout, done.stdout + done.stderr
    fix_first(_reason(done), "file: no mode yet: rehearse in mock first: `gradual-deploy switch --to mock`")
    assert not control.exists()


def test_a_channel_that_cannot_be_read_says_to_fix_it_and_offers_no_force(sandbox, tmp_path):
    done = _gd("switch", "--to", "mock", *_channels(sandbox), cwd=tmp_path)  # no token: the admin API answers 401
    assert done.returncode == 1, done.stdout + done.stderr
    no_force(_reason(done), "could not read the current mode on http: nothing changed; fix that channel",
             "then switch again")
    assert "EXEC_HTTP_ADMIN_TOKEN" in done.stdout  # the channel's own error names the variable


# --- ramp ----------------------------------------------------------------------------------------------


@pytest.fixture
def real(sandbox):
    """The sandbox in real on fresh evidence (written as the suite writes it, signed with the pinned key)."""
    _evidence(sandbox, sandbox.evidence_dir, age_s=5)
    return into_real(sandbox)


def _ramp(sandbox, tmp_path, *extra, steps="0.5%,1%"):
    done = _gd("ramp", *sandbox.watch_args(), *sandbox.gate_args(), "--steps", steps, "--hold", "0.3s", "--interval",
               "0.1s", *extra, cwd=tmp_path, env={sandbox.token_env: sandbox.token})
    assert done.returncode == 1, done.stdout + done.stderr
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("ramp: REFUSED: ")]
    return line[len("ramp: REFUSED: "):]


def test_a_ramp_above_the_ceiling_names_new_evidence_and_lower_steps_before_force(real, tmp_path):
    reason = _ramp(real, tmp_path, steps="0.5%,2%")
    assert reason.startswith("step(s) 2% above 1%"), reason
    fix_first(reason, "`gradual-deploy preflight --max-allocation 0.02` run again, signed",
              "this ramp with --max-allocation 0.02", "or --steps no higher than 1%")
    assert real.admin.allocation != 0.02


def test_a_ramp_outside_real_names_the_switch_and_offers_no_force(real, tmp_path):
    _gd("switch", "--to", "mock", *_channels(real), cwd=tmp_path, env={real.token_env: real.token})
    no_force(_ramp(real, tmp_path), "is in mock: a ramp starts only in real: `gradual-deploy switch --to real` first",
             "then start the ramp again")


def test_a_ramp_the_gate_refuses_names_the_preflight_and_offers_no_force(real, tmp_path):
    """--force lifts a ramp's ceiling, never its evidence gate: the refusal does not offer it."""
    reason = _ramp(real, tmp_path, "--evidence-dir", tmp_path / "none", "--force")
    no_force(reason, "evidence gate: no preflight evidence in", "`gradual-deploy preflight --evidence-dir",
             "then start the ramp again")


def test_channels_that_disagree_on_the_allocation_say_how_to_set_them(real, tmp_path):
    doc = json.loads(real.control_file.read_text())
    real.control_file.write_text(json.dumps({**doc, "allocation": 0.007}))
    no_force(_ramp(real, tmp_path), "the channels disagree on the allocation",
             "set them equal first, to the lower (the admin API's POST /allocation, the control file's \"allocation\"",
             "then start the ramp again")


# --- watch and ramp without a trades database -----------------------------------------------------------


@pytest.mark.parametrize("command", [["watch"], ["ramp", "--steps", "0.5%"]])
def test_watch_and_ramp_without_a_database_name_it_first(sandbox, tmp_path, command):
    done = _gd(*command, *_without(sandbox.watch_args(), "--database-url"), cwd=tmp_path,
               env={sandbox.token_env: sandbox.token})
    assert done.returncode == 2, done.stdout + done.stderr
    text = done.stderr
    assert "--database-url URL (or DATABASE_URL)" in text, text
    assert text.index("--database-url") < text.index("--skip-db-check"), text


# --- verify ------------------------------------------------------------------------------------------------


def _verify(sandbox, tmp_path, path):
    done = _gd("verify", path, "--trusted-keys", sandbox.trusted_keys, cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    return [line.strip()[len("problem  : "):] for line in done.stdout.splitlines()
            if line.strip().startswith("problem  : ")]


@pytest.mark.parametrize("kind,fixes", [
    ("incomplete", ["not a complete go-live run: required checks not passed: trades_fresh skipped: run the preflight "
                    "again as the whole suite", "signed (--signing-key FILE or GD_SIGNING_KEY_FILE)",
                    "then verify the new evidence"]),
    ("failed", ["the verdict is FAIL (failed: okx_clock_skew): fix what failed (each failed check says how), then run the preflight again, "
                "signed: `gradual-deploy preflight --signing-key FILE`"]),
    ("unsigned", ["is not signed", "run the preflight again signed, with --signing-key FILE or GD_SIGNING_KEY_FILE",
                  "(--trusted-keys / GD_TRUSTED_KEYS)"]),
])
def test_verify_names_the_fix_of_each_problem(sandbox, tmp_path, kind, fixes):
    path = _evidence(sandbox, tmp_path / "ev", _failed if kind == "failed" else None, signed=kind != "unsigned",
                     age_s=5, skipped_required=kind == "incomplete")
    problems = " | ".join(_verify(sandbox, tmp_path, path))
    no_force(problems, *fixes)


# --- the probes and the guard --------------------------------------------------------------------------


def test_no_database_says_what_skipping_it_costs(tmp_path):
    from deploy_tool.probes import measure_trades

    error = measure_trades(defaults()).error
    assert error is not None and error.startswith("no trades database configured: set --database-url")
    assert error.index("DATABASE_URL") < error.index("--skip-db-check") < error.index("cannot open real"), error


@pytest.mark.parametrize("result,says", [
    ("done", "to go live again: find the cause"),
    ("partial", "not every channel confirmed the pause"),
    ("failed", "NO CHANNEL CONFIRMED THE PAUSE: stop the trading system by hand"),
])
def test_after_a_breach_the_pause_line_says_what_next(result, says):
    from deploy_tool.analysis import after_breach

    text = after_breach(Outcome("pause", "paused", result))
    assert text.startswith(says) and "`gradual-deploy " in text and "--force" not in text
