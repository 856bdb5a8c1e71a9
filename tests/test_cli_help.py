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
