"""``otpr-failures``: where a Can policy fails. Plays it on evaluation seeds, sorts the failures.

Loads a checkpoint's policy (``--weights acting``, the default: the EMA weights when the run kept
them; ``--weights trained``: the trained ones, as ``otpr-eval weights=trained``) and plays
``--episodes`` episodes with L = 1 from ``--seed`` (default: the run's ``task.eval_seed``),
policy noise seeded from the same number, as ``otpr-eval`` does: the success rate printed is the
one ``otpr-eval checkpoint=<ckpt> task.eval_seed=S task.eval_episodes=N`` gives (with
``--deterministic``: ``algo.eval_deterministic=true``, DDIM eta 0 and no std floor, as
``algo=dppo`` evaluates). For every failed episode it prints:

- ``lift``: the can's highest rise above its start (m; the expert carries it ~0.16 m up),
- ``tilt``: the can's largest tilt from upright (degrees; 90 = knocked over),
- ``closest``: the smallest can-to-gripper distance (m),
- ``final``: the can's final position (world frame, m),
- ``gap``: the final can-to-gripper distance (m; robosuite counts the can as placed only with
  the gripper more than ~0.042 m from it),

its class (:func:`classify`) and a count per class. Where the goal is, is read from robosuite's
PickPlace env (``not_in_bin``: the can has one quarter of the goal bin, and success needs the can
in that quarter with the gripper away from it). Observations are read once per decision (every
T_a env steps).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import envs
from otpr.checkpoint import load_policy, read_config, resolve
from otpr.config import WEIGHTS
from otpr.errors import ERRORS_HELP, ArgumentParser, UsageError, run_command

PROG = "otpr-failures"
LIFTED = 0.04  # m above its start: the can left the table (Lift's own success height)
HELD = 0.05  # m can-to-gripper at the end: still in the hand
CLASSES = (
    "never lifted, knocked over",
    "never lifted, upright",
    "in its quarter, gripper on it",
    "in the goal bin, wrong quarter",
    "held at the time limit",
    "lifted, left outside the goal bin",
)
EXAMPLE = f"""\
example:
  {PROG} --checkpoint runs/can/otpr/<run> --episodes 100 --deterministic --out failures.json

prints the success rate, one line per failed episode (class, lift, tilt, closest, gap, final)
and a count per class; --out also writes every episode's record as JSON.

