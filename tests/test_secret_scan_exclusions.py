"""What the secrets scan leaves out, and why: nothing by a name a trading system could give its own code
(`build/`, `dist/`, `env/`, `.env.prod.py`), only what a path is (version control, tool caches, a real
virtual environment, key homes, files that are not text or too large, symlinks leaving the scan path).
Everything left out is listed with its reason; a file that could not be read fails the check; a key behind
detect-secrets' allowlist pragma is still a finding."""

from __future__ import annotations

import os

import pytest

from deploy_tool import criteria
from deploy_tool.probes import secretscan
from deploy_tool.probes.secretscan import MAX_BYTES, scan

HEX_KEY = "4A1F7C2E9B3D5F8A0C6E2B4D7F9A1C3E"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"  # AWS's documented example access key id
KEY_LINE = f'secret_key = "{HEX_KEY}"\n'


def _tree(tmp_path, files: dict[str, str]):
    root = tmp_path / "trading-system"
    (root / "strategies").mkdir(parents=True)
    (root / "strategies" / "momentum.py").write_text("def signal(bar):\n    return bar.close > bar.open\n")
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _judged(root):
    found = scan(str(root))
    return found, criteria.secrets_not_in_code(found, None)


def _paths(found) -> set[str]:
    return {f.path for f in found.findings}


def _assert_no_value(text: str) -> None:
    assert HEX_KEY not in text and AWS_KEY not in text


@pytest.mark.parametrize("directory", ["build", "dist", "env", "venv", ".venv", "node_modules", "src/build/lib"])
def test_directories_are_scanned_whatever_their_name(tmp_path, directory):
    """build/, dist/, env/ hold code as well as anything: a name is no reason to look away. A directory called
    venv without pyvenv.cfg is no virtual environment; node_modules without a package.json is no install."""
    rel = f"{directory}/strategy.py"
    root = _tree(tmp_path, {rel: KEY_LINE})
    found, criterion = _judged(root)
    assert _paths(found) == {os.path.normpath(rel)}
    assert not criterion.ok and criterion.measured == 2
    assert f"{os.path.normpath(rel)}:1 (Hex High Entropy String)" in criterion.message
    _assert_no_value(criterion.message)


def test_real_environments_caches_and_version_control_are_left_out_and_listed(tmp_path):
    left_out = {
        ".venv": "virtual environment: holds pyvenv.cfg and an interpreter",
        "tools/py311": "virtual environment: holds pyvenv.cfg and an interpreter",
        "conda/envs/bot": "conda environment: holds conda-meta",
        "web/node_modules": "installed node packages: next to package.json",
        ".git": "version control",
        "strategies/__pycache__": "tool cache",
        ".mypy_cache": "tool cache",
        ".pytest_cache": "tool cache",
        ".tox": "tool cache",
    }
    files = {f"{d}/vendored.py": KEY_LINE for d in left_out}
    files |= {".venv/pyvenv.cfg": "home = /usr/bin\n", "tools/py311/pyvenv.cfg": "home = /usr/bin\n",
              ".venv/bin/python": "", "tools/py311/Scripts/python.exe": "",
              "conda/envs/bot/conda-meta/history": "", "web/package.json": "{}\n"}
    root = _tree(tmp_path, files)
    found, criterion = _judged(root)
    assert found.findings == () and found.unreadable == ()
    assert dict(found.not_scanned) == {os.path.normpath(d): reason for d, reason in left_out.items()}
    assert found.files == 2  # strategies/momentum.py and web/package.json
    assert criterion.ok, criterion.message
    assert "9 path(s) not scanned" in criterion.message
    assert ".venv (virtual environment: holds pyvenv.cfg and an interpreter)" in criterion.message


@pytest.mark.parametrize("name", [".env.prod.py", ".env.py", "config/.env.live.js", ".env.example", "okx.env.sh",
                                  "config.yaml.py", "deploy/.env.template"])
