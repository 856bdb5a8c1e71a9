"""The go-live evidence (CONTRACT section 3) as a typed model: written by the preflight plugin, read by
`switch --to real` and `status`.

`Evidence.to_json` and `Evidence.from_json` are the only places that know the JSON's shape; the verdict
is computed from the checks, never taken on trust from a file.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy_tool import DeployError, fileops
from deploy_tool.times import iso_utc, parse_timestamp

SCHEMA = "gradual-deploy/preflight-evidence/2"
OLD_SCHEMAS = ("gradual-deploy/preflight-evidence/1",)
STATUSES = ("passed", "failed", "skipped")
ATTESTATION_SUFFIX = ".intoto.json"


class EvidenceError(DeployError):
    """The evidence cannot be written or read."""


def json_number(value: Any) -> Any:
    """A number as measured, never rounded (the HTML formats it for a person); non-finite floats have no
    JSON spelling and become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class CheckEntry:
    """One check of a run: what it measured, against which threshold, and how it ended."""

    id: str
    marker: str | None
    status: str = "passed"
    measured: Any = None
    threshold: Any = None
    unit: str | None = None
    message: str = ""
    duration_s: float = 0.0
    required: bool = False  # in the run's manifest: a go-live pass needs it passed
    details: dict[str, Any] | None = None  # structured facts behind the message (the secrets scan's lists)

    def to_json(self) -> dict[str, Any]:
        doc = {"id": self.id, "marker": self.marker, "required": self.required, "status": self.status,
               "measured": json_number(self.measured), "threshold": json_number(self.threshold),
               "unit": self.unit, "message": self.message, "duration_s": self.duration_s}
        if self.details is not None:
            doc["details"] = self.details
        return doc

    @classmethod
    def from_json(cls, obj: Any) -> CheckEntry:
        if not isinstance(obj, dict):
            raise EvidenceError(f"a check is {type(obj).__name__}, not an object")
        check_id, marker, status = obj.get("id"), obj.get("marker"), obj.get("status")
        if not isinstance(check_id, str) or not check_id:
            raise EvidenceError(f"a check has no id: {str(obj)[:80]}")
        if marker is not None and not isinstance(marker, str):
            raise EvidenceError(f"check {check_id}: marker {marker!r} is not a name")
        if status not in STATUSES:
            raise EvidenceError(f"check {check_id}: status {status!r} is not one of {', '.join(STATUSES)}")
        duration = obj.get("duration_s") or 0.0
        if isinstance(duration, bool) or not isinstance(duration, (int, float)):
            raise EvidenceError(f"check {check_id}: duration_s {duration!r} is not a number")
        return cls(check_id, marker, status, obj.get("measured"), obj.get("threshold"), obj.get("unit"),
                   str(obj.get("message") or ""), float(duration), obj.get("required") is True,
                   obj.get("details") if isinstance(obj.get("details"), dict) else None)


def verdict(checks: list[CheckEntry]) -> str:
    """`pass` only when no check failed and at least one passed."""
    statuses = {c.status for c in checks}
    return "pass" if "failed" not in statuses and "passed" in statuses else "fail"


