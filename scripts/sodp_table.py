"""The SODP tables of docs/results.md.

    python scripts/sodp_table.py [runs/sodp/ft]       the per-task table (scripts/sodp_mt10.sh)
    python scripts/sodp_table.py --studies [runs/sodp] [--plot <png>]
        the regulariser ablation and the transfer table (scripts/sodp_studies.sh); the ablation's
        bc column is the MT10 table's runs (<root>/ft/<task>_s<seed>), the same recipe;
        --plot draws the ablation's evaluation curves (mean +- standard error over seeds)

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

from otpr.bench import draw_mean_se, eval_curve, format_mean_se


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
    return text if len(seeds) == 3 else f"{text} (n={len(seeds)})"


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


REGULARISERS = ("bc", "none", "kl", "pl")


def plot_ablation(root: Path, tasks: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for reg in REGULARISERS:
            pattern = f"ft/{task}_s*" if reg == "bc" else f"reg/{task}_{reg}_s*"
            runs = [d for d in sorted(root.glob(pattern)) if (d / "summary.json").is_file()]
            draw_mean_se(ax, [eval_curve(d) for d in runs], reg)
        ax.set_title(task)
        ax.set_xlabel("env steps")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("success (noise-free)")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


def studies(root: Path, plot: Path | None = None) -> None:
    ablation = collect(root / "reg", r"(.+)_(none|kl|pl)_s(\d+)")
    mt10 = collect(root / "ft", r"(.+)_s(\d+)")
    tasks = sorted({task for task, _ in ablation})
    print("Regularisers (fine-tuned success; every row starts from the MT10 planner):\n")
    print("| task | pretrained | " + " | ".join(REGULARISERS) + " |")
    print("|---|---|" + "---|" * len(REGULARISERS))
    for task in tasks:
        cells = [mt10.get((task,))] + [ablation.get((task, r)) for r in REGULARISERS[1:]]
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
    if plot is not None:
        plot_ablation(root, tasks, plot)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--studies"]:
        plot = Path(args[args.index("--plot") + 1]) if "--plot" in args else None
        rest = [a for a in args[1:] if a != "--plot" and Path(a) != plot]
        studies(Path(rest[0] if rest else "runs/sodp"), plot)
    else:
        per_task(Path(args[0] if args else "runs/sodp/ft"))
