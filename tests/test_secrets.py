"""Planted canary secrets never reach the HTML, the JSON or the terminal, whatever the run shows."""

from __future__ import annotations

import pytest

from deploy_tool.redact import Redactor, mask_url
from deploy_tool.sandbox import Sandbox

DB_PASSWORD = "CANARY-dbpass-5f1c9e"
ADMIN_TOKEN = "CANARY-token-a8d2b7"
API_KEY = "CANARY-apikey-33e0c4"
API_SECRET = "CANARY-secret-91bb02"
CANARIES = (DB_PASSWORD, ADMIN_TOKEN, API_KEY, API_SECRET)


@pytest.fixture
def canary_world(tmp_path, pg_url, pg_conn, monkeypatch):
    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE trades (ts timestamptz)")
        cur.execute("INSERT INTO trades VALUES (now())")
    # trust auth accepts any password, so the canary really travels to the server and back
    db_url = pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{DB_PASSWORD}@")
    monkeypatch.setenv("OKX_API_KEY", API_KEY)
    monkeypatch.setenv("OKX_SECRET_KEY", API_SECRET)
    monkeypatch.setenv("GD_CANARY_TOKEN", ADMIN_TOKEN)
    with Sandbox(tmp_path / "world", token=ADMIN_TOKEN, token_env="GD_CANARY_TOKEN") as box:
        yield box, db_url


def _assert_clean(run_dir, output: str) -> None:
    texts = {"terminal": output}
    for path in run_dir.glob("preflight-*"):
        texts[path.name] = path.read_text()
    assert len(texts) == 3, sorted(texts)
    for where, text in texts.items():
        for canary in CANARIES:
            assert canary not in text, f"{canary} leaked into {where}"


@pytest.mark.postgres
@pytest.mark.parametrize("failing", [False, True], ids=["passing", "failing"])
def test_canaries_never_leak(pytester, canary_world, failing, monkeypatch):
    box, db_url = canary_world
    args = [a for a in box.preflight_args()]
    args[args.index("--database-url") + 1] = db_url
    if failing:
        # failures whose messages talk about the very targets that hold the secrets
        args[args.index("--database-url") + 1] = db_url.replace("127.0.0.1:5432", "127.0.0.1:9")
        monkeypatch.setenv("GD_CANARY_TOKEN", "wrong-token-0000")
        args += ["--http-admin-url", f"http://user:{ADMIN_TOKEN}@127.0.0.1:9/?token={ADMIN_TOKEN}"]
        monkeypatch.setenv("DATABASE_URL", db_url)
        # a plain assertion failure under -l prints the test's locals, among them the settings record
        args += ["--api-latency-threshold-ms", "0.001"]
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
    _assert_clean(evidence, output)


def test_mask_url_and_redactor():
    assert mask_url("postgresql://app:pa%40ss@db:5432/prod") == "postgresql://app:***@db:5432/prod"
    assert mask_url("postgresql://app@db/prod") == "postgresql://app@db/prod"
    assert mask_url("https://h/x?api_key=abc&x=1") == "https://h/x?api_key=***&x=1"
    redactor = Redactor.from_environ({"OKX_API_KEY": "k-123456", "HOME": "/root",
                                      "DATABASE_URL": "postgresql://a:p%40ssword@h/db"})
    assert redactor.scrub("key k-123456 and p@ssword and p%40ssword, home /root") == "key *** and *** and ***, home /root"
    assert Redactor(["ab"]).scrub("ab") == "ab", "values too short to be secrets are not masked"
    assert redactor.scrub_data({"a": ["k-123456"]}) == {"a": ["***"]}