@dataclass
class Evidence:
    """One preflight run's evidence."""

    started_at: dt.datetime
    finished_at: dt.datetime
    checks: list[CheckEntry] = field(default_factory=list)
    thresholds: dict[str, Any] = field(default_factory=dict)
    targets: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    skips_requested: list[str] = field(default_factory=list)
    html_report: str | None = None
    tool_version: str = ""
    host: str = ""
    actor: str = ""
    declared_verdict: str | None = None  # what a file read back says; the gate wants it and `verdict` to agree
    declared_skipped: list[dict[str, Any]] = field(default_factory=list)  # its own `skipped` list, read back
    run_id: str = ""
    manifest: list[str] = field(default_factory=list)  # the check ids a complete run holds (manifest.required)
    scope: dict[str, Any] = field(default_factory=dict)  # what the manifest was computed from (manifest.Scope)
    threshold_sources: dict[str, str] = field(default_factory=dict)
    subjects: list[dict[str, Any]] = field(default_factory=list)  # in-toto ResourceDescriptors, sha256 digests
    signed_by: str | None = None  # key id of the signing key, None: unsigned
    attestation: str | None = None  # file name of the DSSE envelope beside the JSON
    opens_real: dict[str, Any] = field(default_factory=dict)  # the run's own judgement, for a person; the gate recomputes
    foreign_tests: list[str] = field(default_factory=list)  # collected tests that are not the suite's own

    @property
    def verdict(self) -> str:
        return verdict(self.checks)

    @property
    def skipped(self) -> list[CheckEntry]:
        return [c for c in self.checks if c.status == "skipped"]

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "verdict": self.verdict,
            "started_at": iso_utc(self.started_at),
            "finished_at": iso_utc(self.finished_at),
            "tool_version": self.tool_version,
            "host": self.host,
            "actor": self.actor,
            "thresholds": {k: json_number(v) for k, v in self.thresholds.items()},
            "targets": self.targets,
            "inputs": self.inputs,
            "checks": [c.to_json() for c in self.checks],
            "skipped": [{"id": c.id, "marker": c.marker, "required": c.required, "reason": c.message}
                        for c in self.skipped],
            "skips_requested": self.skips_requested,
            "html_report": self.html_report,
            "run_id": self.run_id,
            "manifest": self.manifest,
            "scope": self.scope,
            "threshold_sources": self.threshold_sources,
            "subjects": self.subjects,
            "signed_by": self.signed_by,
            "attestation": self.attestation,
            "opens_real": self.opens_real,
            "foreign_tests": self.foreign_tests,
        }

    @classmethod
    def from_json(cls, doc: Any) -> Evidence:
        """The evidence in a parsed JSON document; EvidenceError naming what is wrong with it."""
        if not isinstance(doc, dict):
            raise EvidenceError(f"holds {type(doc).__name__}, not an evidence object")
        if doc.get("schema") in OLD_SCHEMAS:
            raise EvidenceError(f"was written by an older gradual-deploy (schema {doc.get('schema')}, unsigned, "
                                "no manifest): it cannot open real; re-run the preflight")
        if doc.get("schema") != SCHEMA:
            raise EvidenceError(f"schema {doc.get('schema')!r} is not {SCHEMA!r}")
        times: dict[str, dt.datetime] = {}
        for key in ("finished_at", "started_at"):
            if key == "started_at" and doc.get(key) is None:
                times[key] = times["finished_at"]  # only the finish dates a run
                continue
            try:
                times[key] = parse_timestamp(doc.get(key))
            except (ValueError, TypeError, OverflowError, OSError):
                raise EvidenceError(f"{key} {doc.get(key)!r} is not a time") from None
        checks = doc.get("checks")
        if not isinstance(checks, list):
            raise EvidenceError(f"checks is {type(checks).__name__}, not a list")
        entries = [CheckEntry.from_json(c) for c in checks]
        mappings = {}
        for key in ("thresholds", "targets", "inputs"):
            value = doc.get(key) or {}
            if not isinstance(value, dict):
                raise EvidenceError(f"{key} is {type(value).__name__}, not an object")
            mappings[key] = value
        skips = doc.get("skips_requested") or []
        if not isinstance(skips, list):
            raise EvidenceError(f"skips_requested is {type(skips).__name__}, not a list")
        skipped = doc.get("skipped") or []
        if not isinstance(skipped, list) or not all(isinstance(entry, dict) for entry in skipped):
            raise EvidenceError("skipped is not a list of objects")
        for key in ("scope", "threshold_sources", "opens_real"):
            value = doc.get(key) or {}
            if not isinstance(value, dict):
                raise EvidenceError(f"{key} is {type(value).__name__}, not an object")
            mappings[key] = value
        lists = {}
        for key in ("manifest", "subjects", "foreign_tests"):
            value = doc.get(key) or []
            if not isinstance(value, list):
                raise EvidenceError(f"{key} is {type(value).__name__}, not a list")
            lists[key] = value
        if not all(isinstance(s, dict) for s in lists["subjects"]):
            raise EvidenceError("subjects is not a list of objects")
        return cls(times["started_at"], times["finished_at"], entries, mappings["thresholds"], mappings["targets"],
                   mappings["inputs"], [str(s) for s in skips], doc.get("html_report"),
                   str(doc.get("tool_version") or ""), str(doc.get("host") or ""), str(doc.get("actor") or ""),
                   declared_verdict=doc.get("verdict") if isinstance(doc.get("verdict"), str) else None,
                   declared_skipped=skipped, run_id=str(doc.get("run_id") or ""),
                   manifest=[str(m) for m in lists["manifest"]], scope=mappings["scope"],
                   threshold_sources={str(k): str(v) for k, v in mappings["threshold_sources"].items()},
                   subjects=lists["subjects"],
                   signed_by=doc.get("signed_by") if isinstance(doc.get("signed_by"), str) else None,
                   attestation=doc.get("attestation") if isinstance(doc.get("attestation"), str) else None,
                   opens_real=mappings["opens_real"], foreign_tests=[str(t) for t in lists["foreign_tests"]])


