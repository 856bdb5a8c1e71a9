"""gradual-deploy's own audit trail: one JSON line per action in `deploy-YYYY-MM-DD.jsonl` (UTC date).

Mode changes, watch rounds and breaches are written here by the library functions that perform them.
The trading system may keep its own audit in the same directory: `is_own_file` tells the two apart.
"""

from __future__ import annotations

import json
import os
from typing import Any, Collection

from deploy_tool import DeployError, fileops
from deploy_tool.times import iso_utc, utc_now

FILE_PREFIX = "deploy-"
DISORDER_TOLERANCE = 50  # older lines in a row read past before a backwards read stops


class AuditError(DeployError):
    """The audit line could not be written."""


def actor() -> str:
    """Who runs this: the login name, for the audit and the evidence. getpass.getuser's rule (LOGNAME, USER,
    LNAME, USERNAME, then the password database), without importing getpass and its terminal modules on the
    path of a pause."""
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if os.environ.get(name):
            return fileops.utf8_text(os.environ[name])
    try:
        import pwd

        return fileops.utf8_text(pwd.getpwuid(os.getuid()).pw_name)
    except (ImportError, KeyError, OSError, AttributeError):
        return "unknown"


def host() -> str:
    """This machine's name: the kernel's node name (what socket.gethostname returns), without importing socket."""
    uname = getattr(os, "uname", None)
    if uname is not None:
        return fileops.utf8_text(uname().nodename)
    import socket

    return socket.gethostname()


def is_own_file(name: str) -> bool:
    """Is this file name one of gradual-deploy's audit files (not the trading system's)?"""
    return os.path.basename(name).startswith(FILE_PREFIX)


def append(audit_dir: str, record: dict[str, Any]) -> str:
    """Append one line (one write, O_APPEND, fsync'd; under a lock on Windows) and return the file's path.
    Never blocked by what is at that path: a FIFO, socket or device there is an AuditError at once."""
    now = utc_now()
    line = {"ts": iso_utc(now), **record}
    data = fileops.utf8_bytes(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
    path = os.path.join(audit_dir, f"{FILE_PREFIX}{now:%Y-%m-%d}.jsonl")
    try:
        os.makedirs(audit_dir, exist_ok=True)
        fileops.append(path, data)
    except OSError as exc:
        raise AuditError(f"cannot append to the audit {path}: {exc.strerror}") from None
    return path


def read_since(audit_dir: str, events: Collection[str], since: str) -> list[dict[str, Any]]:
    """gradual-deploy's own audit lines of the given events stamped at or after `since` (an ISO time as this
    audit writes it), oldest first: read backwards from the newest file's end and no further back than
    `since`, so that a wait asking every round costs what came since it began, not the whole audit."""
    try:
        names = sorted((n for n in os.listdir(audit_dir) if is_own_file(n) and n.endswith(".jsonl")), reverse=True)
    except OSError:
        return []
    found: list[dict[str, Any]] = []
    day = since[:10]
    for name in names:
        if name[len(FILE_PREFIX):len(FILE_PREFIX) + 10] < day:
            break
        older = 0  # lines older than `since` in a row: a few out of order (another host's clock) are read past
        try:
            for raw in fileops.iter_lines_backwards(os.path.join(audit_dir, name)):
                try:
                    record = json.loads(raw)
                except (ValueError, RecursionError):
                    continue
                if not isinstance(record, dict) or not isinstance(record.get("ts"), str):
                    continue
                if record["ts"] < since:
                    older += 1
                    if older > DISORDER_TOLERANCE:
                        break
                    continue
                older = 0
                if record.get("event") in events:
                    found.append(record)
        except OSError:
            continue
    return sorted(found, key=lambda r: str(r.get("ts")))


def read_events(audit_dir: str, events: Collection[str], days: int = 31) -> list[dict[str, Any]]:
    """gradual-deploy's own audit lines of the given events, oldest first, from its last `days` files.
    Lines that cannot be read are left out, and so is a file that is not a regular file (a FIFO would never
    end the read): the audit is evidence, not the state the caller acts on alone."""
    try:
        names = sorted(n for n in os.listdir(audit_dir) if is_own_file(n) and n.endswith(".jsonl"))[-days:]
    except OSError:
        return []
    found = []
    for name in names:
        try:
            with fileops.open_regular(os.path.join(audit_dir, name), "r", errors="replace") as fh:
                for line in fh:
                    try:
                        record = json.loads(line)
                    except (ValueError, RecursionError):
                        continue
                    if isinstance(record, dict) and record.get("event") in events:
                        found.append(record)
        except OSError:
            continue
    return found
