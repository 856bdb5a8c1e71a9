"""The docs hold together (issue 18, point 5): the README stays the way in, at most 12 KB; every relative link
in README.md and docs/*.md points to a file that exists, and an anchor to a heading that exists (GitHub's
slugs); and every command line they quote (in fenced code blocks and in `code` spans) that runs
`gradual-deploy` or `pytest` parses as written, with the tool's own argparse parser or, for the preflight and
pytest, with pytest's own parser under the configuration the command runs with, without running anything.
Values are checked too, by the option table's parsers, where the docs give a real value (not a placeholder)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

from deploy_tool.cli import COMMAND_SETTINGS, build_parser
from deploy_tool.settings import BY_NAME, SUITE_OPTIONS, OptionError, resolve

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
README_LIMIT = 12_288  # "no more than about 12 KB"

# --- reading Markdown -----------------------------------------------------------------------------------

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([\w+-]*)")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    lang: str
    lines: list[str]


def split_markdown(text: str) -> tuple[list[tuple[int, str]], list[Block]]:
    """The prose lines (number, text) outside fenced code blocks, and the fenced blocks."""
    prose: list[tuple[int, str]] = []
    blocks: list[Block] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if not opened:
            prose.append((i + 1, lines[i]))
            i += 1
            continue
        fence, start, body = opened.group(1), i, []
        i += 1
        while i < len(lines) and not re.match(rf"^ {{0,3}}{fence[0]}{{{len(fence)},}}\s*$", lines[i]):
            body.append(lines[i])
            i += 1
        blocks.append(Block(start + 1, opened.group(2), body))
        i += 1  # the closing fence (or the end of the file: an unclosed block runs to the end)
    return prose, blocks


def paragraphs(prose: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Runs of non-blank prose lines joined by newlines (a `code` span may break across lines), with the
    number of their first line."""
    found: list[tuple[int, str]] = []
    current: list[str] = []
    first = 0
    for number, line in [*prose, (0, "")]:
        if line.strip():
            if not current:
                first = number
            current.append(line)
        elif current:
            found.append((first, "\n".join(current)))
            current = []
    return found


CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: the rendered text (links, code marks and HTML dropped), lower case,
    anything but letters, digits, `_`, `-` and spaces removed, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 ... for repeated headings."""
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found = set()
    for _, line in prose:
        heading = re.match(r"^ {0,3}#{1,6}\s+(.*?)(?:\s+#+)?\s*$", line)
        if not heading:
            continue
        base = slug(heading.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


LINK = re.compile(r"(?<!\\)!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s.*)?$")


def links(path: Path) -> list[tuple[int, str]]:
    """Every link target of a Markdown file outside code: inline links, images and reference definitions."""
    prose, _ = split_markdown(path.read_text(encoding="utf-8"))
    found = []
    for number, text in paragraphs(prose):
        text = CODE_SPAN.sub(lambda m: " " * len(m.group(0)), text)
        for match in LINK.finditer(text):
            found.append((number + text.count("\n", 0, match.start()), match.group(1)))
        for offset, line in enumerate(text.split("\n")):
            reference = REFERENCE.match(line)
            if reference:
                found.append((number + offset, reference.group(1)))
    return found


def broken_links(pages: list[Path], root: Path = ROOT) -> list[str]:
    problems = []
    for page in pages:
        for number, target in links(page):
            where = f"{os.path.relpath(page, root)}:{number}: ({target})"
            if not target:
                problems.append(f"{where}: an empty link")
                continue
            if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("//"):
                continue  # http(s), mailto: not a file of this repository
            path_part, _, anchor = target.partition("#")
            linked = (page.parent / unquote(path_part)).resolve() if path_part else page
            if not linked.exists():
                problems.append(f"{where}: no such file {linked}")
                continue
            if root.resolve() not in linked.parents:
                problems.append(f"{where}: outside the repository")
                continue
            if anchor and linked.suffix == ".md" and unquote(anchor) not in anchors(linked):
                problems.append(f"{where}: no heading #{anchor} in {os.path.relpath(linked, root)} "
                                f"(there: {', '.join(sorted(anchors(linked)))})")
            elif anchor and linked.is_dir():
                problems.append(f"{where}: an anchor into a directory")
    return problems


# --- the command lines the docs quote ---------------------------------------------------------------------

PLACEHOLDER = "PLACEHOLDER"  # what stands in for `<the commit>`, `[the watch line's options]`, `postgresql://...`
ELLIPSES = ("...", "…")
OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1"}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if a.dest == "command")
    return dict(action.choices or {})  # type: ignore[call-overload]


COMMANDS = set(_subparsers())
GD = re.compile(r"^(?:\./)?(?:\.venv/bin/)?gradual-deploy$")
PYTEST = re.compile(r"^(?:\./)?(?:\.venv/bin/)?pytest$")
PYTHON = re.compile(r"^(?:\./)?(?:\.venv/bin/)?(?:python3?(?:\.\d+)?|py)$")
USAGE = re.compile(r"\[--?[A-Za-z]|\{[a-z]+,")


@dataclass(frozen=True)
class Quoted:
    """One command as the docs quote it: where, the text, and whether it is a usage line (`[--flag X]`)."""

    where: str
    text: str
    usage: bool = False


def _logical_lines(lines: list[str]) -> list[tuple[int, str]]:
    """A block's lines with `\\` continuations joined, and a usage line with the indented lines under it."""
    joined: list[tuple[int, str]] = []
    i = 0
    while i < len(lines):
        start, text = i, lines[i]
        while text.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text.rstrip()[:-1] + " " + lines[i].strip()
        if _starts_a_command(text) and USAGE.search(text):
            while i + 1 < len(lines) and re.match(r"^\s+\S", lines[i + 1]) and not _starts_a_command(lines[i + 1]):
                i += 1
                text += " " + lines[i].strip()
        joined.append((start, text))
        i += 1
    return joined


