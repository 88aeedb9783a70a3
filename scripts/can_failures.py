"""Where does a Can policy fail? Runs it on evaluation seeds and sorts the failed episodes.

    python -m scripts.can_failures --checkpoint runs/can_bc [--episodes 100] [--seed S]
        [--deterministic] [--weights trained] [--out failures.json]

Loads the checkpoint's acting policy (``load_policy``: the EMA weights when the run kept them;
``--weights trained``: the trained ones, as ``otpr-eval weights=trained``)
and plays ``--episodes`` episodes with L = 1 from ``--seed`` (default: the run's
``task.eval_seed``), policy noise seeded from the same number, as ``otpr-eval`` does: the
success rate printed is the one ``otpr-eval checkpoint=<ckpt> task.eval_seed=S
task.eval_episodes=N`` gives (with ``--deterministic``: ``algo.eval_deterministic=true``, DDIM
eta 0 and no std floor, as ``algo=dppo`` evaluates). For every failed episode it prints:

- ``lift``: the can's highest rise above its start (m; the expert carries it ~0.16 m up),
- ``tilt``: the can's largest tilt from upright (degrees; 90 = knocked over),
- ``closest``: the smallest can-to-gripper distance (m),
- ``final``: the can's final position (world frame, m),
- ``gap``: the final can-to-gripper distance (m; robosuite counts the can as placed only with
  the gripper more than ~0.042 m from it),

its class (``classify``) and a count per class. Where the goal is, is read from robosuite's
PickPlace env (``not_in_bin``: the can has one quarter of the goal bin, and success needs the can
in that quarter with the gripper away from it). Observations are read once per decision (every
T_a env steps).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np
import torch

import envs
from otpr.checkpoint import WEIGHTS, load_policy, read_config

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


def run(
    checkpoint: str,
    episodes: int,
    seed: int | None,
    deterministic: bool,
    num_envs: int = 5,
    weights: str = "acting",
) -> list[dict[str, Any]]:
    """Plays the episodes; one record per episode, in ``otpr-eval``'s order."""
    cfg = read_config(checkpoint)
    t = cfg["task"]
    if t["name"] != "can":
        raise SystemExit(f"{checkpoint}: task is {t['name']!r}; this script reads Can's state")
    seed = int(t["eval_seed"] if seed is None else seed)
    policy = load_policy(checkpoint, weights=weights)
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
                count[i] += 1
                traj[i] = []
    env.close()
    # otpr-eval counts each member's first episodes, round by round
    rows.sort(key=lambda r: (r["round"], r["member"]))
    return rows[:episodes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=None, help="default: the run's eval_seed")
    parser.add_argument("--deterministic", action="store_true", help="DDIM eta 0, no std floor")
    parser.add_argument("--num-envs", type=int, default=5)
    parser.add_argument("--weights", choices=WEIGHTS, default="acting", help="see otpr-eval")
    parser.add_argument("--out", default=None, help="write every episode's record as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = run(
        args.checkpoint, args.episodes, args.seed, args.deterministic, args.num_envs, args.weights
    )
    fails = [r for r in rows if not r["success"]]
    print(f"success {1 - len(fails) / len(rows):.3f} over {len(rows)} episodes")
    classes: dict[str, int] = {}
    for r in fails:
        r["class"] = classify(r["lift"], r["tilt"], r["gap"], r["in_quarter"], r["in_goal_bin"])
        classes[r["class"]] = classes.get(r["class"], 0) + 1
        print(
            f"  {r['class']:38s} lift {r['lift']:.3f}  tilt {r['tilt']:3.0f}  "
            f"closest {r['closest']:.3f}  gap {r['gap']:.3f}  final {np.round(r['final'], 3)}"
        )
    for name in CLASSES:
        if name in classes:
            print(f"{name:38s} {classes[name]}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
