"""The evidence gate in front of `real`: is the newest preflight evidence a signed, fresh, complete pass,
made against this very deployment, bound to what goes live now?

Every rule refuses with what it found and then the honest next step (the option, variable, file or command
that fixes it; `--force`, where it applies, is the caller's to say, last), and none rests on a document's say-so: the gate reads the run from
the DSSE envelope a pinned key signed (deploy_tool.attest), recomputes the verdict from the checks and the
manifest of required checks from the tool itself (deploy_tool.manifest), compares every target with the
deployment being switched, hashes the subjects again, and refuses a run already used to open real on
another deployment.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence
from urllib.parse import urlsplit

from deploy_tool import fileops
from deploy_tool.evidence import Evidence, EvidenceError, attestation_path, newest
# What a run lacks to open real and the honest next step: the manifest's rules, used by the preflight too.
from deploy_tool.manifest import (  # noqa: F401  (re-exported: the gate's words)
    RERUN, SELECTIONS, SIGNED, SKIP_FIXES, THEN, complete_run, incomplete, rerun, selected)
from deploy_tool.times import format_age, iso_utc, utc_now

if TYPE_CHECKING:
    from deploy_tool.modes.channels import Channel
    from deploy_tool.settings import Settings

CLOCK_TOLERANCE_S = 60.0
LEDGER = "opened-real.jsonl"  # in the evidence directory: which run opened real on which deployment
@dataclass(frozen=True)
class GateConfig:
    """What the gate compares the evidence with: the deployment being switched and the keys it trusts."""

    evidence_dir: str
    max_age_s: float
    trusted_keys: str | None = None
    okx_base_url: str | None = None
    database_url: str | None = None
    allow_unsigned: bool = False
    admin_token: str | None = field(default=None, repr=False)  # to read GET /config again

    @classmethod
    def from_settings(cls, settings: Settings) -> GateConfig:
        return cls(settings.evidence_dir, settings.max_evidence_age, settings.trusted_keys, settings.okx_base_url,
                   settings.database_url, bool(settings.allow_unsigned), settings.admin_token())


@dataclass(frozen=True)
class Gate:
    """The gate's decision and the evidence it rests on."""

    ok: bool
    reason: str
    path: str | None = None  # the evidence file the decision rests on
    evidence: Evidence | None = None
    age_s: float | None = None
    signer: str | None = None  # key id that signed the evidence; None: unsigned (or not verified)
    forced: bool = False  # opened only because unsigned evidence was allowed




def _strategies_now(evidence: Evidence) -> tuple[str, ...] | str:
    """The strategies the backtest subject holds now, read with the tool's own parser (a str: why not)."""
    from deploy_tool import ProbeError
    from deploy_tool.probes.backtest import load_summary

    backtests = [s for s in evidence.subjects if (s.get("annotations") or {}).get("role") == "backtest"]
    if len(backtests) != 1:
        return "it is bound to no backtest file"
    try:
        # Every strategy of the file, whatever --strategy the run was given: a go-live pass judged them all.
        summary = load_summary(str(backtests[0].get("name")), None)
    except ProbeError as exc:
        return f"its backtest cannot be read now: {exc}"
    return tuple(s.name for s in summary.strategies)


def _database(url: str | None) -> tuple[str, ...] | None:
    """What names a trades database: (kind, host, port, database) or ("sqlite", absolute path)."""
    if not url:
        return None
    if url.startswith("sqlite:///"):
        return ("sqlite", os.path.realpath(url[len("sqlite:///"):]))
    from urllib.parse import parse_qs

    parts = urlsplit(url)
    query = {k.lower(): v[-1] for k, v in parse_qs(parts.query).items()}
    try:
        port = str(query.get("port") or parts.port or 5432)
    except ValueError:  # a port that is no number: names nothing the gate can compare
        return ("unreadable", url.split("@")[-1])
    scheme = "postgresql" if parts.scheme in ("postgres", "postgresql") else parts.scheme
    host = (query.get("host") or parts.hostname or "").lower()
    return (scheme, host, port, query.get("dbname") or parts.path.lstrip("/"))


