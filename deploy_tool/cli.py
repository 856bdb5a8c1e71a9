"""The `gradual-deploy` command line.

Subcommands import what they need when they run, so that `gradual-deploy pause` starts fast.
Library errors are turned into a message and an exit code here, once: 0 done, 1 refused or failed,
2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn, Sequence

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
    def error(self, message: str) -> NoReturn:  # argparse's own exits with 2 too; keep its text
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
    box.add_argument("--misbehave", choices=("none", "failing-orders", "risk-burst", "stall-feed", "silence"),
                     help="tell the sandbox running in --dir to misbehave (or recover with none), then exit")

    modes = ("mock", "real", "paused")
    sw = sub.add_parser("switch", help="change the trading system's mode (compare-and-swap, read back, audited)")
    sw.add_argument("--to", required=True, choices=modes, help="target mode")
    _channel_args(sw)
    sw.add_argument("--reason", default="", help="why, for the audit")
    sw.add_argument("--evidence-dir", default="data/evidence", help="preflight evidence for the gate in front of real")
    sw.add_argument("--max-evidence-age", default="1h", help="--to real needs a pass younger than this (default 1h)")
    sw.add_argument("--force", action="store_true", help="override a refused transition or the evidence gate (audited)")
    sw.add_argument("--json", action="store_true", help="print one JSON object")

    pa = sub.add_parser("pause", help="EMERGENCY: pause through every channel now")
    _channel_args(pa)
    pa.add_argument("--reason", default="", help="why, for the audit")
    pa.add_argument("--json", action="store_true", help="print one JSON object")

    st = sub.add_parser("status", help="the mode on each channel and the newest evidence")
    _channel_args(st, audit=False)
    st.add_argument("--evidence-dir", default="data/evidence", help="where the preflight evidence is")
    st.add_argument("--max-evidence-age", default="1h", help="age beyond which the evidence no longer opens real")
    st.add_argument("--json", action="store_true", help="print one JSON object")

    wa = sub.add_parser("watch", help="the observation period: checks every interval, pauses on a breach",
                        description="Run the observe, data-latency and exchange checks every --interval; after "
                                    "--failure-limit consecutive failing rounds pause through every channel and exit 1.")
    wa.add_argument("--interval", default="30s", help="time between rounds (default 30s)")
    wa.add_argument("--duration", default="2h", help="how long to watch (default 2h)")
    wa.add_argument("--failure-limit", default="1", help="consecutive failing rounds that trigger the pause (default 1)")
    wa.add_argument("--skip-db-check", action="store_true", help="watch without the trades-feed freshness check")
    _option_args(wa)
    _channel_args(wa, audit=False)
    wa.add_argument("--json", action="store_true", help="one JSON object per round")

    demo = sub.add_parser("demo", help="walk the runbook against an in-process sandbox")
    demo.add_argument("--dir", default="data/demo", help="where the demo's sandbox and evidence go (default: data/demo)")
    return parser


WATCH_OPTIONS = (
    "audit_dir", "risk_events_csv", "observe_window", "audit_max_silence", "max_bad_audit_lines", "max_risk_events",
    "max_order_failure_rate", "max_risk_block_rate", "min_signals", "max_signals", "audit_ts_field",
    "audit_event_field", "audit_status_field", "risk_events_ts_column",
    "database_url", "trades_table", "trades_time_column", "data_latency_threshold", "db_statement_timeout_ms",
    "okx_base_url", "api_latency_threshold_ms", "api_samples", "max_clock_skew_ms", "maintenance_horizon",
    "evidence_dir",
)


def _watch_options():
    from deploy_tool.options import OBSERVE_OPTIONS, OPTIONS

    by_name = {o.name: o for o in OPTIONS + OBSERVE_OPTIONS}
    return tuple(by_name[name] for name in WATCH_OPTIONS)


def _option_args(parser: argparse.ArgumentParser) -> None:
    """Flags from the shared option table: the same help text as the suite's (default None: absent)."""
    for option in _watch_options():
        default = f" (default: {option.default})" if option.default is not None else ""
        env = f" [env {', '.join(option.env)}]" if option.env else ""
        parser.add_argument(option.flag, dest=f"opt_{option.name}", default=None, metavar="VALUE",
                            help=f"{option.help}{default}{env}")