def _starts_a_command(text: str) -> bool:
    words = re.sub(r"^\s*\$\s+", "", text).split()
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]
    return bool(words) and bool(GD.match(words[0]) or PYTEST.match(words[0])
                                or (PYTHON.match(words[0]) and words[1:3] in (["-m", "deploy_tool"], ["-m", "pytest"])))


def quoted_commands(pages: list[Path] = PAGES, root: Path = ROOT) -> list[Quoted]:
    """Every line of a fenced block and every `code` span of the prose that runs gradual-deploy or pytest
    (also after `$ `, `VAR=value` or a `&&`)."""
    found = []
    for page in pages:
        name = Path(os.path.relpath(page, root)).as_posix()
        prose, blocks = split_markdown(page.read_text(encoding="utf-8"))
        candidates: list[tuple[int, str]] = []
        for block in blocks:
            candidates += [(block.line + 1 + offset, text) for offset, text in _logical_lines(block.lines)]
        for number, text in paragraphs(prose):
            for span in CODE_SPAN.finditer(text):
                candidates.append((number + text.count("\n", 0, span.start()), " ".join(span.group(2).split())))
        for number, text in candidates:
            for segment in _segments(text):
                if _starts_a_command(segment):
                    found.append(Quoted(f"{name}:{number}", segment, bool(USAGE.search(segment))))
    return found


def _words(text: str) -> list[str]:
    """A shell line's words as written (quotes kept), up to a `#` that starts a word (a comment)."""
    words, word, quote = [], "", ""
    for char in text:
        if quote:
            word += char
            quote = "" if char == quote else quote
        elif char in "'\"":
            word, quote = word + char, char
        elif char.isspace():
            if word:
                words.append(word)
            word = ""
        elif char == "#" and not word:
            break
        else:
            word += char
    return [*words, word] if word else words


def _segments(text: str) -> list[str]:
    """The commands of a shell line, split at `&&`, `|`, `;` and redirections (written apart, as the docs
    write them); a `#` comment dropped."""
    parts: list[list[str]] = [[]]
    for word in _words(text):
        if word in OPERATORS:
            parts.append([])
        else:
            parts[-1].append(word)
    return [" ".join(part) for part in parts if part]