def test_dotenv_looking_code_data_and_templates_are_scanned(tmp_path, name):
    """A key home is a dotenv file or config.yaml by its exact name: `.env.prod.py` is Python that the
    system imports, `.env.example` is committed for every reader of the repository."""
    root = _tree(tmp_path, {name: KEY_LINE})
    found, criterion = _judged(root)
    assert os.path.normpath(name) in _paths(found)
    assert not criterion.ok and f"{os.path.normpath(name)}:1 (" in criterion.message
    _assert_no_value(criterion.message)


def test_key_homes_are_left_out_by_exact_name_and_listed(tmp_path):
    homes = [".env", ".env.prod", ".env.production.local", "okx.env", "config.yaml", "deploy/config.yml",
             "deploy/.env"]
    root = _tree(tmp_path, {name: f"OKX_API_SECRET={HEX_KEY}\nsecret_key: \"{HEX_KEY}\"\n" for name in homes})
    found, criterion = _judged(root)
    assert found.findings == ()
    assert dict(found.not_scanned) == {
        os.path.normpath(name): "key home: dotenv or config.yaml, where the runbook puts keys" for name in homes}
    assert criterion.ok and "7 path(s) not scanned" in criterion.message and ".env.prod (key home" in criterion.message


@pytest.mark.parametrize("comment", ["#", "//"])
def test_a_key_behind_an_allowlist_pragma_is_reported(tmp_path, comment):
    source = (f"import os\n"
              f"secret_key = \"{HEX_KEY}\"  {comment} pragma: allowlist secret\n"
              f"{comment} pragma: allowlist nextline secret\n"
              f"aws_access_key_id = \"{AWS_KEY}\"\n"
              f"greeting = \"hello\"  {comment} pragma: allowlist secret\n"
              f"token = \"{HEX_KEY.lower()}\"  {comment} pragma: whitelist secret\n")
    name = "exchange.py" if comment == "#" else "exchange.js"
    root = _tree(tmp_path, {name: source})
    found, criterion = _judged(root)
    assert found.hard_coded == ()
    assert {(f.line, f.allowlisted) for f in found.findings} == {(2, True), (4, True), (6, True)}
    assert not criterion.ok
    assert f"{name}:2 (Hex High Entropy String, allowlisted by pragma)" in criterion.message
    assert f"{name}:4 (AWS Access Key, allowlisted by pragma)" in criterion.message
    assert "a pragma hides a key from the scanner" in criterion.message
    assert f"{name}:5" not in criterion.message  # a pragma on a line without a key is fine
    _assert_no_value(criterion.message)
    _assert_no_value(criterion.message.lower().upper())


def test_a_pragma_on_a_line_without_a_key_passes(tmp_path):
    root = _tree(tmp_path, {"exchange.py": 'greeting = "hello"  # pragma: allowlist secret\nx = 1\n'})
    found, criterion = _judged(root)
    assert found.findings == () and found.not_scanned == ()
    assert criterion.ok and criterion.message.endswith("; nothing left out")


