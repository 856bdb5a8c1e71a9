"""The README stays honest: every option, command and check it must name, and the CI command."""

from __future__ import annotations

import re
from pathlib import Path

from deploy_tool.cli import build_parser
from deploy_tool.settings import SUITE_OPTIONS as OPTIONS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_every_suite_option_and_ini_key_is_documented():
    for option in OPTIONS:
        assert f"`{option.flag}`" in README, option.flag
        assert option.flag_only or f"`{option.name}`" in README, option.name
        for env in option.env:
            assert f"`{env}`" in README, env
    for flag in ("--skip-db-check", "--skip-backtest-check"):
        assert f"`{flag}`" in README


def test_every_command_and_its_options_are_documented():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    for name, sub in subparsers.choices.items():
        assert f"gradual-deploy {name}" in README, name
        for action in sub._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert flag in README, f"{name} {flag}"


def test_every_check_is_documented():
    for path in (ROOT / "preflight_tests").glob("test_*.py"):
        for name in re.findall(r"^def test_(\w+)\(", path.read_text(), re.M):
            assert f"`{name}`" in README, name


def test_the_two_commands_and_ci_agree():
    blocks = re.findall(r"```bash\n(.+?)\n```", README, re.S)
    demo, tests = blocks[0], blocks[1]
    assert demo.endswith("gradual-deploy demo")
    # The whole suite, on four pytest-xdist workers (most tests wait on servers and processes, not the CPU).
    assert tests.endswith(".venv/bin/pytest -n 4 --dist worksteal")
    assert tests in (ROOT / ".ci" / "run").read_text()
