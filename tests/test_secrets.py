"""Planted canary secrets never reach the HTML, the JSON or the terminal, whatever the run shows."""

from __future__ import annotations

import base64
import json

import pytest

from deploy_tool.redact import Redactor, mask_url
from deploy_tool.sandbox import Sandbox, sandbox_account

DB_PASSWORD = "CANARY-dbpass-5f1c9e"
ADMIN_TOKEN = "CANARY-token-a8d2b7"
API_KEY = "CANARY-apikey-33e0c4"
API_SECRET = "CANARY-secret-91bb02"
API_PASSPHRASE = "CANARY-passphrase-44d1"
CANARIES = (DB_PASSWORD, ADMIN_TOKEN, API_KEY, API_SECRET, API_PASSPHRASE)


@pytest.fixture
def canary_world(tmp_path, pg_url, pg_conn, monkeypatch):
    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE trades (ts timestamptz)")
        cur.execute("INSERT INTO trades VALUES (now())")
    # trust auth accepts any password, so the canary really travels to the server and back
    db_url = pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{DB_PASSWORD}@")
    monkeypatch.setenv("OKX_API_KEY", API_KEY)
    monkeypatch.setenv("OKX_SECRET_KEY", API_SECRET)
    monkeypatch.setenv("OKX_API_SECRET", API_SECRET)
    monkeypatch.setenv("OKX_API_PASSPHRASE", API_PASSPHRASE)
    monkeypatch.setenv("GD_CANARY_TOKEN", ADMIN_TOKEN)
    with Sandbox(tmp_path / "world", token=ADMIN_TOKEN, token_env="GD_CANARY_TOKEN") as box:
        # the account checks sign real requests with the canary key, secret and passphrase
        box.exchange.behaviour.accounts[API_KEY] = sandbox_account(API_KEY, API_SECRET, API_PASSPHRASE)
        yield box, db_url


def _assert_clean(run_dir, output: str, canaries=CANARIES) -> None:
    texts = {"terminal": output}
    for path in run_dir.glob("preflight-*"):
        texts[path.name] = path.read_text()
        if path.name.endswith(".intoto.json"):  # the signed statement travels base64-encoded in its envelope
            texts[f"{path.name} (payload)"] = base64.b64decode(json.loads(texts[path.name])["payload"]).decode()
    # the terminal, the HTML, the JSON and its signed envelope (read as stored and decoded)
    assert len(texts) == 5, sorted(texts)
    for where, text in texts.items():
        for canary in canaries:
            assert canary not in text, f"{canary} leaked into {where}"


@pytest.mark.postgres
@pytest.mark.parametrize("failing", [False, True], ids=["passing", "failing"])
def test_canaries_never_leak(pytester, canary_world, failing, monkeypatch):
    box, db_url = canary_world
    args = [a for a in box.preflight_args()]
    args[args.index("--database-url") + 1] = db_url
    # The fixture's one trade is as old as the time this run takes to reach the db check, which a loaded
    # machine stretches past the default 5 s: freshness is not what this test is about.
    args += ["--data-latency-threshold", "3600"]
    if failing:
        # failures whose messages talk about the very targets that hold the secrets
        args[args.index("--database-url") + 1] = db_url.replace("127.0.0.1:5432", "127.0.0.1:9")
        monkeypatch.setenv("GD_CANARY_TOKEN", "wrong-token-0000")
        args += ["--http-admin-url", f"http://user:{ADMIN_TOKEN}@127.0.0.1:9/?token={ADMIN_TOKEN}"]
        monkeypatch.setenv("DATABASE_URL", db_url)
        # a plain assertion failure under -l prints the test's locals, among them the settings record
        args += ["--api-latency-threshold-ms", "0.001"]
    # The signing key handed over as CI hands it over, in GD_SIGNING_KEY: the private key is a secret too.
    at = args.index("--signing-key")
    pem = box.signing_key.read_text()
    del args[at:at + 2]
    monkeypatch.setenv("GD_SIGNING_KEY", pem)
    key_lines = [line for line in pem.splitlines() if line and not line.startswith("-----")]
    assert key_lines
    evidence = pytester.path / "ev"
    result = pytester.runpytest_subprocess(
        "--pyargs", "preflight_tests", "-p", "no:cacheprovider", *args, "--evidence-dir", str(evidence),
        "-vv", "-rA", "-l", "--tb=long",
    )
    output = result.stdout.str() + result.stderr.str()
    assert result.ret == (1 if failing else 0), output
    if failing:
        result.stdout.fnmatch_lines(["*test_trades_fresh*FAILED*"])
        assert "postgresql://postgres:***@127.0.0.1:9/" in output
        assert "settings   = Settings(" in output or "settings = Settings(" in output, "no locals shown"
    else:
        assert "metadata:" in output  # -v prints the environment too
    _assert_clean(evidence, output, (*CANARIES, pem.strip(), *key_lines))


