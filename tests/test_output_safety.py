"""What a server says reaches a person or a file only scrubbed: a token it echoes is masked before any cut,
and in pieces; a token given as a URL's user name is masked; terminal escape sequences are written out, on
the terminal, in the audit, the notification and the evidence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import pytest

from deploy_tool.redact import Redactor, mask_url, url_secrets
from test_notify import receiver  # noqa: F401 - the notification receiver fixture

GD = [sys.executable, "-m", "deploy_tool"]
TOKEN = "Ech0Tok3n9f3a1c7e2b"  # 19 characters, as the issue's
TOKEN_ENV = "GD_SAFETY_TOKEN"
PIECE = 8
# What retitles and recolours a terminal: OSC 0 (title) ended by BEL, CSI 31m, and CSI as its one-byte C1 form.
ESCAPES = "\x1b]0;pwned\x07\x1b[31m\x9b1m"
RAW = ("\x1b", "\x07", "\x9b")
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if k not in ("EXEC_HTTP_ADMIN_URL", "EXEC_HTTP_ADMIN_ENABLED", "EXEC_HTTP_HOST", "EXEC_HTTP_PORT",
                          "EXEC_CONTROL_FILE", "FORCE_COLOR", "PYTEST_ADDOPTS")}
ENV = {**CLEAN_ENV, TOKEN_ENV: TOKEN, "PY_COLORS": "0"}  # pytest's own colours are escapes too: off


def leaked(text: str, secret: str = TOKEN) -> list[str]:
    """The pieces of `secret` of PIECE characters that `text` holds."""
    return sorted({secret[i:i + PIECE] for i in range(len(secret) - PIECE + 1) if secret[i:i + PIECE] in text})


def raw_controls(text: str) -> list[str]:
    return [c for c in RAW if c in text]


Answer = Callable[[str, str, dict], "tuple[int, Any]"]


class AdminStandIn:
    """An admin API on loopback that answers every call as `answer(method, path, headers)` says."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                status, body = stand_in.answer(self.command, self.path, dict(self.headers))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _reply  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def admin_api():
    servers: list[AdminStandIn] = []

    def start(answer: Answer) -> AdminStandIn:
        servers.append(AdminStandIn(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def straddling(method: str, path: str, headers: dict) -> tuple[int, Any]:
    """A careless server that repeats the Authorization header so that the token spans character 120 of its
    error text: 17 of its 19 characters before the cut, as the issue found."""
    auth = headers.get("Authorization", "")
    return 500, {"error": "r" * 96 + auth}


def first_twelve(method: str, path: str, headers: dict) -> tuple[int, Any]:
    """A server that quotes only the first 12 characters of the token."""
    token = headers.get("Authorization", "").removeprefix("Bearer ")
    return 500, {"error": f"token {token[:12]}... is not allowed here"}


def _gd(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(GD + list(args), capture_output=True, text=True, timeout=timeout, env=ENV, cwd=cwd)


def _audit_lines(directory: Path) -> list[str]:
    return [line for f in sorted(directory.glob("deploy-*.jsonl")) for line in f.read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------------------------- 1. masked before cut


def test_a_piece_of_a_known_secret_is_masked_wherever_it_appears():
    redactor = Redactor([TOKEN])
    for text in ("r" * 96 + "Bearer " + TOKEN[:17], f"token {TOKEN[:12]}... is not allowed", f"...{TOKEN[-9:]}",
                 json.dumps({"e": TOKEN[3:15]})):
        assert leaked(redactor.scrub(text)) == [], text
    assert redactor.scrub("Bearer " + TOKEN) == "Bearer ***"
    assert Redactor(["k-12345"]).scrub("k-12345 and k-1234") == "*** and k-1234", "shorter: masked whole only"
    # A run that two secrets share is a naming convention, not secret material: the sandbox's key, secret,
    # passphrase and token all begin "sandbox-", and its strategy's checks keep their names.
    sandbox = Redactor(["sandbox-token-123", "sandbox-api-key-0001", "sandbox-api-secret-0001"])
    assert sandbox.scrub("backtest_sharpe[sandbox-momentum]") == "backtest_sharpe[sandbox-momentum]"
    assert leaked(sandbox.scrub("echo: sandbox-token-1"), "sandbox-token-123") == []


def test_a_location_in_a_secret_looking_variable_masks_no_path_beside_it(tmp_path):
    sock = tmp_path / "agent.sock"
    sock.write_text("")
    redactor = Redactor.from_environ({"SSH_AUTH_SOCK": str(sock)})
    beside = str(tmp_path / "evidence" / "preflight.json")
    assert redactor.scrub(f"{sock} {beside}") == f"*** {beside}"


@pytest.mark.parametrize("answer", [straddling, first_twelve], ids=["across-the-cut", "first-12"])
def test_an_echoed_token_is_masked_before_the_cut_in_the_commands(tmp_path, admin_api, receiver, answer):
    api = admin_api(answer)
    base = ["--http-admin-url", api.url, "--admin-token-env", TOKEN_ENV]
    audit = tmp_path / "audit"
    outputs = {}
    for command in (["pause", "--audit-dir", str(audit), "--notify", receiver.url],
                    ["pause", "--json", "--audit-dir", str(audit)],
                    ["switch", "--to", "mock", "--audit-dir", str(audit)], ["status"], ["status", "--json"]):
        done = _gd(*command, *base, cwd=tmp_path)
        assert done.returncode == 1, done.stdout + done.stderr
        outputs[" ".join(command[:2])] = done.stdout + done.stderr
    assert all("HTTP 500" in out for out in outputs.values()), outputs  # the server's answer was quoted
    (message,) = receiver.wait()
    texts = {**outputs, "notification": json.dumps(message), "audit": "\n".join(_audit_lines(audit))}
    assert len(_audit_lines(audit)) >= 3
    for where, text in texts.items():
        assert leaked(text) == [], f"{leaked(text)} of the token in {where}: {text}"


@pytest.mark.parametrize("answer", [straddling, first_twelve], ids=["across-the-cut", "first-12"])
def test_an_echoed_token_is_masked_before_the_cut_in_the_preflight(tmp_path, admin_api, receiver, answer):
    api = admin_api(answer)
    evidence = tmp_path / "ev"
    done = _gd("preflight", "--http-admin-url", api.url, "--admin-token-env", TOKEN_ENV, "--evidence-dir",
               str(evidence), "--notify", receiver.url, "-m", "admin or risk", "-rA", "--tb=short", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    (json_file,) = [p for p in evidence.glob("preflight-*.json") if not p.name.endswith(".intoto.json")]
    doc = json.loads(json_file.read_text())
    health = next(c for c in doc["checks"] if c["id"] == "admin_health")
    assert health["status"] == "failed" and "HTTP 500" in health["message"]
    (message,) = receiver.wait()
    texts = {"terminal": done.stdout + done.stderr, "JSON": json_file.read_text(),
             "HTML": json_file.with_suffix(".html").read_text(), "notification": json.dumps(message)}
    for where, text in texts.items():
        assert leaked(text) == [], f"{leaked(text)} of the token in {where}"


def test_a_message_of_the_account_api_is_masked_before_its_cut(run_suite, sandbox, admin_api, monkeypatch):
    key = "CANARY-acctkey-5e7d0b9a"

    def echo_key(method: str, path: str, headers: dict) -> tuple[int, Any]:
        # OKX's shape, an error code the tool knows, and a message that repeats the key across its 80th character
        # (15 of its 23 characters before it)
        return 401, {"code": "50111", "msg": "m" * 60 + " key " + headers.get("OK-ACCESS-KEY", ""), "data": []}

    okx = admin_api(echo_key)
    monkeypatch.setenv("OKX_API_KEY", key)
    run = run_suite("-m", "account", "--okx-base-url", okx.url, "-rA")
    assert run.result.ret == 1
    assert "OKX error 50111" in run.check("account_facts")["message"]
    for where, text in (("terminal", run.output), ("HTML", run.html), ("JSON", json.dumps(run.evidence))):
        assert leaked(text, key) == [], f"{leaked(text, key)} of the key in {where}"


# ------------------------------------------------------------------------------------- 2. token as user name


def test_a_user_name_without_a_password_is_a_credential():
    assert mask_url("http://Tok3nSecretAbcdef@host/x") == "http://***@host/x"
    assert "Tok3nSecretAbcdef" in url_secrets("http://Tok3nSecretAbcdef@host/x")
    assert mask_url("postgresql://app:pw-secret@db/prod") == "postgresql://app:***@db/prod"
    assert mask_url("postgresql://app@db/prod") == "postgresql://app@db/prod", "a database role is no credential"
    redactor = Redactor()
    redactor.add_url("https://Tok3nSecretAbcdef@hooks.example/x")
    assert redactor.scrub("echo Tok3nSecretAbcdef") == "echo ***"


def test_a_token_as_user_name_stays_out_of_the_evidence(run_suite, sandbox):
    token = "Tok3nSecretAbcdef"
    okx = sandbox.okx_url.replace("http://", f"http://{token}@")
    run = run_suite("-m", "okx", "--okx-base-url", okx, "-vv", "-l", "--tb=long")
    assert run.evidence["targets"]["okx_base_url"] == sandbox.okx_url.replace("http://", "http://***@")
    for where, text in (("terminal", run.output), ("HTML", run.html), ("JSON", json.dumps(run.evidence))):
        assert leaked(text, token) == [], f"{leaked(text, token)} of the token in {where}"


# ------------------------------------------------------------------------------------- 3. escape sequences


def test_control_characters_are_written_out_without_any_secret():
    assert Redactor().scrub(f"a{ESCAPES}b\tc\nd\x7f\r") == "a\\x1b]0;pwned\\x07\\x1b[31m\\x9b1mb\tc\nd\\x7f\\x0d"
    assert Redactor([TOKEN]).scrub_data({"k\x1b": [f"x{ESCAPES}"]}) == {"k\\x1b": ["x\\x1b]0;pwned\\x07\\x1b[31m\\x9b1m"]}


def escaping_errors(method: str, path: str, headers: dict) -> tuple[int, Any]:
    return 500, {"error": f"boom {ESCAPES}real"}


def escaping_mode(method: str, path: str, headers: dict) -> tuple[int, Any]:
    if method == "GET" and path.endswith("/mode"):
        return 200, {"mode": f"{ESCAPES}real", "version": 1}
    return 500, {"error": f"{ESCAPES}no"}


@pytest.mark.parametrize("answer", [escaping_errors, escaping_mode], ids=["error-body", "mode"])
def test_escape_sequences_from_the_admin_api_are_written_out(tmp_path, admin_api, receiver, answer):
    api = admin_api(answer)
    base = ["--http-admin-url", api.url, "--admin-token-env", TOKEN_ENV]
    audit = tmp_path / "audit"
    texts = {}
    for command in (["pause", "--audit-dir", str(audit), "--notify", receiver.url],
                    ["switch", "--to", "mock", "--audit-dir", str(audit)], ["status"]):
        done = _gd(*command, *base, cwd=tmp_path)
        assert done.returncode == 1, done.stdout + done.stderr
        texts[command[0]] = done.stdout + done.stderr
    assert any("\\x1b]0;pwned" in text for text in texts.values()), texts  # written out, not dropped
    (message,) = receiver.wait()
    lines = _audit_lines(audit)
    assert lines
    # The audit as stored, and as `jq -r` would print its values; the notification as the receiver shows it.
    texts["audit"] = "\n".join(lines)
    texts["audit (values)"] = "\n".join(str(v) for line in lines for v in _leaves(json.loads(line)))
    texts["notification"] = message["title"] + message["message"]
    for where, text in texts.items():
        assert raw_controls(text) == [], f"raw {raw_controls(text)} in {where}: {text!r}"


def test_escape_sequences_stay_off_the_preflights_terminal_and_evidence(tmp_path, admin_api):
    api = admin_api(escaping_errors)
    evidence = tmp_path / "ev"
    done = _gd("preflight", "--http-admin-url", api.url, "--admin-token-env", TOKEN_ENV, "--evidence-dir",
               str(evidence), "-m", "admin", "-rA", "--tb=long", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "\\x1b]0;pwned" in done.stdout
    (json_file,) = [p for p in evidence.glob("preflight-*.json") if not p.name.endswith(".intoto.json")]
    _assert_no_raw_controls(done.stdout + done.stderr, json_file)


def test_escape_sequences_from_the_exchange_are_written_out(run_suite, sandbox):
    sandbox.exchange.behaviour.code = "50001"
    sandbox.exchange.behaviour.msg = f"maintenance {ESCAPES}now"
    run = run_suite("-m", "okx", "-rA", "--tb=long")
    assert run.result.ret == 1
    assert "\\x1b]0;pwned" in run.check("okx_public_time_ok")["message"]
    _assert_no_raw_controls(run.output, run.json_files[0])


def _assert_no_raw_controls(terminal: str, json_file: Path) -> None:
    doc = json.loads(json_file.read_text())
    texts = {"terminal": terminal, "HTML": json_file.with_suffix(".html").read_text(),
             "JSON": json_file.read_text(encoding="utf-8"),
             "JSON (values)": "\n".join(str(v) for v in _leaves(doc))}
    for where, text in texts.items():
        assert raw_controls(text) == [], f"raw {raw_controls(text)} in {where}"


def _leaves(value: Any) -> list[Any]:
    """Every key and scalar of a JSON document: what `jq -r` prints."""
    if isinstance(value, dict):
        return [leaf for k, v in value.items() for leaf in (k, *_leaves(v))]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


# ------------------------------------------------------------------------------------- the second hostile pass

FORGED = "busy\npause: DONE\n  http x: real -> paused confirmed"
BIDI = "boom \u202eTEKCOS\u202c \u2066x\u2069 \u200bzero\u2028line\ufeff"


def forging(method: str, path: str, headers: dict) -> tuple[int, Any]:
    token = headers.get("Authorization", "").removeprefix("Bearer ")
    import base64

    return 500, {"error": f"{FORGED} {BIDI} b64 {base64.b64encode(token.encode()).decode()} up {token.upper()}"}


def test_a_server_can_neither_forge_lines_nor_hide_text_nor_echo_the_token_encoded(tmp_path, admin_api):
    api = admin_api(forging)
    audit = tmp_path / "audit"
    done = _gd("pause", "--http-admin-url", api.url, "--admin-token-env", TOKEN_ENV, "--audit-dir", str(audit),
               cwd=tmp_path)
    out = done.stdout + done.stderr
    assert "\npause: DONE" not in out and "busy\\x0apause: DONE" in out, out
    audit_text = "\n".join(_audit_lines(audit))
    for text in (out, audit_text, "\n".join(str(v) for line in _audit_lines(audit) for v in _leaves(json.loads(line)))):
        for char in "\u202e\u202c\u2066\u2069\u200b\u2028\ufeff":
            assert char not in text, (hex(ord(char)), text)
        import base64

        assert base64.b64encode(TOKEN.encode()).decode()[:PIECE] not in text
        assert leaked(text.lower(), TOKEN.lower()) == [], text


def test_the_redactor_masks_a_secret_in_its_common_encodings():
    import base64
    from urllib.parse import quote

    token = "Zq8+rT/w3LmN9pXv2Kd=Yh7sEuQ1"
    redactor = Redactor([token])
    for form in (base64.b64encode(token.encode()).decode(), quote(token, safe=""), token.replace("/", "\\/"),
                 token.upper(), token.lower()):
        assert "***" in redactor.scrub(f"echo {form} end"), form
        assert form[2:10] not in redactor.scrub(f"echo {form} end"), form
