"""Meta-World v3 tasks (metaworld 3.1.1): any MT1 task, and MT10 / MT50 with random goals.

Observation (39, float32), as Meta-World returns it::

    [0:3]   hand xyz            [3]     gripper opening
    [4:11]  object 1 pos+quat   [11:18] object 2 pos+quat (zero-padded)
    [18:36] the same 18 values for the previous frame
    [36:39] goal xyz (MT1 shows the goal)

Action (4): hand xyz delta and gripper, in [-1, 1].

Goals. Meta-World fixes 50 goals per *construction seed* (``MT1(name, seed)``); each reset draws
one of them. Here every env is built with its own seed, and the goal draw on ``reset(seed=s)``
comes from an rng seeded with ``s``, so an episode is reproducible from (construction seed,
reset seed). Training, evaluation and demonstration envs use disjoint seed ranges, so evaluation
runs on goals never seen in training.

Reward. ``reward="dense"`` is Meta-World's shaped reward (0..10 per step);
``reward="sparse"`` is 1.0 on the steps where ``info["success"]`` holds, else 0.
``terminate_on_success`` ends the episode (``terminated=True``) at the first success; that is
only a true terminal state with the sparse reward, and the factory refuses the combination of
dense reward and termination on success (the critic would learn that success loses reward).

MT10 / MT50: each reset first draws a task class uniformly, then one of its goals.
``one_hot=True`` appends the task's one-hot id to the observation (SODP pre-trains without it).
Their scripted expert (:class:`MultiTaskExpert`) follows the class the last reset drew.

Rendering. ``render_mode="rgb_array"`` (or ``pixels=True``) builds Meta-World's offscreen
renderer (``image_size`` square, its default camera) with shadows, reflections and multisampling
off (``envs.render.fast_render_model``: ~10x cheaper); ``env.render()`` draws a uint8 HxWx3 frame
of the current state, right side up. The observation stays the state vector. Control runs at
80 Hz (5 substeps of 2.5 ms), Meta-World's ``render_fps``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.base import TaskSpec
from envs.render import choose_gl, fast_render_model

OBS_DIM = 39
ACTION_DIM = 4
MAX_PATH_LENGTH = 500  # Meta-World raises if stepped past this without a reset


def _benchmark(task: str, seed: int) -> tuple[dict[str, type], list[Any]]:
    import metaworld

    if task in ("mt10", "mt50"):
        bench = metaworld.MT10(seed=seed) if task == "mt10" else metaworld.MT50(seed=seed)
    else:
        if task not in metaworld.ALL_V3_ENVIRONMENTS:
            raise ValueError(
                f"unknown Meta-World task {task!r}: expected one of mt10, mt50 or a v3 env name "
                f"such as 'reach-v3' (see metaworld.ALL_V3_ENVIRONMENTS)"
            )
        bench = metaworld.MT1(task, seed=seed)
    return dict(bench.train_classes), list(bench.train_tasks)


def metaworld_task_names() -> list[str]:
    import metaworld

    return sorted(metaworld.ALL_V3_ENVIRONMENTS) + ["mt10", "mt50"]


def metaworld_spec(task: str, max_episode_steps: int = 150, one_hot: bool = False) -> TaskSpec:
    n_tasks = {"mt10": 10, "mt50": 50}.get(task, 1)
    obs_dim = OBS_DIM + (n_tasks if one_hot else 0)
    return TaskSpec(
        name=task,
        suite="metaworld",
        obs_dim=obs_dim,
        action_dim=ACTION_DIM,
        max_episode_steps=max_episode_steps,
        obs_keys=("state",),
        # proprio: the robot's own state (hand xyz, gripper opening) for pixel observations
        extra={"num_tasks": n_tasks, "one_hot": one_hot, "proprio": (0, 4)},
    )


class MetaWorldEnv(gym.Env):
    """One Meta-World env (single task class, or a multi-task set) that follows envs/base.py."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 80}

    def __init__(
        self,
        task: str,
        seed: int,
        max_episode_steps: int = 150,
        reward: str = "dense",
        terminate_on_success: bool = False,
        one_hot: bool = False,
        pixels: bool = False,
        image_size: int = 84,
        render_mode: str | None = None,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if reward not in ("dense", "sparse"):
            raise ValueError(f"reward must be 'dense' or 'sparse', got {reward!r}")
        if reward == "dense" and terminate_on_success:
            raise ValueError(
                "terminate_on_success=True needs reward='sparse': with the dense reward, ending "
                "the episode at success removes the reward the task would still pay"
            )
        if not 1 <= max_episode_steps <= MAX_PATH_LENGTH:
            raise ValueError(f"max_episode_steps must be in [1, {MAX_PATH_LENGTH}]")
        classes, tasks = _benchmark(task, seed)
        self.task = task
        self.spec_ = metaworld_spec(task, max_episode_steps, one_hot)
        self._names = sorted(classes)
        self._tasks = {n: [t for t in tasks if t.env_name == n] for n in self._names}
        self.render_mode = "rgb_array" if pixels or render_mode else None
        render: dict[str, Any] = {}
        if self.render_mode:
            choose_gl()
            render = {"render_mode": "rgb_array", "width": image_size, "height": image_size}
        self._envs = {n: classes[n](**render) for n in self._names}
        for env in self._envs.values() if render else ():
            fast_render_model(env.model)
        for i, env in enumerate(self._envs.values()):
            env.seed(seed + i)
        self._active = self._names[0]
        self.max_episode_steps = max_episode_steps
        self.reward_mode = reward
        self.terminate_on_success = terminate_on_success
        self.one_hot = one_hot
        self._t = 0
        self.last_shaped_reward = 0.0
        self._goal_rng = np.random.default_rng(seed)
        self.observation_space = gym.spaces.Box(
            -np.inf, np.inf, (self.spec_.obs_dim,), dtype=np.float32
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), dtype=np.float32)

    @property
    def active_task(self) -> str:
        """The task class of the current episode (the MT1 env name, e.g. ``reach-v3``)."""
        return self._active

    @property
    def sim_env(self) -> Any:
        """The active Meta-World ``SawyerXYZEnv`` (for scripted experts and rendering)."""
        return self._envs[self._active]

    def _obs(self, raw: np.ndarray) -> np.ndarray:
        obs = np.asarray(raw, dtype=np.float32)
        if self.one_hot:
            hot = np.zeros(len(self._names), dtype=np.float32)
            hot[self._names.index(self._active)] = 1.0
            obs = np.concatenate([obs, hot])
        return obs

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            self._goal_rng = np.random.default_rng(seed)
            for i, env in enumerate(self._envs.values()):
                env.seed(seed + i)
        self._active = self._names[int(self._goal_rng.integers(len(self._names)))]
        tasks = self._tasks[self._active]
        env = self.sim_env
        env.set_task(tasks[int(self._goal_rng.integers(len(tasks)))])
        raw, _ = env.reset()
        self._t = 0
        return self._obs(raw), {"success": False, "task_name": self._active}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        raw, reward, _, _, info = self.sim_env.step(action)
        self._t += 1
        self.last_shaped_reward = float(reward)  # Meta-World's dense reward, whatever the mode
        success = bool(info["success"] > 0.5)
        if self.reward_mode == "sparse":
            reward = float(success)
        terminated = success and self.terminate_on_success
        truncated = self._t >= self.max_episode_steps and not terminated
        out = {"success": success, "task_name": self._active}
        return self._obs(raw), float(reward), terminated, truncated, out

    def snapshot(self) -> dict[str, Any]:
        """Everything a :meth:`restore` needs to continue this episode from here exactly (the
        simulator's integration state, mocap targets included, and the episode's counters):
        for probing several actions from one state."""
        import mujoco

        env = self.sim_env
        kind = mujoco.mjtState.mjSTATE_INTEGRATION
        physics = np.empty(mujoco.mj_stateSize(env.model, kind))
        mujoco.mj_getState(env.model, env.data, physics, kind)
        return {
            "task": self._active,
            "physics": physics,
            "prev_obs": np.copy(env._prev_obs),
            "last_stable_obs": np.copy(env._last_stable_obs),
            "path_length": env.curr_path_length,
            "t": self._t,
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Return to a :meth:`snapshot` of the current episode."""
        import mujoco

        if snap["task"] != self._active:
            raise ValueError(f"snapshot of task {snap['task']!r}, env is on {self._active!r}")
        env = self.sim_env
        kind = mujoco.mjtState.mjSTATE_INTEGRATION
        mujoco.mj_setState(env.model, env.data, snap["physics"], kind)
        mujoco.mj_forward(env.model, env.data)  # positions, contacts, sites of the state
        # mj_forward overwrote the solver's warm start with its own accelerations; the next
        # step must start from the snapshot's, or contact-rich steps differ slightly
        mujoco.mj_setState(env.model, env.data, snap["physics"], kind)
        env._prev_obs = np.copy(snap["prev_obs"])
        env._last_stable_obs = np.copy(snap["last_stable_obs"])
        env.curr_path_length = snap["path_length"]
        self._t = snap["t"]

    def render(self) -> np.ndarray:
        frame = self.sim_env.render()
        return np.asarray(frame)[::-1].copy()  # Meta-World frames come upside down

    def close(self) -> None:
        for env in self._envs.values():
            env.close()


def make_metaworld_env(
    task: str,
    seed: int,
    max_episode_steps: int | None = None,
    pixels: bool = False,
    image_size: int = 84,
    render_mode: str | None = None,
    **kwargs: Any,
) -> gym.Env:
    """Factory for :class:`MetaWorldEnv` (see the module docstring for reward and goals)."""
    return MetaWorldEnv(
        task,
        seed,
        max_episode_steps=max_episode_steps or 150,
        pixels=pixels,
        image_size=image_size,
        render_mode=render_mode,
        **kwargs,
    )


def make_metaworld_expert(task: str, jitter: float = 0.0) -> Any:
    """The scripted policy Meta-World ships for ``task``; for ``mt10`` / ``mt50`` the one of
    each episode's task class (:class:`MultiTaskExpert`)."""
    if task in ("mt10", "mt50"):
        return MultiTaskExpert(multi_task_names(task), jitter)
    return MetaWorldExpert(task, jitter)


def multi_task_names(task: str) -> list[str]:
    """The task classes of ``mt10`` / ``mt50``, sorted (without building the benchmark, which
    samples every class's goals and takes seconds)."""
    from metaworld import env_dict

    table = {"mt10": env_dict.MT10_V3, "mt50": env_dict.MT50_V3}
    if task not in table:
        raise ValueError(f"multi_task_names: {task!r} is not mt10 or mt50")
    return sorted(table[task])


class MetaWorldExpert:
    """Wraps ``metaworld.policies.ENV_POLICY_MAP[task]`` in the ScriptedExpert protocol.

    Raw expert actions often exceed +-1; they are clipped here. ``jitter`` perturbs the goal the
    expert sees (std in metres), which makes it miss systematically rather than jitter per step.
    """

    def __init__(self, task: str, jitter: float = 0.0) -> None:
        from metaworld.policies import ENV_POLICY_MAP

        if task not in ENV_POLICY_MAP:
            raise ValueError(f"no scripted Meta-World expert for {task!r}")
        self.policy = ENV_POLICY_MAP[task]()
        self.jitter = jitter
        self._offset = np.zeros(3)

    def reset(self, env: gym.Env, rng: np.random.Generator) -> None:
        self._offset = rng.normal(0.0, self.jitter, 3) if self.jitter > 0 else np.zeros(3)

    def act(self, obs: np.ndarray) -> np.ndarray:
        obs = np.array(obs[:OBS_DIM], dtype=np.float64)
        obs[36:39] += self._offset
        return np.clip(self.policy.get_action(obs), -1.0, 1.0).astype(np.float32)


class MultiTaskExpert:
    """The scripted expert of an MT10 / MT50 env: at each ``reset`` it takes the shipped policy
    of the class the env drew (``MetaWorldEnv.active_task``); the observation carries no task
    id, so the expert needs the env to know which policy acts."""

    def __init__(self, tasks: list[str], jitter: float = 0.0) -> None:
        self.experts = {name: MetaWorldExpert(name, jitter) for name in tasks}
        self.task = tasks[0]

    def reset(self, env: gym.Env, rng: np.random.Generator) -> None:
        task = env.unwrapped.active_task
        if task not in self.experts:
            raise ValueError(f"MultiTaskExpert: no expert for the env's task {task!r}")
        self.task = task
        self.experts[task].reset(env, rng)

    def act(self, obs: np.ndarray) -> np.ndarray:
        return self.experts[self.task].act(obs)
