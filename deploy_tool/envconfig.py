"""The trading system's environment variables that point the tool at its channels."""

from __future__ import annotations

import os
from typing import Mapping

from deploy_tool import DeployError


class EnvConfigError(DeployError):
    """The environment names a channel incompletely."""


def admin_url_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(url, source) for the admin API from EXEC_HTTP_ADMIN_URL, or from EXEC_HTTP_HOST and
    EXEC_HTTP_PORT when EXEC_HTTP_ADMIN_ENABLED=true; None when the environment names none."""
    environ = os.environ if environ is None else environ
    url = environ.get("EXEC_HTTP_ADMIN_URL", "").strip()
    if url:
        return url, "environment variable EXEC_HTTP_ADMIN_URL"
    if environ.get("EXEC_HTTP_ADMIN_ENABLED", "").strip().lower() not in ("1", "true", "yes", "on"):
        return None
    host = environ.get("EXEC_HTTP_HOST", "").strip() or "127.0.0.1"
    port = environ.get("EXEC_HTTP_PORT", "").strip()
    if not port:
        raise EnvConfigError(
            "EXEC_HTTP_ADMIN_ENABLED=true but EXEC_HTTP_PORT is not set: set EXEC_HTTP_PORT "
            "(and EXEC_HTTP_HOST) or EXEC_HTTP_ADMIN_URL"
        )
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise EnvConfigError(f"EXEC_HTTP_PORT={port!r} is not a TCP port (1-65535)")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}", "environment variables EXEC_HTTP_HOST/EXEC_HTTP_PORT"


def control_file_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(path, source) for the control file from EXEC_CONTROL_FILE, or None."""
    environ = os.environ if environ is None else environ
    path = environ.get("EXEC_CONTROL_FILE", "").strip()
    return (path, "environment variable EXEC_CONTROL_FILE") if path else None
