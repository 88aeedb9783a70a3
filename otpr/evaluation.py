"""Evaluation: success rate, return and subtasks of a policy on the task's fixed seed range.

An evaluation is a function of the weights: the env members are reset from ``task.eval_seed``
(member i from ``eval_seed + i``) and the policy's noise is drawn from a generator seeded with
it too, so the same weights always score the same and the training noise stream is untouched.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from otpr.config import Config
from policies.diffusion import DiffusionPolicy

# act(obs [B, T_o, D], generator) -> chunks [B, H, A]
ActFn = Callable[[np.ndarray, torch.Generator], np.ndarray]


@dataclass(frozen=True)
class Episode:
    """One evaluation episode's outcome."""

    index: int
    """Its place in the evaluation: round * num_envs + member (:func:`play_episodes`)."""
    member: int
    """The vector env member that ran it (seeded eval_seed + member)."""
    success: bool
    """Solved at some step of the episode."""
    ret: float
    """Undiscounted return."""
    num_subtasks: float
    """Subtasks completed (0 where the task has none)."""
    steps: int
    """Env steps the episode took."""


class EpisodeObserver(Protocol):
    """Watches :func:`play_episodes` run (otpr/video.py films with one)."""

    def stepped(self, env: Any) -> None:
        """Called after the first reset and after every vector step."""

    def finished(self, episode: Episode) -> None:
        """Called when an episode that is kept ends (in the order they end)."""


def play_episodes(
    env: Any,
    act: ActFn,
    count: int,
    num_envs: int,
    seed: int,
    act_steps: int,
    observer: EpisodeObserver | None = None,
) -> list[Episode]:
    """The first ``count`` episodes, ``ceil(count / num_envs)`` per member, in the order
    (round, member), so that the set of episodes does not depend on how fast members finish::

        member      0    1    2          (num_envs = 3, count = 7: 3 rounds, 2 left over)
        round 0     e0   e1   e2
        round 1     e3   e4   e5
        round 2     e6   -    -          (run, not kept)

    The members are reset from ``seed`` (member i from ``seed + i``) and the policy's noise is
    drawn from a generator seeded with ``seed``, so the episodes are a function of the weights;
    and the first k of them are the same for any ``count >= k``: every member acts in one batch
    until the last kept episode ends, and nothing a later round does changes an earlier one.
    """
    quota = math.ceil(count / num_envs)
    obs, _ = env.reset(seed=seed)
    if observer is not None:
        observer.stepped(env)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    done_count = np.zeros(num_envs, int)
    ret = np.zeros(num_envs)
    steps = np.zeros(num_envs, int)
    results: list[Episode] = []
    while (done_count < quota).any():
        actions = act(obs, generator)
        obs, reward, term, trunc, info = env.step(actions[:, :act_steps])
        done = term | trunc
        ret += reward
        if "steps" in info:
            steps += np.where(done, 0, info["steps"])
        if observer is not None:
            observer.stepped(env)
        for i in np.flatnonzero(done):
            fin = info["final_info"]
            if done_count[i] < quota:
                episode = Episode(
                    index=int(done_count[i]) * num_envs + int(i),
                    member=int(i),
                    success=bool(fin["success"][i]),
                    ret=float(ret[i]),
                    num_subtasks=float(fin["num_subtasks"][i]),
                    steps=int(steps[i] + fin["steps"][i]),
                )
                results.append(episode)
                done_count[i] += 1
                if observer is not None and episode.index < count:
                    observer.finished(episode)
            ret[i] = 0.0
            steps[i] = 0
    return sorted(results, key=lambda e: e.index)[:count]


def run_episodes(
    env: Any, act: ActFn, episodes: int, num_envs: int, seed: int, act_steps: int
) -> dict[str, float]:
    """Success rate, return and subtasks over :func:`play_episodes` (``eval/*`` metrics)."""
    kept = play_episodes(env, act, episodes, num_envs, seed, act_steps)
    return {
        "eval/success": float(np.mean([e.success for e in kept])),
        "eval/return": float(np.mean([e.ret for e in kept])),
        "eval/num_subtasks": float(np.mean([e.num_subtasks for e in kept])),
        "eval/episodes": len(kept),
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
