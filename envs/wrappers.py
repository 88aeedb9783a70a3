"""Wrappers that turn a raw task env into what a chunked diffusion policy consumes.

Observation history and action chunks (T_o = obs_history, T_a = act_steps, H >= T_a is the
policy's prediction horizon, chosen by the policy, not here)::

    env step:     t-2   t-1    t    t+1   t+2   t+3
    observations:  o     o     o                        <- last T_o = 3 stacked, oldest first
    actions:                   a     a     a     a      <- the policy predicts H = 4 ...
    executed:                  a     a                  <- ... and the env runs T_a = 2 of them

At the first step of an episode the history is padded by repeating the first observation.
One wrapper step runs up to T_a env steps and stops early when the episode ends.
"""

from __future__ import annotations

from collections import deque

import gymnasium as gym
import numpy as np


class ChunkedEnv(gym.Wrapper):
    """Stacks the last ``obs_history`` observations and executes ``act_steps`` actions per step.

    Returned per step: the summed reward, ``info["rewards"]`` (the per-env-step rewards, zero
    padded to ``act_steps``), ``info["steps"]`` (env steps executed), ``info["success"]`` (the
    task was solved at some step of this episode so far, sticky) and ``info["num_subtasks"]``
    (the most subtasks completed at once so far; 0 where the task has none).
    """

    def __init__(self, env: gym.Env, obs_history: int = 1, act_steps: int = 1) -> None:
        super().__init__(env)
        if obs_history < 1 or act_steps < 1:
            raise ValueError(
                f"obs_history and act_steps must be >= 1, got {obs_history}, {act_steps}"
            )
        self.obs_history = obs_history
        self.act_steps = act_steps
        base_obs = env.observation_space
        base_act = env.action_space
        assert isinstance(base_obs, gym.spaces.Box) and isinstance(base_act, gym.spaces.Box)
        self.observation_space = gym.spaces.Box(
            -np.inf, np.inf, (obs_history, *base_obs.shape), dtype=np.float32
        )
        self.action_space = gym.spaces.Box(
            np.repeat(base_act.low[None], act_steps, 0),
            np.repeat(base_act.high[None], act_steps, 0),
            dtype=np.float32,
        )
        self._history: deque[np.ndarray] = deque(maxlen=obs_history)
        self._success = False
        self._subtasks = 0

    def _stacked(self) -> np.ndarray:
        return np.stack(self._history, 0).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._history.clear()
        for _ in range(self.obs_history):
            self._history.append(np.asarray(obs, dtype=np.float32))
        self._success = False
        self._subtasks = 0
        info = dict(info, success=False, num_subtasks=0)
        return self._stacked(), info

    def step(self, action: np.ndarray):
        action = np.asarray(action, dtype=np.float32)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"action chunk has shape {action.shape}, expected {self.action_space.shape} "
                f"(act_steps, action_dim)"
            )
        rewards = np.zeros(self.act_steps, dtype=np.float32)
        terminated = truncated = False
        info: dict = {}
        steps = 0
        for k in range(self.act_steps):
            obs, reward, terminated, truncated, info = self.env.step(action[k])
            self._history.append(np.asarray(obs, dtype=np.float32))
            rewards[k] = reward
            steps = k + 1
            self._success |= bool(info.get("success", False))
            self._subtasks = max(self._subtasks, int(info.get("num_subtasks", 0)))
            if terminated or truncated:
                break
        info = dict(info, rewards=rewards, steps=steps)
        info["success"] = self._success
        info["num_subtasks"] = self._subtasks
        return self._stacked(), float(rewards.sum()), terminated, truncated, info


class RetryFailedStarts(gym.Wrapper):
    """Restarts an episode that ended without success from the same initial state, up to
    ``retries`` times in a row, then moves on to a fresh one (a reset curriculum that spends
    more of the collection on the starts the policy fails).

    Every episode starts with ``reset(seed=s)`` of the wrapped env, so it needs an env whose
    seeded reset fixes the initial state (robosuite's soft reset replays a seeded episode bit
    for bit). ``s`` is drawn from the wrapper's own generator, which ``reset(seed=...)`` re-seeds
    (that reset starts a fresh state from ``seed`` itself). Wrap a ``ChunkedEnv``: its sticky
    ``info["success"]`` decides whether an episode succeeded. Every step's info carries
    ``attempt``: 0 for an episode on a fresh start, k for its k-th restart.
    """

    def __init__(self, env: gym.Env, retries: int) -> None:
        super().__init__(env)
        if not isinstance(retries, int) or retries < 1:
            raise ValueError(f"RetryFailedStarts: retries must be an int >= 1, got {retries!r}")
        self.retries = retries
        self._rng = np.random.default_rng(0)
        self._start_seed = 0
        self._attempt = 0
        self._failed = False

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
            self._start_seed, self._attempt = int(seed), 0
        elif self._failed and self._attempt < self.retries:
            self._attempt += 1
        else:
            self._start_seed, self._attempt = int(self._rng.integers(2**31 - 1)), 0
        self._failed = False
        obs, info = self.env.reset(seed=self._start_seed, options=options)
        return obs, dict(info, attempt=self._attempt)

    def step(self, action: np.ndarray):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            self._failed = not info.get("success", False)
        return obs, reward, terminated, truncated, dict(info, attempt=self._attempt)