{ERRORS_HELP}"""


def classify(lift: float, tilt: float, gap: float, in_quarter: bool, in_goal_bin: bool) -> str:
    """The failure class of an episode that did not succeed (one of ``CLASSES``)."""
    if lift < LIFTED:
        return CLASSES[0] if tilt > 45 else CLASSES[1]
    if in_quarter:
        return CLASSES[2]  # success also needs the gripper away from the can
    if in_goal_bin:
        return CLASSES[3]
    if gap < HELD:
        return CLASSES[4]
    return CLASSES[5]  # on the table, a bin's wall, the floor


def goal_regions(sim_env: Any) -> tuple[Any, Any]:
    """(in_quarter(pos), in_goal_bin(pos)) from robosuite's PickPlace geometry: the can's own
    quarter of the goal bin, and any of its four quarters (``not_in_bin`` per quarter id)."""
    can_id = sim_env.object_to_id["can"]

    def in_quarter(pos: np.ndarray) -> bool:
        return not sim_env.not_in_bin(pos, can_id)

    def in_goal_bin(pos: np.ndarray) -> bool:
        return any(not sim_env.not_in_bin(pos, quarter) for quarter in range(4))

    return in_quarter, in_goal_bin


def can_task(checkpoint: str | Path) -> dict[str, Any]:
    """The ``task`` config of a Can checkpoint; ``FileNotFoundError`` where there is no
    checkpoint, ``UsageError`` (a ``ValueError``) where its task is not Can (only Can's state is
    read here)."""
    ckpt = resolve(checkpoint)
    task = read_config(ckpt)["task"]
    if task["name"] != "can":
        raise UsageError(f"{ckpt}: task is {task['name']!r}; {PROG} reads Can's state only")
    return task


def run(
    checkpoint: str | Path,
    episodes: int,
    seed: int | None,
    deterministic: bool,
    num_envs: int = 5,
    weights: str = "acting",
) -> list[dict[str, Any]]:
    """Plays the episodes; one record per episode, in ``otpr-eval``'s order."""
    t = can_task(checkpoint)
    seed = int(t["eval_seed"] if seed is None else seed)
    policy = load_policy(checkpoint, "cpu", weights)
    sl = envs.task_spec("can").extra["obs_slices"]
    n = num_envs
    env = envs.make(
        "can",
        num_envs=n,
        seed=seed,
        obs_history=t["obs_history"],
        act_steps=t["act_steps"],
        max_episode_steps=t["max_episode_steps"],
        **t["env_kwargs"],
    )
    in_quarter, in_goal_bin = goal_regions(env.envs[0].unwrapped.sim_env)
    obs, _ = env.reset(seed=seed)
    gen = torch.Generator().manual_seed(seed)
    quota = -(-episodes // n)
    count = np.zeros(n, int)
    traj: list[list[np.ndarray]] = [[] for _ in range(n)]
    rows = []
    bar = tqdm(total=quota * n, desc=PROG, unit="episode", leave=False)
    with policy.deterministic() if deterministic else torch.no_grad():
        while (count < quota).any():
            obs_t = torch.as_tensor(obs, dtype=torch.float32)
            chunk = policy.sample(obs_t, 1, generator=gen)[:, 0].numpy()
            for i in range(n):
                traj[i].append(obs[i, -1].copy())
            obs, _, term, trunc, info = env.step(chunk[:, : t["act_steps"]])
            for i in np.flatnonzero(term | trunc):
                traj[i].append(info["final_obs"][i][-1])
                if count[i] < quota:
                    x = np.asarray(traj[i])
                    pos, quat = x[:, slice(*sl["Can_pos"])], x[:, slice(*sl["Can_quat"])]
                    rel = x[:, slice(*sl["Can_to_robot0_eef_pos"])]
                    up = 1 - 2 * (quat[:, 0] ** 2 + quat[:, 1] ** 2)  # body z-axis . world z
                    rows.append(
                        {
                            "member": int(i),
                            "round": int(count[i]),
                            "success": bool(info["final_info"]["success"][i]),
                            "lift": float(pos[:, 2].max() - pos[0, 2]),
                            "tilt": float(np.degrees(np.arccos(np.clip(up, -1, 1))).max()),
                            "closest": float(np.linalg.norm(rel, axis=1).min()),
                            "final": pos[-1].tolist(),
                            "gap": float(np.linalg.norm(rel[-1])),
                            "in_quarter": in_quarter(pos[-1]),
                            "in_goal_bin": in_goal_bin(pos[-1]),
                        }
                    )
                    bar.update()
                count[i] += 1
                traj[i] = []
    bar.close()
    env.close()
    # otpr-eval counts each member's first episodes, round by round
    rows.sort(key=lambda r: (r["round"], r["member"]))
    return rows[:episodes]


def summary(rows: list[dict[str, Any]]) -> list[str]:
    """The lines printed for ``rows``: the success rate, one line per failure and a count per
    class. Labels each failed record with its ``class`` on the way."""
    fails = [r for r in rows if not r["success"]]
    lines = [f"success {1 - len(fails) / len(rows):.3f} over {len(rows)} episodes"]
    classes: dict[str, int] = {}
    for r in fails:
        r["class"] = classify(r["lift"], r["tilt"], r["gap"], r["in_quarter"], r["in_goal_bin"])
        classes[r["class"]] = classes.get(r["class"], 0) + 1
        lines.append(
            f"  {r['class']:38s} lift {r['lift']:.3f}  tilt {r['tilt']:3.0f}  "
            f"closest {r['closest']:.3f}  gap {r['gap']:.3f}  final {np.round(r['final'], 3)}"
        )
    lines += [f"{name:38s} {classes[name]}" for name in CLASSES if name in classes]
    return lines


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Play a Can checkpoint's policy on evaluation seeds and sort its failed\n"
        "episodes into classes (never lifted, knocked over, wrong quarter of the goal bin,\n"
        "held at the time limit, ...), with the success rate otpr-eval gives on those seeds.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--checkpoint", required=True, help="a Can run, checkpoints/ or checkpoint directory"
    )
    parser.add_argument("--episodes", type=_positive, default=40, help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=None, help="default: the run's eval_seed")
    parser.add_argument("--deterministic", action="store_true", help="DDIM eta 0, no std floor")
    parser.add_argument("--num-envs", type=_positive, default=5, help="default: %(default)s")
    parser.add_argument(
        "--weights",
        choices=WEIGHTS,
        default="acting",
        help="acting (the EMA weights where the run kept them, the default) or trained",
    )
    parser.add_argument("--out", default=None, help="write every episode's record as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``otpr-failures``; exit status 2 with one line on stderr (``otpr.errors``) where the
    arguments are wrong, the checkpoint is missing or not Can's, or ``--out``'s directory does
    not exist."""
    return run_command(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    can_task(args.checkpoint)
    if args.out and not Path(args.out).parent.is_dir():
        raise UsageError(f"--out {args.out}: directory {Path(args.out).parent} does not exist")
    torch.set_num_threads(1)
    rows = run(
        args.checkpoint, args.episodes, args.seed, args.deterministic, args.num_envs, args.weights
    )
    print("\n".join(summary(rows)))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
