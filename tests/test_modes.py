"""Mode control: transitions, the evidence gate, compare-and-swap, both channels, faults, audit, speed path."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from deploy_tool.cli import main
from deploy_tool.modes.channels import FileChannel, HttpChannel
from deploy_tool.modes.gate import GateConfig, evidence_gate
from deploy_tool.modes.machine import decide
from deploy_tool.modes.change import switch
from deploy_tool.times import iso_utc, utc_now

GD = [sys.executable, "-m", "deploy_tool"]


@pytest.mark.parametrize(
    "current,target,force,allowed,forced",
    [
        ("real", "paused", False, True, False), ("mock", "paused", False, True, False), (None, "paused", False, True, False),
        ("paused", "mock", False, True, False), ("mock", "real", False, True, False), ("real", "mock", False, True, False),
        ("paused", "real", False, False, False), ("paused", "real", True, True, True),
        (None, "mock", False, True, False), (None, "real", False, False, False), (None, "real", True, True, True),
        ("mock", "mock", False, True, False), ("mock", "live", True, False, False),
    ],
)
def test_transitions(current, target, force, allowed, forced):
    decision = decide(current, target, force)
    assert (decision.allowed, decision.forced) == (allowed, forced)


def write_evidence(directory: Path, *, backtest: Path, key: Path | None, verdict="pass", age_s=60.0,
                   skipped_required=False, name=None, targets=None, served_config=None) -> Path:
    """A complete evidence document as the suite writes it (schema 2): every check of the manifest its
    targets call for passed, unless told, bound to the backtest file `backtest`, and signed with the private
    key `key` into its `.intoto.json` beside it (None: unsigned)."""
    from deploy_tool.attest import file_digest, load_signing_key, sign, statement, subject
    from deploy_tool.evidence import SCHEMA, attestation_path, write_json_atomic
    from deploy_tool.manifest import Scope, group_of, required
    from deploy_tool.probes.backtest import load_summary

    directory.mkdir(parents=True, exist_ok=True)
    targets = targets or {}
    finished = utc_now() - dt.timedelta(seconds=age_s)
    strategies = tuple(s.name for s in load_summary(str(backtest)).strategies)
    scope = Scope(strategies, admin=bool(targets.get("http_admin_url")), control=bool(targets.get("control_file")))
    manifest = required(scope)
    checks = [{"id": cid, "marker": group_of(cid), "required": True, "status": "passed"} for cid in manifest]
    if skipped_required:
        (trades,) = [c for c in checks if c["id"] == "trades_fresh"]
        trades["status"] = "skipped"
    doc = {"schema": SCHEMA, "verdict": verdict, "finished_at": iso_utc(finished), "checks": checks,
           "targets": targets, "run_id": uuid.uuid4().hex, "manifest": manifest, "scope": scope.as_dict(),
           "subjects": [subject(str(backtest.resolve()), file_digest(backtest), "backtest")],
           "thresholds": {"max_allocation": 0.01}}
    if served_config is not None and targets.get("http_admin_url"):  # the risk configuration the run judged
        from deploy_tool.probes.riskconfig import served_config_digest

        doc["subjects"].append(subject(f"GET {targets['http_admin_url']}/config", served_config_digest(served_config),
                                       "risk_config"))
    path = directory / (name or f"preflight-{finished:%Y%m%dT%H%M%S}Z.json")
    doc["html_report"] = path.with_suffix(".html").name
    if key is not None:
        signing_key = load_signing_key(str(key), environ={})
        doc.update(signed_by=signing_key.keyid, attestation=attestation_path(path).name)
        write_json_atomic(attestation_path(path), sign(statement(doc["subjects"], doc), signing_key))
    path.write_text(json.dumps(doc))
    return path


def sandbox_targets(sandbox, http=True, file=True):
    """The evidence targets of a preflight run against the sandbox: its exchange, its trades database, and
    the channels named."""
    return {"okx_base_url": sandbox.okx_url, "database_url": sandbox.database_url,
            "http_admin_url": sandbox.admin_url if http else None,
            "control_file": str(sandbox.control_file.resolve()) if file else None}


def sandbox_evidence(sandbox, directory: Path, **kwargs) -> Path:
    """Evidence of a run against the sandbox, signed with the sandbox's own (pinned) key."""
    return write_evidence(directory, backtest=sandbox.backtest_summary, key=sandbox.signing_key,
                          served_config=sandbox.admin.config, **kwargs)


