"""The README stays honest: every option, command and check it must name, the commands it shows, and the
CI command."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from deploy_tool.attest import SIGNING_KEY_ENV
from deploy_tool.cli import build_parser
from deploy_tool.settings import OPTIONS
from deploy_tool.settings import SUITE_OPTIONS as OPTIONS_OF_THE_SUITE

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _row(flag: str) -> list[str] | None:
    """The cells after the option's own in its table row (`| `--flag` | ini key | ... |`), or None."""
    found = re.search(rf"^\| `{re.escape(flag)}` \|(.*)\|$", README, re.M)
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
        assert f"`{flag}`" in README


def test_every_environment_variable_of_the_tool_is_documented():
    for option in OPTIONS:
        for env in option.env:
            assert f"`{env}`" in README, f"{option.flag}: {env}"
    assert f"`{SIGNING_KEY_ENV}`" in README


def _commands():
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices


def test_every_command_and_its_options_are_documented():
    for name, sub in _commands().items():
        assert f"gradual-deploy {name}" in README, name
        for action in sub._actions:
            for flag in action.option_strings:
                if flag.startswith("--") and flag != "--help":
                    assert flag in README, f"{name} {flag}"


@pytest.mark.parametrize("name", ["keygen", "verify"])
def test_the_signing_commands_have_a_usage_line_and_exit_codes(name: str):
    """A command of its own: its usage line in a code block, each of its options in it, and its exit codes."""
    usage = re.search(rf"^gradual-deploy {name}\b.*$", README, re.M)
    assert usage, f"no usage line for gradual-deploy {name}"
    for action in _commands()[name]._actions:
        for flag in action.option_strings:
            if flag.startswith("--") and flag != "--help":
                assert flag in usage.group(0), f"{name}: {flag} not in its usage line"
    section = README[usage.start():]
    assert re.search(r"Exit codes: 0 [^.]*1 [^.]*", section[:6000]), f"{name}: exit codes"


def _shown_commands() -> list[str]:
    """Every command the README shows for copying: in bash blocks and in `code` spans, the sandbox's ports
    (PORT) and a stamp (<stamp>) filled in; not usage lines ([...], {...}), elisions (...) or a command's bare
    name in prose (`gradual-deploy switch`)."""
    texts = [block.replace("\\\n", " ") for block in re.findall(r"```bash\n(.+?)\n```", README, re.S)]
    texts += re.findall(r"`([^`\n]+)`", README)
    found = []
    for text in texts:
        for line in text.splitlines():
            line = line.split(" #")[0].strip().replace("PORT", "8001").replace("<stamp>", "20261123T120000Z")
            line = re.sub(r"^(\.venv/bin/)?(?=gradual-deploy )", "", line)
            if not line.startswith("gradual-deploy ") or any(m in line for m in ("...", "[", "{", "<")):
                continue
            if len(line.split()) == 2 and line.split()[1] in ("preflight", "switch", "watch", "status", "ramp",
                                                               "pause", "verify"):
                continue  # the command's name, in a sentence
            found.append(line)
    return found


def test_every_command_shown_parses():
    """The commands a reader copies are ones the CLI accepts as written (the preflight's, which pytest
    parses, are checked flag by flag against the suite's options)."""
    shown = _shown_commands()
    assert len(shown) > 10, shown
    parser = build_parser()
    suite_flags = {o.flag for o in OPTIONS_OF_THE_SUITE} | {"--junitxml"}
    for line in shown:
        argv = shlex.split(line)[1:]
        if argv[0] == "preflight":
            unknown = [a for a in argv[1:] if a.startswith("--") and a.split("=")[0] not in suite_flags]
            assert not unknown, f"{line}: {unknown}"
            continue
        try:
            parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"the README shows a command the CLI refuses (exit {exc.code}): {line}")


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
