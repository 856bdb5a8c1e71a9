"""What a user installs is what is tested: the wheel and the sdist hold every package and data file, and the
wheel, installed into a fresh venv with no source tree on sys.path, runs from another directory.

Every other test runs against the editable install of this checkout, which finds any module in the source
tree whether or not the wheel ships it (a wheel once lacked deploy_tool.commands, .modes and .probes, and
every command but --version failed for anyone who installed it the normal way).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from deploy_tool.sandbox import Sandbox

from installs import ROOT, BuiltWheel, clean_env, tracked_files, venv_python

pytestmark = pytest.mark.slow


def test_the_wheel_holds_every_package_and_data_file(built_wheel: BuiltWheel) -> None:
    shipped = set(zipfile.ZipFile(built_wheel.path).namelist())
    ours = [p for p in tracked_files() if p.startswith(("deploy_tool/", "preflight_tests/"))]
    assert ours and any(p.startswith("deploy_tool/commands/") for p in ours)
    missing = sorted(set(ours) - shipped)
    assert not missing, f"tracked package files missing from the wheel: {missing}"
    # Every folder with Python in it is a package with its __init__ (nothing found only by a namespace import).
    folders = {str(Path(p).parent) for p in ours if p.endswith(".py")}
    assert all(f"{folder}/__init__.py" in shipped for folder in folders), folders
    entry_points = zipfile.ZipFile(built_wheel.path).read(
        next(n for n in shipped if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "gradual-deploy = deploy_tool.cli:main" in entry_points
    assert "preflight_tests.plugin = preflight_tests.plugin" in entry_points


def test_every_tracked_module_outside_the_tests_is_in_the_wheel(built_wheel: BuiltWheel) -> None:
    """A module added at the top level (not under deploy_tool/ or preflight_tests/) is not shipped either."""
    shipped = set(zipfile.ZipFile(built_wheel.path).namelist())
    outside = ("tests/", "bench/", "examples/", ".ci/")
    modules = [p for p in tracked_files() if p.endswith(".py") and not p.startswith(outside) and p != "conftest.py"]
    assert not sorted(set(modules) - shipped), sorted(set(modules) - shipped)


RESOLVE_IMPORTS = r"""
import ast, importlib.util, json, pathlib, sys
root = pathlib.Path(sys.argv[1])
missing = {}
for path in sorted(root.rglob("*.py")):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            try:
                found = importlib.util.find_spec(name) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                missing.setdefault(name, []).append(f"{path.relative_to(root)}:{node.lineno}")
