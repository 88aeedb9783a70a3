"""Where does a Can policy fail? Runs it on the evaluation seeds and sorts the episodes.

    python -m scripts.can_failures --checkpoint runs/can_bc [--episodes 40]

Loads the checkpoint's acting policy (``load_policy``: the EMA weights when the run kept them),
plays ``--episodes`` episodes on the run's evaluation seed range with L = 1 (the run's sampler,
policy noise seeded from ``task.eval_seed``), and prints for every failed episode:

- ``lift``: the can's highest rise above its start (m; the expert carries it ~0.16 m up),
- ``tilt``: the can's largest tilt from upright (degrees; 90 = knocked over),
- ``closest``: the smallest can-to-gripper distance (m),
- ``final``: the can's final position (world frame, m),

and a count per class: never lifted and knocked over, never lifted and upright, lifted then
lost, carried but not placed. Observations are read once per decision (every T_a env steps).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import envs
from otpr.checkpoint import load_policy, read_config


def classify(lift: float, tilt: float, final_z: float, start_z: float) -> str:
    if lift < 0.04:
        return "never lifted, knocked over" if tilt > 45 else "never lifted, upright"
    if final_z < start_z + 0.04:
        return "lifted, then lost"
    return "carried, not placed"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--episodes", type=int, default=40)
    parser.add_argument("--num-envs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = read_config(args.checkpoint)
    t = cfg["task"]
    if t["name"] != "can":
        raise SystemExit(f"{args.checkpoint}: task is {t['name']!r}; this script reads Can's state")
    policy = load_policy(args.checkpoint)
    sl = envs.task_spec("can").extra["obs_slices"]
    n = args.num_envs
    env = envs.make(
        "can",
        num_envs=n,
        seed=t["eval_seed"],
        obs_history=t["obs_history"],
        act_steps=t["act_steps"],
        max_episode_steps=t["max_episode_steps"],
        **t["env_kwargs"],
    )
    obs, _ = env.reset(seed=t["eval_seed"])
    gen = torch.Generator().manual_seed(t["eval_seed"])
    quota = -(-args.episodes // n)
    count = np.zeros(n, int)
    traj: list[list[np.ndarray]] = [[] for _ in range(n)]
    rows = []
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
                        "success": bool(info["final_info"]["success"][i]),
                        "lift": float(pos[:, 2].max() - pos[0, 2]),
                        "tilt": float(np.degrees(np.arccos(np.clip(up, -1, 1))).max()),
                        "closest": float(np.linalg.norm(rel, axis=1).min()),
                        "final": pos[-1],
                        "start_z": float(pos[0, 2]),
                    }
                )
            count[i] += 1
            traj[i] = []
    env.close()
    rows = rows[: args.episodes]
    fails = [r for r in rows if not r["success"]]
    print(f"success {1 - len(fails) / len(rows):.2f} over {len(rows)} episodes")
    classes: dict[str, int] = {}
    for r in fails:
        name = classify(r["lift"], r["tilt"], float(r["final"][2]), r["start_z"])
        classes[name] = classes.get(name, 0) + 1
        print(
            f"  {name:28s} lift {r['lift']:.3f}  tilt {r['tilt']:3.0f}  "
            f"closest {r['closest']:.3f}  final {np.round(r['final'], 3)}"
        )
    for name, k in sorted(classes.items(), key=lambda kv: -kv[1]):
        print(f"{name:28s} {k}")


if __name__ == "__main__":
    main()
