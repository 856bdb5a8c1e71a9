"""Keys in code: a scan of the trading system's source for hard-coded secrets, with detect-secrets.

The runbook: never hard-code API keys; use environment variables or config.yaml. What the scan leaves out is
decided here, by what a path *is*, never by a name a trading system could give its own code:

- version control (`.git`, `.hg`, `.svn`) and tool caches (`__pycache__`, `.mypy_cache`, `.pytest_cache`,
  `.ruff_cache`, `.tox`, `.nox`): written by tools, never the system's source;
- a virtual environment only when it is one (it holds `pyvenv.cfg`, or `conda-meta/` for conda), and
  `node_modules` only next to a `package.json` (what npm, yarn and pnpm install): third-party packages;
  `env/`, `venv/`, `build/`, `dist/` are scanned like any directory;
- key homes, where the runbook puts keys: `config.yaml`/`config.yml` and dotenv files (`.env`, `.env.<stage>`,
  `<name>.env`), unless the name ends in a code, data or template suffix (`.env.prod.py` is Python,
  `.env.example` is committed for everyone to read: both are scanned);
- files that are not text: detect-secrets' list of non-code extensions (images, fonts, archives, stylesheets,
  source maps, lock files) and binaries (not UTF-8, holding NUL bytes); other text that is not UTF-8 is
  scanned as Latin-1 (keys are ASCII), where detect-secrets alone would skip it without a word;
- files over 1 MB (data, not code: detect-secrets runs every detector on every line, ~3 s per MB);
- symlinks leaving the scan path, broken symlinks and special files; a symlinked file inside the scan path is
  scanned under its own name, a symlinked directory inside it is walked at its target.

Everything left out is listed in `Scan.not_scanned` with the reason; a file that could not be read is listed
there and in `Scan.unreadable`, and fails the check (the scan cannot say it holds no key). A key-like value on
a line that carries detect-secrets' allowlist pragma (`pragma: allowlist secret`, or `pragma: allowlist
nextline secret` on the line above) is a finding too, marked as allowlisted: a pragma silences the scanner,
it does not make a committed key safe. A finding names the file, the line and the kind of secret, never the
secret itself.
"""

from __future__ import annotations

import os
import stat
import tempfile
from dataclasses import dataclass
from typing import Iterator, NamedTuple

from deploy_tool import ProbeError

VCS_DIRS = {".git", ".hg", ".svn"}
CACHE_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox", ".nox"}
# Where the runbook says keys belong: not hard-coded.
CONFIG_KEY_HOMES = {"config.yaml", "config.yml"}
# A dotenv-looking name ending in one of these is code, data or a committed template: scanned.
NOT_DOTENV_SUFFIXES = {
    "py", "pyw", "pyi", "pyx", "ipynb", "js", "mjs", "cjs", "jsx", "ts", "tsx", "sh", "bash", "zsh", "fish",
    "ps1", "bat", "cmd", "rb", "go", "rs", "java", "kt", "scala", "php", "pl", "pm", "lua", "r", "c", "h",
    "cc", "cpp", "hpp", "cs", "swift", "sql", "json", "yaml", "yml", "toml", "ini", "cfg", "conf", "xml",
    "properties", "tf", "hcl", "txt", "md", "rst", "html",
    "example", "sample", "template", "tmpl", "tpl", "dist", "orig", "bak",
}
MAX_BYTES = 1_000_000
ALLOWLIST_SWITCH = b"pragma"  # every allowlist pragma detect-secrets knows holds this word
# detect-secrets' filter that drops every path holding "swagger" (meant for API docs): it would hide code.
SWAGGER_FILTER = "detect_secrets.filters.heuristic.is_swagger_file"
# and the one that drops every UUID-shaped value: an OKX API key is a UUID.
UUID_FILTER = "detect_secrets.filters.heuristic.is_potential_uuid"


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    kind: str
    allowlisted: bool = False  # the line (or the one above) carries detect-secrets' allowlist pragma

    def describe(self) -> str:
        flag = ", allowlisted by pragma" if self.allowlisted else ""
        return f"{self.path}:{self.line} ({self.kind}{flag})"


