"""Env wrapper overhead and scripted-expert success, per task.

1. Steps/s of ``envs.make`` (a 1-member vector env with the chunking wrapper) over the raw
   simulator stepped with the *same* actions in the same run; the wrapper overhead target is
   <= 5%. "Raw" is the suite's own simulator object: robosuite's env, Meta-World's
   ``SawyerXYZEnv``, gymnasium-robotics' ``KitchenEnv``.
2. The scripted experts' success over seeded episodes (``--episodes``).

    python -m benchmarks.bench_envs [--tasks reach-v3 lift can square kitchen-complete]
                                    [--steps 2000] [--episodes 10]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import envs
from otpr.demos import Quality, rollout_expert

warnings.filterwarnings("ignore")
DEFAULT_TASKS = ["reach-v3", "pick-place-v3", "lift", "can", "square", "kitchen-complete"]


def _raw_step_fn(env):
    sim = env.sim_env
    return lambda a: sim.step(np.clip(a, -1, 1))


def wrapper_overhead(
    task: str, steps: int, act_steps: int = 4, segment: int = 400
) -> tuple[float, float]:
    """(wrapped steps/s, raw steps/s) with identical action sequences; resets are not timed.

    Both run in segments of ``segment`` steps (a reset between segments, untimed), so that no
    simulator hits its own step limit.
    """
    rng = np.random.default_rng(0)
    single = envs.make_single(task, seed=0, max_episode_steps=segment)
    actions = rng.uniform(-1, 1, (steps, single.action_space.shape[0])).astype(np.float32)
    segments = [actions[i : i + segment] for i in range(0, steps - segment + 1, segment)]
    raw = _raw_step_fn(single)
    raw_s = 0.0
    for seg in segments:
        single.reset(seed=0)
        tic = time.perf_counter()
        for a in seg:
            raw(a)
        raw_s += time.perf_counter() - tic
    single.close()
    venv = envs.make(task, num_envs=1, seed=0, act_steps=act_steps, max_episode_steps=segment + 1)
    wrapped_s = 0.0
    for seg in segments:
        venv.reset(seed=0)
        chunks = seg.reshape(-1, 1, act_steps, seg.shape[1])
        tic = time.perf_counter()
        for chunk in chunks:
            venv.step(chunk)
        wrapped_s += time.perf_counter() - tic
    venv.close()
    n = len(segments) * segment
    return n / wrapped_s, n / raw_s


def expert_success(task: str, episodes: int) -> tuple[float, float, float]:
    """(success rate, mean length, steps/s) of the scripted expert over seeded episodes."""
    env, wins, length = None, 0, 0
    tic = time.perf_counter()
    for i in range(episodes):
        ep, env = rollout_expert(task, 10_000 + i, Quality.preset("expert"), env=env)
        wins += bool(ep.success)
        length += len(ep)
    elapsed = time.perf_counter() - tic
    env.close()
    return wins / episodes, length / episodes, length / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=DEFAULT_TASKS)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--episodes", type=int, default=10)
    args = parser.parse_args()
    print(
        f"{'task':18s} {'envs.make':>10s} {'raw sim':>10s} {'overhead':>9s}   "
        f"{'expert success':>14s} {'mean len':>9s} {'expert steps/s':>14s}"
    )
    for task in args.tasks:
        try:
            wrapped, raw = wrapper_overhead(task, args.steps)
            success, length, sps = expert_success(task, args.episodes)
        except ImportError as err:
            print(f"{task:18s} skipped: {err}")
            continue
        print(
            f"{task:18s} {wrapped:10.0f} {raw:10.0f} {100 * (raw / wrapped - 1):8.1f}%   "
            f"{success:14.2f} {length:9.1f} {sps:14.0f}"
        )


if __name__ == "__main__":
    main()
