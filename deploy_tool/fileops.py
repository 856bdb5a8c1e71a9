"""How the tool opens, reads and writes files: never blocked by what sits at a path, and the same on Windows,
where the runbook's operators run it.

`open_fd` is the one opener. Every file on the path of `pause`, `watch`, `ramp`, `switch` and `status` (the
audit, the control file and its temp file, the evidence, the ledger, the watch's snapshot, the trading
system's audit and risk events) is opened through it, or through `open_regular`, `read_bytes`, `append` and
`write_atomic` on top of it. A FIFO at such a path would block an open until another process opens its other
end, a device such as /dev/zero never ends, a socket cannot be opened at all: so the opener does not wait
(O_NONBLOCK), then looks at what it opened (fstat) and accepts only a regular file, or a file it creates.
Anything else is `NotRegularFile`, an OSError naming the path and what it is. Reads are bounded in size
(`FileTooLarge`). Lock waits are bounded by their callers (`Lock`'s timeouts).

Each function does the POSIX thing on POSIX and the right thing on Windows; `WINDOWS` is the one switch,
so that the tests run the Windows paths here too (monkeypatching it), not only on a Windows runner.

- Windows has no O_NONBLOCK (and no FIFO in its file system): the flag is left out there; the fstat check
  still refuses a device such as CON or NUL.
- `replace`: Windows refuses to replace a file another process holds open without delete sharing (the
  trading system reading its control file, an auditor's viewer on the evidence): retried for a moment,
  then a message saying so.
- `fsync_directory`: a directory cannot be opened on Windows; NTFS journals the rename itself.
- `set_mode`: `os.fchmod` does not exist on Windows before Python 3.13; file modes mean little there.
- `append`: Windows' O_APPEND is a seek then a write, not one atomic step, so two processes appending at
  once can overwrite each other's line: there the append takes a lock file. O_BINARY keeps "\\n" a "\\n".
- `same_path`: Windows paths compare without regard to case or separator.
- `Lock`: a cross-process lock file. On POSIX it is `fcntl.flock` on the lock file, the very primitive
  filelock's UnixFileLock uses (so the two exclude each other), without filelock's 20-30 ms of imports
  (logging, secrets, its settings machinery) on the path of an emergency pause; on Windows it is filelock.
"""

from __future__ import annotations

import contextlib
import errno
import io
import ntpath
import os
import stat
import time
from typing import IO, Any, Callable, Iterator

WINDOWS = os.name == "nt"
REPLACE_RETRY_S = 0.5  # a reader holds a control file for microseconds; a pause cannot wait longer
APPEND_LOCK_S = 2.0
# The most any read takes in: every file the tool reads whole (evidence, envelope, ledger, control file) is a
# few kilobytes to a few megabytes; a larger one is not one of them, and reading it could exhaust memory.
MAX_READ_BYTES = 16 * 1024 * 1024

_ACCESS = {  # the opener's modes: what os.open is asked for (a "w" truncates only once the file is checked)
    "r": os.O_RDONLY,
    "rc": os.O_RDONLY | os.O_CREAT,  # a lock file: flock needs no write access, so another user's file locks too
    "w": os.O_WRONLY | os.O_CREAT,
    "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL,
}


class NotRegularFile(OSError):
    """A path the tool reads or writes names a FIFO, socket, device or directory instead of a file."""

    def __init__(self, path: str | os.PathLike, kind: str) -> None:
        self.kind = kind
        super().__init__(errno.EISDIR if kind == "a directory" else errno.EINVAL,
                         f"it is {kind}, not a regular file", os.fspath(path))

    def __str__(self) -> str:
        return f"{self.filename} is {self.kind}, not a regular file"


class FileTooLarge(OSError):
    """A file the tool reads whole is larger than any file it writes."""

    def __init__(self, path: str | os.PathLike, limit: int) -> None:
        self.limit = limit
        super().__init__(errno.EFBIG, f"it is larger than {_size(limit)}, more than any file this tool reads",
                         os.fspath(path))

    def __str__(self) -> str:
        return f"{self.filename} is larger than {_size(self.limit)}, more than any file this tool reads"


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):g} MB" if n >= 1024 * 1024 else f"{n} bytes"


def kind_of(mode: int) -> str | None:
    """What a file of this st_mode is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    for test, kind in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return kind
    return "a special file"


def check_regular(path: str | os.PathLike) -> None:
    """NotRegularFile when something other than a regular file is at `path` (symlinks followed); nothing
    there, or a regular file, is fine. For a file another library opens (the lock file): a look, not an open."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return  # nothing there (or nothing to see): the open that follows says what is wrong
    kind = kind_of(mode)
    if kind is not None:
        raise NotRegularFile(path, kind)


