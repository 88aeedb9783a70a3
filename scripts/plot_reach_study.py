"""docs/runs/reach_guidance_study.png from docs/runs/reach_guidance_study.json: every variant's mean
in-loop success curve with a standard-error band over the seeds whose curves were kept.

    python scripts/plot_reach_study.py
"""

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

d = json.load(open("docs/runs/reach_guidance_study.json"))
rows = [
    ("Hds", "OTPR default (Hc)"),
    ("ppo", "default guidance, PPO actor update"),
    ("Qd", "default actor + Q"),
    ("Hu", "paper OTPR unmasked"),
    ("Hp", "paper OTPR masked"),
    ("Ad", "default actor + A"),
    ("Hsd", "default actor + H"),
    ("Usd", "default actor + uniform"),
    ("dppo", "DPPO (noise-free eval)"),
]
fig, ax = plt.subplots(figsize=(6.4, 4.2))
grid = np.linspace(0, 50000, 26)
for key, label in rows:
    curves = [c for c in d[key]["curves"] if c]
    ys = np.array([np.interp(grid, [p[0] for p in c], [p[1] for p in c]) for c in curves])
    m = ys.mean(0)
    se = ys.std(0, ddof=1) / np.sqrt(len(ys)) if len(ys) > 1 else 0 * m
    ax.plot(grid, m, label=f"{label} (n={len(ys)})")
    ax.fill_between(grid, m - se, m + se, alpha=0.2)
ax.set(
    xlabel="env steps",
    ylabel="success (in-loop evaluation)",
    ylim=(0, 1),
    title="reach-v3: same BC start per seed (mean +- SE)",
)
ax.grid(alpha=0.3)
ax.legend(fontsize=7, loc="lower right")
fig.tight_layout()
fig.savefig("docs/runs/reach_guidance_study.png", dpi=100)
