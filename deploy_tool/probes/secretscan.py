"""Keys in code: a scan of the trading system's source for hard-coded secrets, with detect-secrets.

The runbook: never hard-code API keys; use environment variables or config.yaml. So the files where keys
belong (dotenv files, config.yaml) are not scanned; everything else under the path is, except version
control, virtual environments, caches and files too large or not text. A finding names the file, the line
and the kind of secret, never the secret itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from deploy_tool import ProbeError

SKIPPED_DIRS = {".git", ".hg", ".svn", ".venv", "venv", "env", "node_modules", "__pycache__", ".mypy_cache",
                ".pytest_cache", ".tox", "build", "dist"}
# Where the runbook says keys belong: not hard-coded.
KEY_HOMES = ("config.yaml", "config.yml")
MAX_BYTES = 1_000_000


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    kind: str

    def describe(self) -> str:
        return f"{self.path}:{self.line} ({self.kind})"


@dataclass(frozen=True)
class Scan:
    root: str
    files: int
    findings: tuple[Finding, ...]


def _is_key_home(name: str) -> bool:
    return name == ".env" or name.startswith(".env.") or name.endswith(".env") or name in KEY_HOMES


def files_under(root: str) -> list[str]:
    found = []
    for directory, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for name in sorted(names):
            path = os.path.join(directory, name)
            if _is_key_home(name) or os.path.islink(path):
                continue
            try:
                if os.path.getsize(path) > MAX_BYTES:
                    continue
            except OSError:
                continue
            found.append(path)
    return found


def scan(root: str) -> Scan:
    """Every hard-coded secret detect-secrets finds under `root`."""
    if not os.path.isdir(root):
        raise ProbeError(f"--scan-path {root} is not a directory: point it at the trading system's source")
    from detect_secrets import SecretsCollection  # imported when a scan runs: it loads its plugins
    from detect_secrets.settings import default_settings

    files = files_under(root)
    collection = SecretsCollection(root=root)
    with default_settings():
        for path in files:
            collection.scan_file(os.path.relpath(path, root))
    findings = sorted({Finding(filename, secret.line_number, secret.type) for filename, secret in collection},
                      key=lambda f: (f.path, f.line, f.kind))
    return Scan(root, len(files), tuple(findings))