def open_fd(path: str | os.PathLike, access: str = "r", perm: int = 0o644) -> int:
    """The one opener: a descriptor of the regular file at `path`, never blocked by what is there.

    `access`: "r" read, "rc" read (created: a lock file), "w" write (created, truncated), "a" append (created),
    "x" create a new file. Opened
    without blocking (O_NONBLOCK where the platform has it), then checked with fstat: NotRegularFile when
    the path names a FIFO, socket, device or directory; other OSErrors (FileNotFoundError for "r") as
    os.open raises them."""
    flags = _ACCESS[access] | getattr(os, "O_BINARY", 0)  # (os.open makes the descriptor non-inheritable itself)
    nonblocking = not WINDOWS and hasattr(os, "O_NONBLOCK")
    if nonblocking:
        # O_NONBLOCK: a FIFO opens at once (for reading) or fails with ENXIO (for writing) instead of waiting
        # for its other end; O_NOCTTY: a terminal at the path does not become this process's.
        flags |= os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(path, flags, perm)
    except (FileNotFoundError, FileExistsError):
        raise
    except OSError:
        check_regular(path)  # ENXIO (a FIFO without a reader, a socket), EISDIR, EACCES on a Windows directory
        raise
    try:
        kind = kind_of(os.fstat(fd).st_mode)
        if kind is not None:
            raise NotRegularFile(path, kind)
        if nonblocking:
            os.set_blocking(fd, True)  # a regular file ignores it; cleared so that nothing downstream sees it
        if access == "w":
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular(path: str | os.PathLike, mode: str = "r", *, perm: int = 0o644, encoding: str = "utf-8",
                 errors: str | None = None) -> IO[Any]:
    """`open()` through `open_fd`: mode "r", "w", "a" or "x", with "b" for bytes (text is UTF-8 by default)."""
    access = mode.replace("b", "").replace("t", "")
    if access not in _ACCESS:
        raise ValueError(f"mode {mode!r}: one of r, w, a, x, with b for bytes")
    fd = open_fd(path, access, perm)
    try:
        raw = io.FileIO(fd, "r" if access == "r" else "w", closefd=True)
    except BaseException:
        os.close(fd)
        raise
    buffered: Any = io.BufferedReader(raw) if access == "r" else io.BufferedWriter(raw)
    if "b" in mode:
        return buffered
    return io.TextIOWrapper(buffered, encoding=encoding, errors=errors)


