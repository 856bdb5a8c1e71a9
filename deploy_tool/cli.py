"""The `gradual-deploy` command line: parsing, printing and exit codes, around the library.

Every option comes from the one table in `deploy_tool.settings` and is resolved by `settings.resolve`
(flag > environment > default), as the suite resolves its own. Subcommands import what they need when
they run, so that `gradual-deploy pause` starts fast. Library errors are turned into a message and an
exit code here, once: 0 done, 1 refused or failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from typing import Any, Callable, Collection, NoReturn, Sequence, TextIO, cast

from deploy_tool import MODES, DeployError, __version__, fileops
from deploy_tool.redact import Redactor
from deploy_tool.settings import (
    BY_NAME,
    OPTIONS,
    OptionError,
    Settings,
    switch_value,
    resolve,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

PREFLIGHT_HELP = """\
Run the go-live preflight suite (the same as `pytest --pyargs preflight_tests`). Every option of the
suite is accepted, e.g.:
  gradual-deploy preflight --http-admin-url http://127.0.0.1:8001 \\
      --backtest-summary data/backtest_summary.json --min-sharpe 0.2 --min-winrate 0.5 --max-drawdown 0.05
`gradual-deploy preflight --help` lists them by group; pytest's own options follow (group "gradual-deploy").
"""

CHANNELS = ("http_admin_url", "control_file", "admin_token_env")
# What the evidence gate compares the evidence with: where it is, its age, the pinned keys, the deployment's
# exchange and trades database.
GATE = ("evidence_dir", "max_evidence_age", "trusted_keys", "allow_unsigned", "okx_base_url", "database_url")
# The settings each command takes from the table; switch and pause call their audit dir --audit-dir.
COMMAND_SETTINGS: dict[str, tuple[str, ...]] = {
    "switch": (*CHANNELS, *GATE, "deploy_audit_dir", "notify"),
    "pause": (*CHANNELS, "deploy_audit_dir", "notify"),
    "status": (*CHANNELS, *GATE),
    "watch": tuple(o.name for o in OPTIONS if o.group in ("watch", "observe", "db", "okx", "evidence", "judge")
                   and o.name not in ("observe", "signing_key", "subject", "revision"))
    + CHANNELS + ("capital", "max_daily_loss", "notify"),
}
COMMAND_SETTINGS["ramp"] = (*COMMAND_SETTINGS["watch"], "steps", "hold", "max_allocation", "max_evidence_age",
                             "trusted_keys", "allow_unsigned", "confirm_url", "wait_for_approval")
COMMAND_SETTINGS["status"] = (*COMMAND_SETTINGS["status"], "deploy_audit_dir")
ALIASES = {"deploy_audit_dir": ("--audit-dir",)}


# Where the suite's help says what a missing target means for the checks, a command that acts on the channels
# says what the option is to it.
CHANNEL_HELP = {
    "http_admin_url": "the trading system's admin API: a channel the mode is changed and read back through "
                      "(give it, --control-file, or both)",
    "control_file": "the control file the trading system reads its mode from: a channel (give it, "
                    "--http-admin-url, or both)",
}
# Options whose suite help says what they are to a preflight: what they are to the commands that read them.
READER_HELP = {
    "evidence_dir": "where the preflight wrote its evidence: the newest there is what the gate judges",
    "capital": "total capital in the quote currency (e.g. USDT), required: the realized PnL is judged against "
               "--max-daily-loss as a fraction of it",
}
EXIT_CODES = "exit codes: 0 done, 1 refused or failed, 2 usage error"
# What each command does, its exit codes and one example: the top of its --help.
COMMAND_HELP: dict[str, tuple[str, str]] = {
    "switch": ("Change the trading system's mode on every channel given: compare-and-swap, read back, audited. "
               "--to real opens only on signed, complete, fresh evidence made against this deployment (the gate); "
               "--force overrides, audited as forced.",
               f"{EXIT_CODES}\nexample:\n  gradual-deploy switch --to mock --http-admin-url http://127.0.0.1:8001 "
               "--control-file data/control/mode.json --reason 'rehearse'"),
    "pause": ("EMERGENCY: pause the trading system through every channel given, now. Done when at least one "
              "channel confirms; each channel's result is printed, a failing one loudly; bounded in time.",
              f"exit codes: 0 paused (at least one channel confirmed), 1 no channel confirmed, 2 usage error\n"
              "example:\n  gradual-deploy pause --control-file data/control/mode.json --http-admin-url "
              "http://127.0.0.1:8001 --reason 'incident 42'"),
    "status": ("Print the mode and allocation on each channel, whether they agree, the ramp's last event, and "
               "whether the newest evidence would let `switch --to real` through.",
               f"exit codes: 0 every channel read and they agree, 1 a channel could not be read or they disagree, 2 usage error\n"
               "example:\n  gradual-deploy status --http-admin-url http://127.0.0.1:8001 --control-file "
               "data/control/mode.json"),
    "watch": ("The runbook's observation period: every --interval one round judges the observe, data-latency and "
              "exchange checks (pass, fail, inconclusive, error); a breach (--failure-limit failing rounds, or more "
              "than --consecutive-error-limit rounds that could not measure) pauses every channel.",
              "exit codes: 0 the duration ended with no breach, 1 breach (paused) or no round passed, 2 usage "
              "error, 130 Ctrl+C (mode left as it is)\nexample:\n  gradual-deploy watch --interval 30s --duration "
              "2h --database-url postgresql://... --capital 10000 --http-admin-url http://127.0.0.1:8001 "
              "--control-file data/control/mode.json"),
    "ramp": ("Raise the allocation step by step (--steps) on every channel (compare-and-swap, read back, "
             "audited), each step held --hold under the watch rounds; a breach pauses every channel, sets the "
             "allocation back to the first step and exits 1. Resumes where the channels and the audit say it "
             "stopped. Before every raise it waits for what --confirm-url and --wait-for-approval ask; `gradual-"
             "deploy ramp approve` (from another terminal, same --deploy-audit-dir) approves a waiting ramp.",
             "exit codes: 0 full allocation reached (approve: approved), 1 refused, stopped or aborted (approve: "
             "nothing to approve), 2 usage error, 130 Ctrl+C\nexample:\n  gradual-deploy ramp --steps 0.5%,0.75%,1% "
             "--hold 2h --capital 10000 --database-url postgresql://... --http-admin-url http://127.0.0.1:8001 --control-file "
             "data/control/mode.json --wait-for-approval\n  gradual-deploy ramp approve --deploy-audit-dir "
             "data/audit"),
    "sandbox": ("Run, on loopback, a stand-in of everything a rehearsal needs: the exchange (OKX's shapes), the "
                "admin API, a control file, a trades feed in SQLite, a backtest summary and a simulated trading "
                "system; prints the command lines that point at it. For rehearsals and tests only.",
                "exit codes: 0 stopped by Ctrl+C (or --misbehave delivered), 1 cannot start or no sandbox to "
                "tell, 2 usage error\nexample:\n  gradual-deploy sandbox --dir data/sandbox\n  gradual-deploy "
                "sandbox --dir data/sandbox --misbehave failing-orders"),
}


class _Help(argparse.RawDescriptionHelpFormatter):
    """A one-line description is filled to at most 100 columns, only when help is shown; an epilog (exit
    codes, examples) is kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return super()._fill_text(text, width, indent)
        import textwrap

        return textwrap.fill(text, min(width, 100), initial_indent=indent, subsequent_indent=indent)


