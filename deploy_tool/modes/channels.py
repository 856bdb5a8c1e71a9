"""The two channels that carry a mode change to the trading system: its admin API and its control file.

Each reads the current mode, applies a change with compare-and-swap (HTTP: `expected_mode`; file: a
re-read under a cross-process lock), and reads back to confirm. Neither raises for a channel problem:
the result says what the channel saw, so that `pause` can go on through the other one.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol

from deploy_tool import DeployError, fileops
from deploy_tool.modes.controlfile import (
    ControlFileError,
    ControlState,
    NotAControlFile,
    read_control,
    write_control_atomic,
)
from deploy_tool.probes.admin import AdminClient, AdminConflict, AdminError
from deploy_tool.times import iso_utc, utc_now

if TYPE_CHECKING:
    from deploy_tool.settings import Settings

FILE_LOCK_TIMEOUT_S = 2.0
PAUSE_LOCK_TIMEOUT_S = 1.0
# How often a writer waiting for the lock tries again: a 50 ms poll (filelock's) left the lock idle that long at
# every hand-over between processes.
LOCK_POLL_S = 0.01
# After a pause wrote without the lock: how long it waits for the lock to confirm no writer undid it.
REASSERT_LOCK_TIMEOUT_S = 5.0
# (connect, whole call) seconds per call; a change is two calls (POST, then GET to read back). A pause
# must not wait long on a dead or trickling admin API: the file pause runs beside it.
HTTP_TIMEOUT = (2.0, 2.0)
PAUSE_HTTP_TIMEOUT = (1.0, 1.0)


class ChannelResult:
    """What one channel saw of one change. (A plain class: `dataclasses` costs a pause 20 ms of imports.)"""

    FIELDS = ("channel", "target", "before", "after", "ok", "error", "conflict", "version", "note", "created")

    def __init__(self, channel: str, target: str, before: Any = None, after: Any = None, ok: bool = False,
                 error: str | None = None, conflict: bool = False, version: int | None = None,
                 note: str | None = None, created: bool | None = None) -> None:
        self.channel = channel  # "http" or "file"
        self.target = target  # masked URL or path
        self.before = before  # a mode, or an allocation
        self.after = after
        self.ok = ok
        self.error = error
        self.conflict = conflict
        self.version = version
        self.note = note
        self.created = created  # the control file did not exist before this change

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k in self.FIELDS if (v := getattr(self, k)) is not None}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChannelResult):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable, as a dataclass without frozen

    def __repr__(self) -> str:
        return f"ChannelResult({', '.join(f'{k}={getattr(self, k)!r}' for k in self.FIELDS)})"


class ChannelError(DeployError):
    """A channel could not be read."""


class Channel(Protocol):
    """A way to carry a mode to the trading system: read it, and change it with read-back."""

    name: str  # "http" or "file"
    target: str  # what a person is shown: the masked URL or the path

    def read(self) -> str | None:
        """The current mode (None: no mode yet); ChannelError when it cannot be read."""

    def apply(self, mode: str, expected: str | None, reason: str, actor: str, cas: bool = True) -> ChannelResult:
        """Change to `mode` if still `expected` (when `cas`), read back; never raises for a channel problem."""

    def read_allocation(self) -> float | None:
        """The current allocation (None: none set); ChannelError when it cannot be read."""

    def apply_allocation(self, allocation: float, expected: float | None, reason: str, actor: str,
                         cas: bool = True) -> ChannelResult:
        """Set the allocation if still `expected` (when `cas`), read back; never raises for a channel problem."""


class HttpChannel:
    """The admin HTTP API."""

    name = "http"

    def __init__(self, url: str, token: str | None, timeout: Any = HTTP_TIMEOUT) -> None:
        self.client = AdminClient(url, token=token, timeout=timeout)
        self.target = self.client.shown_url

    def read(self) -> str:
        try:
            return self.client.get_mode()["mode"]
        except AdminError as exc:
            raise ChannelError(str(exc)) from None

    def apply(self, mode: str, expected: str | None, reason: str, actor: str, cas: bool = True) -> ChannelResult:
        return self._apply("mode", mode, lambda: self.client.set_mode(mode, expected if cas else None, reason, actor),
                           self.client.get_mode, expected)

    def read_allocation(self) -> float | None:
        try:
            return self.client.get_allocation().get("allocation")
        except AdminError as exc:
            raise ChannelError(str(exc)) from None
        finally:
            self.client.close()

    def apply_allocation(self, allocation: float, expected: float | None, reason: str, actor: str,
                         cas: bool = True) -> ChannelResult:
        return self._apply("allocation", allocation,
                           lambda: self.client.set_allocation(allocation, expected if cas else None, reason, actor),
                           self.client.get_allocation, expected)

    def _apply(self, key: str, value: Any, post: Callable[[], dict], get: Callable[[], dict],
               expected: Any) -> ChannelResult:
        """POST the change (compare-and-swap in `post`), then GET it back: acknowledged is not done."""
        result = ChannelResult(self.name, self.target, before=expected)
        try:
            answer = post()
            result.before = answer.get(f"previous_{key}", expected)
            seen = get()
        except AdminConflict as exc:
            result.conflict, result.error, result.after = True, str(exc), exc.mode
            return result
        except AdminError as exc:
            result.error = str(exc)
            return result
        finally:
            self.client.close()
        result.after, result.version = seen.get(key), seen.get("version")
        same = same_allocation if key == "allocation" else (lambda a, b: a == b)
        if not same(answer.get(key), value):
            result.error = f"POST /{key} answered {key} {answer.get(key)!r}, not {value!r}"
        elif not same(seen.get(key), value):
            result.error = (f"acknowledged {value} but GET /{key} still reads {seen.get(key)!r}: "
                            "the change did not take")
        else:
            result.ok = True
        return result


def same_allocation(a: Any, b: Any) -> bool:
    """Two allocations are the same share of capital (floats compared with a tolerance; None only to None)."""
    if a is None or b is None:
        return a is None and b is None
    return abs(float(a) - float(b)) < 1e-12


class FileChannel:
    """The control file, changed under a cross-process lock (`fileops.Lock`) and replaced atomically.

    The version: a write under the lock is numbered one more than the version it read under the lock, so
    while every writer takes the lock the version counts the writes. A pause that cannot get the lock
    within PAUSE_LOCK_TIMEOUT_S writes at once without it, numbered one more than the version it read: a
    writer holding the lock may use the same number or have passed it (nothing without a lock can know).
    That pause then takes the lock and writes again under it (`_reassert`), so its last write is numbered
    under the lock. Strictly increasing for lockless writes is not to be had: a writer that does not wait
    cannot reserve a number.
    """

    name = "file"

    def __init__(self, path: str) -> None:
        self.path = path
        self.target = path

    def read(self) -> str | None:
        try:
            state = read_control(self.path)
        except ControlFileError as exc:
            raise ChannelError(str(exc)) from None
        return state.mode if state else None

    def read_allocation(self) -> float | None:
        try:
            state = read_control(self.path)
        except ControlFileError as exc:
            raise ChannelError(str(exc)) from None
        value = state.extra.get("allocation") if state else None
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ChannelError(f"control file {self.path} holds allocation {value!r}, not a fraction")
        return value

    def apply(self, mode: str, expected: str | None, reason: str, actor: str, cas: bool = True) -> ChannelResult:
        return self._apply("mode", mode, expected, reason, actor, cas)

    def apply_allocation(self, allocation: float, expected: float | None, reason: str, actor: str,
                         cas: bool = True) -> ChannelResult:
        return self._apply("allocation", allocation, expected, reason, actor, cas)

    def _apply(self, key: str, value: Any, expected: Any, reason: str, actor: str, cas: bool) -> ChannelResult:
        mode = value  # what is written under `key` (the name reads as the common case)

        result = ChannelResult(self.name, self.target, before=expected)
        # A symlinked control file is written through to its target: replacing the link itself would
        # leave the file the trading system reads untouched.
        path = os.path.realpath(self.path)
        directory = os.path.dirname(path)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            result.error = f"cannot create {directory}: {exc.strerror}"
            return result
        lock = fileops.Lock(path + ".lock", timeout=FILE_LOCK_TIMEOUT_S if cas else PAUSE_LOCK_TIMEOUT_S)
        locked = lock_usable = True
        try:
            lock.acquire(poll_interval=LOCK_POLL_S)  # a regular file only: a FIFO or device is no lock file
        except fileops.LockTimeout:
            if cas:
                result.error = f"{self.path} is locked by another process for more than {FILE_LOCK_TIMEOUT_S:g} s"
                return result
            locked = False  # a pause is never blocked: write now, then re-assert under the lock
        except Exception as exc:  # an unusable lock file: a directory, FIFO or device, immutable, no permission
            if cas:
                result.error = f"cannot lock {self.path} with {path}.lock: {_why(exc)}"
                return result
            locked = lock_usable = False
            result.note = f"cannot use the lock file {path}.lock ({_why(exc)}): paused without it"
        try:
            # a compare-and-swap write trusts its lock only while the lock file is still the one it locked
            trusted = lock.still_held if (locked and cas) else (lambda: True)
            written = self._change(path, key, mode, expected, reason, actor, cas, result, trusted)
            if written is not None and locked:
                # Read back while still holding the lock: it confirms this write, not whatever a later
                # (legitimate) change by another process made of the file after we let go.
                return self._confirm(path, key, mode, written, result)
        finally:
            if locked:
                lock.release()
        if written is None:
            return result
        if lock_usable:
            return self._reassert(lock, path, key, mode, reason, actor, result)
        return self._confirm(path, key, mode, written, result)  # no lock to be had: the best there is

    def _change(self, path: str, key: str, mode: Any, expected: Any, reason: str, actor: str, cas: bool,
                result: ChannelResult, trusted: Callable[[], bool] = lambda: True) -> int | None:
        """Read, compare, write `key`; the version written, or None with the error in `result`."""
        try:
            state = read_control(path)
        except NotAControlFile as exc:  # a FIFO, device, directory: the system reads no mode from there
            result.error = str(exc)
            return None
        except ControlFileError as exc:
            if cas or key != "mode":
                result.error = str(exc)
                return None
            state = None  # a pause replaces a broken control file
            result.note = _join(result.note, f"replaced an unreadable control file ({exc})")
        if key != "mode" and state is None:
            result.error = f"{self.path} holds no mode yet: switch to a mode before setting the {key}"
            return None
        current = _field(state, key)
        result.before = current
        result.created = not os.path.exists(path)
        if cas and not (current == expected if key == "mode" else same_allocation(current, expected)):
            result.conflict = True
            result.after = current
            result.error = (f"{self.path} now holds {current!r}, not {expected!r}: someone changed it meanwhile; "
                            "nothing written")
            return None
        version = (state.version if state else 0) + 1
        try:
            write_control_atomic(path, _document(state, key, mode, actor, reason, version), trusted)
        except fileops.LockLost:
            result.error = (f"{path}.lock was removed or replaced while this change held it: another writer may be "
                            "changing the file now; nothing written: find what removes the lock file (never remove "
                            "it by hand), then try again")
            return None
        except OSError as exc:
            result.error = f"cannot write {self.path}: {exc.strerror}"
            return None
        return version

    def _reassert(self, lock: Any, path: str, key: str, mode: Any, reason: str, actor: str,
                  result: ChannelResult) -> ChannelResult:
        """After a write without the lock: take the lock and write `mode` once more under it, whether or not
        a writer that held the lock (a switch that read the old mode) replaced ours; confirm under the lock.

        Written again even when ours still stands: without the lock our version was the one we read plus
        one, a number a concurrent writer under the lock may also have used (or passed). The write under
        the lock numbers it one more than the file then holds, so a reader that keys on the version sees
        the pause as a change."""
        try:
            lock.acquire(timeout=REASSERT_LOCK_TIMEOUT_S, poll_interval=LOCK_POLL_S)
        except fileops.LockTimeout:
            result.error = (f"wrote {mode} without the lock, and {path}.lock is still held after "
                            f"{REASSERT_LOCK_TIMEOUT_S:g} s: a writer that holds it may still replace the pause; "
                            "check the file and the process holding the lock")
            return result
        try:
            seen = read_control(path)
            version = (seen.version if seen else 0) + 1
            write_control_atomic(path, _document(seen, key, mode, actor, reason, version))
            if seen is not None and _field(seen, key) == mode:
                result.note = _join(result.note, f"lock was held elsewhere; wrote {mode} without it, then again "
                                                 f"under the lock (version {version})")
            else:
                ours = "the pause" if mode == "paused" else f"our {key}"
                result.note = _join(result.note, f"lock was held elsewhere; a concurrent write of "
                                                 f"{_field(seen, key)!r} replaced {ours}, which was written again "
                                                 "under the lock")
            return self._confirm(path, key, mode, version, result)
        except (ControlFileError, OSError) as exc:
            result.error = f"could not re-assert {mode} under the lock: {_why(exc)}"
            return result
        finally:
            lock.release()

    def _confirm(self, path: str, key: str, mode: Any, version: int, result: ChannelResult) -> ChannelResult:
        """Read back; when called under the lock it confirms this write, not a later legitimate change."""
        try:
            seen = read_control(path)
        except ControlFileError as exc:
            result.error = f"read-back failed: {exc}"
            return result
        result.after = _field(seen, key)
        result.version = seen.version if seen else None
        if result.after != mode or result.version != version:
            result.error = f"read back {result.after!r} (version {result.version}) after writing {mode!r} (version {version})"
        elif result.created and mode == "paused":
            result.error = (f"{self.path} did not exist before this pause: no running trading system was reading "
                            f"it, so nothing confirms the pause took; {mode} is written there now. Check "
                            "--control-file / EXEC_CONTROL_FILE against the system's own setting")
        else:
            result.ok = True
        return result


def _field(state: ControlState | None, key: str) -> Any:
    if state is None:
        return None
    return state.mode if key == "mode" else state.extra.get(key)


def _document(state: ControlState | None, key: str, value: Any, actor: str, reason: str, version: int) -> dict:
    """The control file after setting `key`: every other field kept (a mode write keeps the allocation)."""
    doc: dict[str, Any] = {**(state.extra if state else {})}
    doc["mode"] = value if key == "mode" else (state.mode if state else None)
    if key != "mode":
        doc[key] = value
    doc.update(updated_at=iso_utc(utc_now()), actor=actor, reason=reason, version=version)
    return doc


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or f"{type(exc).__name__}: {exc}"


def _join(note: str | None, more: str) -> str:
    return f"{note}; {more}" if note else more


class BrokenChannel:
    """A channel named by a setting whose value is unusable: it fails every call with the reason, so that a
    pause goes on through the other channel and reports this one FAILED."""

    def __init__(self, name: str, target: str, error: str) -> None:
        self.name, self.target, self.error = name, target, error

    def read(self) -> str | None:
        raise ChannelError(self.error)

    def apply(self, mode: str, expected: str | None, reason: str, actor: str, cas: bool = True) -> ChannelResult:
        return ChannelResult(self.name, self.target, before=expected, error=self.error)

    def read_allocation(self) -> float | None:
        raise ChannelError(self.error)

    def apply_allocation(self, allocation: float, expected: float | None, reason: str, actor: str,
                         cas: bool = True) -> ChannelResult:
        return ChannelResult(self.name, self.target, before=expected, error=self.error)


class NoChannel(DeployError):
    """Neither an admin API nor a control file is configured."""


def build_channels(settings: Settings, *, pause: bool = False, environ: Mapping[str, str] | None = None) -> list[Channel]:
    """The channels the settings name (flags, else the environment, each on its own). A channel whose
    setting could not be used (`settings.problems`) becomes a `BrokenChannel` that reports why."""
    channels: list[Channel] = []
    if settings.http_admin_url:
        channels.append(HttpChannel(settings.http_admin_url, settings.admin_token(environ),
                                    timeout=PAUSE_HTTP_TIMEOUT if pause else HTTP_TIMEOUT))
    elif "http_admin_url" in settings.problems:
        channels.append(BrokenChannel("http", "admin API", settings.problems["http_admin_url"]))
    if settings.control_file:
        channels.append(FileChannel(settings.control_file))
    elif "control_file" in settings.problems:
        channels.append(BrokenChannel("file", "control file", settings.problems["control_file"]))
    if not channels:
        raise NoChannel("no channel: give --http-admin-url and/or --control-file "
                        "(or set EXEC_HTTP_ADMIN_URL / EXEC_CONTROL_FILE)")
    return channels
