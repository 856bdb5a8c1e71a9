"""The control file: the trading system's mode, as a small JSON document on disk.

Reading lives here; writes are atomic (temp file in the same directory, fsync, rename) and happen
under a cross-process lock (`FileChannel.apply` in `channels.py`), except a pause that cannot get the
lock in time: what that means for the `version` is told in `FileChannel`'s docstring. Every open goes
through `fileops`: a FIFO, socket, device or directory at the path is an error at once, never a wait.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, NamedTuple

from deploy_tool import MODES, ProbeError, fileops

PROBE_BYTES = 4096  # more than any control file
MAX_BYTES = 1024 * 1024  # what is read of a control file at most: a real one is a few hundred bytes


class ControlFileError(ProbeError):
    """The control file exists but cannot be used."""


class NotAControlFile(ControlFileError):
    """What is at the control file's path is no file at all (a FIFO, socket, device, directory): nothing a
    pause may replace, since the trading system does not read its mode from a file there."""


class ControlState(NamedTuple):
    """What the control file holds. (A NamedTuple: `dataclasses` costs a pause 20 ms of imports.)"""

    mode: str
    version: int
    updated_at: str | None
    actor: str | None
    reason: str | None
    extra: dict[str, Any] = {}  # other fields (the allocation): kept by a mode write; never changed in place


def read_control(path: str) -> ControlState | None:
    """The mode in the control file, None when there is no file yet."""
    try:
        raw = fileops.read_bytes(path, MAX_BYTES)
    except FileNotFoundError:
        return None
    except fileops.NotRegularFile as exc:
        raise NotAControlFile(f"control file {path} is {exc.kind}, not a regular file: point --control-file "
                              "(EXEC_CONTROL_FILE) at the file the trading system reads") from None
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
    import tempfile  # here, not at the top: `pause` imports this module and needs none of it

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
    lock = fileops.Lock(real + ".lock", timeout=1.0)
    try:
        lock.acquire()
        lock.release()
    except fileops.LockTimeout:
        pass  # held by a live process for a moment: usable all the same
    except Exception as exc:
        reason = getattr(exc, "strerror", None) or f"{type(exc).__name__}: {exc}"
        raise ControlFileError(
            f"lock file {real}.lock cannot be taken ({reason}): a pause would have to write without the lock "
            "and a concurrent switch could undo it; remove or fix that file"
        ) from None
    return directory


def write_control_atomic(path: str, doc: dict, still_locked: Callable[[], bool] | None = None) -> None:
    """Replace the control file in one step: temp file in the same directory, fsync, rename, dir fsync
    (`fileops.write_atomic`, mode 0644: the trading system may run as another user).

    A reader sees the old document or the new one, never a torn one. Callers hold the lock (a pause that
    could not get it writes anyway, then again under the lock). NotRegularFile (an OSError), nothing
    replaced, when a FIFO, socket, device or directory is at `path`.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fileops.write_atomic(path, fileops.utf8_bytes(json.dumps(doc, ensure_ascii=False) + "\n"), 0o644,
                         still_locked)
