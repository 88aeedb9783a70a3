"""Success of the scripted Franka Kitchen expert, per subtask and for the whole set.

    python -m scripts.measure_kitchen_expert --episodes 20
    python -m scripts.measure_kitchen_expert --tasks kitchen-mixed --jitter 0.01 --episodes 20

Episode ``i`` resets the env with seed ``seed + i`` and the expert with ``rng(seed + i)``.
A subtask counts as done when FrankaKitchen-v1 reports it completed (D4RL rule: joints within
0.3 of the goal once); "all" is ``info["success"]`` at the end of the episode (280 steps).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def measure(task: str, episodes: int, seed: int, jitter: float) -> dict[str, float]:
    from envs.experts.kitchen import make_kitchen_expert
    from envs.kitchen import KITCHEN_TASKS, make_kitchen_env

    subtasks = KITCHEN_TASKS[task].extra["subtasks"]
    env = make_kitchen_env(task, seed)
    expert = make_kitchen_expert(task, jitter=jitter)
    done = {t: 0 for t in subtasks}
    wins, lengths = 0, []
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        expert.reset(env, np.random.default_rng(seed + i))
        steps = 0
        while True:
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            steps += 1
            if terminated or truncated:
                break
        for t in info["completed_subtasks"]:
            done[t] += 1
        wins += int(info["success"])
        lengths.append(steps)
    env.close()
    out = {t: n / episodes for t, n in done.items()}
    out["all"] = wins / episodes
    out["mean_steps"] = float(np.mean(lengths))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jitter", type=float, default=0.0, help="waypoint noise std (m)")
    parser.add_argument(
        "--tasks", nargs="+", default=["kitchen-complete", "kitchen-mixed"], help="task sets"
    )
    args = parser.parse_args()
    if args.episodes < 1:
        parser.error("--episodes must be >= 1")
    torch.set_num_threads(1)
    for task in args.tasks:
        start = time.time()
        res = measure(task, args.episodes, args.seed, args.jitter)
        print(
            f"{task} (episodes={args.episodes}, jitter={args.jitter}, "
            f"{time.time() - start:.0f} s, mean episode length {res.pop('mean_steps'):.0f})"
        )
        for name, rate in res.items():
            print(f"  {name:<14} {rate:.2f}")


if __name__ == "__main__":
    main()
