"""The HTML evidence as a person reads it (issue 18, point 3): the verdict banner says whether the evidence
opens real and, if not, why and what to run, in a colour of its own; times in UTC with the zone; thresholds
with their direction; durations as written; the backtest's sha256; counts that agree with pytest-html's own
filters; no Python repr anywhere.

One set of preflight runs against one sandbox per module (a full pass, `-m "not db"`, `--skip-db-check`, a
failing run), then checked twice: in the written HTML and pytest-html's embedded JSON (no browser), and as
headless Chromium renders it (pytest-html 4 builds its results and environment tables with JavaScript).
Without Chromium the browser tests skip and say so, except under CI=true, where they fail (.ci/run installs
it).
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import html
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy_tool.manifest import CHECKS
from deploy_tool.sandbox import Sandbox
from deploy_tool.times import parse_timestamp
from preflight_tests import report

IN_CI = os.environ.get("CI", "").lower() == "true"
RUNS = ("pass", "notdb", "skipdb", "fail")
DESCRIBED = {"pass": "gradual-deploy preflight, a full pass",
             "notdb": "pytest --pyargs preflight_tests -m 'not db'",
             "skipdb": "gradual-deploy preflight --skip-db-check",
             "fail": "gradual-deploy preflight --min-sharpe 99, a missing database, --require-account-check "
                     "without a key"}
# What each run's banner says, and the state (its colour) it is drawn in.
STATES = {"pass": "opens", "notdb": "not-real", "skipdb": "not-real", "fail": "fail"}
HEADLINES = {"pass": "Verdict: PASS — this evidence opens real",
             "notdb": "Verdict: PASS — but this evidence does NOT open real",
             "skipdb": "Verdict: PASS — but this evidence does NOT open real",
             "fail": "Verdict: FAIL — this evidence does not open real"}
# A Python repr in text meant for a person: an object's default repr, a function, a tuple or list or dict of
# strings, a dataclass (Settings(config=None, ...)), a datetime, a bare None/True/False, a float's 86400.0.
REPRS = {
    "object repr": re.compile(r"<[\w.]+ object at 0x[0-9a-f]+>"),
    "function repr": re.compile(r"<function |<bound method |<locals>"),
    "tuple/list of str": re.compile(r"[(\[]'[^']*',"),
    "dict repr": re.compile(r"\{'[^']*': "),
    "dataclass repr": re.compile(r"\b[A-Z]\w*\((?:\w+=)"),
    "datetime repr": re.compile(r"datetime\.(?:datetime|timezone|timedelta)\("),
    "bare None/True/False": re.compile(r"(?:^|[\s>:=(])(?:None|True|False)(?=$|[\s<,;)])"),
    # a float's repr (86400.0), not a formatted figure with its unit ("24.0 h", "16.0 s")
    "float repr of a whole number": re.compile(r"(?<![\w.])\d+\.0(?![\d.%]| (?:s|ms|min|h|d)\b)"),
    "JavaScript object": re.compile(r"\[object Object\]"),
}
DIRECTION = re.compile(r"^(?:>=|<=|<|>) -?\d")


@dataclass
class Run:
    name: str
    code: int
    output: str
    html_path: Path
    doc: dict

    @property
    def html(self) -> str:
        return self.html_path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory):
    """The sandbox of tests/conftest.py (same token), for the whole module: every run points at it."""
    with Sandbox(tmp_path_factory.mktemp("report-html") / "sandbox", token="sandbox-token-123",
                 token_env="GD_TEST_ADMIN_TOKEN") as sandbox:
        yield sandbox


@pytest.fixture(scope="module")
def runs(box: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    """The four runs, as a user makes them: `gradual-deploy preflight ...`, and `pytest --pyargs
    preflight_tests -m "not db"` (the other way in)."""
    base = tmp_path_factory.mktemp("report-runs")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("EXEC_", "OKX_", "GD_", "PYTEST_")) and k not in ("DATABASE_URL", "BACKTEST_SUMMARY")}
    env[box.token_env] = str(box.token)
    env["TZ"] = "GDT-5:45"  # a host whose local time is not UTC (POSIX form: UTC+5:45, no tzdata needed)
    env.update(box.account_env())
    missing_db = f"sqlite:///{base / 'no-such.db'}"
    cli = [sys.executable, "-m", "deploy_tool", "preflight"]
    suite = [sys.executable, "-m", "pytest", "--pyargs", "preflight_tests", "-p", "no:cacheprovider"]
    commands = {
        "pass": [*cli, *box.preflight_args()],
        "notdb": [*suite, *box.preflight_args(), "-m", "not db"],
        "skipdb": [*cli, *box.preflight_args(), "--skip-db-check"],
        # a threshold failure, a check that cannot measure, and checks that error in setup (no API key)
        "fail": [*cli, *box.preflight_args(), "--min-sharpe", "99", "--database-url", missing_db,
                 "--require-account-check"],
    }
    found = {}
    for name, command in commands.items():
        evidence = base / name
        run_env = {k: v for k, v in env.items() if not k.startswith("OKX_API")} if name == "fail" else env
        proc = subprocess.run([*command, "--evidence-dir", str(evidence)], cwd=base, env=run_env,
                              capture_output=True, text=True, timeout=300)
        (html_path,) = evidence.glob("preflight-*.html")
        found[name] = Run(name, proc.returncode, proc.stdout + proc.stderr, html_path,
                          json.loads(html_path.with_suffix(".json").read_text()))
    assert [found[n].code for n in RUNS] == [0, 0, 0, 1], {n: r.output[-2000:] for n, r in found.items()}
    return found


# --- reading a page ---------------------------------------------------------------------------------


def visible_text(page: str) -> str:
    """The page's text as a browser shows it: no scripts, styles, templates or the data attribute; entities
    decoded; whitespace folded."""
    body = re.sub(r"(?is)<(script|style|template)\b[^>]*>.*?</\1>", " ", page)
    body = re.sub(r'(?is)<div id="data-container"[^>]*>', " ", body)
    text = html.unescape(re.sub(r"(?s)<[^>]+>", " ", body))
    return re.sub(r"\s+([,.;:)])", r"\1", re.sub(r"\s+", " ", text)).strip()


def blob(page: str) -> dict:
    """pytest-html's embedded JSON (tests, environment), from which its JavaScript draws the tables."""
    match = re.search(r'data-jsonblob="([^"]*)"', page)
    assert match, "no pytest-html data blob in the page"
    return json.loads(html.unescape(match.group(1)))


