"""Shared helpers of the benchmarks: a scratch PostgreSQL database, the tool as a user installs it, and timers."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import time
import sys
import uuid
from pathlib import Path
from typing import Iterator, Sequence

SERVER = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """A uniquely named database on the test server, dropped afterwards."""
    import psycopg2

    name = f"gd_bench_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(SERVER)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    try:
        yield SERVER.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


ROOT = Path(__file__).resolve().parent.parent


def installed(where: Path) -> Path:
    """The tool as a user gets it: this checkout's wheel (`pip wheel .`), installed with its dependencies into a
    fresh venv at `where` (pip compiles every module's bytecode, as on a user's machine; the checkout's
    editable install, run with PYTHONDONTWRITEBYTECODE, would compile the tool's sources at every start).
    Returns the venv's bin directory (Scripts on Windows). An existing venv at `where` keeps its dependencies
    and gets this checkout's wheel again."""
    bin_dir = where / ("Scripts" if os.name == "nt" else "bin")
    wheels = where.parent / f"{where.name}-wheel"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV")}
    for old in wheels.glob("*.whl"):
        old.unlink()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                   check=True, env=env)
    (wheel,) = wheels.glob("gradual_deploy-*.whl")
    again = ["--no-deps", "--force-reinstall"] if (bin_dir / "python").exists() else []
    if not again:
        subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, env=env)
    subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", *again, str(wheel)], check=True, env=env)
    return bin_dir


def wall(cmd: Sequence[str], **kwargs) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    return time.perf_counter() - started


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def timed(cmd: Sequence[str], **kwargs) -> tuple[float, subprocess.CompletedProcess]:
    """Wall time of one fresh process (its output captured, so that every command pays the same for it)."""
    started = time.perf_counter()
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, **kwargs)
    return time.perf_counter() - started, done


def p90(values: Sequence[float]) -> float:
    """The 90th percentile (inclusive, interpolated); the largest value when there are fewer than two."""
    if len(values) < 2:
        return max(values)
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def phases(count: int, interval: float) -> list[float]:
    """`count` offsets evenly spaced over [0, interval): 0, interval/count, ..., (count-1)*interval/count."""
    return [interval * k / count for k in range(count)]


class Lines:
    """A child process's stdout, read on a thread: each line with the monotonic time it was read, so that
    a bench can wait for a line (with a deadline) and place an event at a chosen time after it."""

    def __init__(self, proc: subprocess.Popen) -> None:
        import queue
        import threading

        self.proc = proc
        self.seen: list[str] = []
        self._queue: "queue.Queue[tuple[float, str] | None]" = queue.Queue()
        self._closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put((time.monotonic(), line.rstrip("\n")))
        self._queue.put(None)

    def wait_for(self, matches, timeout: float) -> tuple[float, str]:
        """The first line from now on for which `matches(line)` is true, and when it was read; RuntimeError
        (naming the lines seen) when the process ends or `timeout` seconds pass first."""
        import queue

        deadline = time.monotonic() + timeout
        while not self._closed:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                self._closed = True
                break
            self.seen.append(item[1])
            if matches(item[1]):
                return item
        tail = "\n".join(self.seen[-15:])
        raise RuntimeError(f"no such line within {timeout:g} s (exit {self.proc.poll()}); last lines:\n{tail}")


def json_record(line: str) -> dict | None:
    """A `--json` output line as a dict, or None for a plain line."""
    import json

    if not line.startswith("{"):
        return None
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def control_doc(path) -> dict | None:
    """The control file's JSON as it is now; None while it cannot be read (it is replaced atomically, so
    that should never happen, but a poll must not crash on it)."""
    import json
    from pathlib import Path

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def poll_until(condition, since: float, timeout: float, every: float = 0.002) -> float | None:
    """Seconds from `since` (a time.monotonic() reading) to the first poll at which `condition()` holds,
    polled every `every` s; None if it does not hold within `timeout` s of `since`."""
    while True:
        if condition():
            return time.monotonic() - since
        if time.monotonic() - since > timeout:
            return None
        time.sleep(every)


def line_lag(record: dict, read_at: float) -> float | None:
    """Seconds from a round's start (the `ts` of its `--json` record: taken when the round began) to the
    moment its line was read (`read_at`, a time.monotonic() reading); None without a readable ts."""
    import datetime as dt

    try:
        started = dt.datetime.fromisoformat(str(record["ts"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return None
    return time.time() - (time.monotonic() - read_at) - started


def phase_sweep(count: int, interval: float, one, label: str, outcome: str) -> bool:
    """Run `one(index, phase)` -> (reaction, placed, lag, note, anchor) for each phase spread over the round,
    print each, and then the worst against the goal (worst <= the interval); True when met. `label` names
    the anchor line ("round 2's line"), `outcome` what was waited for ("every channel paused")."""
    results, lags = [], []
    for index, phase in enumerate(phases(count, interval)):
        reaction, placed, lag, note, anchor = one(index, phase)
        results.append((phase, reaction, note))
        lags.append(lag)
        shown = f"{reaction:.3f} s" if reaction is not None else "NONE"
        print(f"phase {index}/{count} ({phase:.3f} s after {label.format(anchor=anchor)}, placed at {placed:.3f} s): "
              f"breach written -> {outcome} {shown}" + (f"  [{note}]" if note else ""), flush=True)
    known = [lag for lag in lags if lag is not None]
    if known:
        print(f"a round's line was read {statistics.median(known) * 1000:.0f} ms (median; max {max(known) * 1000:.0f} ms) "
              "after the round began (its ts): phase 0 comes that long after the round started reading its inputs; a "
              "breach written inside that window is missed by that round too and could take up to that much longer "
              "than the worst below")
    reactions = [r if r is not None else float("inf") for _, r, _ in results]
    worst = max(reactions)
    worst_phase = results[reactions.index(worst)][0]
    ok = worst <= interval and not any(note for _, _, note in results)
    print(f"breach written -> {outcome}, over {count} phases of the round at --interval {interval:g}s: median "
          f"{statistics.median(reactions):.3f} s, worst {worst:.3f} s (phase {worst_phase:.3f} s); goal worst <= "
          f"{interval:.1f} s (the interval): worst/goal {worst / interval:.2f}x: " + ("met" if ok else "NOT MET"))
    return ok

