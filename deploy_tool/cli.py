"""The `gradual-deploy` command line.

Subcommands import what they need when they run, so that `gradual-deploy pause` starts fast.
Library errors are turned into a message and an exit code here, once: 0 done, 1 refused or failed,
2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from deploy_tool import DeployError, __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

PREFLIGHT_HELP = """\
Run the go-live preflight suite (the same as `pytest --pyargs preflight_tests`). Every option of the
suite is accepted, e.g.:
  gradual-deploy preflight --http-admin-url http://127.0.0.1:8001 \\
      --backtest-summary data/backtest_summary.json --min-sharpe 0.2 --min-winrate 0.5 --max-drawdown 0.05
See `pytest --pyargs preflight_tests --help` (group "gradual-deploy") for all of them.
"""


class UsageError(DeployError):
    """The command line is wrong."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own exits with 2 too; keep its text
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gradual-deploy", description="Go-live gate and mode control for a gradual live deployment.")
    parser.add_argument("--version", action="version", version=f"gradual-deploy {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    pre = sub.add_parser("preflight", help="run the go-live checks and write the evidence",
                         description=PREFLIGHT_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
                         add_help=False)
    pre.add_argument("-h", "--help", action="store_true", help="show this help and the suite's options")
    pre.add_argument("pytest_args", nargs=argparse.REMAINDER, help="suite options")

    box = sub.add_parser("sandbox", help="run a local stand-in of the exchange, admin API, feed and files")
    box.add_argument("--dir", default="data/sandbox", help="working directory (default: data/sandbox)")
    box.add_argument("--okx-port", type=int, default=0, help="port of the exchange stand-in (default: any free)")
    box.add_argument("--admin-port", type=int, default=0, help="port of the admin API (default: any free)")
    box.add_argument("--admin-token-env", default="EXEC_HTTP_ADMIN_TOKEN",
                     help="env var whose value the admin API requires as bearer token (unset: no token)")

    demo = sub.add_parser("demo", help="walk the runbook against an in-process sandbox")
    demo.add_argument("--dir", default="data/demo", help="where the demo's sandbox and evidence go (default: data/demo)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `preflight` hands everything after it to pytest, including -h.
    if argv[:1] == ["preflight"]:
        return cmd_preflight(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "sandbox":
            return cmd_sandbox(args)
        if args.command == "demo":
            from deploy_tool.demo import run_demo

            return run_demo(args.dir)
    except UsageError as exc:
        print(f"gradual-deploy: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DeployError as exc:
        print(f"gradual-deploy: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("gradual-deploy: interrupted", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_USAGE


def cmd_preflight(pytest_args: list[str]) -> int:
    if pytest_args[:1] in (["-h"], ["--help"]):
        print(PREFLIGHT_HELP)
    from deploy_tool.preflight import run_preflight

    result = run_preflight(pytest_args)
    if result.verdict is not None:
        print(f"gradual-deploy preflight: verdict {result.verdict.upper()} (exit {result.exit_code})")
        print(f"  evidence (HTML): {result.html}")
        print(f"  evidence (JSON): {result.json}")
    return result.exit_code


def cmd_sandbox(args: argparse.Namespace) -> int:
    import os
    import shlex
    import time

    from deploy_tool.sandbox import Sandbox

    token = os.environ.get(args.admin_token_env) or None
    sandbox = Sandbox(args.dir, token=token, token_env=args.admin_token_env,
                      okx_port=args.okx_port, admin_port=args.admin_port)
    try:
        sandbox.start()
    except OSError as exc:
        raise DeployError(f"cannot start the sandbox: {exc.strerror or exc} (port in use? try other ports)") from None
    print("gradual-deploy sandbox running on loopback (Ctrl+C stops it)")
    print(f"  exchange stand-in : {sandbox.okx_url}")
    print(f"  admin API         : {sandbox.admin_url}" + (f" (bearer token from ${args.admin_token_env})" if token else ""))
    print(f"  control file      : {sandbox.control_file}")
    print(f"  trades feed       : {sandbox.database_url}")
    print(f"  backtest summary  : {sandbox.backtest_summary}")
    print("Point the suite at it:")
    print("  gradual-deploy preflight " + " ".join(shlex.quote(a) for a in sandbox.preflight_args()), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("sandbox stopped")
    finally:
        sandbox.stop()
    return EXIT_OK
