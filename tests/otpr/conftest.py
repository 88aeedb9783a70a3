"""A toy problem for any registered algorithm, without an environment: a task of 3-D
observations and 2-D actions (T_o = 2, H = 4, T_a = 2), random demo windows, and training data
on the algorithm's device.

    make_toy_algo("idql", device="cuda", num_samples=4)  -> the algorithm, as the loop leaves it
                                                           before its first iteration
    make_toy_data(algo)                                   -> TrainingData: the demos and a replay
                                                           of random chunk transitions
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from envs.base import TaskSpec
from otpr.algos import Algorithm, make_algorithm
from otpr.buffer import ReplayBuffer, TrainingData
from otpr.config import apply_debug, from_dict

TOY = TaskSpec(name="toy", suite="test", obs_dim=3, action_dim=2, max_episode_steps=10)
TOY_TASK = {"name": "reach-v3", "obs_history": 2, "horizon": 4, "act_steps": 2}
# small networks; min_std > 0 because DPPO needs every denoising step to have a log-probability
TOY_POLICY = {"hidden": [32, 32, 32], "num_steps": 3, "min_std": 0.05}


def toy_demos(num: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Demo windows [num, T_o, 3] and chunks [num, H, 2], uniform in [-1, 1]."""
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, (num, TOY_TASK["obs_history"], TOY.obs_dim))
    act = rng.uniform(-1, 1, (num, TOY_TASK["horizon"], TOY.action_dim))
    return obs.astype(np.float32), act.astype(np.float32)


@pytest.fixture
def make_toy_algo() -> Callable[..., Algorithm]:
    """``make(name, device="cpu", seed=0, ot=None, policy=None, **algo)``: the registered
    algorithm ``name`` on the toy task with debug budgets and no warm-up (its first update
    trains the policy too), its normaliser fitted on the toy demos and ``prepare``d with them.
    ``ot`` and ``policy`` update those groups."""

    def make(
        name: str,
        device: str = "cpu",
        seed: int = 0,
        ot: dict[str, Any] | None = None,
        policy: dict[str, Any] | None = None,
        **algo: Any,
    ) -> Algorithm:
        cfg = from_dict(
            {
                "task": TOY_TASK,
                "algo": {"name": name, "warmup_iterations": 0, **algo},
                "policy": {**TOY_POLICY, **(policy or {})},
                "ot": ot or {},
                "device": device,
                "seed": seed,
                "debug": True,
            }
        )
        apply_debug(cfg)
        torch.manual_seed(seed)
        agent = make_algorithm(cfg, TOY)
        demo_obs, demo_act = toy_demos()
        agent.policy.normalizer.fit(demo_obs, demo_act)
        agent.prepare(demo_obs, demo_act)
        return agent

    return make


@pytest.fixture
def make_toy_data() -> Callable[..., TrainingData]:
    """``make(algo, size=256, seed=0)``: the toy demos and a replay of ``size`` random chunk
    transitions (two env steps each), batches on the algorithm's device."""

    def make(algo: Algorithm, size: int = 256, seed: int = 0) -> TrainingData:
        rng = np.random.default_rng(seed)
        demo_obs, demo_act = toy_demos()
        buffer = ReplayBuffer(1000, demo_obs.shape[1:], demo_act.shape[1:])
        idx = rng.integers(0, len(demo_obs), size)
        buffer.add(
            obs=demo_obs[idx],
            actions=demo_act[idx],
            reward=rng.normal(size=size).astype(np.float32),
            discount=np.full(size, 0.99**2, np.float32),
            next_obs=demo_obs[rng.integers(0, len(demo_obs), size)],
            terminated=(rng.random(size) < 0.1).astype(np.float32),
        )
        return TrainingData(buffer, demo_obs, demo_act, rng, algo.device)

    return make
