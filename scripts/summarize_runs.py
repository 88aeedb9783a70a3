"""Print a markdown table of run summaries: python -m scripts.summarize_runs runs/a runs/b ..."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(paths: list[str]) -> None:
    cols = "run task guidance OT seed demos pretrained final best env_steps wall_s".split()
    print("| " + " | ".join(cols) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for p in paths:
        f = Path(p) / "summary.json"
        if not f.exists():
            continue
        s = json.loads(f.read_text())
        ot = "masked" if s.get("masked") else "unmasked"
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(
            f"| {Path(p).name} | {s['task']} | {s['guidance']} | {ot} | {s['seed']} | "
            f"{s['num_demos']} | {fmt(s['pretrained_success'])} | {fmt(s['final_success'])} | "
            f"{fmt(s['best_success'])} | {s['env_steps']} | {s['wall_time_s']:.0f} |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