def _shown_db(url: str | None) -> str:
    found = _database(url)
    if found is None:
        return "none"
    if found[0] in ("sqlite", "unreadable"):
        return found[1] if found[0] == "sqlite" else f"{found[1]} (a port that is no number)"
    return f"{found[1]}:{found[2]}/{found[3]}"


def _foreign(evidence: Evidence, channels: Sequence[Channel], cfg: GateConfig) -> str | None:
    """Why the evidence was not made against this deployment (every target), or None."""
    problems = []
    targets = evidence.targets
    seen_okx = str(targets.get("okx_base_url") or "").rstrip("/")
    if cfg.okx_base_url is not None and seen_okx != cfg.okx_base_url.rstrip("/"):
        problems.append(f"it checked the exchange at {seen_okx or 'none'}, this deployment uses {cfg.okx_base_url} "
                        "(--okx-base-url / OKX_BASE_URL)")
    # (a command without --database-url is refused before this: the evidence gate names the option)
    if _database(targets.get("database_url")) != _database(cfg.database_url):
        problems.append(f"it checked the trades database {_shown_db(targets.get('database_url'))}, this deployment "
                        f"uses {_shown_db(cfg.database_url)} (--database-url / DATABASE_URL)")
    names = {c.name for c in channels}
    for channel in channels:
        if channel.name == "http":
            seen = str(targets.get("http_admin_url") or "").rstrip("/")
            if seen != channel.target.rstrip("/"):
                problems.append(f"it checked the admin API {seen or 'not at all'}, this switch goes through "
                                f"{channel.target} (--http-admin-url / EXEC_HTTP_ADMIN_URL)")
        elif channel.name == "file":
            seen = str(targets.get("control_file") or "")
            if not seen or not fileops.same_path(seen, channel.target):
                problems.append(f"it checked the control file {seen or 'not at all'}, this switch writes "
                                f"{channel.target} (--control-file / EXEC_CONTROL_FILE)")
    # A deployment whose preflight checked both channels is switched through both: the gate cannot confirm
    # a target it is not given, and a system left in two modes is not switched.
    if channels and "http" not in names and targets.get("http_admin_url"):
        problems.append(f"it checked the admin API {targets.get('http_admin_url')}, which this switch does not go "
                        "through: give --http-admin-url too")
    if channels and "file" not in names and targets.get("control_file"):
        problems.append(f"it checked the control file {targets.get('control_file')}, which this switch does not "
                        "write: give --control-file too")
    return "; ".join(problems) or None


def _changed_subjects(evidence: Evidence, channels: Sequence[Channel], cfg: GateConfig) -> str | None:
    """Which of the run's subjects no longer hash as they did when it passed, or None."""
    from deploy_tool.attest import AttestError, path_digest
    from deploy_tool.probes.riskconfig import served_config_digest

    problems = []
    served, why_not, failed = _served_config(channels, cfg)
    risk = [s for s in evidence.subjects if (s.get("annotations") or {}).get("role") == "risk_config"]
    if failed:  # it might serve a configuration the run never judged, or an allocation above what it allowed
        problems.append(f"the gate cannot read the system's risk configuration (GET /config): {why_not}: make the "
                        "admin API answer it (its URL, and the token in --admin-token-env)")
    if served is not None:
        # What the system serves is what it uses: the run must have judged that, not a file beside it, and
        # the allocation (left out of the digest for the ramp) must still be within what the run allowed.
        if not any(str(s.get("name")).startswith("GET ") for s in risk):
            problems.append(f"the system serves its risk configuration at GET /config, and the run judged "
                            f"{', '.join(str(s.get('name')) for s in risk) or 'none'}: run the preflight without "
                            "--risk-config")
        allocation, ceiling = _allocation(served, evidence), evidence.thresholds.get("max_allocation")
        if isinstance(ceiling, (int, float)) and (allocation is None or allocation > ceiling + 1e-12):
            problems.append(f"the system's allocation is {allocation} now, above the {ceiling} the run allowed: "
                            f"lower it to {ceiling}, or run the preflight with a --max-allocation that allows it")
    for item in evidence.subjects:
        name = str(item.get("name"))
        want = (item.get("digest") or {}).get("sha256")
        role = (item.get("annotations") or {}).get("role")
        if want is None:
            continue  # a revision: recorded, cannot be re-hashed from here
        if role == "risk_config" and name.startswith("GET "):
            if served is None:
                problems.append(f"its risk configuration came from {name}, which this switch cannot read again "
                                f"({why_not})")
                continue
            now = served_config_digest(served, _risk_section(evidence))
        else:
            try:
                now = path_digest(name)
            except AttestError as exc:
                problems.append(f"{role} {exc}")
                continue
        if now != want:
            problems.append(f"{role} {name} changed since the run (sha256 {want[:12]}... then, {now[:12]}... now)")
    return "; ".join(problems) or None


