"""Evaluation: success rate, return and subtasks of a policy on the task's fixed seed range.

An evaluation is a function of the weights: the env members are reset from ``task.eval_seed``
(member i from ``eval_seed + i``) and the policy's noise is drawn from a generator seeded with
it too, so the same weights always score the same and the training noise stream is untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch

from otpr.config import Config
from policies.diffusion import DiffusionPolicy

# act(obs [B, T_o, D], generator) -> chunks [B, H, A]
ActFn = Callable[[np.ndarray, torch.Generator], np.ndarray]


def run_episodes(
    env: Any, act: ActFn, episodes: int, num_envs: int, seed: int, act_steps: int
) -> dict[str, float]:
    """``episodes`` episodes, ``ceil(episodes / num_envs)`` per member, the first ones of each
    member kept (so the set of episodes does not depend on how fast members finish)."""
    quota = math.ceil(episodes / num_envs)
    obs, _ = env.reset(seed=seed)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    done_count = np.zeros(num_envs, int)
    ret = np.zeros(num_envs)
    results: list[tuple[int, int, float, float, float]] = []
    while (done_count < quota).any():
        actions = act(obs, generator)
        obs, reward, term, trunc, info = env.step(actions[:, :act_steps])
        ret += reward
        for i in np.flatnonzero(term | trunc):
            if done_count[i] < quota:
                fin = info["final_info"]
                results.append(
                    (
                        int(done_count[i]),
                        int(i),
                        float(fin["success"][i]),
                        float(ret[i]),
                        float(fin["num_subtasks"][i]),
                    )
                )
                done_count[i] += 1
            ret[i] = 0.0
    results = sorted(results)[:episodes]
    arr = np.asarray([r[2:] for r in results])
    return {
        "eval/success": float(arr[:, 0].mean()),
        "eval/return": float(arr[:, 1].mean()),
        "eval/num_subtasks": float(arr[:, 2].mean()),
        "eval/episodes": len(results),
    }


def sampling(cfg: Config, policy: DiffusionPolicy) -> Any:
    """The context evaluation samples in: noise-free under ``algo.eval_deterministic``."""
    return policy.deterministic() if cfg.algo.eval_deterministic else nullcontext()


@contextmanager
def evaluating(cfg: Config, policy: DiffusionPolicy) -> Iterator[None]:
    """``policy`` in eval mode and in evaluation's sampling context, for the block."""
    policy.eval()
    try:
        with sampling(cfg, policy):
            yield
    finally:
        policy.train()


def settings(cfg: Config, policy: DiffusionPolicy, algo_settings: dict[str, Any]) -> dict[str, Any]:
    """What an evaluation's number depends on besides the weights (stored with each record, so
    a fine-tuning run re-measures a pretrained level taken under other settings)."""
    t, a, p = cfg.task, cfg.algo, cfg.policy
    with sampling(cfg, policy):  # the sampler as evaluation runs it
        eta, min_std = policy.eta, policy.min_std
    out = {
        "protocol": 2,  # 2: policy noise seeded from eval_seed
        "eval_seed": t.eval_seed,
        "eval_episodes": t.eval_episodes,
        "eval_num_envs": t.eval_num_envs,  # member i runs seed + i: which episodes are drawn
        **algo_settings,
        "sampler": [p.sampler, p.num_steps, eta],
        "max_episode_steps": t.max_episode_steps,
    }
    if a.ema_decay > 0:  # the averaged weights act
        out["ema_decay"] = a.ema_decay
    if p.temperature != 1.0:
        out["temperature"] = p.temperature
    if min_std > 0:
        out["min_std"] = min_std
    return out