def element(page: str, element_id: str) -> str:
    """The HTML of the element with this id (a div, table or p; nested ones of the same tag counted)."""
    start = page.index(f'id="{element_id}"')
    open_at = page.rindex("<", 0, start)
    tag = re.match(r"<(\w+)", page[open_at:]).group(1)
    depth, pos = 0, open_at
    for match in re.finditer(rf"<(/?){tag}\b", page[open_at:]):
        depth += -1 if match.group(1) else 1
        if depth == 0:
            pos = open_at + match.end()
            break
    return page[open_at:page.index(">", pos) + 1]


def table_rows(table_html: str) -> list[list[str]]:
    rows = re.findall(r"(?s)<tr\b[^>]*>(.*?)</tr>", table_html)
    return [[visible_text(cell) for cell in re.findall(r"(?s)<t[dh]\b[^>]*>(.*?)</t[dh]>", row)] for row in rows]


def reprs_in(text: str) -> list[str]:
    found = []
    for what, pattern in REPRS.items():
        for match in pattern.finditer(text):
            found.append(f"{what}: ...{text[max(0, match.start() - 60):match.end() + 40]}...")
    return found


def filter_counts(page: str) -> dict[str, int]:
    """pytest-html's filter checkboxes: `<span class="passed">23 Passed,</span>`."""
    return {k: int(n) for k, n in re.findall(r'<span class="(\w+)">(\d+) [^<]*</span>', page)}


def banner_counts(text: str) -> dict[str, int]:
    match = re.search(r"In the results table below: ([^.;]*)", text)
    assert match, text[:500]
    words = {"passed": "passed", "failed": "failed", "skipped": "skipped", "errors": "error",
             "expected failures": "xfailed", "unexpected passes": "xpassed", "reruns": "rerun"}
    return {words[w]: int(n) for n, w in re.findall(r"(\d+) ([a-z ]+?)(?:,|$)", match.group(1))}