def _channel_args(parser: argparse.ArgumentParser, audit: bool = True) -> None:
    parser.add_argument("--http-admin-url", help="admin API root [env EXEC_HTTP_ADMIN_URL, or EXEC_HTTP_HOST/PORT "
                        "with EXEC_HTTP_ADMIN_ENABLED=true]")
    parser.add_argument("--control-file", help="control file path [env EXEC_CONTROL_FILE]")
    parser.add_argument("--admin-token-env", default="EXEC_HTTP_ADMIN_TOKEN",
                        help="env var holding the admin bearer token (default EXEC_HTTP_ADMIN_TOKEN)")
    if audit:
        parser.add_argument("--audit-dir", default="data/audit", help="where the audit JSONL goes (default data/audit)")


def _channels(args: argparse.Namespace, pause: bool = False) -> list:
    """The channels named by the options, else by the environment; a usage error when none."""
    import os

    from deploy_tool.channels import FileChannel, HttpChannel
    from deploy_tool.envconfig import EnvConfigError, admin_url_from_env, control_file_from_env

    # Each channel falls back to the environment on its own, as the suite's options do: a pause given
    # only --control-file still goes through the admin API the environment names.
    url = args.http_admin_url
    path = args.control_file
    try:
        if not url:
            found_url = admin_url_from_env()
            url = found_url[0] if found_url else None
        if not path:
            found_path = control_file_from_env()
            path = found_path[0] if found_path else None
    except EnvConfigError as exc:
        raise UsageError(str(exc)) from None
    if not url and not path:
        raise UsageError("no channel: give --http-admin-url and/or --control-file "
                         "(or set EXEC_HTTP_ADMIN_URL / EXEC_CONTROL_FILE)")
    channels: list = []
    if url:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--http-admin-url {url!r} is not an http:// or https:// URL")
        # A pause must not wait long on a dead admin API: the file pause runs beside it anyway.
        timeout = (1.0, 1.2) if pause else (2.0, 2.0)
        channels.append(HttpChannel(url, os.environ.get(args.admin_token_env) or None, timeout=timeout))
    if path:
        channels.append(FileChannel(path))
    return channels


def _duration(text: str, flag: str) -> float:
    from deploy_tool.units import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"invalid {flag} {text!r}: expected {exc}") from None


