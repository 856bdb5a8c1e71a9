"""Runbook 3: the control file is usable for an emergency pause."""

from __future__ import annotations

import pytest

from deploy_tool import MODES, ProbeError
from deploy_tool.control import check_directory_writable, read_control

pytestmark = pytest.mark.control


def test_control_file_valid(control_file, check):
    try:
        state = read_control(control_file)
    except ProbeError as exc:
        pytest.fail(str(exc), pytrace=False)
    if state is None:
        check.record(None, "mock|real|paused", None, f"{control_file} does not exist yet: the first switch or pause creates it")
    else:
        check.record(state.mode, "mock|real|paused", None, f"{control_file}: mode {state.mode}, version {state.version}")
        assert state.mode in MODES, f"{control_file}: mode {state.mode!r} is not one of {MODES}"


def test_control_dir_writable(control_file, check):
    try:
        directory = check_directory_writable(control_file)
    except ProbeError as exc:
        pytest.fail(str(exc), pytrace=False)
    check.record(True, True, None, f"a file can be created in {directory}")
