"""Each operator command's --help says what it does, its exit codes and one example that parses (issue 18,
point 1, in part), and a channel option says what it is to that command."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest

from deploy_tool.cli import COMMAND_HELP, build_parser

GD = [sys.executable, "-m", "deploy_tool"]


@pytest.mark.parametrize("command", sorted(COMMAND_HELP))
def test_the_help_says_what_the_command_does_its_exit_codes_and_an_example_that_parses(command):
    done = subprocess.run([*GD, command, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    description, _ = COMMAND_HELP[command]
    assert " ".join(description.split()[:6]) in " ".join(done.stdout.split())
    assert "exit codes: 0 " in done.stdout and "2 usage error" in done.stdout
    examples = [line.strip() for line in done.stdout.split("example:", 1)[1].splitlines() if line.strip()]
    assert examples and all(line.startswith(f"gradual-deploy {command}") for line in examples), examples
    for line in examples:  # every example is a command line the parser takes
        args = build_parser().parse_args(shlex.split(line)[1:])
        assert args.command == command


@pytest.mark.parametrize("command", ["pause", "switch", "status", "watch", "ramp"])
def test_a_channel_option_says_what_it_is_to_a_command_that_acts_on_channels(command):
    done = subprocess.run([*GD, command, "--help"], capture_output=True, text=True, timeout=60)
    text = " ".join(done.stdout.split())
    assert "admin checks skip" not in text and "control checks skip" not in text
    assert "a channel the mode is changed and read back through" in text


def test_a_401_names_the_variable_that_holds_the_token(sandbox):
    from deploy_tool.probes.admin import AdminClient, AdminError

    with pytest.raises(AdminError) as caught, AdminClient(sandbox.admin_url) as client:
        client.get_mode()
    assert "no admin token was sent: set EXEC_HTTP_ADMIN_TOKEN (or the variable --admin-token-env names)" \
        in str(caught.value)


def test_the_preflight_help_shows_the_tools_own_options_first_by_group_and_points_to_pytests():
    """`preflight --help` was pytest's 718 lines with the tool's options from line 202 on: now it is the
    tool's options, each with its default and env var, by group, and a pointer to pytest's own help."""
    from deploy_tool.settings import SUITE_OPTIONS

    done = subprocess.run([*GD, "preflight", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("usage: gradual-deploy preflight")
    assert "exit codes" in done.stdout and "example:" in done.stdout
    first_option = next(i for i, line in enumerate(lines) if line.startswith("  --"))
    assert first_option < 20, f"the first option is on line {first_option + 1}"
    assert "pytest.main" not in done.stdout and "--basetemp" not in done.stdout, "pytest's own help is not mixed in"
    for option in SUITE_OPTIONS:
        at = next((i for i, line in enumerate(lines) if line.startswith(f"  {option.flag}")
                   and line.split()[0] == option.flag), None)
        assert at is not None, f"{option.flag} missing"
        text = " ".join(" ".join(lines[at + 1:at + 4]).split())
        if option.default not in (None, "false"):
            assert f"default {option.default}" in text, (option.flag, text)
        for env in option.env or (("EXEC_HTTP_ADMIN_URL",) if option.name == "http_admin_url" else ()):
            assert env in text, (option.flag, text)
    groups = [line.split(":")[0] for line in lines if line and not line.startswith(" ") and ":" in line
              and line.split(":")[0] in {o.group for o in SUITE_OPTIONS}]
    assert groups[:4] == ["okx", "db", "backtest", "risk"], groups
    assert any("--help-pytest" in line for line in lines[-4:]), lines[-4:]
    example = " ".join(done.stdout.split("example:", 1)[1].split("\n\n", 1)[0].replace("\\\n", " ").split())
    flags = [a for a in shlex.split(example)[2:] if a.startswith("--")]
    assert flags and set(flags) <= {o.flag for o in SUITE_OPTIONS}, flags


def test_pytest_s_own_help_is_one_flag_away():
    done = subprocess.run([*GD, "preflight", "--help-pytest"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "-m MARKEXPR" in done.stdout and "--okx-base-url" in done.stdout