def threshold_shown(check: dict) -> str | None:
    """What the page must show as a check's numeric threshold: its direction, the value (a duration as
    written)."""
    value = check["threshold"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    name = check["id"].split("[")[0]
    shown = {"backtest_fresh": {86400: "1d", 86400.0: "1d"}}.get(name, {}).get(value, f"{value:.6g}")
    return f"{report.DIRECTIONS[name]} {shown}"


# --- the rules, on any text of a page -----------------------------------------------------------------


def assert_banner(run: Run, text: str) -> None:
    assert HEADLINES[run.name] in text, text[:600]
    doc = run.doc
    if run.name == "notdb":
        assert "trades_fresh (db) not run: deselected by -m 'not db'" in text
        assert "without -m 'not db', once the trades database is ready" in text
    if run.name == "skipdb":
        assert "trades_fresh (db) skipped: skipped on request: --skip-db-check" in text
        assert "without --skip-db-check, once the trades database is ready" in text
    if run.name == "fail":
        for check in doc["checks"]:
            if check["status"] == "failed":
                assert f"{check['id']} ({check['marker']}) failed: {check['message']}" in text
        assert "To open real: fix what failed" in text
    if run.name == "pass":
        assert "Why it does not open real" not in text and "To open real" not in text


def assert_times_in_utc(run: Run, page: str, text: str) -> None:
    started, finished = run.doc["started_at"], run.doc["finished_at"]
    times = element(page, "gd-times")
    assert f'<time datetime="{started}">' in times and f'<time datetime="{finished}">' in times
    utc = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3} UTC")
    assert len(utc.findall(visible_text(times))) == 2, visible_text(times)
    assert f"{started[:10]} {started[11:23]} UTC" in text and f"{finished[:10]} {finished[11:23]} UTC" in text
    # pytest-html's own line, in UTC with the zone, not its local time without one
    generated = re.search(r"Report generated on (\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) UTC by", text)
    assert generated, re.search(r"Report generated on .{0,40}", text)
    assert not re.search(r"\d{2}-[A-Z][a-z]{2}-\d{4} at", text)
    moment = dt.datetime.fromisoformat(generated.group(1)).replace(tzinfo=dt.timezone.utc)
    second = dt.timedelta(seconds=1)
    assert parse_timestamp(started) - second <= moment <= parse_timestamp(finished) + 30 * second, moment


def assert_thresholds(run: Run, page: str, text: str) -> None:
    rows = {r[1]: r for r in table_rows(element(page, "gd-checks"))[1:]}
    for check in run.doc["checks"]:
        expected = threshold_shown(check)
        if expected is not None:
            assert rows[check["id"]][4] == expected, (check, rows[check["id"]])
    for cells in rows.values():
        if re.search(r"\d", cells[4]) and not cells[4].startswith(("one of", "within")):
            assert DIRECTION.match(cells[4]), cells
    env = {r[0]: r[1] for r in table_rows(element(page, "gd-env"))}
    assert env["threshold min_sharpe"].startswith(f">= {run.doc['thresholds']['min_sharpe']:g} (")
    assert env["threshold max_drawdown"].startswith("<= 0.05 (")
    assert env["threshold api_latency_threshold_ms"].startswith("median < 300 ms (")
    # durations as written, never as raw seconds
    assert env["threshold backtest_max_age"].startswith("age <= 1d (")
    assert env["threshold maintenance_horizon"].startswith("no maintenance within 2h (")
    raw = re.search(r"(?<![\w.])(?:86400|7200)(?:\.0)?(?![\w.])", text)  # not inside a run id or a digest
    assert raw is None, text[max(0, raw.start() - 80):raw.end() + 40]


def assert_backtest_sha256(run: Run, text: str) -> None:
    digest = run.doc["inputs"]["backtest_summary"]["sha256"]
    assert digest and re.fullmatch(r"[0-9a-f]{64}", digest)
    assert f"backtest summary sha256 {digest}" in text


def assert_no_reprs(where: str, text: str) -> None:
    found = reprs_in(text)
    assert not found, f"Python reprs in {where}:\n" + "\n".join(found[:10])


# --- without a browser: the written page and pytest-html's data --------------------------------------


def check_written_html(run: Run) -> None:
    name = run.name
    page = run.html
    text = visible_text(page)
    verdict = element(page, "gd-verdict")
    assert f'data-state="{STATES[name]}"' in verdict
    assert page.index('id="gd-verdict"') < page.index('id="gd-opens"') < page.index('id="gd-checks"') \
        < page.index('id="gd-env"')
    assert_banner(run, visible_text(verdict))
    assert_times_in_utc(run, page, text)
    assert_thresholds(run, page, text)
    assert_backtest_sha256(run, text)
    assert_no_reprs("the page's text", text)


