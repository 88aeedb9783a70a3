"""The SODP tables of docs/results.md.

    python scripts/sodp_table.py [runs/sodp/ft]       the per-task table (scripts/sodp_mt10.sh)
    python scripts/sodp_table.py --studies [runs/sodp]
        the regulariser ablation and the transfer table (scripts/sodp_studies.sh); the ablation's
        bc column is the MT10 table's runs (<root>/ft/<task>_s<seed>), the same recipe

Runs are read from ``summary.json`` files; every cell is pretrained -> fine-tuned success as
mean +- standard error over the seeds that finished (their count in brackets when not 3).
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from otpr.bench import format_mean_se


def collect(root: Path, pattern: str) -> dict[tuple[str, ...], dict[int, dict]]:
    """Summaries of the run directories under ``root`` whose name fully matches ``pattern``
    (its last group the seed), keyed by the other groups, then the seed."""
    runs: dict[tuple[str, ...], dict[int, dict]] = defaultdict(dict)
    for path in sorted(root.glob("*/summary.json")):
        match = re.fullmatch(pattern, path.parent.name)
        if match:
            *key, seed = match.groups()
            runs[tuple(key)][int(seed)] = json.loads(path.read_text())
    return runs


def cell(by_seed: dict[int, dict] | None, pretrained: bool = True) -> str:
    if not by_seed:
        return "not run"
    seeds = sorted(by_seed)
    fin = format_mean_se([by_seed[s]["final_success"] for s in seeds])
    text = fin
    if pretrained:
        pre = format_mean_se([by_seed[s]["pretrained_success"] for s in seeds])
        text = f"{pre} -> {fin}"
    return text if len(seeds) == 3 else f"{text} ({len(seeds)} seeds)"


def per_task(root: Path) -> None:
    runs = collect(root, r"(.+)_s(\d+)")
    print("| task | pretrained -> fine-tuned | seeds | env steps | wall per run |")
    print("|---|---|---|---|---|")
    pre_all, fin_all = [], []
    for (task,), by_seed in sorted(runs.items()):
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


def studies(root: Path) -> None:
    regularisers = ("bc", "none", "kl", "pl")
    ablation = collect(root / "reg", r"(.+)_(none|kl|pl)_s(\d+)")
    mt10 = collect(root / "ft", r"(.+)_s(\d+)")
    tasks = sorted({task for task, _ in ablation})
    print("Regularisers (fine-tuned success; every row starts from the MT10 planner):\n")
    print("| task | pretrained | " + " | ".join(regularisers) + " |")
    print("|---|---|" + "---|" * len(regularisers))
    for task in tasks:
        cells = [mt10.get((task,))] + [ablation.get((task, r)) for r in regularisers[1:]]
        start = next((c for c in cells if c), {})
        pre = format_mean_se([start[s]["pretrained_success"] for s in sorted(start)])
        print(f"| {task} | {pre} | " + " | ".join(cell(c, False) for c in cells) + " |")

    transfer = collect(root / "transfer", r"(.+)_(mt10|basketball)_s(\d+)")
    print("\nTransfer to tasks outside MT10 (pretrained -> fine-tuned success):\n")
    print("| task | MT10 planner | basketball planner |")
    print("|---|---|---|")
    for task in sorted({task for task, _ in transfer}):
        mt, bas = transfer.get((task, "mt10")), transfer.get((task, "basketball"))
        print(f"| {task} | {cell(mt)} | {cell(bas)} |")


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--studies"]:
        studies(Path(args[1] if len(args) > 1 else "runs/sodp"))
    else:
        per_task(Path(args[0] if args else "runs/sodp/ft"))