def test_mask_url_and_redactor():
    assert mask_url("postgresql://app:pa%40ss@db:5432/prod") == "postgresql://app:***@db:5432/prod"
    assert mask_url("postgresql://app@db/prod") == "postgresql://app@db/prod"
    assert mask_url("https://h/x?api_key=abc&x=1") == "https://h/x?api_key=***&x=1"
    redactor = Redactor.from_environ({"OKX_API_KEY": "k-123456", "HOME": "/root",
                                      "DATABASE_URL": "postgresql://a:p%40ssword@h/db"})
    assert redactor.scrub("key k-123456 and p@ssword and p%40ssword, home /root") == "key *** and *** and ***, home /root"
    assert Redactor(["ab"]).scrub("ab") == "ab", "values too short to be secrets are not masked"
    assert redactor.scrub_data({"a": ["k-123456"]}) == {"a": ["***"]}


URL_CANARY = "CANARY-urlpass-7e21"


@pytest.mark.parametrize("flag,value", [
    ("--okx-base-url", f"ftp://u:{URL_CANARY}@okx.example"),
    ("--database-url", f"mysql://app:{URL_CANARY}@db/prod"),
    ("--http-admin-url", f"admin:{URL_CANARY}@127.0.0.1:8001"),
])
def test_a_bad_url_with_a_password_is_masked_in_the_usage_error(pytester, flag, value, tmp_path):
    result = pytester.runpytest("--pyargs", "preflight_tests", "-p", "no:cacheprovider", "--evidence-dir",
                                str(tmp_path / "ev"), flag, value)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    out = result.stdout.str() + result.stderr.str()
    assert f"invalid {flag}" in out and URL_CANARY not in out


@pytest.mark.parametrize("env", [{"EXEC_HTTP_ADMIN_URL": f"http//admin:{URL_CANARY}@x"},
                                 {"DATABASE_URL": f"mysql://a:{URL_CANARY}@db/x"}])
def test_a_bad_url_in_the_environment_is_masked_by_the_commands(tmp_path, env):
    import os
    import subprocess
    import sys

    for command in (["switch", "--to", "mock"], ["status"], ["watch", "--skip-db-check"]):
        # from tmp_path: a switch that goes through writes its audit under data/audit there, not in the checkout
        done = subprocess.run([sys.executable, "-m", "deploy_tool", *command, "--control-file", str(tmp_path / "m.json")],
                              capture_output=True, text=True, timeout=60, env={**os.environ, **env}, cwd=tmp_path)
        out = done.stdout + done.stderr
        if "DATABASE_URL" in env and command[0] != "watch":
            continue  # switch and status do not read the database
        assert done.returncode == 2 and "invalid --" in out and "Traceback" not in out, (command, out)
        assert URL_CANARY not in out


def test_a_server_echoing_the_token_does_not_leak_it(tmp_path):
    import json
    import os
    import subprocess
    import sys

    with Sandbox(tmp_path / "echo", token=ADMIN_TOKEN, token_env="GD_ECHO_TOKEN") as box:
        box.admin.fault = "echo_auth"
        env = {**os.environ, "GD_ECHO_TOKEN": ADMIN_TOKEN}
        base = ["--http-admin-url", box.admin_url, "--admin-token-env", "GD_ECHO_TOKEN"]
        audit = tmp_path / "audit"
        outputs = []
        for command in (["pause", "--audit-dir", str(audit)], ["pause", "--json", "--audit-dir", str(audit)],
                        ["switch", "--to", "mock", "--audit-dir", str(audit)], ["status"], ["status", "--json"]):
            done = subprocess.run([sys.executable, "-m", "deploy_tool", *command, *base], capture_output=True,
                                  text=True, timeout=60, env=env, cwd=tmp_path)
            assert done.returncode == 1, done.stdout + done.stderr
            outputs.append(done.stdout + done.stderr)
        assert any("rejected: Authorization: Bearer ***" in out for out in outputs), outputs
        lines = [line for f in audit.glob("*.jsonl") for line in f.read_text().splitlines()]
        assert len(lines) == 3 and all(json.loads(line)["result"] == "failed" for line in lines)
        for text in [*outputs, *lines]:
            assert ADMIN_TOKEN not in text


def test_passwords_in_every_url_option_stay_out_of_the_evidence(run_suite, sandbox):
    okx = sandbox.okx_url.replace("http://", f"http://reader:{URL_CANARY}-okx@")
    admin = sandbox.admin_url.replace("http://", f"http://ops:{URL_CANARY}-adm@")
    run = run_suite("--okx-base-url", okx, "--http-admin-url", admin, "-vv", "-l", "--tb=long")
    assert run.evidence["targets"]["okx_base_url"] == sandbox.okx_url.replace("http://", "http://reader:***@")
    assert run.evidence["targets"]["http_admin_url"] == sandbox.admin_url.replace("http://", "http://ops:***@")
    for text in (run.output, run.html, json.dumps(run.evidence)):
        assert URL_CANARY not in text


@pytest.mark.parametrize("text", ["a", "p@ss/w+rd?<>&\"'", "ÿ€中文" * 3, "", "\x00\x7f" + "z" * 61])
def test_the_masked_forms_are_the_standard_librarys(text):
    """The redactor forms base64 and HTML-escaped copies of a secret without importing base64 and html (a pause
    pays for neither): they must be byte for byte what those modules give, or a copy would go unmasked."""
    import base64
    import html

    from deploy_tool.redact import _URLSAFE, _b64, _html_escape

    data = text.encode()
    assert _b64(data) == base64.b64encode(data).decode()
    assert _b64(data).translate(_URLSAFE) == base64.urlsafe_b64encode(data).decode()
    assert _html_escape(text) == html.escape(text)