def check_pytest_html_data(run: Run) -> None:
    name = run.name
    page = run.html
    data = blob(page)
    for key, value in data["environment"].items():
        for shown in (value.values() if isinstance(value, dict) else [value]):
            assert isinstance(shown, str), (key, value)
            assert_no_reprs(f"environment {key}", html.unescape(shown))
    rows = [row for entries in data["tests"].values() for row in entries]
    for row in rows:
        assert_no_reprs("a results row", visible_text("".join(row["resultsTableRow"])))
        assert_no_reprs("a results log", html.unescape(row["log"]))
        assert "Traceback" not in row["log"] and "def test_" not in row["log"]
    tally = collections.Counter(visible_text(row["resultsTableRow"][0]).lower() for row in rows)
    filters = filter_counts(page)
    assert {k: v for k, v in filters.items() if v} == {k: v for k, v in tally.items() if v}, (filters, tally)
    counts = banner_counts(visible_text(element(page, "gd-verdict")))
    assert {k: v for k, v in counts.items() if v} == {k: v for k, v in filters.items() if v}, (counts, filters)
    # what is not in the results table is counted apart, and adds up to the evidence
    not_run = [c for c in run.doc["checks"] if c["message"].startswith(("deselected", "not run"))]
    banner = visible_text(element(page, "gd-verdict"))
    if not_run:
        assert f"not run, so not in the results table: {len(not_run)} (" in banner
    else:
        assert "not run" not in banner
    statuses = collections.Counter(c["status"] for c in run.doc["checks"])
    assert statuses["passed"] == counts["passed"]
    assert statuses["failed"] == counts["failed"] + counts.get("error", 0)
    assert statuses["skipped"] == counts["skipped"] + len(not_run)
    if name == "fail":
        assert counts["failed"] >= 2 and counts.get("error", 0) >= 1, counts  # each kind of failure is there
    if name == "skipdb":
        assert counts["skipped"] == 1 and filters["skipped"] == 1


# --- in a browser -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> str:
    """Chromium's executable; a skip without one (a failure under CI=true), before any run is made."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    reason = "no Chromium on PATH (chromium, chromium-browser, google-chrome): apt-get install chromium"
    if IN_CI:
        pytest.fail(f"{reason}; .ci/run installs it, so under CI=true this is a broken setup", pytrace=False)
    pytest.skip(reason)


@dataclass
class Rendered:
    dom: str
    png: Path


@pytest.fixture(scope="module")
def rendered(browser: str, runs: dict[str, Run], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    """Each run's page after its scripts ran (--dump-dom), and a screenshot of it, from one headless
    Chromium per page."""
    out = tmp_path_factory.mktemp("rendered")
    found = {}
    for name, run in runs.items():
        png = out / f"{name}.png"
        with tempfile.TemporaryDirectory(prefix="gd-chromium-") as profile:
            proc = subprocess.run(
                [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1400,2000", f"--screenshot={png}", "--dump-dom",
                 run.html_path.as_uri()],
                capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "</html>" in proc.stdout, proc.stderr[-2000:]
        found[name] = Rendered(proc.stdout, png)
    return found


def check_rendered_page(run: Run, page: str) -> None:
    text = visible_text(page)
    # the scripts ran: the results table and pytest-html's environment table are drawn
    drawn = re.findall(r'<tbody class="results-table-row \w+"', page)
    assert len(drawn) == sum(len(v) for v in blob(run.html)["tests"].values()) > 0
    environment = element(page, "environment")
    assert "Thresholds" in environment and "<li>" in environment
    assert_banner(run, visible_text(element(page, "gd-verdict")))
    assert_times_in_utc(run, page, text)
    assert_thresholds(run, page, text)
    assert_backtest_sha256(run, text)
    assert_no_reprs("the rendered page", text)
    # the results table's threshold column, as drawn
    for body in re.findall(r'(?s)<tbody class="results-table-row \w+".*?</tbody>', page):
        cells = table_rows(body)[0]
        if re.search(r"\d", cells[3]):
            assert DIRECTION.match(cells[3]), cells
    # the counts of the banner are those of the filters, as drawn
    counts = banner_counts(visible_text(element(page, "gd-verdict")))
    filters = filter_counts(page)
    assert {k: v for k, v in counts.items() if v} == {k: v for k, v in filters.items() if v}


def png_rows(path: Path, limit: int) -> tuple[int, list[bytes]]:
    """The first `limit` rows of an 8-bit RGB or RGBA PNG as RGB(A) bytes, and the bytes per pixel."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], None
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IHDR":
            header = struct.unpack(">IIBB", data[pos + 8:pos + 18])
        elif kind == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + size])
        pos += 12 + size
    assert header is not None
    width, height, depth, color = header
    assert depth == 8 and color in (2, 6), header
    bpp = 3 if color == 2 else 4
    stride = width * bpp
    count = min(height, limit)
    raw = zlib.decompressobj().decompress(b"".join(idat), (stride + 1) * count)
    prev, rows = bytearray(stride), []
    for y in range(count):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride) if kind else ():
            left = line[i - bpp] if i >= bpp else 0
            up, corner = prev[i], (prev[i - bpp] if i >= bpp else 0)
            if kind == 1:
                add = left
            elif kind == 2:
                add = up
            elif kind == 3:
                add = (left + up) >> 1
            else:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                add = left if pa <= pb and pa <= pc else up if pb <= pc else corner
            line[i] = (line[i] + add) & 255
        rows.append(bytes(line))
        prev = line
    return bpp, rows


