"""Which initial states does a policy fail, and are its successes there worth more?

    python -m scripts.retry_starts --checkpoint runs/can_bc --out runs/starts.npz \
        [--retries 6] [--hard 30] [--seed 500000]

Plays the checkpoint's acting policy (L = 1, the run's sampler) from fresh training starts
(reset seeds ``--seed + 1, + 2, ...``, disjoint from the demo and evaluation seeds) in
``--members`` envs; a start that fails is replayed (same reset seed, fresh policy noise) up to
``--retries`` times, as ``algo.retry_failed_starts`` does in a fine-tuning run. It stops when
``--hard`` failed starts have been solved on a retry, and saves to ``--out``:

- ``easy_obs`` / ``easy_act`` / ``easy_len``: the (obs window, chunk) pairs and lengths of the
  episodes that succeeded on their first try, in the order they ended;
- ``hard_*``: the same for the successful retries of failed starts;
- ``stats``: JSON, reset seed -> outcome of each attempt (1 success).

It prints the first-try success, how many failed starts a retry solved, and, for Can, each
group's distance from the can's start to the nearest demo's (m, x-y plane) and how many of its
starts lie outside the bounding box of the demos' can starts: starts that fail every attempt
lie farther from the demos. ``python -m scripts.bc_on_successes --pairs <npz>
--set hard|easy`` trains BC on the demos plus those pairs; ``scripts.expert_at_starts`` writes
expert demos at the failed or succeeded starts. docs/results.md section 2g reads these.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import envs
from envs.wrappers import ChunkedEnv
from otpr import checkpoint as ckpt_io
from otpr.config import from_dict
from otpr.demos import load_demos, task_spec_of


def start_groups(stats: dict[int, list[int]], retries: int) -> dict[str, list[int]]:
    """Reset seeds by outcome: ``first_try`` (solved at once), ``on_retry`` (failed, then
    solved), ``never`` (failed all 1 + ``retries`` attempts); starts still being retried when the
    run stopped are in none."""
    groups: dict[str, list[int]] = {"first_try": [], "on_retry": [], "never": []}
    for seed, outcomes in stats.items():
        if outcomes[0]:
            groups["first_try"].append(seed)
        elif any(outcomes):
            groups["on_retry"].append(seed)
        elif len(outcomes) == 1 + retries:
            groups["never"].append(seed)
    return groups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", required=True, help="npz file for the pairs and the outcomes")
    parser.add_argument("--seed", type=int, default=500_000, help="first reset seed - 1")
    parser.add_argument("--retries", type=int, default=6)
    parser.add_argument("--hard", type=int, default=30, help="stop after this many solved retries")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--max-episodes", type=int, default=900)
    args = parser.parse_args()
    torch.set_num_threads(1)

    ckpt = ckpt_io.resolve(args.checkpoint)
    cfg = from_dict(ckpt_io.read_config(ckpt))
    t = cfg.task
    policy = ckpt_io.load_policy(ckpt)
    generator = torch.Generator().manual_seed(args.seed)
    members = [
        ChunkedEnv(
            envs.make_single(
                t.name, args.seed + i, max_episode_steps=t.max_episode_steps, **t.env_kwargs
            ),
            t.obs_history,
            t.act_steps,
        )
        for i in range(args.members)
    ]
    fresh = iter(range(args.seed + 1, args.seed + 10**7))
    queue: list[tuple[int, int]] = []  # (reset seed, attempt) of failed starts to replay
    stats: dict[int, list[int]] = {}
    first_obs: dict[int, np.ndarray] = {}
    pairs: dict[str, tuple[list, list, list]] = {"easy": ([], [], []), "hard": ([], [], [])}
    jobs = [(next(fresh), 0) for _ in members]
    obs = np.stack([m.reset(seed=s)[0] for m, (s, _) in zip(members, jobs, strict=True)])
    for (s, _), o in zip(jobs, obs, strict=True):
        first_obs[s] = o[-1].copy()
    trajectories: list[tuple[list, list]] = [([], []) for _ in members]
    episodes, tic = 0, time.time()
    while len(pairs["hard"][2]) < args.hard and episodes < args.max_episodes:
        obs_t = torch.as_tensor(obs, dtype=torch.float32)
        chunks = policy.sample(obs_t, 1, generator=generator)[:, 0].numpy()
        for i, env in enumerate(members):
            trajectories[i][0].append(obs[i].copy())
            trajectories[i][1].append(chunks[i].copy())
            o, _, term, trunc, info = env.step(chunks[i, : t.act_steps])
            if term or trunc:
                episodes += 1
                seed, attempt = jobs[i]
                ok = bool(info["success"])
                stats.setdefault(seed, []).append(int(ok))
                if ok:
                    group = pairs["easy" if attempt == 0 else "hard"]
                    group[0].extend(trajectories[i][0])
                    group[1].extend(trajectories[i][1])
                    group[2].append(len(trajectories[i][0]))
                elif attempt < args.retries:
                    queue.append((seed, attempt + 1))
                jobs[i] = queue.pop(0) if queue else (next(fresh), 0)
                trajectories[i] = ([], [])
                o, _ = env.reset(seed=jobs[i][0])
                first_obs.setdefault(jobs[i][0], o[-1].copy())
            obs[i] = o
    for env in members:
        env.close()

    groups = start_groups(stats, args.retries)
    first = [v[0] for v in stats.values()]
    summary: dict = {
        "checkpoint": str(ckpt),
        "episodes": episodes,
        "starts": len(stats),
        "first_try_success": round(float(np.mean(first)), 3),
        "solved_on_retry": len(groups["on_retry"]),
        "never_solved": len(groups["never"]),
        "wall_s": round(time.time() - tic),
    }
    spec = task_spec_of(cfg)
    slices = spec.extra.get("obs_slices", {})
    if "Can_pos" in slices:
        pos = slice(*slices["Can_pos"])
        demo_xy = np.stack([ep.obs[0, pos][:2] for ep in load_demos(cfg, spec).episodes])
        low, high = demo_xy.min(0), demo_xy.max(0)
        for name, seeds in groups.items():
            if seeds:
                xy = np.stack([first_obs[s][pos][:2] for s in seeds])
                d = np.linalg.norm(xy[:, None] - demo_xy[None], axis=-1).min(1)
                summary[f"nearest_demo_m/{name}"] = round(float(d.mean()), 3)
                outside = ((xy < low) | (xy > high)).any(1)
                summary[f"outside_demo_box/{name}"] = f"{int(outside.sum())}/{len(seeds)}"
    print(json.dumps(summary))
    np.savez(
        args.out,
        **{
            f"{name}_{key}": np.asarray(values[k], np.float32 if k < 2 else np.int64)
            for name, values in pairs.items()
            for k, key in enumerate(("obs", "act", "len"))
        },
        stats=json.dumps(stats),
    )


if __name__ == "__main__":
    main()
