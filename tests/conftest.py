"""Fixtures of the project's own tests: a real PostgreSQL database, the sandbox, the suite as users run it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest

# Imported here, before any in-process pytester run: pytester restores sys.modules after each run, and a
# requests/psycopg2 imported fresh inside every run ends up mixing classes of two imports.
import psycopg2  # noqa: F401
import requests  # noqa: F401
# cryptography's Rust core cannot be imported twice: its Python half re-imported after a run would hand
# it classes it does not know ("Encryption algorithm must be a KeySerializationEncryption instance").
import cryptography.exceptions  # noqa: F401
import cryptography.hazmat.primitives.asymmetric.ed25519  # noqa: F401
import cryptography.hazmat.primitives.serialization  # noqa: F401

from deploy_tool.sandbox import Sandbox
from installs import ROOT, BuiltWheel, make_venv, pip_failure, site_packages, tracked_files, venv_python

def pytest_configure(config: pytest.Config) -> None:
    """Tests press Ctrl+C on child processes (watch, sandbox, a preflight run). A shell that starts a job in
    the background (`cmd &`, nohup) makes it ignore SIGINT, and an ignored signal stays ignored across exec,
    so those children would never see the Ctrl+C. With a handler here instead, every child starts with the
    default, as under a terminal."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() == "true"


def _admin_connection(url: str):
    conn = psycopg2.connect(url, connect_timeout=3)
    conn.autocommit = True
    return conn


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The server URL; skips without a server, except under CI=true where that is a failure."""
    try:
        _admin_connection(TEST_DATABASE_URL).close()
    except psycopg2.Error as exc:
        reason = f"no PostgreSQL at {TEST_DATABASE_URL} ({' '.join(str(exc).split())[:120]})"
        if IN_CI:
            pytest.fail(f"{reason}; CI=true requires the database tests to run", pytrace=False)
        pytest.skip(f"{reason}; set TEST_DATABASE_URL to run the database tests")
    return TEST_DATABASE_URL


@pytest.fixture
def pg_url(pg_server: str):
    """A freshly created, uniquely named database, dropped afterwards."""
    from urllib.parse import urlsplit, urlunsplit

    name = f"gd_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_connection(pg_server)
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(pg_server)
        yield urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def pg_conn(pg_url: str):
    conn = psycopg2.connect(pg_url)
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture
def sandbox(tmp_path: Path):
    """The whole stand-in world on loopback, in a temporary directory."""
    with Sandbox(tmp_path / "sandbox", token="sandbox-token-123", token_env="GD_TEST_ADMIN_TOKEN") as box:
        yield box


class SuiteRun:
    """The outcome of one preflight run: pytester's result plus the evidence it wrote."""

    def __init__(self, result: pytest.RunResult, evidence_dir: Path) -> None:
        self.result = result
        self.evidence_dir = evidence_dir
        self.json_files = sorted(p for p in evidence_dir.glob("preflight-*.json") if not p.name.endswith(".intoto.json"))
        self.attestations = sorted(evidence_dir.glob("preflight-*.intoto.json"))
        self.html_files = sorted(evidence_dir.glob("preflight-*.html"))

    @property
    def evidence(self) -> dict:
        assert len(self.json_files) == 1, f"expected one JSON evidence file, got {self.json_files}"
        return json.loads(self.json_files[0].read_text())

    @property
    def html(self) -> str:
        assert len(self.html_files) == 1, f"expected one HTML evidence file, got {self.html_files}"
        return self.html_files[0].read_text()

    @property
    def output(self) -> str:
        return self.result.stdout.str() + self.result.stderr.str()

    def check(self, check_id: str) -> dict:
        for entry in self.evidence["checks"]:
            if entry["id"] == check_id:
                return entry
        raise AssertionError(f"no check {check_id} in {[c['id'] for c in self.evidence['checks']]}")

    def statuses(self, marker: str | None = None) -> dict[str, str]:
        """Check id -> status, of one marker group when given."""
        return {c["id"]: c["status"] for c in self.evidence["checks"] if marker in (None, c["marker"])}


@pytest.fixture
def run_suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, sandbox: Sandbox):
    """Run `pytest --pyargs preflight_tests` as a user would, pointed at the sandbox unless told otherwise."""
    monkeypatch.setenv(sandbox.token_env, sandbox.token)
    for name, value in sandbox.account_env().items():
        monkeypatch.setenv(name, value)
    for name in ("DATABASE_URL", "OKX_BASE_URL", "BACKTEST_SUMMARY", "EXEC_HTTP_ADMIN_URL", "EXEC_CONTROL_FILE",
                 "EXEC_HTTP_ADMIN_ENABLED", "EXEC_HTTP_HOST", "EXEC_HTTP_PORT"):
        monkeypatch.delenv(name, raising=False)

    runs = []

    def run(*args: str, sandbox_args: bool = True, subprocess: bool = False, evidence_dir: Path | None = None) -> SuiteRun:
        runs.append(args)
        evidence_dir = evidence_dir or pytester.path / f"evidence-{len(runs)}"
        base = [*sandbox.preflight_args()] if sandbox_args else []
        # the run's own --evidence-dir last: it wins over the sandbox's own (in its preflight_args), wherever
        # a test puts those
        argv = ["--pyargs", "preflight_tests", "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning", *base,
                *args, "--evidence-dir", str(evidence_dir)]
        result = pytester.runpytest_subprocess(*argv) if subprocess else pytester.runpytest(*argv)
        return SuiteRun(result, evidence_dir)

    return run


# ------------------------------------------------------------------------------------ what a user installs