def _served_config(channels: Sequence[Channel], cfg: GateConfig) -> tuple[Any, str, bool]:
    """(the body of GET /config of the switch's admin API, or None; why not; whether that is a failure: only
    a system that serves no /config at all (HTTP 404) or a switch without an admin API is not one)."""
    http = [c for c in channels if c.name == "http"]
    if not http:
        return None, "no admin API given: --http-admin-url", False
    from deploy_tool.probes.admin import AdminClient, AdminError

    try:
        with AdminClient(http[0].target, token=cfg.admin_token) as client:
            return client.get_config(), "", False
    except (AdminError, OSError) as exc:
        return None, str(exc), "HTTP 404" not in str(exc)


def _risk_section(evidence: Evidence) -> str | None:
    """The --risk-config-section the run read its risk settings from."""
    risk = evidence.inputs.get("risk_config")
    section = risk.get("section") if isinstance(risk, dict) else None
    return section if isinstance(section, str) and section else None


def _allocation(body: Any, evidence: Evidence) -> float | None:
    """The allocation in a served configuration, read where the run read it; None when unreadable."""
    from deploy_tool import ProbeError
    from deploy_tool.probes.riskconfig import parse_config

    try:
        config = parse_config(body, "GET /config", _risk_section(evidence))
    except ProbeError:
        return None
    return None if config.problems.get("allocation") else config.values.get("allocation")


def deployment_key(channels: Sequence[Channel]) -> str:
    parts = []
    for channel in sorted(channels, key=lambda c: c.name):
        target = os.path.realpath(channel.target) if channel.name == "file" else channel.target.rstrip("/")
        parts.append(f"{channel.name}={target}")
    return " ".join(parts)


def _ledger(evidence_dir: str) -> list[dict[str, Any]] | str:
    """The runs that opened real, or why the ledger cannot be read (then the gate refuses: a ledger it
    cannot read cannot say the run was not used elsewhere)."""
    path = Path(evidence_dir) / LEDGER
    try:
        text = fileops.read_text(path)
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        return f"the ledger {path} cannot be read ({getattr(exc, 'strerror', None) or exc})"
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):  # a line it cannot read may be the use it must know of
            return f"the ledger {path} has a line it cannot read (line {number})"
        entries.append(entry)
    return entries


def _used_elsewhere(evidence: Evidence, channels: Sequence[Channel], cfg: GateConfig) -> str | None:
    if not channels or not evidence.run_id:
        return None
    here = deployment_key(channels)
    ledger = _ledger(cfg.evidence_dir)
    if isinstance(ledger, str):
        return (f"{ledger}: fix or restore that file (it records which run opened which deployment); move it "
                "aside only if you know what it recorded")
    for entry in ledger:
        if entry.get("run_id") == evidence.run_id and entry.get("deployment") != here:
            return (f"this run already opened real on another deployment ({entry.get('deployment')}, "
                    f"{entry.get('ts')}): one run opens one deployment: {rerun(' for this deployment')}")
    return None


def mark_used(gate: Gate, channels: Sequence[Channel], evidence_dir: str) -> str | None:
    """Record that the gate's run opened real on this deployment (the ledger `_used_elsewhere` reads); why
    it could not, for the switch to report (the switch itself is done: its audit line names the run too)."""
    if gate.evidence is None or not gate.evidence.run_id or not channels:
        return None
    entry = {"ts": iso_utc(utc_now()), "run_id": gate.evidence.run_id, "deployment": deployment_key(channels),
             "evidence": gate.path, "signer": gate.signer}
    path = Path(evidence_dir) / LEDGER
    try:
        fileops.append(str(path), (json.dumps(entry) + "\n").encode("utf-8"))
    except OSError as exc:
        return (f"the run could not be recorded in {path} ({getattr(exc, 'strerror', None) or exc}): another "
                "deployment sharing this evidence directory would not see that it was used; fix the file")
    return None


