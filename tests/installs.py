"""Building and installing the project as a user gets it: the wheel, fresh venvs, pinned install URLs."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class BuiltWheel:
    """The project's wheel as `pip wheel .` builds it, and its sha256 (what a hash-pinned install names)."""

    path: Path
    sha256: str

    @property
    def pinned_url(self) -> str:
        return f"{self.path.as_uri()}#sha256={self.sha256}"


def tracked_files(untracked: bool = True) -> list[str]:
    """The files git tracks in this checkout (as committed or staged, and, unless told not to, untracked ones
    not ignored: a new module not yet added is still built and tested), less the Node.js tools' installed
    modules: what a clone holds."""
    extra = ["--others", "--exclude-standard"] if untracked else []
    proc = subprocess.run(["git", "ls-files", "-z", "--cached", *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.skip(f"not a git checkout ({proc.stderr.strip()}): the file lists come from git")
    return sorted({p for p in proc.stdout.split("\0") if p and "/node_modules/" not in p and (ROOT / p).is_file()})


def pip_failure(what: str, proc: subprocess.CompletedProcess) -> str:
    return f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def site_packages(venv: Path) -> Path:
    if os.name == "nt":
        return venv / "Lib" / "site-packages"
    (site,) = (venv / "lib").glob("python*/site-packages")
    return site


def clean_env(venv: Path) -> dict[str, str]:
    """The environment of a process that must see only `venv`: it first on PATH, the test venv (with its
    editable install) off it, no Python or pytest settings of this run, no deployment settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("EXEC_", "OKX_", "GD_", "PYTEST_", "PYTHON")) and k not in (
               "DATABASE_URL", "BACKTEST_SUMMARY", "CI", "VIRTUAL_ENV")}
    test_venv_bin = Path(sys.executable).parent.resolve()
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() != test_venv_bin]
    env["PATH"] = os.pathsep.join([str(venv_python(venv).parent), *path])
    return env


def make_venv(where: Path, with_pip: bool = True) -> Path:
    """A fresh virtual environment from the interpreter under this test run (not from the test venv)."""
    base = getattr(sys, "_base_executable", sys.executable)
    proc = subprocess.run([base, "-m", "venv", *([] if with_pip else ["--without-pip"]), str(where)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, pip_failure("creating a venv", proc)
    return where


def venv_with_dependencies(where: Path, dependencies: Path) -> Path:
    """A fresh venv that sees gradual-deploy's dependencies, not gradual-deploy: what a CI job's python is
    before its install step (the dependencies, and pip, come in by a .pth file, so installing the wheel
    installs only the wheel, for real, into this venv, in seconds)."""
    venv = make_venv(where, with_pip=False)
    (site_packages(venv) / "gd_dependencies.pth").write_text(str(dependencies) + "\n")
    return venv