def _argv(text: str) -> tuple[str, list[str]]:
    """(kind, argv) of a quoted command: kind `gd` (argv after `gradual-deploy`), `pytest`; placeholders
    filled in: the sandbox's ports, a stamp, and PLACEHOLDER for `<...>` and `[...]`."""
    text = text.replace(":PORT", ":8001").replace("<stamp>", "20261123T120000Z")
    text = re.sub(r"<[^<>]*>", PLACEHOLDER, text)
    text = re.sub(r"\[[^\[\]]*\]", PLACEHOLDER, text)  # `[the watch line's options]` (not a usage line)
    words = shlex.split(re.sub(r"^\s*\$\s+", "", text))
    while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words = words[1:]
    if GD.match(words[0]):
        return "gd", words[1:]
    if PYTEST.match(words[0]):
        return "pytest", words[1:]
    return ("gd" if words[2] == "deploy_tool" else "pytest"), words[3:]


def _is_placeholder(word: str) -> bool:
    return PLACEHOLDER in word or any(e in word for e in ELLIPSES)


def _fill(argv: list[str], takes_value) -> list[str]:
    """An elision (`...`) or a placeholder standing alone is the value of the option before it when that
    option takes one, else it stands for options left out and is dropped."""
    filled: list[str] = []
    for word in argv:
        alone = word in ELLIPSES or word == PLACEHOLDER
        if alone and not (filled and filled[-1].startswith("-") and "=" not in filled[-1] and takes_value(filled[-1])):
            continue
        filled.append(PLACEHOLDER if alone else word)
    return filled


def _subparser(name: str) -> argparse.ArgumentParser:
    return _subparsers()[name]


def _cli_takes_value(command: str):
    actions = _subparser(command)._option_string_actions if command in COMMANDS else {}
    return lambda flag: flag in actions and actions[flag].nargs != 0


SUITE_TAKES_VALUE = {o.flag for o in SUITE_OPTIONS if not o.flag_only}


def _suite_takes_value(flag: str) -> bool:
    return flag.split("=")[0] in SUITE_TAKES_VALUE


def _check_values(names_values: dict[str, object]) -> str | None:
    """The option table's verdict on the values the docs give (placeholders and --config left out: a
    config file named in the docs is not read here)."""
    given = {name: value for name, value in names_values.items()
             if name != "config" and value is not None
             and not any(_is_placeholder(str(v)) for v in (value if isinstance(value, list) else [value]))}
    try:
        resolve(list(given), cli=lambda option: given.get(option.name), environ={})
    except OptionError as exc:
        return str(exc)
    return None


def cli_problem(quoted: Quoted) -> str | None:
    """Why a quoted `gradual-deploy` line does not parse (None when it does); not for the preflight."""
    kind, argv = _argv(quoted.text)
    assert kind == "gd"
    if not argv or all(word in ELLIPSES or word == PLACEHOLDER for word in argv):
        return None  # the tool's name, `py -m deploy_tool ...`
    command = argv[0]
    if command not in COMMANDS:
        return f"no command {command!r}"
    if quoted.usage:  # a synopsis: every option it names is one of the command's
        known = _subparser(command)._option_string_actions
        unknown = [flag for flag in re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", quoted.text.split(command, 1)[1])
                   if flag not in known]
        return f"options that `{command}` does not have: {unknown}" if unknown else None
    if len(argv) == 1 and len(quoted.text.split()) == 2:
        return None  # the command's name in a sentence (`gradual-deploy switch`)
    argv = _fill(argv, _cli_takes_value(command))
    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            args = build_parser().parse_args(argv)
    except SystemExit as exc:
        return None if exc.code == 0 else f"the CLI refuses it (exit {exc.code}): {err.getvalue().strip()}"
    if command not in COMMAND_SETTINGS:
        return None
    values = {name: getattr(args, f"opt_{name}", None) for name in COMMAND_SETTINGS[command]}
    problem = _check_values({name: value for name, value in values.items() if name in BY_NAME})
    return f"a value the command refuses: {problem}" if problem else None