class Unverified(Exception):
    """The signed twin of an evidence cannot be verified; `absent`: there is none at all."""

    def __init__(self, reason: str, absent: bool = False) -> None:
        super().__init__(reason)
        self.absent = absent


def read_signed(envelope_path: Path, trusted_keys: str | None) -> tuple[Evidence, str]:
    """The run in a DSSE envelope a pinned key signed, and that key's id; Unverified saying why not. The
    gate and `verify` both read signed evidence through this."""
    from deploy_tool.attest import AttestError, load_trusted, verify

    try:
        envelope = json.loads(fileops.read_text(envelope_path))
    except FileNotFoundError:
        raise Unverified(f"is not signed (no {envelope_path.name} beside it): run the preflight again signed, with "
                         "--signing-key FILE or GD_SIGNING_KEY_FILE (or the key itself in GD_SIGNING_KEY; "
                         "`gradual-deploy keygen` makes a pair), its public key pinned in "
                         f"{trusted_keys or 'the trusted-keys file'} (--trusted-keys / GD_TRUSTED_KEYS)",
                         absent=True) from None
    except (OSError, ValueError, RecursionError) as exc:
        raise Unverified(f"has an unreadable signature file {envelope_path.name}: {exc}; {RERUN}") from None
    if not trusted_keys:
        raise Unverified("cannot be verified: no trusted keys are named: give --trusted-keys FILE (or GD_TRUSTED_KEYS) "
                         "holding the public keys that may open real (`gradual-deploy keygen` makes a pair)")
    try:
        verified = verify(envelope, load_trusted(trusted_keys))
    except AttestError as exc:
        raise Unverified(f"has a signature the gate does not accept: {exc}; the keys that may open real are in "
                         f"{trusted_keys} (--trusted-keys): pin the signer's public key there, or re-run the "
                         "preflight signed by a pinned key") from None
    try:
        evidence = Evidence.from_json(verified.predicate)
    except EvidenceError as exc:
        raise Unverified(f"is signed but {exc}: {RERUN}") from None
    if evidence.subjects != verified.subjects:
        raise Unverified(f"is signed but its predicate's subjects are not the statement's: {RERUN}")
    return evidence, verified.keyid


def belongs_to(evidence: Evidence, json_path: Path, plain_run_id: str | None) -> str | None:
    """Why a signed run is not the run of the JSON at `json_path` (another run's envelope copied beside it)."""
    if evidence.html_report != json_path.with_suffix(".html").name or plain_run_id != evidence.run_id:
        return (f"has a signature file that belongs to another run ({evidence.html_report}, run "
                f"{evidence.run_id[:12]}; the JSON says run {(plain_run_id or 'none')[:12]}); {RERUN}")
    return None