def sandbox_gate(sandbox, evidence_dir: Path) -> GateConfig:
    return GateConfig(str(evidence_dir), 3600, str(sandbox.trusted_keys), sandbox.okx_url, sandbox.database_url,
                      admin_token=sandbox.token)


def test_evidence_gate(tmp_path):
    from deploy_tool.attest import write_key_pair
    from deploy_tool.sandbox import write_backtest_summary

    ev, backtest, database = tmp_path / "ev", tmp_path / "backtest_summary.json", f"sqlite:///{tmp_path / 'trades.db'}"
    write_backtest_summary(backtest)
    private, public, _ = write_key_pair(tmp_path / "keys")
    targets = {"okx_base_url": "https://www.okx.com", "database_url": database}
    cfg = GateConfig(str(ev), 3600, str(public), "https://www.okx.com", database)

    def evidence(**kwargs) -> Path:
        return write_evidence(ev, backtest=backtest, key=private, targets=targets, **kwargs)

    assert "no preflight evidence" in evidence_gate(cfg).reason
    evidence(verdict="fail", age_s=30)
    assert "verdict 'fail'" in evidence_gate(cfg).reason
    evidence(age_s=10, skipped_required=True)
    assert "required checks not passed: trades_fresh skipped" in evidence_gate(cfg).reason
    newest = evidence(age_s=5)
    gate = evidence_gate(cfg)
    assert gate.ok and gate.path == str(newest) and gate.signer and not gate.forced, gate.reason
    # newest by finished_at, not by file name or mtime
    evidence(verdict="fail", age_s=7200, name="preflight-99999999T999999Z.json")
    assert evidence_gate(cfg).ok
    assert "old, max 60 min" in evidence_gate(cfg, now=utc_now() + dt.timedelta(hours=2)).reason
    # the same document unsigned: refused, unless --allow-unsigned, and then opened as forced
    ev2 = tmp_path / "ev2"
    write_evidence(ev2, backtest=backtest, key=None, targets=targets, age_s=5)
    unsigned = GateConfig(str(ev2), 3600, str(public), "https://www.okx.com", database)
    assert "is not signed" in evidence_gate(unsigned).reason
    gate = evidence_gate(dataclasses.replace(unsigned, allow_unsigned=True))
    assert gate.ok and gate.forced and gate.signer is None, gate.reason
    # signed by a key that is not pinned
    other_private, _, _ = write_key_pair(tmp_path / "other-keys")
    ev3 = tmp_path / "ev3"
    write_evidence(ev3, backtest=backtest, key=other_private, targets=targets, age_s=5)
    reason = evidence_gate(GateConfig(str(ev3), 3600, str(public), "https://www.okx.com", database)).reason
    assert "no signature verifies with a trusted key" in reason


def gd(*args, env=None, cwd=None, timeout=60):
    full = {**os.environ, **(env or {})}
    return subprocess.run(GD + list(args), capture_output=True, text=True, env=full, cwd=cwd, timeout=timeout)


@pytest.fixture
def world(sandbox, tmp_path):
    """The sandbox's channels as CLI options, with the token in the environment and an audit dir."""
    audit = tmp_path / "audit"
    args = ["--http-admin-url", sandbox.admin_url, "--control-file", str(sandbox.control_file),
            "--admin-token-env", sandbox.token_env, "--audit-dir", str(audit)]
    env = {sandbox.token_env: sandbox.token}

    class World:
        def run(self, *extra, token=True):
            return gd(*extra, *args, env=env if token else {}, cwd=tmp_path)

        def audit(self):
            lines = []
            for path in sorted(audit.glob("deploy-*.jsonl")):
                lines += [json.loads(line) for line in path.read_text().splitlines()]
            return lines

        def file_mode(self):
            return json.loads(sandbox.control_file.read_text())["mode"]

    return World()


