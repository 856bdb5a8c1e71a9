"""The docs stay honest: every option, command, check and environment variable is documented on the page
that holds it (README.md is the way in, docs/*.md the reference), and the README's two commands are CI's.
That the links resolve and the quoted command lines parse is tests/test_docs_links.py's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from deploy_tool.attest import SIGNING_KEY_ENV
from deploy_tool.cli import build_parser
from deploy_tool.settings import OPTIONS
from deploy_tool.settings import SUITE_OPTIONS as OPTIONS_OF_THE_SUITE

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# Each page by its path; DOCS is all of them together, for a fact that may live on any page.
PAGES = {path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8")
         for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
DOCS = "\n\n".join(PAGES.values())
OPTIONS_PAGE = PAGES["docs/options.md"]  # every option, ini key, environment variable and default
CHECKS_PAGE = PAGES["docs/preflight.md"]  # every check, in the checks table


def _row(flag: str) -> list[str] | None:
    """The cells after the option's own in its table row (`| `--flag` | ini key | ... |`), or None."""
    found = re.search(rf"^\| `{re.escape(flag)}` \|(.*)\|$", OPTIONS_PAGE, re.M)
    return [cell.strip() for cell in found.group(1).split(" | ")] if found else None


def test_every_suite_option_and_ini_key_is_documented():
    """Each suite option has its row: the ini key where it has one, none where it has none (an empty cell
    for the plain on/off flags, "none: ..." for an option that an ini may not set, as --config), and its
    environment variables."""
    for option in OPTIONS_OF_THE_SUITE:
        cells = _row(option.flag)
        assert cells is not None, f"no table row for {option.flag}"
        if option.flag_only or not option.ini_key:
            assert cells[0] == "" or cells[0].startswith("none"), f"{option.flag}: ini key cell {cells[0]!r}"
        else:
            assert cells[0] == f"`{option.name}`", f"{option.flag}: ini key cell {cells[0]!r}"
        for env in option.env:
            assert f"`{env}`" in " | ".join(cells), f"{option.flag}: {env} not in its row"
    for flag in ("--skip-db-check", "--skip-backtest-check"):
        assert f"`{flag}`" in OPTIONS_PAGE


def test_every_environment_variable_of_the_tool_is_documented():
    for option in OPTIONS:
        for env in option.env:
            assert f"`{env}`" in OPTIONS_PAGE, f"{option.flag}: {env}"
    assert f"`{SIGNING_KEY_ENV}`" in OPTIONS_PAGE


def _commands():
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices


def test_every_command_and_its_options_are_documented():
    for name, sub in _commands().items():
        assert f"gradual-deploy {name}" in DOCS, name
        for action in sub._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert flag in DOCS, f"{name} {flag}"


def test_every_option_of_every_command_has_a_row_in_the_options_page():
    """docs/options.md is where an option is looked up: each flag of each command is named in the first cell of
    one of its table rows (the suite's, the observation options', or the commands' own)."""
    first_cells = " ".join(re.findall(r"^\| ([^|]*) \|", OPTIONS_PAGE, re.M))
    named = set(re.findall(r"`(--[a-z][a-z0-9-]*)`", first_cells))
    for name, sub in _commands().items():
        for action in sub._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert flag in named, f"{name} {flag}: no row in docs/options.md"


@pytest.mark.parametrize("name", ["keygen", "verify"])
def test_the_signing_commands_have_a_usage_line_and_exit_codes(name: str):
    """A command of its own: its usage line in a code block, each of its options in it, and its exit codes."""
    pages = [text for text in PAGES.values() if re.search(rf"^gradual-deploy {name}\b.*$", text, re.M)]
    assert pages, f"no usage line for gradual-deploy {name}"
    page = pages[0]
    usage = re.search(rf"^gradual-deploy {name}\b.*$", page, re.M)
    assert usage
    for action in _commands()[name]._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag != "--help":
                assert flag in usage.group(0), f"{name}: {flag} not in its usage line"
    section = page[usage.start():]
    assert re.search(r"Exit codes: 0 [^.]*1 [^.]*", section[:6000]), f"{name}: exit codes"


def test_every_check_is_documented():
    for path in (ROOT / "preflight_tests").glob("test_*.py"):
        for name in re.findall(r"^def test_(\w+)\(", path.read_text(), re.M):
            assert f"`{name}`" in CHECKS_PAGE, name


def test_the_two_commands_and_ci_agree():
    blocks = re.findall(r"```bash\n(.+?)\n```", README, re.S)
    demo, tests = blocks[0], blocks[1]
    assert demo.endswith("gradual-deploy demo")
    # The whole suite, on four pytest-xdist workers (most tests wait on servers and processes, not the CPU).
    assert tests.endswith(".venv/bin/pytest -n 4 --dist worksteal")
    assert tests in (ROOT / ".ci" / "run").read_text()