# Runs in a child process (pytest's parser loads plugins and an ini; none of it may touch this test run).
# `preflight` jobs go through `gradual-deploy preflight` itself with pytest.main replaced by pytest's own
# argument parsing: the same configuration, plugins and refusals as the command, nothing run. `pytest` jobs
# are parsed as `pytest ARGS` in the repository root (its pytest.ini, the installed plugins).
PARSE_IN_CHILD = r"""
import contextlib, io, json, os, sys
import pytest
from _pytest.config import _prepareconfig
from deploy_tool import cli
from deploy_tool.settings import SUITE_OPTIONS

jobs = json.load(open(sys.argv[1]))
results = []

def values(config):
    found = {}
    for option in SUITE_OPTIONS:
        value = config.getoption(f"gd_{option.name}", None)
        if value is not None:
            found[option.name] = value
    return found

for kind, args in jobs:
    result = {"error": None, "values": {}}
    if kind == "preflight":
        def parse_only(argv, plugins=()):
            try:
                config = _prepareconfig(list(argv), list(plugins))
            except pytest.UsageError as exc:
                result["error"] = f"pytest: {exc}"
                return 4
            result["values"] = values(config)
            return 0
        real_main, pytest.main = pytest.main, parse_only
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = cli.main(["preflight", *args])
        except BaseException as exc:
            code, result["error"] = -1, f"{type(exc).__name__}: {exc}"
        finally:
            pytest.main = real_main
        if code and not result["error"]:
            result["error"] = f"exit {code}: {err.getvalue().strip()}"
    else:
        for name in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
            os.environ.pop(name, None)
        try:
            result["values"] = values(_prepareconfig(list(args)))
        except pytest.UsageError as exc:
            result["error"] = f"pytest: {exc}"
        except BaseException as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
    results.append(result)
json.dump(results, open(sys.argv[2], "w"))
"""