def _shared_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for the whole run, the same for every pytest-xdist worker (its base temp's parent)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def _once(tmp_path_factory: pytest.TempPathFactory, name: str, make) -> Path:
    """Make `name` once per run, however many workers ask: a lock, and a marker file written last."""
    from filelock import FileLock

    folder = _shared_dir(tmp_path_factory) / name
    done = folder.with_suffix(".done")
    with FileLock(str(folder.with_suffix(".lock"))):
        if not done.exists():
            if folder.exists():
                shutil.rmtree(folder)
            folder.mkdir(parents=True)
            make(folder)
            done.write_text("ok")
    return folder


def make_wheel(tmp_path_factory: pytest.TempPathFactory) -> BuiltWheel:
    """The wheel built from this checkout once per run (pip's isolated build, as a user's `pip install .`)."""

    def build(folder: Path) -> None:
        # From the tracked files alone, as a git-URL install sees them: a stale build/ or egg-info in this
        # checkout would otherwise put into the wheel what the project's own configuration leaves out.
        source = folder / "source"
        for name in tracked_files():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
        # This venv's setuptools (the test extra asks for what pyproject's build-system requires), not an
        # isolated build environment installed anew each run: the same wheel, a few seconds less.
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                               "--disable-pip-version-check", "-w", str(folder), str(source)],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, pip_failure("building the wheel", proc)

    folder = _once(tmp_path_factory, "wheel", build)
    (wheel,) = folder.glob("gradual_deploy-*.whl")
    return BuiltWheel(wheel, hashlib.sha256(wheel.read_bytes()).hexdigest())


def make_installed(tmp_path_factory: pytest.TempPathFactory, wheel: BuiltWheel) -> Path:
    """A fresh venv with the wheel installed the normal way: `pip install <wheel>`, its dependencies
    resolved from the package index. No editable install, no source tree on sys.path."""

    def install(folder: Path) -> None:
        venv = make_venv(folder / "venv")
        # --no-compile: Python compiles what is imported when it is imported; compiling every module of
        # every dependency up front (apprise's hundreds of plugins) is CPU the suite does not need.
        proc = subprocess.run([str(venv_python(venv)), "-m", "pip", "install", "--quiet", "--no-compile",
                               "--disable-pip-version-check", str(wheel.path)],
                              capture_output=True, text=True, timeout=900, cwd=folder)
        assert proc.returncode == 0, pip_failure("pip install of the wheel", proc)

    return _once(tmp_path_factory, "installed", install) / "venv"


def make_dependencies(tmp_path_factory: pytest.TempPathFactory, installed: Path) -> Path:
    """The installed wheel's dependencies without gradual-deploy itself: a copy of that venv's site-packages
    less the project's packages and its dist-info (and so its entry points). See
    `installs.venv_with_dependencies`."""
    ours = ("deploy_tool", "preflight_tests", "gradual_deploy-", "_distutils_hack", "distutils-precedence.pth",
            "__editable__")

    def copy(folder: Path) -> None:
        site = site_packages(installed)
        # Hard links where the file system allows (the copy is only read): thousands of files in a moment.
        def link(src: str, dst: str) -> None:
            try:
                os.link(src, dst)
            except OSError:
                shutil.copy2(src, dst)

        shutil.copytree(site, folder, dirs_exist_ok=True, copy_function=link,
                        ignore=lambda d, names: [n for n in names if Path(d) == site and n.startswith(ours)])

    return _once(tmp_path_factory, "dependencies", copy)


INSTALL_FIXTURES = {"built_wheel", "installed_venv", "dependencies_only"}
NEEDS_INSTALL = pytest.StashKey[bool]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The tests that need the built and installed wheel go last (the same order on every xdist worker), so
    that the build, started in the background when the session starts, is ready when they run."""
    late = [item for item in items if INSTALL_FIXTURES & set(getattr(item, "fixturenames", ()))]
    if late:
        # Among them the longest first (whole processes of the installed tool, then pipelines), so that the
        # run does not end waiting on one long test.
        def weight(item: pytest.Item) -> int:
            names = set(getattr(item, "fixturenames", ()))
            return 0 if "installed_venv" in names and "dependencies_only" not in names else 1 if "ci_box" in names else 2
        late.sort(key=weight)
        items[:] = [item for item in items if item not in set(late)] + late
    config.stash[NEEDS_INSTALL] = bool(late)


@pytest.fixture(scope="session", autouse=True)
def _build_the_wheel_in_the_background(request: pytest.FixtureRequest,
                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    """One worker (the first to claim it) builds the wheel, installs it and copies its dependencies on a
    thread while the other tests run. A test that needs them waits on the same lock; a failure here is left
    for that test to repeat and report."""
    if not request.config.stash.get(NEEDS_INSTALL, False):
        return
    claim = _shared_dir(tmp_path_factory) / "prebuild.claimed"
    try:
        os.close(os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return

    def build() -> None:
        try:
            make_dependencies(tmp_path_factory, make_installed(tmp_path_factory, make_wheel(tmp_path_factory)))
        except BaseException:  # the fixture that needs it builds again and says why
            pass

    threading.Thread(target=build, name="prebuild-wheel", daemon=True).start()


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory: pytest.TempPathFactory) -> BuiltWheel:
    return make_wheel(tmp_path_factory)


@pytest.fixture(scope="session")
def installed_venv(tmp_path_factory: pytest.TempPathFactory, built_wheel: BuiltWheel) -> Path:
    """A fresh venv with the wheel installed by `pip install <wheel>` (see make_installed)."""
    return make_installed(tmp_path_factory, built_wheel)


@pytest.fixture(scope="session")
def dependencies_only(tmp_path_factory: pytest.TempPathFactory, installed_venv: Path) -> Path:
    """gradual-deploy's dependencies without gradual-deploy (see make_dependencies)."""
    return make_dependencies(tmp_path_factory, installed_venv)
