"""Mean ± std over steps 2..N of an RL run's per-step seconds (generation, reward, training).

Usage: python scripts/rl_step_times.py RUN [RUN ...]. Step 1 is left out: it carries the engines'
start. Prints one line per run and writes RUN/step_times.json.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

KEYS = ("gen_s", "reward_s", "train_s", "learner_seconds")


def step_times(run: Path) -> dict:
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise SystemExit(f"rl_step_times: {path} does not exist; give an RL run folder")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()][1:]
    if len(rows) < 2:
        raise SystemExit(f"rl_step_times: {path} has fewer than 3 steps")
    out = {"run": str(run), "steps": len(rows), "wall_s": round(rows[-1]["time"] - rows[0]["time"], 1)}
    for k in KEYS:
        v = [r[k] for r in rows if isinstance(r.get(k), (int, float))]
        out[k] = {"mean": round(statistics.mean(v), 3), "std": round(statistics.stdev(v), 3)} if len(v) > 1 else None
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    for run in map(Path, argv):
        res = step_times(run)
        (run / "step_times.json").write_text(json.dumps(res, indent=1))
        cells = [f"{k} {res[k]['mean']:.2f} ± {res[k]['std']:.2f}" for k in KEYS if res[k]]
        print(f"{run} | steps 2-{res['steps'] + 1} | " + " | ".join(cells) + f" | wall {res['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