def test_runbook_path_with_the_evidence_gate(world, sandbox, tmp_path):
    ev = tmp_path / "ev"
    gate = ["--evidence-dir", str(ev), *sandbox.gate_args()]
    done = world.run("switch", "--to", "real", *gate)
    assert done.returncode == 1 and "paused -> real is not allowed: rehearse in mock first" in done.stdout
    done = world.run("switch", "--to", "mock", "--reason", "rehearsal")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "http" in done.stdout and "paused -> mock confirmed" in done.stdout
    assert sandbox.admin.mode == "mock" and world.file_mode() == "mock"
    done = world.run("switch", "--to", "real", *gate)
    assert done.returncode == 1 and "evidence gate: no preflight evidence" in done.stdout
    sandbox_evidence(sandbox, ev, age_s=2 * 3600, targets=sandbox_targets(sandbox))
    done = world.run("switch", "--to", "real", *gate)
    assert done.returncode == 1 and "old, max 60 min" in done.stdout
    done = world.run("switch", "--to", "real", *gate, "--max-evidence-age", "3h")
    assert done.returncode == 0, done.stdout
    assert sandbox.admin.mode == "real" and world.file_mode() == "real"
    done = world.run("switch", "--to", "real", *gate)
    assert done.returncode == 0 and "NOOP" in done.stdout
    done = world.run("pause", "--reason", "drill")
    assert done.returncode == 0 and "pause: DONE" in done.stdout
    results = [(a["action"], a["from"], a["to"], a["result"], a["forced"]) for a in world.audit()]
    assert results == [
        ("switch", "paused", "real", "refused", False), ("switch", "paused", "mock", "done", False),
        ("switch", "mock", "real", "refused", False), ("switch", "mock", "real", "refused", False),
        ("switch", "mock", "real", "done", False), ("switch", "real", "real", "noop", False),
        ("pause", "real", "paused", "done", False),
    ]
    assert all(a["event"] == "mode_switch" and a["channel"] == "http+file" and a["actor"] for a in world.audit())
    assert world.audit()[4]["evidence"].endswith(".json") and world.audit()[4]["evidence_signer"]


def test_force_is_audited(world, sandbox, tmp_path):
    done = world.run("switch", "--to", "real", "--force", "--evidence-dir", str(tmp_path / "none"), "--reason", "x")
    assert done.returncode == 0 and "(forced)" in done.stdout
    (line,) = world.audit()
    assert line["forced"] is True and line["result"] == "done" and "forced past the evidence gate" in line["detail"]


def test_usage_errors_exact(world, tmp_path):
    done = gd("switch", "--to", "live", "--control-file", "x.json", cwd=tmp_path)
    assert done.returncode == 2
    assert "gradual-deploy switch: error: argument --to: invalid choice: 'live' (choose from 'mock', 'real', 'paused')" in done.stderr
    env = {k: "" for k in ("EXEC_HTTP_ADMIN_URL", "EXEC_CONTROL_FILE", "EXEC_HTTP_ADMIN_ENABLED")}
    for command in (["pause"], ["switch", "--to", "mock"], ["status"]):
        done = gd(*command, env=env, cwd=tmp_path)
        assert done.returncode == 2
        assert done.stderr.strip() == ("gradual-deploy: error: no channel: give --http-admin-url and/or --control-file "
                                       "(or set EXEC_HTTP_ADMIN_URL / EXEC_CONTROL_FILE)")
    done = gd("switch", "--to", "mock", "--control-file", "x.json", "--max-evidence-age", "soon", cwd=tmp_path)
    assert done.returncode == 2 and "invalid --max-evidence-age 'soon'" in done.stderr


