"""Runbook 3: the control file is usable for an emergency pause."""

from __future__ import annotations

import pytest

from deploy_tool import criteria
from deploy_tool.modes.controlfile import check_directory_writable, read_control

pytestmark = pytest.mark.control


def test_control_file_valid(control_file, check):
    criterion = check(criteria.control_file_valid(read_control(control_file), control_file))
    assert criterion.ok, criterion.message


def test_control_dir_writable(control_file, check):
    criterion = check(criteria.control_dir_writable(check_directory_writable(control_file)))
    assert criterion.ok, criterion.message