class NotScanned(NamedTuple):
    """A file or directory under the scan path that was not scanned, relative to it, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class Scan:
    root: str
    files: int
    findings: tuple[Finding, ...]
    not_scanned: tuple[NotScanned, ...] = ()
    unreadable: tuple[NotScanned, ...] = ()  # also in not_scanned: could not be read, so not known clean

    def not_scanned_text(self, shown: int) -> str:
        """The paths left out, the most telling first (what could hide a key before what holds none)."""
        ordered = sorted(self.not_scanned, key=lambda e: (_rank(e.reason), e.path))
        listed = "; ".join(f"{e.path} ({e.reason})" for e in ordered[:shown])
        more = f" (+{len(ordered) - shown} more)" if len(ordered) > shown else ""
        return f"{len(ordered)} path(s) not scanned: {listed}{more}"

    @property
    def hard_coded(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if not f.allowlisted)

    @property
    def allowlisted(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.allowlisted)


# The order not-scanned paths are shown in: the first could hide a key, the last are tools' own files.
_RANKED = ("unreadable", "symlink", "broken", "larger", "not a regular", "binary", "non-code", "lock",
           "key home", "virtual", "conda", "installed", "tool cache", "version control")


def _rank(reason: str) -> int:
    return next((i for i, start in enumerate(_RANKED) if reason.startswith(start)), len(_RANKED))


def is_key_home(name: str) -> bool:
    """config.yaml, or a dotenv file (`.env`, `.env.<stage>`, `<name>.env`) whose name does not end in a code,
    data or template suffix."""
    if name in CONFIG_KEY_HOMES:
        return True
    if name != ".env" and not name.startswith(".env.") and not (name.endswith(".env") and len(name) > 4):
        return False
    suffix = name.rsplit(".", 1)[-1].lower()
    return suffix not in NOT_DOTENV_SUFFIXES


def _has_interpreter(path: str) -> bool:
    """A real virtual environment has its interpreter beside pyvenv.cfg; a code directory that only holds a
    pyvenv.cfg (to opt out of the scan) has not."""
    import glob

    return any(os.path.exists(os.path.join(path, *parts)) for parts in (("bin", "python"), ("Scripts", "python.exe"))) \
        or bool(glob.glob(os.path.join(path, "lib", "python*", "site-packages")))


def excluded_dir(path: str, name: str) -> str | None:
    """Why a directory is left out, or None when it is scanned."""
    if name in VCS_DIRS:
        return "version control"
    if name in CACHE_DIRS:
        return "tool cache"
    if os.path.isfile(os.path.join(path, "pyvenv.cfg")) and _has_interpreter(path):
        return "virtual environment: holds pyvenv.cfg and an interpreter"
    if os.path.isdir(os.path.join(path, "conda-meta")):
        return "conda environment: holds conda-meta"
    if name == "node_modules" and os.path.isfile(os.path.join(os.path.dirname(path), "package.json")):
        return "installed node packages: next to package.json"
    return None


def _inside(path: str, real_root: str) -> bool:
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


@dataclass
class _Walk:
    root: str
    real_root: str
    files: list[tuple[str, bool, bool]]  # (relative path, utf-8, holds "pragma")
    skipped: list[NotScanned]
    unreadable: list[NotScanned]

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.root)

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append(NotScanned(self.rel(path), reason))

    def fail(self, path: str, reason: str) -> None:
        entry = NotScanned(self.rel(path), reason)
        self.skipped.append(entry)
        self.unreadable.append(entry)

    def directory_error(self, error: OSError) -> None:
        self.fail(error.filename or self.root, f"unreadable directory: {error.strerror or error}")

    def file(self, path: str, name: str) -> None:
        reason, unreadable, entry = self._judge(path, name)
        if entry is not None:
            self.files.append(entry)
        elif unreadable:
            self.fail(path, reason)
        else:
            self.skip(path, reason)

    def _judge(self, path: str, name: str) -> tuple[str, bool, tuple[str, bool, bool] | None]:
        """(why it is left out, whether that is because it could not be read, or the file to scan)."""
        from detect_secrets.filters.heuristic import is_lock_file, is_non_text_file

        if os.path.islink(path):
            if not os.path.exists(path):
                return "broken symlink", False, None
            if not _inside(path, self.real_root):
                return "symlink to a file outside the scan path", False, None
        if is_key_home(name):
            return "key home: dotenv or config.yaml, where the runbook puts keys", False, None
        try:
            info = os.stat(path)
        except OSError as exc:
            return f"unreadable: {exc.strerror or exc}", True, None
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file", False, None
        if is_lock_file(path):
            return "lock file: package hashes", False, None
        if is_non_text_file(path):
            return f"non-code extension: {os.path.splitext(name)[1]}", False, None
        if info.st_size > MAX_BYTES:
            return f"larger than {MAX_BYTES // 1_000_000} MB: {info.st_size} bytes", False, None
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_BYTES + 1)
        except OSError as exc:
            return f"unreadable: {exc.strerror or exc}", True, None
        try:
            data.decode("utf-8")
            utf8 = True
        except UnicodeDecodeError:
            if b"\0" in data:  # text in a single-byte encoding holds no NUL, a binary format nearly always does
                return "binary: not UTF-8, holds NUL bytes", False, None
            utf8 = False
        return "", False, (self.rel(path), utf8, ALLOWLIST_SWITCH in data)


def walk(root: str) -> _Walk:
    """Every file to scan under `root`, and what is left out with the reason."""
    real_root = os.path.realpath(root)
    found = _Walk(root, real_root, [], [], [])
    for directory, dirs, names in os.walk(root, onerror=found.directory_error):
        kept = []
        for name in sorted(dirs):
            path = os.path.join(directory, name)
            if os.path.islink(path):
                # os.walk does not follow it; inside the scan path its target is walked where it lies
                found.skip(path, f"symlink to the directory {found.rel(os.path.realpath(path))}, walked there"
                           if _inside(path, real_root) else "symlink to a directory outside the scan path")
                continue
            reason = excluded_dir(path, name)
            if reason is None:
                kept.append(name)
            else:
                found.skip(path, reason)
        dirs[:] = kept
        for name in sorted(names):
            found.file(os.path.join(directory, name), name)
    return found


def _scanned(path: str, allowlisted: bool) -> Iterator[tuple[int, str]]:
    from detect_secrets.core import scan as ds_scan

    secrets = ds_scan.scan_for_allowlisted_secrets_in_file(path) if allowlisted else ds_scan.scan_file(path)
    for secret in secrets:
        yield secret.line_number, secret.type


def _scan_files(root: str, files: list[tuple[str, bool, bool]], allowlisted: bool) -> set[Finding]:
    from detect_secrets.settings import default_settings

    found = set()
    with default_settings() as settings, tempfile.TemporaryDirectory(prefix="gd-secretscan-") as scratch:
        settings.disable_filters(SWAGGER_FILTER, UUID_FILTER)
        for rel, utf8, pragma in files:
            if allowlisted and not pragma:
                continue
            path = os.path.join(root, rel)
            if not utf8:  # detect-secrets skips what it cannot decode: keys are ASCII, Latin-1 reads every byte
                copy = os.path.join(scratch, os.path.basename(rel))
                with open(path, "rb") as source, open(copy, "w", encoding="utf-8") as target:
                    target.write(source.read().decode("latin-1"))
                path = copy
            for line, kind in _scanned(path, allowlisted):
                found.add(Finding(rel, line, kind, allowlisted))
    return found


def scan(root: str) -> Scan:
    """Every hard-coded secret detect-secrets finds under `root`, allowlist pragmas or not, and what was left
    out."""
    if not os.path.isdir(root):
        raise ProbeError(f"--scan-path {root} is not a directory: point it at the trading system's source")
    walked = walk(root)
    plain = _scan_files(root, walked.files, allowlisted=False)
    # scan_for_allowlisted_secrets_in_file turns the allowlist filter off for the settings it runs in: its own.
    # Only files holding the pragma's word can hold an allowlisted line; with none, there is nothing to set up.
    allowed = _scan_files(root, walked.files, allowlisted=True) if any(p for _, _, p in walked.files) else set()
    findings = sorted(plain | allowed, key=lambda f: (f.path, f.line, f.kind, f.allowlisted))
    return Scan(root, len(walked.files), tuple(findings), tuple(sorted(walked.skipped)),
                tuple(sorted(walked.unreadable)))
