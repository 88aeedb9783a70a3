"""Environments: one factory per suite behind :func:`make`. Environments know nothing of learning.

Task names:
- Meta-World v3: any MT1 env name (``reach-v3``, ``pick-place-v3``, ...), ``mt10``, ``mt50``;
- Robomimic on robosuite: ``lift``, ``can``, ``square``;
- Franka Kitchen: ``kitchen-complete``, ``kitchen-partial``, ``kitchen-mixed``;
- CALVIN: ``calvin`` (only where ``calvin_env`` is importable).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import gymnasium as gym

from envs.base import ScriptedExpert, TaskSpec
from envs.wrappers import (
    ChunkedEnv,
    PixelObservation,
    RecordFrames,
    ResumableEpisodes,
    RetryFailedStarts,
    split_pixel_obs,
)

ROBOMIMIC = ("lift", "can", "square")
KITCHEN = ("kitchen-complete", "kitchen-partial", "kitchen-mixed")


def suite_of(task: str) -> str:
    """Which simulator suite a task name belongs to."""
    if task in ROBOMIMIC:
        return "robomimic"
    if task in KITCHEN:
        return "kitchen"
    if task.startswith("calvin"):
        return "calvin"
    if task in ("mt10", "mt50") or task.endswith("-v3"):
        return "metaworld"
    raise ValueError(
        f"unknown task {task!r}: expected a Meta-World v3 name (e.g. 'reach-v3', 'mt10'), "
        f"one of {ROBOMIMIC}, one of {KITCHEN}, or 'calvin'"
    )


def env_factory(task: str) -> Callable[..., gym.Env]:
    """The raw single-env factory ``f(task, seed, max_episode_steps=None, pixels=False, ...)``."""
    suite = suite_of(task)
    if suite == "metaworld":
        from envs.metaworld import make_metaworld_env

        return make_metaworld_env
    if suite == "robomimic":
        from envs.robomimic import make_robomimic_env

        return make_robomimic_env
    if suite == "kitchen":
        from envs.kitchen import make_kitchen_env

        return make_kitchen_env
    from envs.calvin import make_calvin_env

    return make_calvin_env


def make_single(
    task: str,
    seed: int,
    max_episode_steps: int | None = None,
    pixels: bool = False,
    **task_kwargs: Any,
) -> gym.Env:
    """One raw (un-chunked) env for ``task``, e.g. for scripted demonstrations."""
    return env_factory(task)(
        task, seed, max_episode_steps=max_episode_steps, pixels=pixels, **task_kwargs
    )


def _member(
    task: str,
    seed: int,
    obs_history: int,
    act_steps: int,
    retries: int,
    resumable: bool,
    record_frames: bool,
    pixel_obs: bool,
    proprio: tuple[int, int] | None,
    kwargs: dict,
) -> gym.Env:
    env: gym.Env = make_single(task, seed, **kwargs)
    if record_frames:
        env = RecordFrames(env)
    if pixel_obs:
        env = PixelObservation(env, kwargs.get("image_size", 84), proprio)
    env = ChunkedEnv(env, obs_history, act_steps)
    if resumable:
        env = ResumableEpisodes(env)
    return RetryFailedStarts(env, retries) if retries else env


def make(
    task: str,
    num_envs: int = 1,
    seed: int = 0,
    obs_history: int = 1,
    act_steps: int = 1,
    pixels: bool = False,
    max_episode_steps: int | None = None,
    vectorization: str = "sync",
    retry_failed_starts: int = 0,
    resumable: bool = False,
    record_frames: bool = False,
    pixel_obs: bool = False,
    proprio: tuple[int, int] | None = None,
    **task_kwargs: Any,
) -> gym.vector.VectorEnv:
    """A gymnasium vector env of ``num_envs`` chunked members; member ``i`` is seeded ``seed + i``.

    ``retry_failed_starts=k > 0`` restarts each member's failed episodes from the same initial
    state up to k times (``wrappers.RetryFailedStarts``; ``info["attempt"]`` counts restarts).

    ``resumable=True`` starts every episode from a seeded reset (autoresets draw the seed from
    each member's own generator) and records the chunks it executes, so that the members'
    state can be saved as data (:func:`episode_states`) and re-created exactly in a new vector
    env (:func:`restore_episodes`); ``wrappers.ResumableEpisodes``.

    ``record_frames=True`` puts ``wrappers.RecordFrames`` under each member's ``ChunkedEnv``
    (build the members with ``render_mode="rgb_array"``): ``set_attr("film_episodes", [...])``
    says how many episodes each member films, ``call("pop_frames")`` takes the frames.

    ``pixel_obs=True`` makes each member's observation its rendered frame (``image_size``,
    the suite's camera), flattened, followed by ``obs[proprio[0]:proprio[1]]`` when ``proprio``
    is given (``wrappers.PixelObservation``; :func:`split_pixel_obs` takes them apart); it
    renders, so it implies ``pixels=True``.

    Autoreset is SAME_STEP: when a member's episode ends, the returned observation is already
    the next episode's first one, and ``info["final_obs"]`` / ``info["final_info"]`` (masked by
    ``info["_final_obs"]``) hold the last observation and info of the finished episode, so that
    truncated steps can bootstrap from the true final observation.
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    if not isinstance(retry_failed_starts, int) or retry_failed_starts < 0:
        raise ValueError(f"retry_failed_starts must be an int >= 0, got {retry_failed_starts!r}")
    if vectorization not in ("sync", "async"):
        raise ValueError(f"vectorization must be 'sync' or 'async', got {vectorization!r}")
    kwargs = dict(task_kwargs, max_episode_steps=max_episode_steps, pixels=pixels or pixel_obs)
    fns = [
        partial(
            _member,
            task,
            seed + i,
            obs_history,
            act_steps,
            retry_failed_starts,
            resumable,
            record_frames,
            pixel_obs,
            proprio,
            kwargs,
        )
        for i in range(num_envs)
    ]
    cls = gym.vector.SyncVectorEnv if vectorization == "sync" else gym.vector.AsyncVectorEnv
    venv = cls(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    venv.reset(seed=seed)  # member i gets seed + i
    return venv


def episode_states(venv: gym.vector.VectorEnv) -> list[dict[str, Any]]:
    """Each member's episode so far, as JSON-able data (a ``make(..., resumable=True)`` env)."""
    return list(venv.call("episode_state"))


def restore_episodes(
    venv: gym.vector.VectorEnv, states: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Re-create :func:`episode_states` in ``venv`` (built like the one they came from, with
    ``resumable=True``); returns per member ``{"obs", "ended_at"}``
    (``ResumableEpisodes.restore_episode``) for the caller to check against what it stored."""
    if len(states) != venv.num_envs:
        raise ValueError(f"{len(states)} member states for a vector env of {venv.num_envs}")
    venv.set_attr("pending_episode", list(states))
    return list(venv.call("restore_episode"))


def task_spec(task: str, **task_kwargs: Any) -> TaskSpec:
    """Static facts for a task (dims, horizon) without keeping a simulator around."""
    suite = suite_of(task)
    if suite == "metaworld":
        from envs.metaworld import metaworld_spec

        keep = {k: task_kwargs[k] for k in ("one_hot",) if k in task_kwargs}
        steps = task_kwargs.get("max_episode_steps") or 150
        return metaworld_spec(task, steps, **keep)
    if suite == "robomimic":
        from envs.robomimic import ROBOMIMIC_TASKS

        return ROBOMIMIC_TASKS[task]
    if suite == "kitchen":
        from envs.kitchen import KITCHEN_TASKS

        return KITCHEN_TASKS[task]
    from envs.calvin import calvin_spec

    return calvin_spec(task)


def make_expert(task: str, jitter: float = 0.0) -> ScriptedExpert:
    """The scripted expert for ``task``."""
    suite = suite_of(task)
    if suite == "metaworld":
        from envs.metaworld import make_metaworld_expert

        return make_metaworld_expert(task, jitter)
    if suite == "robomimic":
        from envs.experts.robomimic import make_robomimic_expert

        return make_robomimic_expert(task, jitter)
    if suite == "kitchen":
        from envs.experts.kitchen import make_kitchen_expert

        return make_kitchen_expert(task, jitter)
    raise ValueError(f"no scripted expert for {task!r} ({suite}): use recorded demonstrations")


__all__ = [
    "ChunkedEnv",
    "PixelObservation",
    "RecordFrames",
    "ScriptedExpert",
    "TaskSpec",
    "env_factory",
    "episode_states",
    "make",
    "make_expert",
    "make_single",
    "restore_episodes",
    "split_pixel_obs",
    "suite_of",
    "task_spec",
]