def _actor() -> str:
    from deploy_tool.evidence import actor, host

    return f"{actor()}@{host()}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `preflight` hands everything after it to pytest, including -h.
    if argv[:1] == ["preflight"]:
        return cmd_preflight(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "sandbox":
            return cmd_sandbox(args)
        if args.command in ("switch", "pause"):
            return cmd_change(args)
        if args.command == "status":
            return cmd_status(args)
        if args.command == "watch":
            return cmd_watch(args)
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

    from deploy_tool.sandbox import Sandbox, request_fault

    if args.misbehave:
        path = request_fault(args.dir, args.misbehave)
        print(f"asked the sandbox in {args.dir} to misbehave: {args.misbehave} ({path})")
        return EXIT_OK
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
    print("  gradual-deploy preflight " + " ".join(shlex.quote(a) for a in sandbox.preflight_args()))
    print("Watch it (in another terminal), and make it misbehave with")
    print(f"  gradual-deploy sandbox --dir {shlex.quote(args.dir)} --misbehave failing-orders")
    print("  gradual-deploy watch --interval 2s --duration 10m " + " ".join(shlex.quote(a) for a in sandbox.watch_args()),
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("sandbox stopped")
    finally:
        sandbox.stop()
    return EXIT_OK


def cmd_change(args: argparse.Namespace) -> int:
    """`switch` and `pause`: apply, print what each channel saw, append the audit line."""
    from deploy_tool import audit, switch

    is_pause = args.command == "pause"
    channels = _channels(args, pause=is_pause or args.to == "paused")
    actor = _actor()
    if is_pause:
        outcome = switch.pause(channels, reason=args.reason, actor=actor)
    else:
        max_age = _duration(args.max_evidence_age, "--max-evidence-age")
        outcome = switch.switch(channels, args.to, force=args.force, reason=args.reason, actor=actor,
                                evidence_dir=args.evidence_dir, max_evidence_age_s=max_age)
    record = outcome.as_dict()
    audit_error = None
    try:
        record["audit"] = audit.append(args.audit_dir, outcome.audit_record(actor, args.reason))
    except audit.AuditError as exc:
        audit_error = str(exc)
        record["audit_error"] = audit_error
    if args.json:
        import json

        print(json.dumps(record))
        if outcome.action == "pause" and outcome.result != "done":
            _warn_pause(outcome)
    else:
        _print_outcome(outcome, record)
    if audit_error:
        print(f"gradual-deploy: WARNING: {audit_error}", file=sys.stderr)
    return EXIT_OK if outcome.ok else EXIT_FAILED


def _print_outcome(outcome, record: dict) -> None:
    verb = "pause" if outcome.action == "pause" else f"switch {record['from']} -> {outcome.target}"
    print(f"{verb}: {outcome.result.upper()}" + (" (forced)" if outcome.forced else ""))
    for c in outcome.channels:
        if outcome.result == "refused":
            print(f"  {c.channel:<4} {c.target}: {c.before or 'no mode yet'} (unchanged)")
        elif c.ok:
            version = f" (version {c.version})" if c.version is not None else ""
            print(f"  {c.channel:<4} {c.target}: {c.before} -> {c.after} confirmed{version}"
                  + (f"; {c.note}" if c.note else ""))
        else:
            print(f"  {c.channel:<4} {c.target}: FAILED: {c.error}")
    if outcome.reason and outcome.result != "done":
        print(f"  reason: {outcome.reason}")
    elif outcome.reason:
        print(f"  {outcome.reason}")
    if outcome.action == "pause" and outcome.result != "done":
        _warn_pause(outcome)
    if "audit" in record:
        print(f"  audit: {record['audit']}")


def _warn_pause(outcome) -> None:
    """Say loudly, on stderr, which channel did not pause."""
    ok = [c.channel for c in outcome.channels if c.ok]
    for c in outcome.channels:
        if not c.ok:
            print(f"WARNING: pause through {c.channel} ({c.target}) FAILED: {c.error}", file=sys.stderr)
    if ok:
        print(f"WARNING: paused through {', '.join(ok)} only: check the trading system", file=sys.stderr)
    else:
        print("WARNING: NO CHANNEL CONFIRMED THE PAUSE: stop the trading system by hand", file=sys.stderr)


def cmd_status(args: argparse.Namespace) -> int:
    from deploy_tool import switch

    report = switch.status(_channels(args), args.evidence_dir, _duration(args.max_evidence_age, "--max-evidence-age"))
    if args.json:
        import json

        print(json.dumps(report))
    else:
        for entry in report["channels"]:
            shown = entry.get("mode") if "error" not in entry else f"UNREADABLE: {entry['error']}"
            print(f"{entry['channel']:<4} {entry['target']}: {shown if shown is not None else 'no mode yet'}")
        if not report["agree"]:
            print("WARNING: the channels disagree or one cannot be read")
        ev = report.get("evidence")
        if ev:
            verdict = ev["verdict"] or "none"
            from deploy_tool.units import format_age

            age = f"{format_age(ev['age_s'])} old" if ev["age_s"] is not None else "age unknown"
            print(f"evidence: {ev['path'] or 'none'}: verdict {verdict}, {age}; "
                  f"{'real is open' if ev['gate_open'] else 'real is closed'}: {ev['gate']}")
    return EXIT_OK if report["ok"] else EXIT_FAILED


def cmd_watch(args: argparse.Namespace) -> int:
    import os

    from deploy_tool.options import OptionError, resolve_values
    from deploy_tool.watch import WatchConfig, watch

    try:
        values, _ = resolve_values(_watch_options(), cli=lambda o: getattr(args, f"opt_{o.name}"),
                                   ini=lambda o: None, ini_source="", environ=os.environ)
    except OptionError as exc:
        raise UsageError(str(exc)) from None
    interval = _duration(args.interval, "--interval")
    duration = _duration(args.duration, "--duration")
    if interval <= 0 or duration <= 0:
        raise UsageError("--interval and --duration must be above 0")
    try:
        limit = int(args.failure_limit)
        if limit < 1:
            raise ValueError
    except ValueError:
        raise UsageError(f"invalid --failure-limit {args.failure_limit!r}: expected a whole number >= 1") from None
    if not values["database_url"] and not args.skip_db_check:
        raise UsageError("watch checks the trades feed: give --database-url (or DATABASE_URL), or --skip-db-check")
    channels = _channels(args, pause=True)
    from deploy_tool.redact import Redactor

    redactor = Redactor.from_environ()
    redactor.add_url(values["database_url"])
    redactor.add(os.environ.get(args.admin_token_env))
    cfg = WatchConfig(interval_s=interval, duration_s=duration, failure_limit=limit, values=values,
                      audit_dir=values["audit_dir"], evidence_dir=values["evidence_dir"],
                      skip_db_check=args.skip_db_check, json_lines=args.json, actor=_actor(), redactor=redactor)
    return watch(cfg, channels, emit=lambda line: print(line, flush=True))
