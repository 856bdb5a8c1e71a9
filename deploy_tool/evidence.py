"""The go-live evidence: file naming, atomic writing and reading back (CONTRACT section 3).

The pytest plugin writes it; `switch --to real` and `status` read it.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import socket
from pathlib import Path
from typing import Any

from deploy_tool import DeployError

SCHEMA = "gradual-deploy/preflight-evidence/1"
REQUIRED_MARKERS = ("okx", "db", "backtest")
OPTIONAL_MARKERS = ("admin", "control")


class EvidenceError(DeployError):
    """The evidence cannot be written or read."""


def actor() -> str:
    """Who runs this: the login name, for the evidence and the audit."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER") or os.environ.get("USERNAME") or "unknown"


def host() -> str:
    return socket.gethostname()


def reserve_stem(evidence_dir: str | os.PathLike, now: dt.datetime) -> Path:
    """A fresh `preflight-<UTC stamp>` path stem under evidence_dir, claimed by creating its .html.

    Two runs in the same second get `-2`, `-3`, ...: no evidence file is ever overwritten.
    """
    directory = Path(evidence_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvidenceError(f"cannot create the evidence directory {directory}: {exc.strerror}") from None
    base = "preflight-" + now.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for attempt in range(1, 1000):
        stem = directory / (base if attempt == 1 else f"{base}-{attempt}")
        if stem.with_suffix(".json").exists():
            continue
        try:
            fd = os.open(stem.with_suffix(".html"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        except OSError as exc:
            raise EvidenceError(f"cannot write evidence in {directory}: {exc.strerror}") from None
        os.close(fd)
        return stem
    raise EvidenceError(f"no free evidence file name left for {base} in {directory}")


def write_json_atomic(path: Path, doc: Any) -> None:
    """Write JSON through a temp file in the same directory, fsync, rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def verdict(checks: list[dict]) -> str:
    """`pass` only when no check failed and at least one passed."""
    statuses = [c["status"] for c in checks]
    return "pass" if "failed" not in statuses and "passed" in statuses else "fail"


def newest_evidence(evidence_dir: str | os.PathLike) -> tuple[Path, dict] | None:
    """The newest parseable JSON evidence in the directory (by its finished_at), or None."""
    directory = Path(evidence_dir)
    if not directory.is_dir():
        return None
    best: tuple[str, Path, dict] | None = None
    for path in directory.glob("preflight-*.json"):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            continue
        key = str(doc.get("finished_at") or "")
        if best is None or key > best[0]:
            best = (key, path, doc)
    return (best[1], best[2]) if best else None
