"""File operations that differ on Windows, where the runbook's operators run the tool.

Each function does the POSIX thing on POSIX and the right thing on Windows; `WINDOWS` is the one switch,
so that the tests run the Windows paths here too (monkeypatching it), not only on a Windows runner.

- `replace`: Windows refuses to replace a file another process holds open without delete sharing (the
  trading system reading its control file, an auditor's viewer on the evidence): retried for a moment,
  then a message saying so.
- `fsync_directory`: a directory cannot be opened on Windows; NTFS journals the rename itself.
- `set_mode`: `os.fchmod` does not exist on Windows before Python 3.13; file modes mean little there.
- `append`: Windows' O_APPEND is a seek then a write, not one atomic step, so two processes appending at
  once can overwrite each other's line: there the append takes a lock file. O_BINARY keeps "\n" a "\n".
- `same_path`: Windows paths compare without regard to case or separator.
"""

from __future__ import annotations

import contextlib
import ntpath
import os
import time
from typing import Iterator

WINDOWS = os.name == "nt"
REPLACE_RETRY_S = 0.5  # a reader holds a control file for microseconds; a pause cannot wait longer
APPEND_LOCK_S = 2.0


def replace(src: str | os.PathLike, dst: str | os.PathLike, retry_s: float = REPLACE_RETRY_S) -> None:
    """os.replace; on Windows retried while another process holds `dst` open, then a PermissionError
    that says so."""
    deadline = time.monotonic() + retry_s
    delay = 0.005
    while True:
        try:
            os.replace(src, dst)
            return
        except PermissionError as exc:
            if not WINDOWS:
                raise
            if time.monotonic() >= deadline:
                raise PermissionError(
                    exc.errno,
                    f"{os.fspath(dst)} is held open by another process and Windows cannot replace an open file "
                    f"(retried for {retry_s:g} s; {exc.strerror}): close the program holding it",
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def fsync_directory(directory: str | os.PathLike) -> bool:
    """Make a rename in `directory` durable where the platform allows it; whether it did."""
    if WINDOWS:
        return False
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return False
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return True


def set_mode(fd: int, mode: int) -> None:
    """Give an open file its permission bits, where the platform has them."""
    if WINDOWS or not hasattr(os, "fchmod"):
        return
    os.fchmod(fd, mode)


@contextlib.contextmanager
def _append_lock(path: str) -> Iterator[None]:
    if not WINDOWS:
        yield
        return
    from filelock import FileLock, Timeout

    lock = FileLock(path + ".lock", timeout=APPEND_LOCK_S)
    try:
        lock.acquire()
    except Timeout:
        yield  # a stuck holder must not cost the line: write without the lock rather than not at all
        return
    try:
        yield
    finally:
        lock.release()


def append(path: str, data: bytes) -> None:
    """Append `data` to `path` in one write and fsync it; OSError when that fails."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
    with _append_lock(path):
        fd = os.open(path, flags, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


def same_path(a: str, b: str) -> bool:
    """Do the two names reach the same file (symlinks resolved; on Windows case and separators ignored)?"""
    first, second = os.path.realpath(a), os.path.realpath(b)
    if WINDOWS:
        return ntpath.normcase(first) == ntpath.normcase(second)
    return first == second