def test_large_binary_and_non_text_files_are_listed(tmp_path):
    root = _tree(tmp_path, {})
    big = root / "data" / "candles.py"
    big.parent.mkdir()
    big.write_text("x = 1\n" * (MAX_BYTES // 6 + 1) + KEY_LINE)
    (root / "data" / "model.bin2").write_bytes(b"\0\xff\xfe" + KEY_LINE.encode())
    (root / "docs").mkdir()
    (root / "docs" / "chart.png").write_text(KEY_LINE)
    (root / "poetry.lock").write_text(KEY_LINE)
    os.mkfifo(root / "feed.pipe")
    found, criterion = _judged(root)
    assert found.findings == () and found.unreadable == ()
    assert dict(found.not_scanned) == {
        os.path.join("data", "candles.py"): f"larger than 1 MB: {big.stat().st_size} bytes",
        os.path.join("data", "model.bin2"): "binary: not UTF-8, holds NUL bytes",
        os.path.join("docs", "chart.png"): "non-code extension: .png",
        "poetry.lock": "lock file: package hashes",
        "feed.pipe": "not a regular file",
    }
    assert criterion.ok
    # the ones that could hide a key are named first
    assert "5 path(s) not scanned: data/candles.py (larger than 1 MB" in criterion.message.replace(os.sep, "/")


def test_text_that_is_not_utf8_is_scanned(tmp_path):
    root = _tree(tmp_path, {})
    (root / "legacy.py").write_bytes("# caf\xe9 strat\xe9gie\n".encode("latin-1") + KEY_LINE.encode())
    (root / "dump.txt").write_bytes(b"\0\0header\n" + KEY_LINE.encode())  # UTF-8 for all its NUL bytes: text
    found, criterion = _judged(root)
    assert found.not_scanned == ()
    assert {(f.path, f.line) for f in found.findings} == {("legacy.py", 2), ("dump.txt", 2)}
    assert not criterion.ok and "legacy.py:2 (Hex High Entropy String)" in criterion.message


def test_a_path_naming_swagger_is_scanned(tmp_path):
    """detect-secrets drops every path holding "swagger" (meant for API docs): a client module is code."""
    root = _tree(tmp_path, {"clients/swagger_okx.py": KEY_LINE})
    found, criterion = _judged(root)
    assert _paths(found) == {os.path.join("clients", "swagger_okx.py")}
    assert not criterion.ok


def test_symlinks_inside_are_followed_outside_listed(tmp_path):
    root = _tree(tmp_path, {"keys/real.py": KEY_LINE})
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "shared.py").write_text(KEY_LINE)
    (root / "alias.py").symlink_to(root / "keys" / "real.py")
    (root / "shared.py").symlink_to(outside / "shared.py")
    (root / "gone.py").symlink_to(root / "missing.py")
    (root / "keys-again").symlink_to(root / "keys", target_is_directory=True)
    (root / "vendor").symlink_to(outside, target_is_directory=True)
    found, criterion = _judged(root)
    assert _paths(found) == {"alias.py", os.path.join("keys", "real.py")}
    assert dict(found.not_scanned) == {
        "shared.py": "symlink to a file outside the scan path",
        "gone.py": "broken symlink",
        "keys-again": "symlink to the directory keys, walked there",
        "vendor": "symlink to a directory outside the scan path",
    }
    assert not criterion.ok and "alias.py:1 (Hex High Entropy String)" in criterion.message
    assert "shared.py (symlink to a file outside the scan path)" in criterion.message


def test_a_file_that_cannot_be_read_fails_the_check(tmp_path, monkeypatch):
    root = _tree(tmp_path, {"exchange.py": KEY_LINE.replace(HEX_KEY, "os.environ['K']")})
    real_open = open

    def refusing(path, *args, **kwargs):
        if os.path.basename(str(path)) == "exchange.py":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(secretscan, "open", refusing, raising=False)
    found, criterion = _judged(root)
    assert found.unreadable == (("exchange.py", "unreadable: Permission denied"),)
    assert found.unreadable[0] in found.not_scanned
    assert not criterion.ok and criterion.measured == 1
    assert "1 path(s) under" in criterion.message and "could not be read, so may hold a key: exchange.py" in (
        criterion.message)


def test_a_directory_that_cannot_be_read_fails_the_check(tmp_path, monkeypatch):
    root = _tree(tmp_path, {"locked/exchange.py": KEY_LINE})
    real_scandir = os.scandir

    def refusing(path="."):
        if not isinstance(path, int) and os.path.basename(os.fspath(path)) == "locked":
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    found, criterion = _judged(root)
    assert found.findings == ()
    assert found.unreadable == (("locked", "unreadable directory: Permission denied"),)
    assert not criterion.ok and "could not be read, so may hold a key: locked (unreadable directory" in (
        criterion.message)
