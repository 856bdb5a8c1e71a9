"""The two channels that carry a mode change to the trading system: its admin API and its control file.

Each reads the current mode, applies a change with compare-and-swap (HTTP: `expected_mode`; file: a
re-read under a cross-process lock), and reads back to confirm. Neither raises for a channel problem:
the result says what the channel saw, so that `pause` can go on through the other one.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Mapping, Protocol

from deploy_tool import DeployError
from deploy_tool.modes.controlfile import (
    ControlFileError,
    read_control,
    write_control_atomic,
)
from deploy_tool.probes.admin import AdminClient, AdminConflict, AdminError
from deploy_tool.times import iso_utc, utc_now

if TYPE_CHECKING:
    from deploy_tool.settings import Settings

FILE_LOCK_TIMEOUT_S = 2.0
PAUSE_LOCK_TIMEOUT_S = 1.0
# (connect, read) seconds. A pause must not wait long on a dead admin API: the file pause runs beside it.
HTTP_TIMEOUT = (2.0, 2.0)
PAUSE_HTTP_TIMEOUT = (1.0, 1.2)


@dataclass
class ChannelResult:
    """What one channel saw of one change."""

    channel: str  # "http" or "file"
    target: str  # masked URL or path
    before: str | None = None
    after: str | None = None
    ok: bool = False
    error: str | None = None
    conflict: bool = False
    version: int | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


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
        result = ChannelResult(self.name, self.target, before=expected)
        try:
            answer = self.client.set_mode(mode, expected if cas else None, reason, actor)
            result.before = answer.get("previous_mode", expected)
            seen = self.client.get_mode()
        except AdminConflict as exc:
            result.conflict, result.error, result.after = True, str(exc), exc.mode
            return result
        except AdminError as exc:
            result.error = str(exc)
            return result
        finally:
            self.client.close()
        result.after, result.version = seen["mode"], seen.get("version")
        if answer.get("mode") != mode:
            result.error = f"POST /mode answered mode {answer.get('mode')!r}, not {mode!r}"
        elif seen["mode"] != mode:
            result.error = f"acknowledged {mode} but GET /mode still reads {seen['mode']!r}: the change did not take"
        else:
            result.ok = True
        return result


class FileChannel:
    """The control file, changed under a cross-process lock (filelock) and replaced atomically."""

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

    def apply(self, mode: str, expected: str | None, reason: str, actor: str, cas: bool = True) -> ChannelResult:
        from filelock import (  # 30 ms of imports: only when a file change is made
            FileLock,
            Timeout,
        )

        result = ChannelResult(self.name, self.target, before=expected)
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            result.error = f"cannot create {directory}: {exc.strerror}"
            return result
        lock = FileLock(self.path + ".lock", timeout=FILE_LOCK_TIMEOUT_S if cas else PAUSE_LOCK_TIMEOUT_S)
        locked = True
        try:
            lock.acquire()
        except Timeout:
            if cas:
                result.error = f"{self.path} is locked by another process for more than {FILE_LOCK_TIMEOUT_S:g} s"
                return result
            # A pause is never blocked: write anyway (the replace is still atomic) and say so.
            locked = False
            result.note = f"lock held elsewhere for {PAUSE_LOCK_TIMEOUT_S:g} s; paused without it"
        except OSError as exc:
            result.error = f"cannot lock {self.path}: {exc.strerror}"
            return result
        try:
            try:
                state = read_control(self.path)
            except ControlFileError as exc:
                if cas:
                    result.error = str(exc)
                    return result
                state = None  # a pause replaces a broken control file
                result.note = f"replaced an unreadable control file ({exc})"
            current = state.mode if state else None
            result.before = current
            if cas and current != expected:
                result.conflict = True
                result.after = current
                result.error = (f"{self.path} now holds {current!r}, not {expected!r}: someone changed it meanwhile; "
                                "nothing written")
                return result
            version = (state.version if state else 0) + 1
            doc = {"mode": mode, "updated_at": iso_utc(utc_now()), "actor": actor, "reason": reason, "version": version}
            try:
                write_control_atomic(self.path, doc)
            except OSError as exc:
                result.error = f"cannot write {self.path}: {exc.strerror}"
                return result
            # Read back while still holding the lock: it confirms this write, not whatever a later
            # (legitimate) change by another process made of the file after we let go.
            try:
                seen = read_control(self.path)
            except ControlFileError as exc:
                result.error = f"read-back failed: {exc}"
                return result
        finally:
            if locked:
                lock.release()
        result.after = seen.mode if seen else None
        result.version = seen.version if seen else None
        result.ok = result.after == mode and result.version == version
        if not result.ok:
            result.error = f"read back {result.after!r} (version {result.version}) after writing {mode!r} (version {version})"
        return result


class NoChannel(DeployError):
    """Neither an admin API nor a control file is configured."""


def build_channels(settings: Settings, *, pause: bool = False, environ: Mapping[str, str] | None = None) -> list[Channel]:
    """The channels the settings name (flags, else the environment, each on its own)."""
    if not settings.http_admin_url and not settings.control_file:
        raise NoChannel("no channel: give --http-admin-url and/or --control-file "
                        "(or set EXEC_HTTP_ADMIN_URL / EXEC_CONTROL_FILE)")
    channels: list[Channel] = []
    if settings.http_admin_url:
        channels.append(HttpChannel(settings.http_admin_url, settings.admin_token(environ),
                                    timeout=PAUSE_HTTP_TIMEOUT if pause else HTTP_TIMEOUT))
    if settings.control_file:
        channels.append(FileChannel(settings.control_file))
    return channels
