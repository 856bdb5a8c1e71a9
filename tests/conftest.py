"""Fixtures of the project's own tests: a real PostgreSQL database, the sandbox, the suite as users run it."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest

# Imported here, before any in-process pytester run: pytester restores sys.modules after each run, and a
# requests/psycopg2 imported fresh inside every run ends up mixing classes of two imports.
import psycopg2  # noqa: F401
import requests  # noqa: F401

from deploy_tool.sandbox import Sandbox

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
        self.json_files = sorted(evidence_dir.glob("preflight-*.json"))
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
        argv = ["--pyargs", "preflight_tests", "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning", *base,
                "--evidence-dir", str(evidence_dir), *args]
        result = pytester.runpytest_subprocess(*argv) if subprocess else pytester.runpytest(*argv)
        return SuiteRun(result, evidence_dir)

    return run