def _command(sub: Any, name: str, help: str) -> argparse.ArgumentParser:
    description, epilog = COMMAND_HELP[name]
    return sub.add_parser(name, help=help, description=description, epilog=epilog, formatter_class=_Help)


class UsageError(DeployError):
    """The command line is wrong."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own exits with 2 too; keep its text
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse makes a formatter for every add_argument, and its default width imports shutil (5 ms on
        # the path of a pause) for shutil.get_terminal_size: the same rule, from os.
        return cast(Any, self.formatter_class)(prog=self.prog, width=_columns() - 2)


def _columns() -> int:
    """The terminal's width as shutil.get_terminal_size finds it: $COLUMNS, else the terminal's, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", "0"))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


def _add_settings(parser: argparse.ArgumentParser, command: str) -> None:
    """The command's flags from the option table: the same help as the suite's (default None: absent)."""
    for name in COMMAND_SETTINGS[command]:
        option = BY_NAME[name]
        flags = [option.flag]
        if name in ALIASES and command in ("switch", "pause", "status"):
            flags = [*ALIASES[name], option.flag]
        if option.parse is switch_value:
            parser.add_argument(*flags, dest=f"opt_{name}", action="store_const", const="true", default=None,
                                help=option.help_text())
        else:
            shown = option.help_text()
            if name in CHANNEL_HELP or name in READER_HELP:
                env = f" [env {', '.join(option.env)}]" if option.env else ""
                default = f" (default: {option.default})" if option.default not in (None, "false") else ""
                shown = f"{CHANNEL_HELP.get(name) or READER_HELP[name]}{default}{env}".replace("%", "%%")
            parser.add_argument(*flags, dest=f"opt_{name}", default=None, metavar="VALUE", help=shown,
                                action="append" if option.repeat else "store")