def reserve_stem(evidence_dir: str | os.PathLike, now: dt.datetime) -> Path:
    """A fresh `preflight-<UTC stamp>` path stem under evidence_dir, claimed by creating its .html.

    Two runs in the same second get `-2`, `-3`, ...: no evidence file is ever overwritten.
    """
    directory = Path(evidence_dir)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EvidenceError(f"cannot create the evidence directory {directory}: {exc.strerror}") from None
    base = "preflight-" + now.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for attempt in range(1, 1000):
        stem = directory / (base if attempt == 1 else f"{base}-{attempt}")
        if stem.with_suffix(".json").exists():
            continue
        try:
            fd = os.open(stem.with_suffix(".html"), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        except OSError as exc:
            raise EvidenceError(f"cannot write evidence in {directory}: {exc.strerror}") from None
        os.close(fd)
        return stem
    raise EvidenceError(f"no free evidence file name left for {base} in {directory}")


def write_json_atomic(path: Path, doc: Any) -> None:
    """Write JSON through a temp file in the same directory, fsync, rename."""
    data = json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    fileops.write_atomic(path, data.encode("utf-8"))


def _stamp(path: Path) -> dt.datetime | None:
    """The UTC time in a `preflight-YYYYmmddTHHMMSSZ[-n].json` name."""
    try:
        return dt.datetime.strptime(path.stem[len("preflight-"):][:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def _claimed(path: Path) -> dt.datetime | None:
    """The time in the name, with the `-n` of a second run in the same second as n microseconds."""
    stamp = _stamp(path)
    if stamp is None:
        return None
    suffix = path.stem[len("preflight-") + 16:]
    number = int(suffix[1:]) if suffix[:1] == "-" and suffix[1:].isdigit() else 1
    return stamp + dt.timedelta(microseconds=min(number, 999_999))


@dataclass(frozen=True)
class Found:
    """The newest evidence file and what it holds, or why it cannot be read."""

    path: Path
    evidence: Evidence | None
    error: str | None = None


def newest(evidence_dir: str | os.PathLike) -> Found | None:
    """The newest evidence in the directory, or None when there is none.

    Files are dated by the time in their name, claimed when the run started (a readable one without such a
    name by its finished_at; an unreadable one by its mtime). When the newest is unreadable, that is the
    answer: a broken newest evidence never lets an older one stand in for it.
    """
    directory = Path(evidence_dir)
    if not directory.is_dir():
        return None
    best: tuple[dt.datetime, Found] | None = None
    for path in directory.glob("preflight-*.json"):
        if path.name.endswith(ATTESTATION_SUFFIX):
            continue  # the signed twin of a JSON: read by the gate beside the JSON it belongs to
        try:
            # fileops: a FIFO or a device named like evidence is refused at once, and a read is bounded
            found = Found(path, Evidence.from_json(json.loads(fileops.read_text(path))))
            assert found.evidence is not None
            # Dated by the name it claimed when it started (the order runs started in; `-2`, `-3` later in
            # the same second), not by its unsigned finished_at: a plain JSON edited to look old does not
            # let an older pass stand in for it. A name without a stamp: its finished_at.
            when = _claimed(path) or found.evidence.finished_at
        except (OSError, ValueError, RecursionError, EvidenceError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc)
            found = Found(path, None, f"cannot be read as evidence: {reason}"[:300])
            try:
                when = _claimed(path) or dt.datetime.fromtimestamp(path.stat().st_mtime, dt.timezone.utc)
            except OSError:
                when = dt.datetime.max.replace(tzinfo=dt.timezone.utc)
        if best is None or when > best[0]:
            best = (when, found)
    # A run claims its name (the .html) when it starts and writes the JSON when it ends. A claimed name
    # without JSON, started in the second of the newest evidence or later, is a run that was killed (kill -9, a
    # Windows timeout backstop, a power cut), crashed, or is still running: that is the newest answer.
    for html in directory.glob("preflight-*.html"):
        started = _stamp(html)
        if started is None or html.with_suffix(".json").exists():
            continue
        if best is None or started >= best[0].replace(microsecond=0):  # names hold whole seconds: fail closed
            best = (started, Found(html, None, f"was started at {iso_utc(started)} and never finished: the run "
                                               "was killed, crashed or is still running"))
    return best[1] if best else None


def attestation_path(json_path: str | os.PathLike) -> Path:
    """The signed twin (DSSE envelope) of an evidence JSON: `preflight-<stamp>.intoto.json`."""
    path = Path(json_path)
    return path.with_name(path.name[: -len(".json")] + ATTESTATION_SUFFIX)