def banner_colour(state: str) -> str:
    match = re.search(rf"\.gd-verdict\.{state} \{{ background: #([0-9a-f]{{6}});", report.STYLE)
    assert match, state
    return match.group(1)


def check_screenshot(name: str, png: Path) -> None:
    assert png.exists() and png.stat().st_size > 20_000, png
    bpp, rows = png_rows(png, 450)  # the title and the banner
    colours = collections.Counter(row[i:i + 3] for row in rows for i in range(0, len(row), bpp))
    assert len(colours) > 50, f"a blank screenshot? {len(colours)} colours"
    mine = bytes.fromhex(banner_colour(STATES[name]))
    others = {bytes.fromhex(banner_colour(s)) for s in set(STATES.values()) - {STATES[name]}}
    assert colours[mine] > 10_000, f"the banner's colour #{mine.hex()} covers {colours[mine]} pixels"
    assert not any(colours[o] > 1_000 for o in others), {o.hex(): colours[o] for o in others}


# --- the tests ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def in_run(name: str):
    """Name the run an assertion failed in (the runs are checked in one test each: under pytest-xdist, tests
    of this module on several workers would each make the runs again)."""
    try:
        yield
    except AssertionError as exc:
        raise AssertionError(f"run {name!r} ({DESCRIBED[name]}): {exc}") from exc


def test_every_check_has_a_direction_or_is_worded():
    names = {name for group in CHECKS.values() for name in group}
    assert names - set(report.DIRECTIONS) == report.WORDED
    assert set(report.DIRECTIONS) <= names | {"observe_vs_backtest"}  # the watch's judge: no check of the suite
    assert report.threshold_text("backtest_fresh[x]", 86400.0) == "<= 1d"
    assert report.threshold_text("backtest_sharpe[x]", 0.2) == ">= 0.2"
    assert report.threshold_text("okx_public_time_latency", 300.0) == "< 300"
    assert report.threshold_text("admin_mode", "mock|real|paused") == "one of mock, real, paused"
    assert report.threshold_text("control_dir_writable", True) == "yes"
    assert report.option_text("backtest_max_age", 86400.0) == "age <= 1d"
    assert report.option_text("max_signals", None) == "off"


def test_each_state_has_a_colour_of_its_own():
    colours = {state: banner_colour(state) for state in set(STATES.values())}
    assert len(set(colours.values())) == 3, colours


def test_written_html_and_its_data_say_it_plainly(runs: dict[str, Run]):
    """Without a browser: the written HTML and pytest-html's embedded JSON, for each run."""
    for name in RUNS:
        with in_run(name):
            check_written_html(runs[name])
            check_pytest_html_data(runs[name])


def test_rendered_page_and_screenshot_say_it_plainly(browser: str, runs: dict[str, Run],
                                                     rendered: dict[str, Rendered]):
    """In headless Chromium: the page after its scripts ran, and a screenshot of it, for each run."""
    for name in RUNS:
        with in_run(name):
            check_rendered_page(runs[name], rendered[name].dom)
            check_screenshot(name, rendered[name].png)
