"""The control file: the trading system's mode, as a small JSON document on disk.

Reading lives here; writes are atomic (temp file in the same directory, fsync, rename) and happen
under a cross-process lock (`FileChannel.apply` in `channels.py`), except a pause that cannot get the
lock in time: what that means for the `version` is told in `FileChannel`'s docstring.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

from deploy_tool import MODES, ProbeError, fileops

PROBE_BYTES = 4096  # more than any control file


class ControlFileError(ProbeError):
    """The control file exists but cannot be used."""


@dataclass(frozen=True)
class ControlState:
    """What the control file holds."""

    mode: str
    version: int
    updated_at: str | None
    actor: str | None
    reason: str | None
    extra: dict[str, Any] = field(default_factory=dict)  # other fields (the allocation): kept by a mode write


def read_control(path: str) -> ControlState | None:
    """The mode in the control file, None when there is no file yet."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ControlFileError(f"control file {path} is a directory") from None
    except OSError as exc:
        raise ControlFileError(f"control file {path} cannot be read: {exc.strerror}") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ControlFileError(f"control file {path} is not valid JSON ({exc}): fix or remove it") from None
    if not isinstance(doc, dict):
        raise ControlFileError(f"control file {path} holds {type(doc).__name__}, expected an object with a mode")
    mode = doc.get("mode")
    if mode not in MODES:
        raise ControlFileError(f"control file {path} holds mode {mode!r}, expected one of {', '.join(MODES)}")
    version = doc.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ControlFileError(f"control file {path} holds version {version!r}, expected a whole number")
    known = ("mode", "version", "updated_at", "actor", "reason")
    return ControlState(mode, version, doc.get("updated_at"), doc.get("actor"), doc.get("reason"),
                        {k: v for k, v in doc.items() if k not in known})


def check_directory_writable(path: str) -> str:
    """The control file's directory, after proving that an emergency pause can write there: a temp file
    as large as a control file is written, fsync'd and removed, and the lock file can be taken.
    ControlFileError naming what would stop the pause, if not."""
    real = os.path.realpath(path)
    directory = os.path.dirname(real)
    if not os.path.isdir(directory):
        raise ControlFileError(
            f"directory {directory} of the control file does not exist: create it (mkdir -p {directory}) "
            "so that an emergency pause can write there"
        )
    probe = None
    try:
        fd, probe = tempfile.mkstemp(prefix=".writable-", dir=directory)
        with os.fdopen(fd, "wb") as fh:
            fh.write(b" " * PROBE_BYTES)  # a full disk refuses the bytes, not the empty file
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise ControlFileError(
            f"directory {directory} of the control file is not writable ({exc.strerror}): an emergency pause "
            "through the file would fail; fix its permissions or free space"
        ) from None
    finally:
        if probe is not None:
            try:
                os.unlink(probe)
            except OSError:
                pass
    from filelock import FileLock, Timeout  # imported here: `pause` itself takes the lock only when writing

    lock = FileLock(real + ".lock", timeout=1.0)
    try:
        lock.acquire()
        lock.release()
    except Timeout:
        pass  # held by a live process for a moment: usable all the same
    except Exception as exc:
        reason = getattr(exc, "strerror", None) or f"{type(exc).__name__}: {exc}"
        raise ControlFileError(
            f"lock file {real}.lock cannot be taken ({reason}): a pause would have to write without the lock "
            "and a concurrent switch could undo it; remove or fix that file"
        ) from None
    return directory


def write_control_atomic(path: str, doc: dict) -> None:
    """Replace the control file in one step: temp file in the same directory, fsync, rename, dir fsync.

    A reader sees the old document or the new one, never a torn one. Callers hold the lock (a pause that
    could not get it writes anyway, then again under the lock).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        fileops.set_mode(fd, 0o644)  # mkstemp makes 0600; the trading system may run as another user
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, ensure_ascii=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        fileops.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fileops.fsync_directory(directory)  # where the platform can; the rename itself is atomic
