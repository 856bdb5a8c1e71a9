"""How fast is the emergency pause? Wall time of `gradual-deploy pause`, per channel, against
`python -c "import requests"` in the same environment (goals: file <= 1.0x, HTTP <= 1.5x).

Runs alternate (baseline, file, HTTP) so that machine noise hits all three alike; medians over --repeat.

    .venv/bin/python bench/bench_pause.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import median, wall  # noqa: E402

from deploy_tool.sandbox import Sandbox  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    script = str(Path(sys.executable).parent / "gradual-deploy")
    with tempfile.TemporaryDirectory() as tmp, Sandbox(Path(tmp) / "box", token="bench", token_env="GD_BENCH_TOKEN") as box:
        env = {**os.environ, "GD_BENCH_TOKEN": "bench"}
        audit = str(Path(tmp) / "audit")
        commands = {
            "import requests": [sys.executable, "-c", "import requests"],
            "pause --control-file": [script, "pause", "--control-file", str(box.control_file), "--audit-dir", audit],
            "pause --http-admin-url": [script, "pause", "--http-admin-url", box.admin_url,
                                       "--admin-token-env", "GD_BENCH_TOKEN", "--audit-dir", audit],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeat):
            for name, cmd in commands.items():
                times[name].append(wall(cmd, env=env, cwd=tmp))
        paused = box.admin.mode == "paused" and '"paused"' in box.control_file.read_text()
    base = median(times["import requests"])
    print(f"python -c 'import requests': median {base * 1000:.1f} ms over {args.repeat} runs")
    goals = {"pause --control-file": 1.0, "pause --http-admin-url": 1.5}
    ok = paused
    for name, goal in goals.items():
        m = median(times[name])
        ratio = m / base
        ok = ok and ratio <= goal
        print(f"gradual-deploy {name}: median {m * 1000:.1f} ms = {ratio:.2f}x (goal <= {goal}x)")
    print(f"both channels read paused afterwards: {paused}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
