"""Wrappers that turn a raw task env into what a chunked diffusion policy consumes.

Observation history and action chunks (T_o = obs_history, T_a = act_steps, H >= T_a is the
policy's prediction horizon, chosen by the policy, not here)::

    env step:     t-2   t-1    t    t+1   t+2   t+3
    observations:  o     o     o                        <- last T_o = 3 stacked, oldest first
    actions:                   a     a     a     a      <- the policy predicts H = 4 ...
    executed:                  a     a                  <- ... and the env runs T_a = 2 of them

At the first step of an episode the history is padded by repeating the first observation.
One wrapper step runs up to T_a env steps and stops early when the episode ends.

A training member is ``ChunkedEnv -> ResumableEpisodes [-> RetryFailedStarts]``: every episode
starts from a seeded reset and its executed chunks are recorded, so the member's state is data
(``episode_state``) that a fresh member re-creates by replay (``restore_episode``). A filming
member puts :class:`RecordFrames` under the ``ChunkedEnv``, so that every env step is a frame.
"""

from __future__ import annotations

from collections import deque
from typing import Any

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


class ResumableEpisodes(gym.Wrapper):
    """Makes every episode a function of a seed and records what it executed, so that the
    member's state is plain data that a freshly built member re-creates exactly.

    ``reset(seed=s)`` starts from ``s`` and re-seeds the wrapper's own generator; ``reset()``
    without a seed (the vector env's autoreset) becomes ``reset(seed=s)`` with ``s`` drawn from
    that generator. Each suite's seeded reset fixes the episode's start (envs/base.py: object
    placement, goal, noise stream), and MuJoCo steps deterministically on one machine, so the
    seed and the chunks executed since are the episode so far::

        episode_state()  -> {"seed": s, "rng": <this wrapper's generator>, "actions": [chunk, ...]}
        restore_episode(state)   reset(seed=s), step every chunk, restore the generator;
                                 returns {"obs": the observation now, "ended_at": None, or
                                 the chunk at which the replay ended an episode the recording
                                 had not ended}, for the caller to compare and report

    Wrap a ``ChunkedEnv`` (a recorded action is one chunk). For a vector env, set each member's
    state with ``set_attr("pending_episode", states)`` and call ``restore_episode`` with no
    argument (``envs.restore_episodes``). Resets with ``options`` cannot be recorded.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._rng = np.random.default_rng(0)
        self._seed: int | None = None
        self._actions: list[np.ndarray] = []
        self._with_options = False
        self.pending_episode: dict[str, Any] | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is None:
            seed = int(self._rng.integers(2**31 - 1))
        else:
            self._rng = np.random.default_rng(seed)
        self._seed, self._actions = int(seed), []
        self._with_options = options is not None
        return self.env.reset(seed=self._seed, options=options)

    def step(self, action: np.ndarray):
        out = self.env.step(action)
        self._actions.append(np.array(action, dtype=np.float32))
        return out

    def episode_state(self) -> dict[str, Any]:
        """The episode so far as JSON-able data (float32 chunks as lists: exact)."""
        if self._seed is None:
            raise RuntimeError("ResumableEpisodes: no episode yet (call reset first)")
        if self._with_options:
            raise RuntimeError("ResumableEpisodes: an episode reset with options can't be saved")
        return {
            "seed": self._seed,
            "rng": self._rng.bit_generator.state,
            "actions": [a.tolist() for a in self._actions],
        }

    def restore_episode(self, state: dict[str, Any] | None = None) -> dict[str, Any]:
        """Re-create an :meth:`episode_state` (default: ``pending_episode``)."""
        if state is None:
            state, self.pending_episode = self.pending_episode, None
        if state is None:
            raise RuntimeError("ResumableEpisodes.restore_episode: no state given or pending")
        obs, _ = self.reset(seed=int(state["seed"]))
        ended_at = None
        for k, chunk in enumerate(state["actions"]):
            obs, _, terminated, truncated, _ = self.step(np.asarray(chunk, dtype=np.float32))
            if terminated or truncated:
                ended_at = k + 1
                break
        self._rng.bit_generator.state = state["rng"]
        return {"obs": obs, "ended_at": ended_at}


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

    # Resuming (wrapping a ResumableEpisodes): this wrapper's counters beside the episode.
    def episode_state(self) -> dict[str, Any]:
        retry = {
            "rng": self._rng.bit_generator.state,
            "start_seed": self._start_seed,
            "attempt": self._attempt,
            "failed": self._failed,
        }
        return {**self.env.get_wrapper_attr("episode_state")(), "retry": retry}

    def restore_episode(self, state: dict[str, Any] | None = None) -> dict[str, Any]:
        if state is None:
            state = self.env.get_wrapper_attr("pending_episode")
            self.env.set_wrapper_attr("pending_episode", None)
        out = self.env.get_wrapper_attr("restore_episode")(state)
        retry = state["retry"]
        self._rng.bit_generator.state = retry["rng"]
        self._start_seed, self._attempt = int(retry["start_seed"]), int(retry["attempt"])
        self._failed = bool(retry["failed"])
        return out


class RecordFrames(gym.Wrapper):
    """Renders ``env.render()`` after the reset and after every step of the episodes it is
    asked to film, and hands the frames out with :meth:`pop_frames`; observations, rewards and
    infos pass through untouched.

    Episodes are counted from the last seeded reset: ``reset(seed=s)`` starts episode 0 (and
    drops frames not yet taken), each reset without a seed (a vector env's autoreset) the next
    one. The first ``film_episodes`` episodes are filmed (set it per member of a vector env with
    ``set_attr("film_episodes", [...])``); the others render nothing, so they cost nothing. An
    episode of T steps gives T + 1 frames::

        reset        step 1      step 2   ...  step T
        frame 0      frame 1     frame 2       frame T     (each tagged with its episode)

    Wrap the raw env (under ``ChunkedEnv``) built with ``render_mode="rgb_array"``; a failure to
    render is raised as ``envs.render.RenderError`` naming ``MUJOCO_GL``.
    """

    def __init__(self, env: gym.Env, film_episodes: int = 0) -> None:
        super().__init__(env)
        self.film_episodes = film_episodes
        self._episode = -1
        self._frames: list[tuple[int, np.ndarray]] = []

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        if seed is not None:
            self._episode, self._frames = 0, []
        else:
            self._episode += 1
        self._capture()
        return obs, info

    def step(self, action: np.ndarray):
        out = self.env.step(action)
        self._capture()
        return out

    def _capture(self) -> None:
        if not 0 <= self._episode < self.film_episodes:
            return
        from envs.render import render_failure

        try:
            frame = self.env.render()
        except Exception as err:
            raise render_failure(err) from err
        self._frames.append((self._episode, np.asarray(frame, dtype=np.uint8)))

    def pop_frames(self) -> list[tuple[int, np.ndarray]]:
        """The frames rendered since the last call, oldest first, as (episode, HxWx3 uint8)."""
        frames, self._frames = self._frames, []
        return frames


class PixelObservation(gym.Wrapper):
    """Makes the observation the rendered frame, flattened, then optionally the robot's own
    state: ``[frame.ravel() (H*W*3 values 0..255), obs[lo:hi]]`` as float32, so that the
    chunking, the vector env and episode replay carry it like any flat observation. The frame
    is the env's ``render()`` of the state the observation describes (build the env with
    ``pixels=True``); :func:`split_pixel_obs` takes the two parts apart again.

    ``proprio=(lo, hi)`` is the slice of the low-dim observation to keep (each suite names it in
    ``TaskSpec.extra["proprio"]``); None keeps the frame alone.
    """

    def __init__(self, env: gym.Env, image_size: int, proprio: tuple[int, int] | None) -> None:
        super().__init__(env)
        if env.render_mode != "rgb_array":
            raise ValueError("PixelObservation: build the env with pixels=True (it renders)")
        self.image_size = int(image_size)
        self.proprio = None if proprio is None else (int(proprio[0]), int(proprio[1]))
        width = 0 if self.proprio is None else self.proprio[1] - self.proprio[0]
        dim = self.image_size * self.image_size * 3 + width
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (dim,), dtype=np.float32)

    def _pixels(self, obs: np.ndarray) -> np.ndarray:
        frame = np.asarray(self.env.render(), dtype=np.float32).ravel()
        if self.proprio is None:
            return frame
        lo, hi = self.proprio
        return np.concatenate([frame, np.asarray(obs, np.float32)[lo:hi]])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self._pixels(obs), info

    def step(self, action: np.ndarray):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._pixels(obs), reward, terminated, truncated, info


def split_pixel_obs(obs: np.ndarray, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """[..., H*W*3 + P] observations of :class:`PixelObservation` -> (frames [..., H, W, 3]
    uint8, proprio [..., P] float32)."""
    n = image_size * image_size * 3
    frames = obs[..., :n].reshape(*obs.shape[:-1], image_size, image_size, 3)
    return frames.astype(np.uint8), obs[..., n:].astype(np.float32)