def evidence_gate(cfg: GateConfig, channels: Sequence[Channel] = (), now: dt.datetime | None = None,
                  then: str = THEN) -> Gate:
    """Is the newest preflight evidence a signed, fresh, complete pass, made against this deployment and
    bound to what it runs now? A refusal says what it found, then the fix, then `then` (what to do once it
    is made: `switch again`); never --force, which the caller says last where it applies."""
    found = newest(cfg.evidence_dir)
    if found is None:
        import shlex

        return Gate(False, f"no preflight evidence in {cfg.evidence_dir}: run `gradual-deploy preflight --evidence-dir "
                           f"{shlex.quote(cfg.evidence_dir)} --signing-key FILE` (or GD_SIGNING_KEY_FILE) first, or "
                           f"point --evidence-dir at where it wrote its evidence; then {then}")
    name = str(found.path)
    if found.evidence is None:
        again = f", {SIGNED}" if str(found.error).endswith("re-run the preflight") else f": {RERUN}"
        return Gate(False, f"newest evidence {name} {found.error}{again}; then {then}", name)
    forced, signer = False, None
    try:
        evidence, signer = read_signed(attestation_path(found.path), cfg.trusted_keys)
        other = belongs_to(evidence, found.path, found.evidence.run_id)
        if other:
            raise Unverified(other)
    except Unverified as exc:
        # --allow-unsigned takes evidence that has no signature; a signature that fails is never waved through
        if not (exc.absent and cfg.allow_unsigned):
            rehearsal = "; or --allow-unsigned for a rehearsal (audited as forced)" if exc.absent else ""
            return Gate(False, f"newest evidence {name} {exc}; then {then}{rehearsal}", name, found.evidence)
        evidence, signer, forced = found.evidence, None, True
    age = ((now or utc_now()) - evidence.finished_at).total_seconds()

    def refuse(reason: str) -> Gate:
        return Gate(False, f"newest evidence {name} {reason}", name, evidence, age, signer, forced)

    if evidence.declared_verdict != "pass":
        failed = [c.id for c in evidence.checks if c.status == "failed"]
        shown = f" (failed: {', '.join(failed[:5])}{f' and {len(failed) - 5} more' if len(failed) > 5 else ''})"
        return refuse(f"has verdict {evidence.declared_verdict!r}, not pass{shown if failed else ''}: fix what failed "
                      f"(each failed check says how, in {evidence.html_report or 'its HTML report'}), then {RERUN}; "
                      f"then {then}")
    if evidence.verdict != "pass":  # a document that says pass over checks that do not
        failed = [c.id for c in evidence.checks if c.status == "failed"]
        return refuse("says pass but " + (f"holds failed checks: {', '.join(failed)}" if failed
                                          else "holds no passed check") + f": it is not a pass; {RERUN}; then {then}")
    if age > max(cfg.max_age_s, 0):
        return refuse(f"is {format_age(age)} old, max {format_age(cfg.max_age_s)} (--max-evidence-age): {RERUN}, "
                      f"then {then} within {format_age(cfg.max_age_s)} of it; or a longer --max-evidence-age, if "
                      "evidence that old may open real")
    if age < -CLOCK_TOLERANCE_S:
        return refuse(f"finished {format_age(-age)} in the future: the clock of this host or of the one that ran "
                      f"the preflight is wrong: set it right (NTP), then {RERUN}; then {then}")
    lacking = incomplete(evidence)
    if lacking:
        return refuse(f"is not a complete go-live pass ({lacking}): "
                      + complete_run(evidence, then, needs_database=cfg.database_url is None))
    # The manifest above rests on the strategies the run recorded; the tool reads them again from the
    # backtest it is bound to, so a run cannot leave a strategy out of its own scope.
    strategies = _strategies_now(evidence)
    if isinstance(strategies, str):
        return refuse(f"cannot be checked for completeness: {strategies}: put back the backtest file the run "
                      f"judged, or {rerun(' with --backtest-summary naming the one that goes live')}; then {then}")
    if tuple(evidence.scope.get("strategies") or ()) != strategies:
        return refuse(f"judged the strategies {evidence.scope.get('strategies')}, the backtest holds {list(strategies)}: "
                      f"{rerun(' against the backtest as it is now')}; then {then}")
    if cfg.database_url is None:  # nothing to compare with: not "another deployment", a missing option
        return refuse(f"cannot be matched with this deployment's trades database: this command names none; give "
                      f"--database-url URL (or DATABASE_URL), the database the preflight checked "
                      f"({_shown_db(evidence.targets.get('database_url'))}); then {then}")
    foreign = _foreign(evidence, channels, cfg)
    if foreign:
        against = rerun(" against this deployment (the targets of this command)")
        return refuse(f"was made against another deployment ({foreign}): where this command names the wrong target, "
                      f"fix that option; otherwise {against}; then {then}")
    changed = _changed_subjects(evidence, channels, cfg)
    if changed:
        return refuse(f"no longer matches what goes live ({changed}): {rerun(' against what goes live now')}, or put "
                      f"back what changed; then {then}")
    used = _used_elsewhere(evidence, channels, cfg)
    if used:
        return refuse(f"{used}; then {then}")
    who = f"signed by {signer[:16]}" if signer else "UNSIGNED, allowed by --allow-unsigned (forced)"
    return Gate(True, f"newest evidence {Path(name).name}: pass, {format_age(age)} old, {who}", name, evidence, age,
                signer, forced)
