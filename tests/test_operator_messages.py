"""What a new operator met following the README on the installed wheel (issue 18), kept as tests: a typo never
stops a pause, a watch or ramp that would pause a healthy system in its first round refuses to start, and
what the tool says names the fact and the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from deploy_tool.modes.channels import FileChannel
from deploy_tool.sandbox import AdminApi

GD = [sys.executable, "-m", "deploy_tool"]
TARGET_ENV = ("DATABASE_URL", "OKX_BASE_URL", "EXEC_HTTP_ADMIN_URL", "EXEC_CONTROL_FILE", "EXEC_HTTP_ADMIN_ENABLED",
              "EXEC_HTTP_HOST", "EXEC_HTTP_PORT", "GD_TRUSTED_KEYS", "GD_CONFIG", "GD_NOTIFY_URLS")


def _gd(*args, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in TARGET_ENV}
    done = subprocess.run(GD + [str(a) for a in args], capture_output=True, text=True, timeout=120,
                          env={**base, **(env or {})}, cwd=cwd)
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    return done


def _mode(path: Path) -> str:
    return json.loads(path.read_text())["mode"]


def test_a_typo_beside_a_good_channel_still_pauses_and_says_what_it_ignored(tmp_path):
    control = tmp_path / "mode.json"
    FileChannel(str(control)).apply("real", None, "", "t", cas=False)
    api = AdminApi(token="typo-token", mode="real").start()
    try:
        done = _gd("pause", "--http-admin-url", api.url, "--admin-token-env", "GD_TYPO_TOKEN", "--contrl-file",
                   control, "--reson", "risk blocks", "--audit-dir", tmp_path / "audit", cwd=tmp_path,
                   env={"GD_TYPO_TOKEN": "typo-token"})
        assert done.returncode == 0 and done.stdout.startswith("pause: DONE"), done.stdout + done.stderr
        assert api.mode == "paused"
        assert "IGNORED what it does not know: --contrl-file" in done.stderr
        assert "--contrl-file -> --control-file" in done.stderr and "--reson -> --reason" in done.stderr
        assert _mode(control) == "real", "the misspelt channel was not touched: the warning says so"
    finally:
        api.stop()


def test_a_typo_in_the_only_channel_is_a_usage_error_that_names_the_right_option(tmp_path):
    control = tmp_path / "mode.json"
    FileChannel(str(control)).apply("real", None, "", "t", cas=False)
    done = _gd("pause", "--contrl-file", control, cwd=tmp_path)
    assert done.returncode == 2
    assert "no channel" in done.stderr and "--contrl-file -> --control-file" in done.stderr
    assert _mode(control) == "real"


def test_a_typo_in_another_command_shows_that_commands_usage_and_the_close_option(tmp_path):
    done = _gd("switch", "--to", "mock", "--databse-url", "sqlite:///x.db", "--control-file", tmp_path / "m.json",
               cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith("usage: gradual-deploy switch")
    assert "--databse-url -> --database-url" in done.stderr and "`gradual-deploy switch --help`" in done.stderr
    assert not (tmp_path / "m.json").exists()


def test_watch_and_ramp_without_the_capital_refuse_to_start_instead_of_pausing_a_healthy_system(sandbox, tmp_path):
    args = list(sandbox.watch_args())
    i = args.index("--capital")
    del args[i:i + 2]
    for command in (["watch", "--duration", "5s", "--interval", "1s"], ["ramp", "--steps", "0.5%,1%", "--hold", "2s"]):
        sandbox.admin.change({"mode": "real"})
        done = _gd(*command, *args, cwd=tmp_path, env={sandbox.token_env: sandbox.token})
        assert done.returncode == 2, done.stdout + done.stderr
        assert "give --capital N" in done.stderr
        assert sandbox.admin.mode == "real", "nothing paused"


def test_verify_of_a_path_that_is_not_there_says_so(tmp_path):
    done = _gd("verify", tmp_path / "preflight-x.intoto.json", cwd=tmp_path)
    assert done.returncode == 2 and "no such file" in done.stderr


def test_status_says_a_control_file_that_is_not_there_is_not_there(tmp_path):
    done = _gd("status", "--control-file", tmp_path / "contrl" / "mode.json", cwd=tmp_path)
    assert done.returncode == 1
    assert "NO SUCH FILE: check --control-file" in done.stdout and "no mode yet" not in done.stdout


def test_the_ramp_plan_says_what_steps_without_percent_signs_mean(tmp_path):
    done = _gd("ramp", "--steps", "0.5,1", "--hold", "1h", "--plan", cwd=tmp_path)
    assert done.returncode == 0
    assert "(50%, 100%); if you meant 0.5%, 1%, write --steps 0.5%,1%" in done.stdout


def test_the_preflight_verdict_line_says_whether_the_evidence_opens_real(sandbox, tmp_path):
    env = {sandbox.token_env: sandbox.token, **sandbox.account_env()}
    done = _gd("preflight", *sandbox.preflight_args(), "--evidence-dir", tmp_path / "ev", cwd=tmp_path, env=env)
    assert "gradual-deploy preflight: verdict PASS (exit 0): this evidence opens real" in done.stdout, done.stdout
    done = _gd("preflight", *sandbox.preflight_args(), "--skip-db-check", "--evidence-dir", tmp_path / "ev2",
               cwd=tmp_path, env=env)
    line = next(x for x in done.stdout.splitlines() if x.startswith("gradual-deploy preflight: verdict"))
    assert line.startswith("gradual-deploy preflight: verdict PASS (exit 0): this evidence does NOT open real (")
    assert "--skip-db-check" in line


def test_a_preflight_refused_for_an_unreadable_signing_key_leaves_no_claim_that_blocks_the_gate(sandbox, tmp_path):
    """A typo in --signing-key used to leave an empty preflight-<stamp>.html behind: the gate then refused every
    later switch ("never finished") until someone deleted it."""
    env = {sandbox.token_env: sandbox.token, **sandbox.account_env()}
    args = list(sandbox.preflight_args())
    args[args.index("--signing-key") + 1] = str(tmp_path / "key" / "signing-key.pem")
    done = _gd("preflight", *args, "--evidence-dir", tmp_path / "ev", cwd=tmp_path, env=env)
    assert done.returncode == 4 and "cannot read the signing key" in done.stdout + done.stderr
    assert not list((tmp_path / "ev").glob("preflight-*")), "no claim left behind"


def test_a_misspelt_preflight_option_gets_the_close_one_named(tmp_path):
    done = _gd("preflight", "--database-ulr", "sqlite:///x.db", "--evidence-dir", tmp_path / "ev", cwd=tmp_path)
    assert done.returncode == 4
    assert "--database-ulr is no option: did you mean --database-url?" in done.stderr
    assert "`gradual-deploy preflight --help`" in done.stderr


def test_a_misspelt_option_holding_a_url_password_never_echoes_it(tmp_path):
    """Hostile try: the unknown arguments are echoed back (the usage error of switch, the pause's warning): a
    misspelt --databse-url still holds the database password, which must not reach the terminal."""
    secret = "s3cret-pw-canary-81"
    control = tmp_path / "mode.json"
    FileChannel(str(control)).apply("real", None, "", "t", cas=False)
    url = f"postgresql://app:{secret}@db.prod:5432/trades"
    switch = _gd("switch", "--to", "mock", "--control-file", control, "--databse-url", url, cwd=tmp_path)
    pause = _gd("pause", "--control-file", control, "--databse-url", url, "--audit-dir", tmp_path / "a", cwd=tmp_path)
    assert switch.returncode == 2 and "--databse-url -> --database-url" in switch.stderr
    assert pause.returncode == 0 and "IGNORED" in pause.stderr and _mode(control) == "paused"
    for done in (switch, pause):
        assert secret not in done.stdout + done.stderr
        assert "postgresql://app:***@db.prod:5432/trades" in done.stderr


def test_settings_replace_takes_problems_and_sources_too():
    from deploy_tool.settings import defaults

    base = defaults()
    changed = base.replace(capital=5.0, problems={"control_file": "bad"}, sources={"capital": "a test"})
    assert changed.capital == 5.0 and changed.problems == {"control_file": "bad"}
    assert changed.sources == {"capital": "a test"} and base.capital is None and base.problems == {}