def _settings(args: argparse.Namespace) -> Settings:
    # A pause goes through whatever channel works: an unusable value for one channel is reported as that
    # channel's failure, never a refusal of the whole pause.
    pausing = args.command == "pause" or (args.command == "switch" and args.to == "paused")
    tolerate = ("http_admin_url", "control_file") if pausing else ()
    try:
        return resolve(COMMAND_SETTINGS[args.command], cli=lambda o: getattr(args, f"opt_{o.name}", None),
                       tolerate=tolerate)
    except OptionError as exc:
        raise UsageError(str(exc)) from None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; with `only`, the top level and that one command's parser (the same parser it
    has in the whole): `gradual-deploy pause` does not pay for building every other command's options."""
    parser = _Parser(prog="gradual-deploy", description="Go-live gate and mode control for a gradual live deployment.")
    parser.add_argument("--version", action="version", version=f"gradual-deploy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, add in _COMMANDS.items():
        if only is None or name == only:
            add(sub)
    return parser


def _add_preflight(sub: Any) -> None:
    pre = sub.add_parser("preflight", help="run the go-live checks and write the evidence",
                         description=PREFLIGHT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                         add_help=False)
    pre.add_argument("-h", "--help", action="store_true", help="show the suite's options by group (--help-pytest: "
                                                              "pytest's own too)")
    pre.add_argument("pytest_args", nargs=argparse.REMAINDER, help="suite options")


def _add_sandbox(sub: Any) -> None:
    box = _command(sub, "sandbox", "run a local stand-in of the exchange, admin API, feed and files")
    box.add_argument("--dir", default="data/sandbox", help="working directory (default: data/sandbox)")
    box.add_argument("--okx-port", type=int, default=0, help="port of the exchange stand-in (default: any free)")
    box.add_argument("--admin-port", type=int, default=0, help="port of the admin API (default: any free)")
    box.add_argument("--admin-token-env", default="EXEC_HTTP_ADMIN_TOKEN",
                     help="env var whose value the admin API requires as bearer token (unset: no token)")
    box.add_argument("--misbehave", metavar="FAULT",
                     help="tell the sandbox running in --dir to misbehave (failing-orders, risk-burst, stall-feed, "
                          "silence, slippage, losses; none recovers), then exit")


def _add_switch(sub: Any) -> None:
    sw = _command(sub, "switch", "change the trading system's mode (compare-and-swap, read back, audited)")
    sw.add_argument("--to", required=True, choices=MODES, help="target mode")
    _add_settings(sw, "switch")
    sw.add_argument("--reason", default="", help="why, for the audit")
    sw.add_argument("--force", action="store_true", help="override a refused transition or the evidence gate (audited)")
    sw.add_argument("--json", action="store_true", help="print one JSON object")


def _add_pause(sub: Any) -> None:
    pa = _command(sub, "pause", "EMERGENCY: pause through every channel now")
    _add_settings(pa, "pause")
    pa.add_argument("--reason", default="", help="why, for the audit")
    pa.add_argument("--json", action="store_true", help="print one JSON object")


def _add_status(sub: Any) -> None:
    st = _command(sub, "status", "the mode on each channel and the newest evidence")
    _add_settings(st, "status")
    st.add_argument("--json", action="store_true", help="print one JSON object")


def _add_watch(sub: Any) -> None:
    wa = _command(sub, "watch", "the observation period: checks every interval, pauses on a breach")
    _add_settings(wa, "watch")
    wa.add_argument("--json", action="store_true", help="one JSON object per round")


def _add_ramp(sub: Any) -> None:
    ra = _command(sub, "ramp", "raise the allocation step by step, each step held clean under watch")
    ra.add_argument("action", nargs="?", choices=("approve",), help="approve: let a waiting ramp go on (audited)")
    ra.add_argument("--step", type=int, default=None, help="with approve: the step the ramp must be waiting "
                                                           "before (a check, so that a late approval approves "
                                                           "nothing else)")
    ra.add_argument("--wait-id", default=None, help="with approve: the wait to approve (its WAITING line and "
                                                    "`status` name it), when several ramps wait in one audit")
    ra.add_argument("--reason", default="", help="with approve: why, for the audit")
    _add_settings(ra, "ramp")
    ra.add_argument("--plan", action="store_true", help="print the schedule and the minimum time to full allocation")
    ra.add_argument("--force", action="store_true", help="allow steps above --max-allocation (audited)")
    ra.add_argument("--json", action="store_true", help="one JSON object per round")


def _add_keygen(sub: Any) -> None:
    kg = sub.add_parser("keygen", help="make an Ed25519 key pair that signs the evidence",
                        description="Write a new key pair into --out: signing-key.pem (private, mode 0600; give it to "
                                    "the preflight job only, e.g. as the CI secret GD_SIGNING_KEY) and "
                                    "signing-key.pub.pem (append it to the trusted-keys file kept with the trading "
                                    "system). Never overwrites a key. Exit 0 done, 1 failed.")
    kg.add_argument("--out", default="data/keys", help="directory for the pair (default: data/keys)")


def _add_verify(sub: Any) -> None:
    ve = sub.add_parser("verify", help="verify an archived evidence offline: signature, subjects, verdict",
                        description="Check the signature of EVIDENCE (its .intoto.json, or the .json beside it) against "
                                    "the pinned public keys, and that each --subject file hashes like one of its "
                                    "subjects; print signer, subjects, verdict, targets and age. Exit 0 only when "
                                    "all of it verifies and the evidence is a complete pass; 1 otherwise; 2 usage.")
    ve.add_argument("evidence", metavar="EVIDENCE", help="preflight-<stamp>.intoto.json (or its .json)")
    ve.add_argument("--subject", action="append", default=[], metavar="PATH",
                    help="a file or directory to check against the subjects; repeatable")
    ve.add_argument("--trusted-keys", default=None, metavar="FILE",
                    help="file of trusted public keys (PEM) [env GD_TRUSTED_KEYS] (default: data/keys/trusted-keys.pem)")
    ve.add_argument("--json", action="store_true", help="print one JSON object")


def _add_demo(sub: Any) -> None:
    demo = sub.add_parser("demo", help="walk the runbook against an in-process sandbox")
    demo.add_argument("--dir", default="data/demo", help="where the demo's sandbox and evidence go (default: data/demo)")


_COMMANDS: dict[str, Callable[[Any], None]] = {
    "preflight": _add_preflight,
    "sandbox": _add_sandbox,
    "switch": _add_switch,
    "pause": _add_pause,
    "status": _add_status,
    "watch": _add_watch,
    "ramp": _add_ramp,
    "keygen": _add_keygen,
    "verify": _add_verify,
    "demo": _add_demo,
}


def _shown_args(args: Sequence[str]) -> str:
    """Arguments echoed back in a message: a URL's password masked (a misspelt `--databse-url` still holds
    one), and every secret the environment names."""
    from deploy_tool.redact import mask_url

    shown = " ".join((mask_url(a) or a) if "://" in a else a for a in args)
    return Redactor.from_environ().scrub(shown)


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return parser


def _did_you_mean(parser: argparse.ArgumentParser, unknown: Sequence[str]) -> str:
    """` (did you mean --control-file?)` for the unknown flags that are close to one of the parser's; then where
    the command's options are listed."""
    import difflib

    flags = [flag for action in parser._actions for flag in action.option_strings]
    hints = []
    for token in unknown:
        if token.startswith("--"):
            close = difflib.get_close_matches(token.split("=", 1)[0], flags, n=1, cutoff=0.75)
            if close:
                hints.append(f"{token.split('=', 1)[0]} -> {close[0]}")
    said = f" (did you mean: {', '.join(hints)}?)" if hints else ""
    return f"{said}; `{parser.prog} --help` lists its options"


def _actor() -> str:
    from deploy_tool.audit import actor, host

    return f"{actor()}@{host()}"


def _printable_anywhere() -> None:
    """A Windows console or a redirected stream may be cp1252: a path or reason it cannot encode (an
    operator's home folder named in Chinese) is printed escaped instead of ending the command with a traceback."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors="backslashreplace")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code. A stdout closed early (`gradual-deploy status | head -1`)
    never ends in a traceback: a command that prints once goes on to its end with the rest of its output
    dropped (`_ReaderGone`) and exits with its own code; any other ends there, with its code if it had one,
    else 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _printable_anywhere()
    original = sys.stdout
    if argv[:1] and argv[0] in PRINT_ONCE:
        sys.stdout = cast(TextIO, _ReaderGone(original))
    code: int | None = None
    try:
        code = _run_command(argv)
        sys.stdout.flush()  # here, where a broken pipe can still be handled, not in the interpreter's exit
    except SystemExit:  # argparse's --help, --version and usage errors
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            sys.stdout = _drop_stdout(sys.stdout)
        raise
    except BrokenPipeError:
        sys.stdout = _drop_stdout(sys.stdout)
        return EXIT_FAILED if code is None else code
    finally:
        if isinstance(sys.stdout, _ReaderGone):
            sys.stdout = original
    return code


# Commands that print their result once, at the end. A reader gone before that (`| head -1`) does not cut
# them short: a pause still warns on stderr about a channel that failed, still notifies, and exits with its
# own code. `watch` and `ramp` are not among them: they print as they go, and a lost stdout ends them (a
# watch pauses first, commands/watch.py).
PRINT_ONCE = ("switch", "pause", "status", "keygen", "verify")


class _ReaderGone:
    """stdout for a command that prints once: after a broken pipe, the rest of its output is dropped."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._stream = _drop_stdout(self._stream)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._stream = _drop_stdout(self._stream)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _drop_stdout(stream: TextIO) -> TextIO:
    """Point the stream's descriptor at the null device, so that nothing written later (the interpreter's own
    flush at exit included) meets the broken pipe: the pattern of
    https://docs.python.org/3/library/signal.html#note-on-sigpipe. A stream without a descriptor is replaced."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)
        return stream
    except (OSError, ValueError, AttributeError):
        return open(os.devnull, "w", encoding="utf-8")


def _run_command(argv: list[str]) -> int:
    """Parse and dispatch; library errors become a message on stderr and an exit code, once, here."""
    # `preflight` hands everything after it to pytest, including -h.
    if argv[:1] == ["preflight"]:
        return cmd_preflight(argv[1:])
    command = argv[0] if argv and argv[0] in _COMMANDS else None
    parser = build_parser(command)
    args, unknown = parser.parse_known_args(argv)
    args.ignored = []
    if unknown and command == "pause":
        # A pause is never refused for a typo: it goes through the channels it could read, and says loudly
        # what it ignored (cmd_change), so that `--contrl-file` next to a good --http-admin-url still pauses.
        args.ignored = unknown
    elif unknown:
        sub = _subparser(parser, command) if command else parser
        sub.error(f"unrecognized arguments: {_shown_args(unknown)}{_did_you_mean(sub, unknown)}")
    try:
        if args.command == "sandbox":
            return cmd_sandbox(args)
        if args.command in ("switch", "pause"):
            return cmd_change(args)
        if args.command == "status":
            return cmd_status(args)
        if args.command == "watch":
            return cmd_watch(args)
        if args.command == "ramp":
            return cmd_ramp(args)
        if args.command == "keygen":
            return cmd_keygen(args)
        if args.command == "verify":
            return cmd_verify(args)
        if args.command == "demo":
            from deploy_tool.commands.demo import run_demo

            return run_demo(args.dir)
    except UsageError as exc:
        print(Redactor.from_environ().scrub(f"gradual-deploy: error: {exc}"), file=sys.stderr)
        return EXIT_USAGE
    except DeployError as exc:
        print(Redactor.from_environ().scrub(f"gradual-deploy: {exc}"), file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("gradual-deploy: interrupted", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_USAGE


def cmd_preflight(pytest_args: list[str]) -> int:
    from deploy_tool.commands.preflight import foreign_overrides, run_preflight, suite_help

    asked = pytest_args[:pytest_args.index("--")] if "--" in pytest_args else pytest_args
    if "--help-pytest" in asked:  # pytest's own help, the suite's options among them
        print(PREFLIGHT_HELP)
        pytest_args = ["--help" if a == "--help-pytest" else a for a in pytest_args]
    elif "-h" in asked or "--help" in asked:
        print(suite_help())
        return EXIT_OK

    overrides = foreign_overrides(pytest_args)
    if overrides:
        print(f"gradual-deploy: error: {' '.join(overrides)}: the preflight runs under its own pytest configuration "
              "and plugins, so that no ini, conftest, plugin or override changes which checks run or how they judge; "
              "put thresholds and targets in options, the environment or the gradual-deploy config (--config FILE)",
              file=sys.stderr)
        return EXIT_USAGE
    result = run_preflight(pytest_args)
    if result.exit_code == 4 and result.verdict is None:  # pytest's usage error: a misspelt suite option?
        hint = _preflight_typos(pytest_args)
        if hint:
            print(f"gradual-deploy: {hint}; `gradual-deploy preflight --help` lists the suite's options",
                  file=sys.stderr)
    if result.verdict is not None:
        from deploy_tool.evidence import attestation_path

        signed = attestation_path(result.json) if result.json is not None else None
        _print([f"gradual-deploy preflight: verdict {result.verdict.upper()} (exit {result.exit_code}): "
                + _opens_real_words(result.json),
                f"  evidence (HTML): {result.html}", f"  evidence (JSON): {result.json}",
                f"  signed          : {signed}" if signed is not None and signed.exists()
                else "  signed          : no (this evidence cannot open real: run it again with --signing-key FILE or "
                     "GD_SIGNING_KEY_FILE; `gradual-deploy keygen` makes a pair)"],
               Redactor.from_environ())
    return result.exit_code


def _preflight_typos(args: Sequence[str]) -> str:
    """`--database-ulr is no option: did you mean --database-url?` for flags close to a suite option; ""."""
    import difflib

    from deploy_tool.settings import SUITE_OPTIONS

    flags = [o.flag for o in SUITE_OPTIONS]
    said = []
    for arg in args:
        if arg == "--":
            break
        name = arg.split("=", 1)[0]
        if name.startswith("--") and name not in flags:
            close = difflib.get_close_matches(name, flags, n=1, cutoff=0.8)
            if close:
                said.append(f"{name} is no option: did you mean {close[0]}?")
    return "; ".join(said)


def _opens_real_words(path: Any) -> str:
    """Whether the evidence at `path` opens real, in the run's own judgement (the gate decides again)."""

    try:
        judged = json.loads(fileops.read_text(path)).get("opens_real") or {}
    except (OSError, ValueError, AttributeError, TypeError):
        judged = {}
    if judged.get("ok") is True:
        return "this evidence opens real"
    why = "; ".join(str(w) for w in judged.get("why") or []) or "its JSON could not be read"
    return f"this evidence does NOT open real ({why})"


def cmd_sandbox(args: argparse.Namespace) -> int:
    from deploy_tool.sandbox import FAULTS, Sandbox, request_fault

    if args.misbehave:
        if args.misbehave not in FAULTS:
            raise UsageError(f"unknown fault {args.misbehave!r}: one of {', '.join(FAULTS)}")
        if not os.path.isdir(args.dir):
            raise DeployError(f"no sandbox in {args.dir}: start one with `gradual-deploy sandbox --dir {args.dir}` "
                              "(in another terminal), or give the --dir it runs in")
        try:
            path = request_fault(args.dir, args.misbehave)
        except OSError as exc:
            raise DeployError(f"cannot ask the sandbox in {args.dir}: {exc.strerror or exc}") from None
        print(f"asked the sandbox in {args.dir} to misbehave: {args.misbehave} ({path})")
        return EXIT_OK
    token = os.environ.get(args.admin_token_env) or None
    sandbox = Sandbox(args.dir, token=token, token_env=args.admin_token_env,
                      okx_port=args.okx_port, admin_port=args.admin_port)
    try:
        sandbox.start()
    except OSError as exc:
        raise DeployError(f"cannot start the sandbox: {exc.strerror or exc}: a port in use? give others with "
                          "--okx-port and --admin-port") from None
    print("gradual-deploy sandbox running on loopback (Ctrl+C stops it)")
    print(f"  exchange stand-in : {sandbox.okx_url}")
    print(f"  admin API         : {sandbox.admin_url}" + (f" (bearer token from ${args.admin_token_env})" if token else ""))
    print(f"  control file      : {sandbox.control_file}")
    print(f"  trades feed       : {sandbox.database_url}")
    print(f"  backtest summary  : {sandbox.backtest_summary}")
    print("  API key (account)  : export " + " ".join(f"{k}={v}" for k, v in sandbox.account_env().items()))
    print("Point the suite at it:")
    # preflight_args and gate_args keep the sandbox's evidence in its own --dir; the audit goes there too
    print("  gradual-deploy preflight " + " ".join(shlex.quote(a) for a in sandbox.preflight_args()))
    print("After a pass, go live on it (from mock; the gate checks the signed evidence against these):")
    print("  gradual-deploy switch --to real " + " ".join(shlex.quote(a) for a in [
        "--http-admin-url", sandbox.admin_url, "--admin-token-env", args.admin_token_env,
        "--control-file", str(sandbox.control_file), *sandbox.gate_args(), "--evidence-dir", str(sandbox.evidence_dir),
        "--audit-dir", str(sandbox.audit_dir)]))
    print("Watch it (in another terminal), and make it misbehave with")
    print(f"  gradual-deploy sandbox --dir {shlex.quote(args.dir)} --misbehave failing-orders")
    print("  gradual-deploy watch --interval 2s --duration 10m " + " ".join(shlex.quote(a) for a in sandbox.watch_args()))
    print("Scale up in real (each step held under watch, each raise waiting for an approval from another terminal):")
    print("  gradual-deploy ramp --steps 0.5%,1% --hold 30s --interval 2s --wait-for-approval "
          + " ".join(shlex.quote(a) for a in [*sandbox.watch_args(), "--trusted-keys", str(sandbox.trusted_keys)]))
    print(f"  gradual-deploy ramp approve --deploy-audit-dir {shlex.quote(str(sandbox.audit_dir))}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("sandbox stopped")
    finally:
        sandbox.stop()
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    from deploy_tool.attest import write_key_pair

    private, public, kid = write_key_pair(args.out)
    print(f"key id {kid}")
    print(f"  private key (secret; the preflight's signer only): {private}")
    print(f"  public key  (pin it where the gate runs)         : {public}")
    print("Sign the preflight with it: --signing-key " + shlex.quote(str(private))
          + " (or its content in GD_SIGNING_KEY, a CI secret).")
    print("Pin it: append the public key to the trading system's trusted-keys file, e.g.")
    print(f"  cat {shlex.quote(str(public))} >> data/keys/trusted-keys.pem")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from deploy_tool.commands.verify import report_lines, verify_evidence

    try:  # flag > GD_TRUSTED_KEYS > default, as every command resolves it
        trusted = resolve(["trusted_keys"], cli=lambda o: args.trusted_keys if o.name == "trusted_keys" else None)
    except OptionError as exc:
        raise UsageError(str(exc)) from None
    if not os.path.exists(args.evidence):
        raise UsageError(f"{args.evidence}: no such file: give the path of an archived evidence, its "
                         "preflight-<stamp>.intoto.json or the .json beside it (e.g. `ls data/evidence`)")
    report = verify_evidence(args.evidence, trusted.trusted_keys, args.subject)
    _print([json.dumps(report.as_dict())] if args.json else report_lines(report), Redactor.from_environ())
    return EXIT_OK if report.ok else EXIT_FAILED


def _channels(settings: Settings, pause: bool = False) -> list:
    from deploy_tool.modes.channels import NoChannel, build_channels

    try:
        return build_channels(settings, pause=pause)
    except NoChannel as exc:
        raise UsageError(str(exc)) from None


def _print(lines: Collection[str], redactor: Redactor, stream: TextIO | None = None, flush: bool = False) -> None:
    """Print scrubbed: every known secret masked (a server that echoes the token does not put it on a
    terminal) and control characters written out (a server's escape sequence does not reach it either)."""
    for line in lines:
        print(redactor.scrub(line), file=stream or sys.stdout, flush=flush)


def cmd_change(args: argparse.Namespace) -> int:
    """`switch` and `pause`: apply (the library audits), print what each channel saw."""
    from deploy_tool.commands.render import outcome_lines, warning_lines
    from deploy_tool.modes.change import pause, switch

    settings = _settings(args)
    redactor = settings.redactor()
    is_pause = args.command == "pause"
    ignored = getattr(args, "ignored", [])
    if ignored:
        from deploy_tool.redact import sanitise  # ignored tokens are printed: never a secret, never an escape

        ignored_text = sanitise(redactor.scrub(_shown_args(ignored)))
    try:
        channels = _channels(settings, pause=is_pause or args.to == "paused")
    except UsageError as exc:
        if ignored:
            sub = _subparser(build_parser("pause"), "pause")
            raise UsageError(f"{exc}; this pause ignored what it does not know: {ignored_text}"
                             f"{_did_you_mean(sub, ignored)}") from None
        raise
    actor = _actor()
    if is_pause:
        outcome = pause(channels, reason=fileops.utf8_text(args.reason), actor=actor,
                        audit_dir=settings.deploy_audit_dir, scrub=redactor.scrub_data)
        if ignored:  # after the pause, never before it
            sub = _subparser(build_parser("pause"), "pause")
            _print([f"gradual-deploy: WARNING: this pause IGNORED what it does not know: {ignored_text}"
                    f"{_did_you_mean(sub, ignored)}; it went only through the channels its result names"], redactor,
                   sys.stderr)
    else:
        from deploy_tool.modes.gate import GateConfig

        outcome = switch(channels, args.to, force=args.force, reason=fileops.utf8_text(args.reason),
                         actor=actor, gate=GateConfig.from_settings(settings), audit_dir=settings.deploy_audit_dir,
                         scrub=redactor.scrub_data)
    _print([json.dumps(outcome.as_dict())] if args.json else outcome_lines(outcome), redactor)
    _print(warning_lines(outcome), redactor, sys.stderr)
    if settings.notify and outcome.target == "paused":  # told after the pause, never before or instead
        sys.stdout.flush()
        from deploy_tool import audit
        from deploy_tool.notify import tell

        def record(entry: dict) -> None:
            try:
                audit.append(settings.deploy_audit_dir, {"actor": actor, **entry})
            except audit.AuditError as exc:
                _print([f"gradual-deploy: WARNING: {exc}"], redactor, sys.stderr)

        tell(settings.notify, "pause", f"gradual-deploy: pause {outcome.result.upper()} ({actor})",
             [*outcome_lines(outcome), *warning_lines(outcome)], redactor.scrub, record,
             lambda line: _print([line], redactor, sys.stderr))
    return EXIT_OK if outcome.ok else EXIT_FAILED


def cmd_status(args: argparse.Namespace) -> int:
    from deploy_tool.commands.render import status_lines
    from deploy_tool.modes.change import status

    settings = _settings(args)
    from deploy_tool.modes.gate import GateConfig

    report = status(_channels(settings), GateConfig.from_settings(settings), settings.deploy_audit_dir)
    _print([json.dumps(report)] if args.json else status_lines(report), settings.redactor())
    return EXIT_OK if report["ok"] else EXIT_FAILED


def _judge_ready(settings: Settings) -> None:
    """--judge-backtest needs scipy (the optional `judge` extra): said at the start, not in every round."""
    if settings.judge_backtest:
        try:
            import scipy.stats  # noqa: F401
        except ImportError:
            raise UsageError("--judge-backtest compares with scipy's Mann-Whitney U test, which is not installed: "
                             "pip install 'gradual-deploy[judge]' (or pip install scipy)") from None
    if settings.judge_marginal_p < settings.judge_fail_p:
        raise UsageError(f"--judge-marginal-p {settings.judge_marginal_p:g} is below --judge-fail-p "
                         f"{settings.judge_fail_p:g}: the marginal band lies between the two; set it higher")


def cmd_watch(args: argparse.Namespace) -> int:
    from deploy_tool.commands.watch import WatchConfig, watch

    settings = _settings(args)
    if not settings.database_url and not settings.skip_db_check:
        raise UsageError("watch checks the trades feed: give --database-url URL (or DATABASE_URL); or --skip-db-check, "
                         "and the feed's freshness goes unwatched")
    _capital_given(settings, "watch")
    _judge_ready(settings)
    channels = _channels(settings, pause=True)
    cfg = WatchConfig(settings, json_lines=args.json, actor=_actor(), redactor=settings.redactor())
    return watch(cfg, channels, emit=lambda line: _print([line], cfg.redactor, flush=True))


def _capital_given(settings: Settings, command: str) -> None:
    """Without the capital, the first realized PnL fails its round and pauses a healthy system: refuse at once."""
    if settings.capital is None:
        raise UsageError(f"{command} judges the realized PnL against --max-daily-loss, a fraction of the capital: give "
                         "--capital N (the capital in the quote currency, e.g. --capital 10000)")


def cmd_ramp(args: argparse.Namespace) -> int:
    from deploy_tool.analysis import WatchConfig
    from deploy_tool.commands.ramp import RAMP_EVENTS, plan_lines, ramp, resume_point

    settings = _settings(args)
    if args.action == "approve":
        from deploy_tool.commands.ramp import approve

        redactor = settings.redactor()
        done, text = approve(settings.deploy_audit_dir, _actor(), fileops.utf8_text(args.reason), args.step,
                             args.wait_id, scrub=redactor.scrub_data)
        _print([f"ramp approve: {text}"], redactor, None if done else sys.stderr)
        return EXIT_OK if done else EXIT_FAILED
    if settings.steps is None:
        raise UsageError("ramp needs --steps, e.g. --steps 0.5%,1%,2%,5%")
    if args.plan:
        from deploy_tool import audit
        from deploy_tool.modes.channels import ChannelError, NoChannel, build_channels

        start = None
        try:
            from deploy_tool.commands.ramp import versions

            channels = build_channels(settings)
            known = [v for v in (c.read_allocation() for c in channels) if v is not None]
            history = audit.read_events(settings.deploy_audit_dir, (*RAMP_EVENTS, "mode_switch"))
            start = resume_point(settings.steps, known[0] if known else None, history, versions(channels))
        except (NoChannel, ChannelError):
            pass  # a plan needs no channel; with one it also says where a ramp would resume
        from deploy_tool.commands.ramp import confirmations

        _print(plan_lines(settings.steps, settings.hold, start, confirmations(settings)), settings.redactor())
        return EXIT_OK
    if not settings.database_url and not settings.skip_db_check:
        raise UsageError("ramp watches the trades feed: give --database-url URL (or DATABASE_URL); or --skip-db-check, "
                         "and the feed's freshness goes unwatched")
    _capital_given(settings, "ramp")
    _judge_ready(settings)
    channels = _channels(settings)
    cfg = WatchConfig(settings, json_lines=args.json, actor=_actor(), redactor=settings.redactor(), command="ramp")
    return ramp(cfg, channels, force=args.force, emit=lambda line: _print([line], cfg.redactor, flush=True))
