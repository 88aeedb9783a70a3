"""The contract every environment and scripted expert in ``envs/`` follows.

Environments know nothing of learning. A *task factory* builds one single, un-chunked
``gymnasium.Env`` with:

- ``observation_space``: a flat ``Box`` of float32 low-dim state (documented key order per suite);
- ``action_space``: a ``Box`` in ``[-1, 1]`` (the simulator's own controller units);
- ``step`` returning ``info["success"]`` (bool: the task is solved *at this step*), and for
  multi-stage tasks ``info["num_subtasks"]`` (int: subtasks completed so far);
- ``terminated`` only for true terminal states, ``truncated`` at the time limit (the time limit
  is applied inside the factory, so ``truncated`` is set on the last step).
- ``render_mode="rgb_array"`` (with ``image_size``) makes ``render()`` return a uint8 HxWx3
  frame of the current state from the suite's camera, drawn offscreen (``envs/render.py``
  chooses ``MUJOCO_GL``); observations, rewards and the episode are the same with or without it.

``envs.make`` wraps these into chunked, history-stacked vector envs; the wrappers live in
``envs/wrappers.py``. A scripted expert follows :class:`ScriptedExpert` and may read privileged
simulator state through the env it is reset with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import gymnasium as gym
import numpy as np


@dataclass(frozen=True)
class TaskSpec:
    """Static facts about a task, stored in checkpoints and demo files."""

    name: str
    suite: str
    obs_dim: int
    action_dim: int
    max_episode_steps: int
    obs_keys: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


class TaskFactory(Protocol):
    """Builds one raw env for a task: ``factory(seed=..., max_episode_steps=...)``."""

    spec: TaskSpec

    def __call__(self, seed: int, max_episode_steps: int | None = None) -> gym.Env: ...


class ScriptedExpert(Protocol):
    """A scripted demonstrator.

    ``reset(env, rng)`` is called right after ``env.reset``; the expert may keep a reference to
    ``env`` to read privileged simulator state (object poses). ``act(obs)`` returns one raw action
    in the env's action space. ``jitter`` (waypoint noise scale, in metres or radians as the
    expert documents) is the expert's own quality knob; action noise and detours are added
    generically by ``otpr.demos``.
    """

    def reset(self, env: gym.Env, rng: np.random.Generator) -> None: ...

    def act(self, obs: np.ndarray) -> np.ndarray: ...
