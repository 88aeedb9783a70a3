"""The SODP per-task table of docs/results.md from fine-tuning runs laid out as
``<root>/<task>_s<seed>/summary.json`` (``bash scripts/sodp_mt10.sh`` makes them):

    python scripts/sodp_table.py [runs/sodp/ft]

One row per task: pretrained -> fine-tuned success as mean +- standard error over the seeds
that finished, the seeds, env steps and wall time per run; then the mean over tasks of the
seeds' per-task averages.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from otpr.bench import format_mean_se


def main(root: Path) -> None:
    runs: dict[str, dict[int, dict]] = defaultdict(dict)
    for path in sorted(root.glob("*_s*/summary.json")):
        match = re.fullmatch(r"(.+)_s(\d+)", path.parent.name)
        if match:
            runs[match[1]][int(match[2])] = json.loads(path.read_text())
    print("| task | pretrained -> fine-tuned | seeds | env steps | wall per run |")
    print("|---|---|---|---|---|")
    pre_all, fin_all = [], []
    for task, by_seed in sorted(runs.items()):
        seeds = sorted(by_seed)
        pre = [by_seed[s]["pretrained_success"] for s in seeds]
        fin = [by_seed[s]["final_success"] for s in seeds]
        steps = {by_seed[s]["env_steps"] for s in seeds}
        wall = np.mean([by_seed[s]["wall_time_s"] for s in seeds])
        pre_all.append(np.mean(pre))
        fin_all.append(np.mean(fin))
        print(
            f"| {task} | {format_mean_se(pre)} -> {format_mean_se(fin)} "
            f"| {','.join(map(str, seeds))} "
            f"| {'/'.join(f'{n / 1000:.1f}k' for n in sorted(steps))} | {wall:.0f} s |"
        )
    if pre_all:
        pre_mean, fin_mean = np.mean(pre_all), np.mean(fin_all)
        print(f"| mean over {len(pre_all)} tasks | {pre_mean:.3f} -> {fin_mean:.3f} | | | |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/sodp/ft"))