def pytest_problems(jobs: list[tuple[str, list[str]]], tmp_path: Path) -> list[dict]:
    """pytest's verdict on each (kind, argv): {"error": ..., "values": {option: value}}."""
    jobs_file, results_file = tmp_path / "jobs.json", tmp_path / "results.json"
    jobs_file.write_text(json.dumps(jobs))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "GD_", "EXEC_"))}
    done = subprocess.run([sys.executable, "-c", PARSE_IN_CHILD, str(jobs_file), str(results_file)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and results_file.exists(), done.stderr[-3000:]
    return json.loads(results_file.read_text())


def suite_problems(quoted: list[Quoted], tmp_path: Path) -> list[str]:
    """Why each quoted preflight or pytest line does not parse, or gives a value the option table refuses."""
    jobs, lines = [], []
    for q in quoted:
        kind, argv = _argv(q.text)
        if kind == "gd":
            if q.usage:
                flags = re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", q.text.split("preflight", 1)[1])
                jobs.append(("preflight", [w for f in flags for w in ([f, PLACEHOLDER] if _suite_takes_value(f) else [f])]))
            else:
                jobs.append(("preflight", _fill(argv[1:], _suite_takes_value)))
        else:
            jobs.append(("pytest", _fill(argv, _suite_takes_value)))
        lines.append(q)
    problems = []
    for q, (kind, argv), result in zip(lines, jobs, pytest_problems(jobs, tmp_path)):
        if result["error"]:
            problems.append(f"{q.where}: `{q.text}` ({kind} {argv}): {result['error']}")
            continue
        problem = _check_values(result["values"])
        if problem:
            problems.append(f"{q.where}: `{q.text}`: a value the suite refuses: {problem}")
    return problems


def _is_suite_line(q: Quoted) -> bool:
    kind, argv = _argv(q.text)
    return kind == "pytest" or (bool(argv) and argv[0] == "preflight")


# --- the tests --------------------------------------------------------------------------------------------


def test_the_readme_is_at_most_12_kb():
    size = len(README.read_bytes())
    assert size <= README_LIMIT, (f"README.md is {size} bytes, more than {README_LIMIT}: it is the way in; move "
                                  "the reference to docs/ and link it")


def test_every_docs_page_is_linked_from_the_readme():
    targets = {(README.parent / t.partition("#")[0]).resolve() for _, t in links(README) if not re.match(r"^\w+:", t)}
    unlinked = [p.relative_to(ROOT).as_posix() for p in PAGES[1:] if p.resolve() not in targets]
    assert not unlinked, f"docs pages the README's 'Where to read on' does not link: {unlinked}"


def test_every_relative_link_and_anchor_resolves():
    assert len(PAGES) > 5 and sum(len(links(p)) for p in PAGES) > 20  # the reader finds the links at all
    problems = broken_links(PAGES)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_every_quoted_gradual_deploy_command_parses():
    quoted = [q for q in quoted_commands() if _argv(q.text)[0] == "gd" and not _is_suite_line(q)]
    assert len(quoted) > 30, quoted  # the extraction finds the docs' commands at all
    problems = [f"{q.where}: `{q.text}`: {problem}" for q in quoted if (problem := cli_problem(q))]
    assert not problems, "command lines in the docs that do not parse:\n" + "\n".join(problems)


def test_every_quoted_preflight_and_pytest_command_parses(tmp_path: Path):
    quoted = [q for q in quoted_commands() if _is_suite_line(q)]
    kinds = {_argv(q.text)[0] for q in quoted}
    assert len(quoted) > 8 and kinds == {"gd", "pytest"}, quoted
    problems = suite_problems(quoted, tmp_path)
    assert not problems, "preflight and pytest lines in the docs that pytest refuses:\n" + "\n".join(problems)


# --- the checker checks: a planted break is found ------------------------------------------------------------


def test_the_checkers_find_what_is_broken(tmp_path: Path):
    """Each checker fails on a page with one planted break, so that a passing run means the docs are right, not
    that the checker saw nothing."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("# x\n\n## In an incident: pause\n", encoding="utf-8")
    page = tmp_path / "docs" / "page.md"
    page.write_text("# Title\n\n## A section: `here`\n\n[ok](#a-section-here) [ok](../README.md#in-an-incident-pause)\n"
                    "[gone](missing.md) [no heading](#nowhere) [no heading there](../README.md#nowhere)\n"
                    "`[not a link](missing.md)`\n\n```\n[not a link](missing.md)\n```\n", encoding="utf-8")
    problems = broken_links([page], root=tmp_path)
    assert len(problems) == 3 and all(("missing.md" in p or "nowhere" in p) for p in problems), problems

    assert "refuses" in (cli_problem(Quoted("plant", "gradual-deploy switch --to real --no-such-flag")) or "")
    assert "refuses" in (cli_problem(Quoted("plant", "gradual-deploy ramp --steps 5 --hold 2h")) or "")
    assert cli_problem(Quoted("plant", "gradual-deploy ramp --steps 0.5%,1% --hold 2h --database-url ...")) is None
    assert "does not have" in (cli_problem(Quoted("plant", "gradual-deploy pause [--no-such URL]", usage=True)) or "")
    assert "no command" in (cli_problem(Quoted("plant", "gradual-deploy go-live --now")) or "")
    assert cli_problem(Quoted("plant", "gradual-deploy switch")) is None  # a name in a sentence

    page.write_text("```bash\n.venv/bin/gradual-deploy watch --interval 2s \\\n    --no-such-option x  # a comment\n```\n"
                    "Run `CI=true .venv/bin/pytest -x\n  --bogus` and `$ gradual-deploy demo | head -1`, then\n"
                    "`gradual-deploy pause --reason 'incident #42' && gradual-deploy status`.\n", encoding="utf-8")
    assert [q.text for q in quoted_commands([page], root=tmp_path)] == [
        ".venv/bin/gradual-deploy watch --interval 2s --no-such-option x", "CI=true .venv/bin/pytest -x --bogus",
        "$ gradual-deploy demo", "gradual-deploy pause --reason 'incident #42'", "gradual-deploy status"]

    planted = [Quoted("plant", "gradual-deploy preflight --min-sharp 0.2"),
               Quoted("plant", "gradual-deploy preflight --min-sharpe 0.2 -p no:cacheprovider"),
               Quoted("plant", "gradual-deploy preflight --min-winrate 55"),
               Quoted("plant", "pytest preflight_tests --no-such-pytest-option"),
               Quoted("plant", "gradual-deploy preflight [--min-sharpe X] [--no-such-suite-flag]", usage=True),
               Quoted("fine", "gradual-deploy preflight [--min-sharpe X] [--skip-db-check]", usage=True),
               Quoted("fine", "gradual-deploy preflight --database-url postgresql://... --min-sharpe 0.3 --skip-db-check")]
    problems = suite_problems(planted, tmp_path)
    assert [p.split(":")[0] for p in problems] == ["plant"] * 5, problems
    assert "--min-sharp" in problems[0] and "-p" in problems[1] and "min-winrate" in problems[2] \
        and "--no-such-pytest-option" in problems[3] and "--no-such-suite-flag" in problems[4], problems
