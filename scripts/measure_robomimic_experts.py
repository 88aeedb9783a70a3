"""Success rate of the robomimic waypoint experts over seeded episodes.

    python -m scripts.measure_robomimic_experts --task can --episodes 50

Episode ``i`` resets with seed ``seed + i``; an episode counts as a success if ``info["success"]``
holds on any step (robomimic's convention), and ends at its first success unless
``--full-episodes`` is given (then the success rate on the last step is printed too). Prints
success rate, mean episode length and env steps per second.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def measure(
    task: str,
    episodes: int,
    seed: int = 0,
    jitter: float = 0.0,
    max_episode_steps: int | None = None,
    full_episodes: bool = False,
    verbose: bool = False,
) -> dict[str, float]:
    """Run the expert; return success rate, mean length, steps/s and per-episode outcomes."""
    from envs.experts.robomimic import make_robomimic_expert
    from envs.robomimic import make_robomimic_env

    env = make_robomimic_env(task, seed=seed, max_episode_steps=max_episode_steps)
    expert = make_robomimic_expert(task, jitter=jitter)
    rng = np.random.default_rng(seed)
    successes, final, lengths, steps, elapsed = [], [], [], 0, 0.0
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        expert.reset(env, rng)
        start = time.perf_counter()
        success, t = False, 0
        while True:
            obs, _, terminated, truncated, info = env.step(expert.act(obs))
            t += 1
            success = success or info["success"]
            if terminated or truncated or (success and not full_episodes):
                break
        elapsed += time.perf_counter() - start
        steps += t
        successes.append(success)
        final.append(info["success"])
        lengths.append(t)
        if verbose:
            print(f"  episode {i:3d} seed {seed + i}: success={success} length={t}", flush=True)
    env.close()
    return {
        "success_rate": float(np.mean(successes)),
        "final_success_rate": float(np.mean(final)),
        "mean_length": float(np.mean(lengths)),
        "steps_per_s": steps / max(elapsed, 1e-9),
        "failed_seeds": [seed + i for i, s in enumerate(successes) if not s],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", required=True, choices=["lift", "can", "square"])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jitter", type=float, default=0.0, help="waypoint noise std (m)")
    parser.add_argument("--max-episode-steps", type=int, default=None)
    parser.add_argument("--full-episodes", action="store_true")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be >= 1, got {args.episodes}")
    r = measure(
        args.task,
        args.episodes,
        seed=args.seed,
        jitter=args.jitter,
        max_episode_steps=args.max_episode_steps,
        full_episodes=args.full_episodes,
        verbose=args.verbose,
    )
    print(
        f"{args.task}: success {r['success_rate']:.3f} over {args.episodes} episodes "
        f"(seeds {args.seed}..{args.seed + args.episodes - 1}, jitter {args.jitter}), "
        f"mean length {r['mean_length']:.1f} steps, {r['steps_per_s']:.0f} steps/s"
    )
    if args.full_episodes:
        print(f"success on the last step: {r['final_success_rate']:.3f}")
    if r["failed_seeds"]:
        print(f"failed seeds: {r['failed_seeds']}")


if __name__ == "__main__":
    main()
