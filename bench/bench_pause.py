"""How fast is the emergency pause? `gradual-deploy pause` as a fresh process, per channel, as a paired
ratio to the floor `python -c "import requests"` in the same environment.

Measured: the wall time of the console script as a user installs it (this checkout's wheel, installed into a
fresh venv with pip, which compiles the bytecode; `--venv DIR` keeps that venv for the next run; `--editable`
measures .venv/bin/gradual-deploy instead) pausing the sandbox from
`real`, for three variants: `pause --control-file`, `pause --http-admin-url`, and both channels at once
(`pause --control-file ... --http-admin-url ...`). Every loop iteration runs, for each variant, the floor and
that variant back to back (which of the two goes first alternates between iterations, the variants' order
rotates) and takes the ratio variant/floor of THAT pair, so that machine noise hits both sides alike. Printed
per variant: the median of the paired ratios over --repeat iterations and their p90. Every pause must exit 0
saying `pause: DONE` with its channel(s) reading `paused` afterwards (each is set back to `real` before the
next, outside the timing).

Goals (issue 18): `pause --control-file` <= 0.6x, `pause --http-admin-url` <= 1.0x, both channels <= 1.1x,
each the paired median. Exit 0 when every goal is met, 1 when not.

    .venv/bin/python bench/bench_pause.py [--repeat 15] [--venv /tmp/gd-bench-venv] [--editable]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import control_doc, installed, median, p90, timed  # noqa: E402

from deploy_tool.modes.channels import FileChannel  # noqa: E402
from deploy_tool.sandbox import Sandbox  # noqa: E402

# The admin token: random, so that no path holds it (the tool masks a secret wherever it occurs, the
# evidence's file names included; a short word such as "bench" in the temp dir's name would be masked).
TOKEN = secrets.token_hex(16)

FLOOR = "import requests"
GOALS = {"pause --control-file": 0.6, "pause --http-admin-url": 1.0, "pause --control-file --http-admin-url": 1.1}
# Variables that would add a channel (or a notification) to every pause: the bench names its channels itself.
ENV_CHANNELS = ("EXEC_HTTP_ADMIN_URL", "EXEC_CONTROL_FILE", "EXEC_HTTP_ADMIN_ENABLED", "EXEC_HTTP_HOST",
                "EXEC_HTTP_PORT", "GD_NOTIFY_URLS")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--venv", default=None, help="where the installed tool's venv is (made when missing; "
                                                      "default: a temporary one)")
    parser.add_argument("--editable", action="store_true", help="measure this venv's (editable) install instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.editable:
            bin_dir = Path(sys.executable).parent
        else:
            bin_dir = installed(Path(args.venv) if args.venv else Path(tmp) / "venv")
        print(f"measuring {bin_dir / 'gradual-deploy'}, floor with {bin_dir / 'python'}", flush=True)
        return measure(args, str(bin_dir / "gradual-deploy"), str(bin_dir / "python"))


def measure(args: argparse.Namespace, script: str, python: str) -> int:
    with tempfile.TemporaryDirectory() as tmp, \
            Sandbox(Path(tmp) / "box", token=TOKEN, token_env="GD_BENCH_TOKEN", mode="real") as box:
        env = {k: v for k, v in os.environ.items() if k not in ENV_CHANNELS} | {"GD_BENCH_TOKEN": TOKEN}
        audit = str(Path(tmp) / "audit")
        file_args = ["--control-file", str(box.control_file)]
        http_args = ["--http-admin-url", box.admin_url, "--admin-token-env", "GD_BENCH_TOKEN"]
        floor = [python, "-c", FLOOR]
        variants = {
            "pause --control-file": ([script, "pause", *file_args, "--audit-dir", audit], ("file",)),
            "pause --http-admin-url": ([script, "pause", *http_args, "--audit-dir", audit], ("http",)),
            "pause --control-file --http-admin-url": ([script, "pause", *file_args, *http_args, "--audit-dir", audit],
                                                      ("file", "http")),
        }

        def modes() -> dict[str, str | None]:
            return {"http": box.admin.mode, "file": (control_doc(box.control_file) or {}).get("mode")}

        def back_to_real() -> None:
            box.admin.change({"mode": "real"})
            FileChannel(str(box.control_file)).apply("real", None, "bench: back to real", "bench", cas=False)
            assert modes() == {"http": "real", "file": "real"}, modes()

        ratios: dict[str, list[float]] = {name: [] for name in variants}
        seconds: dict[str, list[float]] = {name: [] for name in [FLOOR, *variants]}
        failures: list[str] = []
        names = list(variants)
        for i in range(args.repeat):
            for name in names[i % len(names):] + names[:i % len(names)]:
                cmd, channels = variants[name]
                back_to_real()
                pair: dict[str, float] = {}
                for which in ((FLOOR, name) if i % 2 == 0 else (name, FLOOR)):
                    took, done = timed(floor if which == FLOOR else cmd, env=env, cwd=tmp)
                    pair[which] = took
                    if done.returncode != 0:
                        failures.append(f"{which} (iteration {i + 1}) exit {done.returncode}: "
                                        f"{(done.stdout + done.stderr).strip()[-300:]}")
                    if which == name:
                        now = modes()
                        if "pause: DONE" not in done.stdout or any(now[c] != "paused" for c in channels):
                            failures.append(f"{name} (iteration {i + 1}): not DONE or not paused on every channel "
                                            f"it named ({now}): {done.stdout.strip()[-300:]}")
                seconds[FLOOR].append(pair[FLOOR])
                seconds[name].append(pair[name])
                ratios[name].append(pair[name] / pair[FLOOR])

    ok = not failures
    for failure in failures:
        print(f"FAILED: {failure}")
    print(f"floor python -c '{FLOOR}': median {median(seconds[FLOOR]) * 1000:.1f} ms over {len(seconds[FLOOR])} runs "
          f"(one beside each pause run)")
    for name, goal in GOALS.items():
        m, high = median(ratios[name]), p90(ratios[name])
        met = m <= goal
        ok = ok and met
        print(f"{name}: {m:.2f}x of {FLOOR} (paired median over {len(ratios[name])}, p90 {high:.2f}x; "
              f"median {median(seconds[name]) * 1000:.1f} ms); goal <= {goal:.1f}x: {'met' if met else 'NOT MET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