def read_bytes(path: str | os.PathLike, limit: int = MAX_READ_BYTES) -> bytes:
    """The whole regular file at `path`, at most `limit` bytes; FileTooLarge beyond it."""
    with open_regular(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(path, limit)
    return data


def read_text(path: str | os.PathLike, limit: int = MAX_READ_BYTES) -> str:
    """`read_bytes` as UTF-8 text (UnicodeDecodeError, a ValueError, when it is not)."""
    return read_bytes(path, limit).decode("utf-8")


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


class LockLost(OSError):
    """The lock a writer held is no longer the lock file at its path: nothing was replaced."""


def write_atomic(path: str | os.PathLike, data: bytes, perm: int = 0o644,
                 still_locked: Callable[[], bool] | None = None) -> None:
    """Replace the regular file at `path` (or create it) in one step: a new temp file in the same directory,
    written, fsync'd, renamed over it, the directory fsync'd where the platform can. A reader sees the old
    content or the new, never a torn one. NotRegularFile, and nothing replaced, when a FIFO, socket, device
    or directory is at `path`: that is not a file this tool wrote. `still_locked`, asked just before the
    rename: LockLost, and nothing replaced, when it says the writer's lock is gone."""
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    check_regular(target)
    tmp = os.path.join(directory, f".{os.path.basename(target)}.{os.urandom(6).hex()}.tmp")
    fd = open_fd(tmp, "x", 0o600)  # a fresh name, created here: nothing planted there can be opened
    try:
        try:
            set_mode(fd, perm)  # the umask does not decide: the trading system may run as another user
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        check_regular(target)  # again, just before the rename: whatever appeared there meanwhile stays
        if still_locked is not None and not still_locked():
            raise LockLost(errno.ENOLCK, "the lock file was removed or replaced while the lock was held", target)
        replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(directory)  # where the platform can; the rename itself is atomic


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


class LockTimeout(Exception):
    """The lock was not had within the timeout."""


class Lock:
    """An exclusive lock on the file `path` (created, mode 0644), shared with every process that locks the same
    file with `Lock` or filelock. `acquire` waits at most `timeout` seconds (LockTimeout), trying every
    `poll_interval`; any other problem with the lock file (a directory, FIFO or device at the path, no
    permission) is an OSError. Not reentrant: one holder per instance."""

    def __init__(self, path: str, timeout: float) -> None:
        self.path, self.timeout = path, timeout
        self._fd: int | None = None
        self._windows: Any = None

    def acquire(self, timeout: float | None = None, poll_interval: float = 0.05) -> None:
        timeout = self.timeout if timeout is None else timeout
        if WINDOWS:
            from filelock import FileLock, Timeout

            self._windows = self._windows or FileLock(self.path)
            try:
                self._windows.acquire(timeout=timeout, poll_interval=poll_interval)
            except Timeout:
                raise LockTimeout(self.path) from None
            return
        import fcntl

        # a regular file only (never blocked by a FIFO at the path); read-only, created readable and writable by
        # all the umask allows (0666): the team's operators and the trading system may run as different users
        fd = open_fd(self.path, "rc", 0o666)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(self.path) from None
                    time.sleep(poll_interval)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def still_held(self) -> bool:
        """Is the file we hold the lock on still the one at `path`? Not when someone removed or replaced the
        lock file meanwhile: another writer then locks the new file while we hold the old one, and a writer
        must not trust its lock. (Always true on Windows, where an open lock file cannot be removed.)"""
        if self._fd is None:
            return self._windows is not None
        try:
            held, there = os.fstat(self._fd), os.stat(self.path)
        except OSError:
            return False
        return (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)

    def release(self) -> None:
        if self._windows is not None:
            self._windows.release()
            return
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the only descriptor of the open file releases its flock


@contextlib.contextmanager
def _append_lock(path: str) -> Iterator[None]:
    if not WINDOWS:
        yield
        return
    lock = Lock(path + ".lock", timeout=APPEND_LOCK_S)
    try:
        lock.acquire()
    except (LockTimeout, OSError):
        yield  # a stuck holder must not cost the line: write without the lock rather than not at all
        return
    try:
        yield
    finally:
        lock.release()


def append(path: str, data: bytes) -> None:
    """Append `data` to the regular file `path` (created if missing) in one write and fsync it; OSError
    (NotRegularFile for a FIFO, socket, device or directory) when that fails."""
    with _append_lock(path):
        fd = open_fd(path, "a")
        try:
            if not WINDOWS:
                _flock(fd)  # the last-byte check and the write below, one writer at a time (our own writers)
            if data[:1] != b"\n" and os.fstat(fd).st_size and _last_byte(path) not in (b"\n", b""):
                data = b"\n" + data  # a torn last line (a writer that died mid-line) does not swallow this one
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        finally:
            os.close(fd)


def _flock(fd: int) -> bool:
    """An exclusive flock on the open file, waited for at most APPEND_LOCK_S; False (write anyway: a stuck
    holder must not cost the line) when it is not had. Released when the descriptor is closed."""
    import fcntl

    deadline = time.monotonic() + APPEND_LOCK_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.001)
        except OSError:
            return False


def _last_byte(path: str) -> bytes:
    """The file's last byte (b"" when it cannot be read: the append goes on as it is)."""
    try:
        with open_regular(path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1)
    except OSError:
        return b""


def utf8_text(text: str) -> str:
    """`text` as it can be written in UTF-8: what the OS handed over undecodable (a Latin-1 login name, host
    name or terminal, held as surrogate escapes) is written out as \\xNN instead of ending the write."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def utf8_bytes(text: str) -> bytes:
    """`text` encoded in UTF-8; a character that cannot be (a lone surrogate) written as a JSON/Python escape
    (\\udcNN): a line is never lost to it."""
    return text.encode("utf-8", "backslashreplace")


def same_path(a: str, b: str) -> bool:
    """Do the two names reach the same file (symlinks resolved; on Windows case and separators ignored)?"""
    first, second = os.path.realpath(a), os.path.realpath(b)
    if WINDOWS:
        return ntpath.normcase(first) == ntpath.normcase(second)
    return first == second


BLOCK = 64 * 1024  # what a backwards reader reads at a time


def iter_lines_backwards(path: str) -> Iterator[bytes]:
    """The complete lines of a file, last first. A trailing piece without a newline is skipped. A FIFO,
    socket or device at the path is an OSError (`fileops.NotRegularFile`) at once, never a wait. Linear in
    the bytes read, however long a line is: a line's blocks are joined once, when its start is found."""
    with open_regular(path, "rb") as fh:
        pos = fh.seek(0, os.SEEK_END)
        carry: list[bytes] = []  # the pieces of the line being read, later pieces first
        dropped_tail = False
        while pos > 0:
            size = min(BLOCK, pos)
            pos -= size
            fh.seek(pos)
            block = fh.read(size)
            if b"\n" not in block:
                carry.append(block)
                continue
            parts = block.split(b"\n")
            rest = [*parts[1:-1], parts[-1] + b"".join(reversed(carry))]
            carry = [parts[0]]
            if not dropped_tail:
                rest = rest[:-1]  # after the last newline: empty, or a line still being written
                dropped_tail = True
            for line in reversed(rest):
                yield line
        first = b"".join(reversed(carry))
        if first and dropped_tail:
            yield first  # the file's first line