print(json.dumps(missing))
"""


def test_every_import_in_the_installed_wheel_resolves(installed_venv: Path, tmp_path: Path) -> None:
    """Every import statement in the shipped code, the lazy ones inside functions too, finds its module in
    the venv the wheel was installed into: a package in the wheel or a declared dependency. A dependency
    dropped from pyproject.toml (python-dotenv, apprise: only some paths import them) fails here."""
    site = [p for p in (installed_venv / "lib").glob("python*/site-packages")][0]
    for package in ("deploy_tool", "preflight_tests"):
        done = _run([str(venv_python(installed_venv)), "-c", RESOLVE_IMPORTS, str(site / package)],
                    tmp_path, clean_env(installed_venv))
        assert done.returncode == 0, done.stderr
        unresolved = json.loads(done.stdout)
        # An optional extra's modules (scipy, for `gradual-deploy[judge]`) are not in a plain install: they may
        # be imported only where the tool says what to install when they are missing (tests/test_judge.py).
        optional = {name: where for name, where in unresolved.items() if name.split(".")[0] in OPTIONAL_EXTRAS}
        assert {k: v for k, v in unresolved.items() if k not in optional} == {}, \
            f"imports in {package} that the installed wheel cannot resolve"


def _optional_extras() -> set[str]:
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {re.split(r"[<>=\[ ]", spec, maxsplit=1)[0].lower() for name, specs in extras.items() if name != "test"
            for spec in specs}


OPTIONAL_EXTRAS = _optional_extras()


def test_the_sdist_holds_every_tracked_file(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path),
                           str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (sdist,) = tmp_path.glob("gradual_deploy-*.tar.gz")
    with tarfile.open(sdist) as tar:
        shipped = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    missing = sorted(set(tracked_files(untracked=False)) - shipped)
    assert not missing, f"tracked files missing from the sdist: {missing}"
    # The sdist builds the same wheel: every package is found from it alone, not from this checkout.
    assert "deploy_tool/commands/watch.py" in shipped and "preflight_tests/report.css" in shipped


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 180):
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_installed_wheel_imports_from_site_packages_only(installed_venv: Path, tmp_path: Path) -> None:
    env = clean_env(installed_venv)
    done = _run([str(venv_python(installed_venv)), "-c",
                                 "import sys, deploy_tool, preflight_tests.plugin, deploy_tool.commands.watch, "
                                 "deploy_tool.modes.change, deploy_tool.probes.okx; "
                                 "print(deploy_tool.__file__); print(preflight_tests.plugin.__file__); "
                                 "print(any('__editable__' in p for p in sys.path))"], tmp_path, env)
    assert done.returncode == 0, done.stderr
    first, second, editable = done.stdout.splitlines()
    for path in (first, second):
        assert Path(path).is_relative_to(installed_venv), path
        assert not Path(path).is_relative_to(ROOT), path
    assert editable == "False"


def test_the_installed_tool_runs_the_demo_from_another_directory(installed_venv: Path, tmp_path: Path) -> None:
    tool = str(venv_python(installed_venv).parent / "gradual-deploy")
    demo = _run([tool, "demo"], tmp_path, clean_env(installed_venv), timeout=300)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "ModuleNotFoundError" not in demo.stderr and "Traceback" not in demo.stderr
    assert "demo finished: preflight passed" in demo.stdout, demo.stdout[-3000:]
    # Only an installed wheel (not an editable install) makes pytest mark deploy_tool for rewriting.
    assert "Warning" not in demo.stdout + demo.stderr, demo.stdout[-3000:]


def test_the_installed_tool_runs_the_suite_the_gate_and_a_pause_from_another_directory(
        installed_venv: Path, tmp_path: Path) -> None:
    env = clean_env(installed_venv)
    tool = str(venv_python(installed_venv).parent / "gradual-deploy")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    with Sandbox(tmp_path / "box", token="installed-token-7f3a", token_env="GD_INSTALL_TEST_TOKEN", mode="mock") as box:
        box_env = {**env, box.token_env: box.token or "", **box.account_env()}
        suite = _run([str(venv_python(installed_venv)), "-m", "pytest", "--pyargs", "preflight_tests",
                                      "-p", "no:cacheprovider", *box.preflight_args(),
                                      "--evidence-dir", str(elsewhere / "evidence")], elsewhere, box_env, timeout=300)
        # The gate as the CI templates run it: the console script, its own evidence, no warning noise.
        gate = _run([tool, "preflight", *box.preflight_args(), "--evidence-dir",
                                     str(elsewhere / "gate-evidence")], elsewhere, box_env, timeout=300)
        assert gate.returncode == 0, gate.stdout[-4000:] + gate.stderr[-2000:]
        assert "PASS" in gate.stdout and "Warning" not in gate.stdout + gate.stderr, gate.stdout[-3000:]
        # The installed tool signed it, and verifies it offline with the public key alone.
        (signed,) = (elsewhere / "gate-evidence").glob("preflight-*.intoto.json")
        verified = _run([tool, "verify", str(signed), "--trusted-keys", str(box.trusted_keys), "--subject",
                         str(box.backtest_summary)], elsewhere, env)
        assert verified.returncode == 0 and "VERIFIED" in verified.stdout, verified.stdout + verified.stderr
        # The emergency pause, through both channels of a running (stand-in) system.
        pause = _run([tool, "pause", "--http-admin-url", box.admin_url, "--admin-token-env",
                                      box.token_env, "--control-file", str(box.control_file), "--audit-dir",
                                      str(elsewhere / "audit"), "--reason", "installed-wheel test"], elsewhere, box_env)
        assert pause.returncode == 0, pause.stdout + pause.stderr
        assert box.admin.mode == "paused" and json.loads(box.control_file.read_text())["mode"] == "paused"
    audit = [json.loads(line) for p in (elsewhere / "audit").glob("deploy-*.jsonl") for line in p.read_text().splitlines()]
    assert [(a["from"], a["to"], a["result"]) for a in audit] == [("mock", "paused", "done")]
    assert box.token not in pause.stdout + pause.stderr + (elsewhere / "audit").joinpath(
        next((elsewhere / "audit").glob("deploy-*.jsonl")).name).read_text()
    assert suite.returncode == 0, suite.stdout[-4000:] + suite.stderr[-2000:]
    (evidence,) = [p for p in (elsewhere / "evidence").glob("preflight-*.json") if not p.name.endswith(".intoto.json")]
    doc = json.loads(evidence.read_text())
    assert doc["verdict"] == "pass"
    assert doc["tool_version"] and {c["status"] for c in doc["checks"]} <= {"passed", "skipped"}
    assert sum(c["status"] == "passed" for c in doc["checks"]) >= 10
    # The suite that ran is the installed one, not this checkout's.
    assert str(ROOT) not in suite.stdout
