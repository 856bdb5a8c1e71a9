"""The secrets check: hard-coded keys in the trading system's source fail it, named by file and line,
never by value; keys where the runbook says they belong (.env, config.yaml) do not, and the evidence lists
what was left out and why (tests/test_secret_scan_exclusions.py holds the cases)."""

from __future__ import annotations

import json
from pathlib import Path

HEX_KEY = "4A1F7C2E9B3D5F8A0C6E2B4D7F9A1C3E"
PASSWORD = "CANARY-hunter2-hunter2"


def _source(tmp_path):
    root = tmp_path / "trading-system"
    (root / "strategies").mkdir(parents=True)
    (root / "strategies" / "momentum.py").write_text("def signal(bar):\n    return bar.close > bar.open\n")
    (root / ".env").write_text(f"OKX_API_SECRET={HEX_KEY}\n")  # where keys belong: not scanned
    (root / "config.yaml").write_text(f"okx:\n  secret_key: {HEX_KEY}\n")
    (root / ".venv").mkdir()
    (root / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")  # a real virtual environment: left out
    (root / ".venv" / "bin").mkdir()
    (root / ".venv" / "bin" / "python").write_text("")
    (root / ".venv" / "vendored.py").write_text(f'secret_key = "{HEX_KEY}"\n')
    return root


def test_clean_source_passes(run_suite, tmp_path):
    root = _source(tmp_path)
    run = run_suite("-m", "secrets", "--scan-path", str(root))
    assert run.result.ret == 0, run.output
    check = run.check("secrets_not_in_code")
    assert check["status"] == "passed" and "no hard-coded secret in 1 file(s)" in check["message"]
    # what was not scanned is in the evidence, with the reason
    assert "3 path(s) not scanned" in check["message"]
    for entry in (".env (key home", "config.yaml (key home", ".venv (virtual environment: holds pyvenv.cfg and an interpreter)"):
        assert entry in check["message"]
    # and whole, structured, beside the message (which shows at most ten)
    details = check["details"]
    assert details["files_scanned"] == 1 and details["findings"] == []
    assert {(Path(n["path"]).name, n["reason"].split(":")[0].split(" (")[0]) for n in details["not_scanned"]} >= {
        (".env", "key home"), ("config.yaml", "key home")}


def test_keys_in_build_and_behind_a_pragma_fail_the_run_by_file_and_line(run_suite, tmp_path):
    root = _source(tmp_path)
    (root / "build").mkdir()
    (root / "build" / "live.py").write_text(f'secret_key = "{HEX_KEY}"\n')
    (root / ".env.prod.py").write_text(f'import os\nsecret_key = "{HEX_KEY}"\n')
    (root / "exchange.py").write_text(f'secret_key = "{HEX_KEY}"  # pragma: allowlist secret\n')
    run = run_suite("-m", "secrets", "--scan-path", str(root), "-vv")
    assert run.result.ret == 1
    check = run.check("secrets_not_in_code")
    assert check["measured"] == 6
    message = check["message"]
    assert "4 hard-coded secret(s)" in message
    assert "build/live.py:1 (Hex High Entropy String)" in message and ".env.prod.py:2 (Secret Keyword)" in message
    assert "exchange.py:1 (Hex High Entropy String, allowlisted by pragma)" in message
    assert "3 path(s) not scanned" in message
    for text in (run.output, run.html, json.dumps(run.evidence)):
        assert HEX_KEY not in text


def test_a_hard_coded_key_fails_by_file_and_line_never_by_value(run_suite, tmp_path):
    root = _source(tmp_path)
    (root / "exchange.py").write_text(f'import os\n\nsecret_key = "{HEX_KEY}"\npassword = "{PASSWORD}"\n')
    run = run_suite("-m", "secrets", "--scan-path", str(root), "-vv")
    assert run.result.ret == 1
    message = run.check("secrets_not_in_code")["message"]
    assert "exchange.py:3 (Hex High Entropy String)" in message and "exchange.py:4 (Secret Keyword)" in message
    assert "rotate every key" in message
    for text in (run.output, run.html, json.dumps(run.evidence)):
        assert HEX_KEY not in text and PASSWORD not in text


def test_without_a_path_the_check_skips_and_a_wrong_path_fails(run_suite, tmp_path):
    run = run_suite("-m", "secrets", sandbox_args=False)
    assert run.statuses("secrets") == {"secrets_not_in_code": "skipped"}
    assert "no --scan-path" in run.evidence["skipped"][0]["reason"]
    wrong = run_suite("-m", "secrets", "--scan-path", str(tmp_path / "nope"))
    assert wrong.result.ret == 1 and "is not a directory" in wrong.check("secrets_not_in_code")["message"]


def test_an_okx_key_shaped_like_a_uuid_is_found(tmp_path):
    from deploy_tool.probes.secretscan import scan

    (tmp_path / "exchange.py").write_text('import os\napi_key = "8a5c2d1e-3b4f-4c6d-9e7f-0a1b2c3d4e5f"\n')
    assert [(f.path, f.line) for f in scan(str(tmp_path)).findings] == [("exchange.py", 2)]


def test_a_pyvenv_cfg_alone_does_not_take_code_out_of_the_scan(tmp_path):
    from deploy_tool.probes.secretscan import scan

    (tmp_path / "strategies").mkdir()
    (tmp_path / "strategies" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (tmp_path / "strategies" / "live.py").write_text(f'secret_key = "{HEX_KEY}"\n')
    assert {(f.path, f.line) for f in scan(str(tmp_path)).findings} == {("strategies/live.py", 1)}