def test_env_channels(sandbox, tmp_path):
    env = {"EXEC_CONTROL_FILE": str(sandbox.control_file), "EXEC_HTTP_ADMIN_ENABLED": "true",
           "EXEC_HTTP_HOST": "127.0.0.1", "EXEC_HTTP_PORT": sandbox.admin_url.rsplit(":", 1)[1],
           "EXEC_HTTP_ADMIN_TOKEN": sandbox.token, "EXEC_HTTP_ADMIN_URL": ""}
    done = gd("switch", "--to", "mock", "--audit-dir", str(tmp_path / "a"), env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sandbox.admin.mode == "mock" and json.loads(sandbox.control_file.read_text())["mode"] == "mock"
    # each channel falls back on its own: a flag for one does not drop the other from the environment;
    # a control file nobody was reading does not count as a confirmed pause
    other = tmp_path / "other" / "mode.json"
    done = gd("pause", "--control-file", str(other), "--audit-dir", str(tmp_path / "a"), env=env, cwd=tmp_path)
    assert done.returncode == 0 and "pause: PARTIAL" in done.stdout
    assert f"{other} did not exist before this pause: no running trading system was reading it" in done.stdout
    assert sandbox.admin.mode == "paused" and json.loads(other.read_text())["mode"] == "paused"


def test_token_missing_is_401_and_never_shown(world, sandbox):
    done = world.run("switch", "--to", "mock", token=False)
    assert done.returncode == 1
    assert "HTTP 401 unauthorized: no admin token was sent" in done.stdout + done.stderr
    done = world.run("switch", "--to", "mock", "--json")
    assert json.loads(done.stdout)["result"] == "done"
    everything = done.stdout + done.stderr + json.dumps(world.audit())
    assert sandbox.token not in everything


def test_http_pause_landing_between_read_and_write_is_never_overwritten(sandbox, tmp_path):
    sandbox.admin.change({"mode": "mock"})
    sandbox_evidence(sandbox, tmp_path / "ev", age_s=1, targets=sandbox_targets(sandbox, file=False))
    sandbox.admin.on_get_mode = lambda: sandbox.admin.change({"mode": "paused", "actor": "incident"})
    channel = HttpChannel(sandbox.admin_url, sandbox.token)
    outcome = switch([channel], "real", force=False, reason="", actor="t", gate=sandbox_gate(sandbox, tmp_path / "ev"))
    assert outcome.result == "failed"
    (result,) = outcome.channels
    assert result.conflict and "HTTP 409, mode is now 'paused'" in result.error
    assert sandbox.admin.mode == "paused"


def test_file_pause_landing_between_read_and_write_is_never_overwritten(sandbox, tmp_path):
    FileChannel(str(sandbox.control_file)).apply("mock", "paused", "", "t")
    sandbox_evidence(sandbox, tmp_path / "ev", age_s=1, targets=sandbox_targets(sandbox, http=False))

    class PausedRightAfterTheRead(FileChannel):
        """The control file, paused by another process between the switch's read and its write."""

        def read(self):
            mode = super().read()
            done = gd("pause", "--control-file", str(sandbox.control_file), "--audit-dir", str(tmp_path / "a"),
                      cwd=tmp_path)
            assert done.returncode == 0
            return mode

    outcome = switch([PausedRightAfterTheRead(str(sandbox.control_file))], "real", force=False, reason="", actor="t",
                     gate=sandbox_gate(sandbox, tmp_path / "ev"))
    assert outcome.result == "failed"
    assert outcome.channels[0].conflict and "now holds 'paused', not 'mock'" in outcome.channels[0].error
    doc = json.loads(sandbox.control_file.read_text())
    assert doc["mode"] == "paused" and doc["version"] == 3


def test_acknowledged_but_unchanged_is_a_failure(world, sandbox):
    sandbox.admin.fault = "ack_no_change"
    done = world.run("switch", "--to", "mock")
    assert done.returncode == 1
    assert "acknowledged mock but GET /mode still reads 'paused': the change did not take" in done.stdout
    assert world.audit()[-1]["result"] == "failed"


@pytest.mark.parametrize("fault", ["down", "error500", "hang", "garbage"])
def test_pause_goes_through_the_file_when_the_admin_api_is_broken(sandbox, fault, tmp_path, monkeypatch, capsys):
    if fault == "down":
        url = "http://127.0.0.1:9"
    else:
        sandbox.admin.fault = fault
        url = sandbox.admin_url
    FileChannel(str(sandbox.control_file)).apply("real", "paused", "", "t")
    # In-process, timed from the call: what is bounded is the pause, not the interpreter's start-up (which
    # a loaded machine stretches; test_pause_imports_nothing_heavy keeps that short).
    for name in ("EXEC_HTTP_ADMIN_URL", "EXEC_CONTROL_FILE", "EXEC_HTTP_ADMIN_ENABLED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(sandbox.token_env, sandbox.token)
    started = time.monotonic()
    rc = main(["pause", "--http-admin-url", url, "--control-file", str(sandbox.control_file),
               "--admin-token-env", sandbox.token_env, "--audit-dir", str(tmp_path / "a"), "--json"])
    elapsed = time.monotonic() - started
    out, err = capsys.readouterr()
    assert rc == 0, out + err
    record = json.loads(out)
    assert record["result"] == "partial"
    http, file = record["channels"]
    assert not http["ok"] and http["error"] and file["ok"] and file["after"] == "paused"
    assert "FAILED" in err and "http" in err
    assert json.loads(sandbox.control_file.read_text())["mode"] == "paused"
    assert elapsed < 3.0, f"pause took {elapsed:.1f} s with the admin API {fault}"


def test_switch_needs_every_channel(world, sandbox):
    sandbox.admin.fault = "error500"
    done = world.run("switch", "--to", "mock")
    assert done.returncode == 1 and "HTTP 500" in done.stdout
    assert world.file_mode() == "paused", "nothing changes when a channel cannot even be read"


def test_status_reports_disagreement(world, sandbox, tmp_path):
    done = gd(
        "status", "--http-admin-url", sandbox.admin_url, "--control-file", str(sandbox.control_file),
        "--admin-token-env", sandbox.token_env, "--json", env={sandbox.token_env: sandbox.token}, cwd=tmp_path)
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["agree"] and report["mode"] == "paused"
    sandbox.admin.change({"mode": "mock"})
    done = gd("status", "--http-admin-url", sandbox.admin_url, "--control-file", str(sandbox.control_file),
              "--admin-token-env", sandbox.token_env, env={sandbox.token_env: sandbox.token}, cwd=tmp_path)
    assert done.returncode == 1
    assert "WARNING: the channels disagree" in done.stdout and "evidence: none" in done.stdout
    sandbox_evidence(sandbox, Path(sandbox.workdir) / "ev", age_s=90, targets=sandbox_targets(sandbox, http=False))
    done = gd("status", "--control-file", str(sandbox.control_file), "--evidence-dir", str(Path(sandbox.workdir) / "ev"),
              *sandbox.gate_args(), cwd=tmp_path)
    assert done.returncode == 0 and re.search(r"verdict pass, 9\d.\d s old; the gate would let `switch --to real` through", done.stdout)


def test_twenty_processes_on_one_control_file(tmp_path):
    path = tmp_path / "control" / "mode.json"
    FileChannel(str(path)).apply("paused", None, "", "t", cas=False)
    script = (
        "import sys\n"
        "from deploy_tool.cli import main\n"
        "from deploy_tool.modes import change, channels\n"
        # Every pause here waits for the lock, as every switch does, so that every write is made under it
        # and the version must count them exactly. A pause that gives up on the lock writes a number a
        # writer under the lock may share (docs/mode-control.md): that path has its own deterministic test, with the
        # numbers it writes, in test_pause_hostile.py.
        "channels.PAUSE_LOCK_TIMEOUT_S = change.PAUSE_JOIN_S = 600.0\n"
        "p, a = sys.argv[1], sys.argv[2]\n"
        "for i in range(5):\n"
        "    for argv in (['switch', '--to', 'mock'], ['pause'], ['switch', '--to', 'mock'], ['switch', '--to', 'real', '--force']):\n"
        "        main(argv + ['--control-file', p, '--audit-dir', a, '--json'])\n"
    )
    stop = threading.Event()
    reads, bad = [0], []

    def reader():
        while not stop.is_set():
            try:
                doc = json.loads(path.read_text())
                if doc.get("mode") not in ("mock", "real", "paused") or not isinstance(doc.get("version"), int):
                    bad.append(doc)
            except (ValueError, OSError) as exc:
                bad.append(repr(exc))
            reads[0] += 1
            stop.wait(0.002)  # sample about 500 times a second, without spinning a core the writers need

    thread = threading.Thread(target=reader)
    thread.start()
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), str(tmp_path / "audit")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
             for _ in range(20)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    stop.set()
    thread.join()
    assert all(p.returncode == 0 for p in procs), errors
    assert not bad, bad[:3]
    assert reads[0] > 100
    lines = [json.loads(line) for f in (tmp_path / "audit").glob("*.jsonl") for line in f.read_text().splitlines()]
    assert len(lines) == 20 * 5 * 4, "one audit line per action, none lost"
    assert {line["result"] for line in lines} <= {"done", "noop", "failed", "refused"}
    assert not [c for line in lines for c in line["channels"] if "without" in c.get("note", "")]
    assert {line["result"] for line in lines if line["action"] == "pause"} == {"done"}
    # One write per action done (a pause writes even when already paused); a failed switch (lock busy for
    # 2 s, or the mode changed under it) wrote nothing. Each write under the lock took the next number.
    written = sorted(line["channels"][0]["version"] for line in lines if line["result"] == "done")
    doc = json.loads(path.read_text())
    assert written == list(range(2, 2 + len(written))), "each write its own number, none skipped"
    assert doc["version"] == 1 + len(written), "every write incremented the version exactly once"
    assert not list(path.parent.glob("*.tmp")), "no temp file left behind"


# What an emergency pause must not load: the test and database stacks, requests (the admin channel speaks
# http.client), filelock and its logging (the lock is fcntl.flock), the suite's parsers and scanners, what
# only help output, a socket or a terminal would need, and dataclasses with its inspect (20 ms).
PAUSE_MUST_NOT_IMPORT = ("pytest", "_pytest", "psycopg2", "requests", "urllib3", "cryptography", "filelock",
                         "logging", "yaml", "dotenv", "detect_secrets", "apprise", "scipy", "tomllib", "shutil",
                         "getpass", "textwrap", "secrets", "dataclasses", "inspect", "html",
                         "deploy_tool.modes.gate",
                         "deploy_tool.evidence", "deploy_tool.attest", "deploy_tool.probes.http")
# ... and the control file alone does not even load the HTTP client.
FILE_PAUSE_MUST_NOT_IMPORT = ("socket", "base64", "http.client", "email", "ssl", "deploy_tool.probes.plainhttp")


@pytest.mark.parametrize("channels", ["file", "http", "both"])
def test_pause_imports_nothing_heavy(tmp_path, channels):
    from deploy_tool.sandbox import AdminApi

    FileChannel(str(tmp_path / "mode.json")).apply("real", None, "", "t", cas=False)
    api = AdminApi(token="heavy-token").start()
    try:
        api.change({"mode": "real"})
        args = {"file": ["--control-file", str(tmp_path / "mode.json")],
                "http": ["--http-admin-url", api.url, "--admin-token-env", "GD_HEAVY_TOKEN"]}
        argv = [*(args["file"] if channels != "http" else []), *(args["http"] if channels != "file" else [])]
        banned = PAUSE_MUST_NOT_IMPORT + (FILE_PAUSE_MUST_NOT_IMPORT if channels == "file" else ())
        code = (
            "import sys\n"
            "from deploy_tool.cli import main\n"
            f"rc = main(['pause', *{argv!r}, '--audit-dir', {str(tmp_path)!r}])\n"
            f"heavy = sorted(m for m in {banned!r} if m in sys.modules)\n"
            "print('HEAVY', heavy, rc)\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EXEC_", "GD_"))} | {"GD_HEAVY_TOKEN": "heavy-token"}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                              env=env)
        assert "HEAVY [] 0" in done.stdout, done.stdout + done.stderr
        assert "pause: DONE" in done.stdout  # it did pause: the list is of a pause that happened
        if channels != "file":
            assert api.mode == "paused"
        if channels != "http":
            assert json.loads((tmp_path / "mode.json").read_text())["mode"] == "paused"
    finally:
        api.stop()


def test_admin_api_under_a_path_prefix(tmp_path):
    from deploy_tool.sandbox import AdminApi

    api = AdminApi(prefix="/ops/admin", token="prefix-token").start()
    try:
        assert api.url.endswith("/ops/admin")
        outcome = switch([HttpChannel(api.url + "/", "prefix-token")], "mock", force=False, reason="", actor="t",
                         gate=GateConfig(str(tmp_path), 3600))
        assert outcome.result == "done" and api.mode == "mock"
        import requests

        outside = requests.get(api.url.replace("/ops/admin", "") + "/mode", timeout=2,
                               headers={"Authorization": "Bearer prefix-token"})
        assert outside.status_code == 404
    finally:
        api.stop()
