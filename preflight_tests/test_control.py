"""Runbook 3: the control file is usable for an emergency pause."""

from __future__ import annotations

import pytest

from deploy_tool import criteria

pytestmark = pytest.mark.control


def test_control_file_valid(control_file, check):
    from deploy_tool.modes.controlfile import read_control  # loaded when a control check runs, not at collection

    criterion = check(criteria.control_file_valid(read_control(control_file), control_file))
    assert criterion.ok, criterion.message


def test_control_dir_writable(control_file, check):
    from deploy_tool.modes.controlfile import check_directory_writable

    criterion = check(criteria.control_dir_writable(check_directory_writable(control_file)))
    assert criterion.ok, criterion.message
