"""Run reports: ``summary.json`` and ``curves.png`` (success and return vs env steps)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from otpr.logger import read_metrics


def write_report(run_dir: str | Path, summary: dict[str, Any]) -> dict[str, Path]:
    """Write ``summary.json`` and, when there are evaluations, ``curves.png``."""
    run_dir = Path(run_dir)
    out = {"summary": run_dir / "summary.json"}
    out["summary"].write_text(json.dumps(summary, indent=2))
    evals = eval_points(run_dir, summary)
    if evals:
        other = set(summary.get("evals_under_other_settings") or ())
        out["curves"] = plot_curves(
            evals, run_dir / "curves.png", title=_title(summary), other_settings=other
        )
    return out


def eval_points(run_dir: str | Path, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """A run's evaluation records, oldest first. A fine-tuning run that reused its checkpoint's
    pretrained evaluation never logged one; its level (the summary's) is the point at env step 0."""
    metrics = Path(run_dir) / "metrics.jsonl"
    evals = [r for r in read_metrics(metrics) if "eval/success" in r] if metrics.exists() else []
    pre = summary.get("pretrained_success"), summary.get("pretrained_return")
    if None not in pre and not any(r["env_steps"] == 0 for r in evals):
        evals.append({"env_steps": 0, "eval/success": pre[0], "eval/return": pre[1]})
    return sorted(evals, key=lambda r: r["env_steps"])


def summarize(
    evals: list[dict[str, Any]], run: dict[str, Any], env_steps: int, iterations: int
) -> dict[str, Any]:
    """A run's summary from its stored evaluations (oldest first, each with ``env_steps``,
    ``eval/success``, ``eval/return`` and ``eval_settings``) and its fixed facts ``run`` (task,
    algo and its variant, seed, demos, ...), which lead the summary as given."""
    pre = next((e for e in evals if e["env_steps"] == 0), None)
    final = evals[-1] if evals else None
    last_settings = final.get("eval_settings") if final else None
    return {
        **run,
        "pretrained_success": pre["eval/success"] if pre else None,
        "final_success": final["eval/success"] if final else None,
        "pretrained_return": pre["eval/return"] if pre else None,
        "final_return": final["eval/return"] if final else None,
        "best_success": max(e["eval/success"] for e in evals) if evals else None,
        # evaluations measured otherwise than the last one (a run resumed with other
        # evaluation settings): their numbers do not compare with the final one
        "evals_under_other_settings": [
            e["env_steps"] for e in evals if e.get("eval_settings") != last_settings
        ],
        "env_steps": env_steps,
        "iterations": iterations,
    }


def _title(summary: dict[str, Any]) -> str:
    if "guidance" not in summary:  # an algorithm without OT guidance
        return f"{summary.get('task')} / {summary.get('algo')}, seed {summary.get('seed')}"
    masked = "masked" if summary.get("masked") else "unmasked"
    update = ", PPO actor update" if summary.get("actor_update") == "ppo" else ""
    return (
        f"{summary.get('task')} / {summary.get('algo')} (guidance {summary.get('guidance')}, "
        f"{masked} OT{update}), seed {summary.get('seed')}"
    )


def plot_curves(
    evals: list[dict[str, Any]],
    path: Path,
    title: str = "",
    other_settings: set[int] | frozenset[int] = frozenset(),
) -> Path:
    """Success and return vs env steps (``evals`` oldest first); the pretrained level is a
    dashed line. Evaluations at the env steps in ``other_settings`` were measured under other
    evaluation settings than the last one: hollow markers, named in the legend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["env_steps"] for r in evals]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, label in (
        (axes[0], "eval/success", "success rate"),
        (axes[1], "eval/return", "return"),
    ):
        values = [r[key] for r in evals]
        ax.plot(steps, values, marker="o", label="evaluation")
        odd = [(x, y) for x, y in zip(steps, values) if x in other_settings]
        if odd:
            ax.plot(
                *zip(*odd),
                linestyle="none",
                marker="o",
                markerfacecolor="white",
                color="tab:red",
                label="other eval settings",
            )
        pre = next((r[key] for r in evals if r["env_steps"] == 0), None)
        if pre is not None:
            ax.axhline(pre, color="gray", linestyle="--", label=f"pretrained ({pre:.2f})")
        ax.set_xlabel("env steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    axes[0].set_ylim(-0.02, 1.02)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def compare(run_dirs: list[str | Path], path: str | Path) -> Path:
    """One success-vs-env-steps plot over several runs (e.g. an ablation sweep)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for run in run_dirs:
        run = Path(run)
        summary = (
            json.loads((run / "summary.json").read_text())
            if (run / "summary.json").exists()
            else {}
        )
        evals = eval_points(run, summary)
        ot = "M" if summary.get("masked") else "U"
        method = (
            f"{summary['guidance']}/{ot}" if "guidance" in summary else summary.get("algo", "?")
        )
        label = f"{run.name}: {method} s{summary.get('seed', '?')}"
        ax.plot(
            [r["env_steps"] for r in evals],
            [r["eval/success"] for r in evals],
            marker=".",
            label=label,
        )
    ax.set_xlabel("env steps")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
