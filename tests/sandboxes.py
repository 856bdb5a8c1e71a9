"""Test setups on a sandbox that several test modules share."""

from __future__ import annotations

from deploy_tool.modes.change import switch
from deploy_tool.modes.channels import build_channels
from deploy_tool.modes.gate import GateConfig
from deploy_tool.sandbox import Sandbox
from deploy_tool.settings import defaults


def into_real(sandbox: Sandbox) -> Sandbox:
    """The sandbox switched to mock, then real, in-process, through both channels and the gate (on the evidence
    already in its evidence dir); `switch` as a process is tested in test_modes.py."""
    channels = build_channels(defaults(http_admin_url=sandbox.admin_url, admin_token_env=sandbox.token_env,
                                       control_file=str(sandbox.control_file)),
                              environ={sandbox.token_env: sandbox.token})
    for target in ("mock", "real"):
        outcome = switch(channels, target, force=False, reason="test setup", actor="test",
                         gate=GateConfig(str(sandbox.evidence_dir), 3600, str(sandbox.trusted_keys), sandbox.okx_url,
                                         sandbox.database_url, admin_token=sandbox.token),
                         audit_dir=str(sandbox.audit_dir))
        assert outcome.ok, outcome.as_dict()
    return sandbox
