"""The preflight's startup stays light: the heavy libraries a check needs (requests and urllib3, detect-secrets
with yaml, the database drivers, filelock) and the probe modules are loaded by the check that needs them, when it
runs, never at startup or collection, and never for a check that does not run (issue 18, point 6:
bench/bench_preflight.py measures the wall time).

Each run is a fresh process (`runpytest_subprocess`): the project's own tests import requests and psycopg2 in
conftest.py, so only a child's sys.modules says what the suite itself loaded. A small plugin in the child writes
what was loaded by the end of collection and what each check added.
"""

from __future__ import annotations

import gc
import json

import pytest

# Not one of these is loaded by the end of collection, whatever the run is pointed at.
NOT_AT_COLLECTION = (
    "requests", "urllib3", "charset_normalizer", "yaml", "detect_secrets", "psycopg2", "sqlite3", "filelock",
    "deploy_tool.probes.http", "deploy_tool.probes.plainhttp", "deploy_tool.probes.okx",
    "deploy_tool.probes.okxaccount", "deploy_tool.probes.freshness", "deploy_tool.probes.secretscan",
    "deploy_tool.probes.riskconfig", "deploy_tool.probes.admin", "deploy_tool.probes.observe",
    "deploy_tool.modes.controlfile",
)
# Loaded first by the check (test file) that needs it, in the healthy sandbox run.
FIRST_LOADED_BY = {
    "requests": "test_okx.py",  # the exchange checks run first: the first HTTP call loads it
    "urllib3": "test_okx.py",
    "deploy_tool.probes.http": "test_okx.py",
    "deploy_tool.probes.okx": "test_okx.py",
    "sqlite3": "test_db.py",  # the sandbox's trades database is SQLite
    "deploy_tool.probes.freshness": "test_db.py",
    "detect_secrets": "test_secrets.py",
    "deploy_tool.probes.secretscan": "test_secrets.py",
    "deploy_tool.modes.controlfile": "test_control.py",
}

PROBE = '''
import atexit, gc, json, os, sys

_seen = set()
_doc = {"added": []}


def _at_exit():  # registered before the suite's own exit hook, so it runs after it
    with open(os.environ["GD_IMPORT_PROBE_OUT"] + ".exit", "w") as fh:
        json.dump({"frozen_at_exit": gc.get_freeze_count()}, fh)


atexit.register(_at_exit)


def _new():
    now = set(sys.modules)
    added = sorted(now - _seen)
    _seen.update(now)
    return added


def pytest_collection_finish(session):
    _new()
    _doc["collection"] = sorted(_seen)
    _doc["frozen_at_collection"] = gc.get_freeze_count()


def pytest_runtest_logfinish(nodeid, location):
    _doc["added"].append([nodeid, _new()])


def pytest_unconfigure(config):
    _doc["end"] = sorted(set(sys.modules))
    with open(os.environ["GD_IMPORT_PROBE_OUT"], "w") as fh:
        json.dump(_doc, fh)
'''


def _run(run_suite, pytester, monkeypatch, *args):
    out = pytester.path / "modules.json"
    monkeypatch.setenv("GD_IMPORT_PROBE_OUT", str(out))
    pytester.makepyfile(gd_import_probe=PROBE)
    run = run_suite("-p", "gd_import_probe", *args, subprocess=True)
    doc = json.loads(out.read_text())
    doc.update(json.loads(out.with_name(out.name + ".exit").read_text()))
    return run, doc


def _first_loader(doc: dict, module: str) -> str | None:
    for nodeid, added in doc["added"]:
        if module in added:
            return nodeid
    return None


def test_startup_loads_no_check_library_and_each_check_loads_its_own(run_suite, pytester, monkeypatch):
    run, doc = _run(run_suite, pytester, monkeypatch)
    assert run.result.ret == 0, run.output
    assert run.evidence["verdict"] == "pass"
    early = sorted(set(NOT_AT_COLLECTION) & set(doc["collection"]))
    assert not early, f"loaded at startup or collection, before any check needs them: {early}"
    # Not vacuous: the checks of this run do load them, each when the first check that needs it runs.
    first = {module: _first_loader(doc, module) for module in FIRST_LOADED_BY}
    wrong = {m: f"first loaded by {first[m]}" for m, where in FIRST_LOADED_BY.items()
             if first[m] is None or where not in first[m]}
    assert not wrong, wrong
    # requests comes with the first exchange check, the run's first check: nothing loads it before
    assert first["requests"] == doc["added"][0][0]
    # a SQLite trades database never loads the PostgreSQL driver
    assert "psycopg2" not in doc["end"]
    # the garbage collector's full passes skip the run's long-lived objects while it runs (gc.freeze), and
    # the process exits without Python's final collection freeing every object one by one
    assert doc["frozen_at_collection"] > 0
    assert doc["frozen_at_exit"] > 0


def test_a_run_of_one_group_loads_only_what_that_group_needs(run_suite, pytester, monkeypatch):
    run, doc = _run(run_suite, pytester, monkeypatch, "-m", "okx")
    assert run.result.ret == 0, run.output  # the run passes its checks; the evidence (a subset) opens nothing
    statuses = run.statuses()
    assert {s for cid, s in statuses.items() if cid.startswith("okx_")} == {"passed"}
    assert "requests" in doc["end"]
    unused = sorted({"detect_secrets", "yaml", "psycopg2", "sqlite3", "filelock", "deploy_tool.probes.secretscan",
                     "deploy_tool.probes.freshness", "deploy_tool.probes.okxaccount", "deploy_tool.probes.riskconfig",
                     "deploy_tool.modes.controlfile"} & set(doc["end"]))
    assert not unused, f"loaded by a run whose checks never use them: {unused}"


@pytest.mark.parametrize("frozen_before", [False, True])
def test_an_in_process_run_leaves_the_garbage_collector_as_it_found_it(run_suite, frozen_before):
    gc.unfreeze()
    try:
        if frozen_before:  # a process that froze its objects itself: the run leaves that arrangement alone
            gc.freeze()
        before = gc.get_freeze_count()
        assert (before > 0) == frozen_before
        run = run_suite("-m", "backtest")
        assert run.result.ret == 0, run.output
        after = gc.get_freeze_count()
        # frozen objects can still die by reference count: their number only ever shrinks when nothing is
        # frozen or unfrozen in between
        assert (0 < after <= before) if frozen_before else after == 0
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("args", [("-m", "okx"), ()])
def test_collect_only_loads_no_check_library(run_suite, pytester, monkeypatch, args):
    run, doc = _run(run_suite, pytester, monkeypatch, "--co", *args)
    early = sorted(set(NOT_AT_COLLECTION) & set(doc["end"]))
    assert not early, f"a collect-only run loaded {early}"
