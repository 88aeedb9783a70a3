"""Franka Kitchen (gymnasium-robotics ``FrankaKitchen-v1``) as the D4RL kitchen task sets.

d4rl cannot be installed here (it needs mujoco-py / MuJoCo 2.1); gymnasium-robotics 1.4.2
``FrankaKitchen-v1`` (MuJoCo 3.3.0) is the maintained port of the same scene, robot, goals and
completion rule (``BONUS_THRESH = 0.3``).

Task sets, as D4RL's ``d4rl/kitchen/__init__.py`` and ``kitchen_envs.py`` register them::

    name              D4RL id              D4RL env class
    kitchen-complete  kitchen-complete-v0  KitchenMicrowaveKettleLightSliderV0
    kitchen-partial   kitchen-partial-v0   KitchenMicrowaveKettleLightSliderV0
    kitchen-mixed     kitchen-mixed-v0     KitchenMicrowaveKettleBottomBurnerLightV0

    goal subtasks: complete, partial  microwave, kettle, light switch, slide cabinet
                   mixed              microwave, kettle, bottom burner, light switch

complete and partial share the env and the goal; they differ only in the dataset:
complete = ``mini_kitchen_microwave_kettle_light_slider-v0`` (a few demos that all do the four
goal subtasks in order), partial = ``kitchen_microwave_kettle_light_slider-v0`` (the whole play
set of undirected demos, a subset of which solves the goal). mixed uses
``kitchen_microwave_kettle_bottomburner_light-v0``: undirected demos, none of which solves all four
goal subtasks. The names are kept in :data:`KITCHEN_TASKS` ``extra``.

Observation (59, float32): FrankaKitchen-v1 returns a dict with ``observation``,
``achieved_goal`` and ``desired_goal``; only the ``observation`` vector is used (as in D4RL)::

    [0:9]   robot qpos: 7 arm joints (rad), 2 finger slides (m)
    [9:18]  robot qvel: the same 9 joints
    [18:39] object qpos (MuJoCo qpos[9:30]):
            18 bottom-right knob  19 bottom-right burner  20 bottom-left knob  21 bottom-left burner
            22 top-right knob     23 top-right burner     24 top-left knob     25 top-left burner
            26 light switch       27 light slide          28 slide cabinet
            29 left hinge door     30 right hinge door      31 microwave door
            32:35 kettle xyz       35:39 kettle quaternion (w, x, y, z: MuJoCo order)
    [39:59] object qvel (MuJoCo qvel[9:29]): the same joints, kettle linear then angular velocity

The values carry FrankaKitchen-v1's uniform observation noise (robot: 1e-3 rad amplitude,
objects: 5e-4 x amplitude). The robot controller adds the target velocity to the *noisy* joint
reading, so the noise also perturbs the dynamics; it is the only randomness in the task: the
initial state is fixed (as in D4RL), and ``reset(seed=s)`` makes the noise, hence the episode, a
function of ``s``. ``reset()`` without a seed continues the generator (the first one uses the
factory's ``seed``).

Action (9) in [-1, 1]: target joint velocities, 7 arm + 2 fingers, scaled by 2 (rad/s, m/s);
each 0.08 s step (40 x 2 ms) the position servos are sent ``qpos_noisy + 2 * a * 0.08``, clipped
to the joint limits.

Reward: the number of goal subtasks completed at this step (FrankaKitchen-v1 / D4RL): a subtask
counts once, the first time its joints come within 0.3 (L2) of the goal, and is then removed,
even if it is undone later. ``info["num_subtasks"]`` is the number completed so far in this
sense (so the return equals it), ``info["success"]`` is that all goal subtasks are done, and
``info["num_subtasks_now"]`` counts the goal subtasks whose joints are within the threshold at
this step (OTPR scores the maximum of that over an episode). ``terminated`` is set when all goal
subtasks are done (``terminate_on_success``, D4RL's ``TERMINATE_ON_TASK_COMPLETE = True``): no
reward is left, so it is a true terminal state. ``truncated`` is set at ``max_episode_steps``
(D4RL: 280 steps = 22.4 s).

Pixels: ``pixels=True`` (or ``render_mode="rgb_array"``) builds the offscreen renderer
(``image_size`` square, the default free camera of FrankaKitchen-v1) with shadows, reflections
and multisampling switched off in the model (~20 ms a frame on two CPU cores instead of
~480-740 ms); ``env.render()`` returns a uint8 HxWx3 frame (``MUJOCO_GL``: egl, else osmesa when
unset, ``envs.render.choose_gl``). The observation stays the state vector.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from envs.base import TaskSpec
from envs.render import choose_gl, fast_render_model

OBS_DIM = 59
ACTION_DIM = 9
D4RL_HORIZON = 280
COMPLETION_THRESHOLD = 0.3  # BONUS_THRESH of D4RL and FrankaKitchen-v1

OBS_SLICES: dict[str, tuple[int, int]] = {
    "robot_qpos": (0, 9),
    "robot_qvel": (9, 18),
    "object_qpos": (18, 39),
    "object_qvel": (39, 59),
}

_SETS: dict[str, tuple[tuple[str, ...], str, str, str]] = {
    "kitchen-complete": (
        ("microwave", "kettle", "light switch", "slide cabinet"),
        "kitchen-complete-v0",
        "mini_kitchen_microwave_kettle_light_slider-v0",
        "few demos, each doing the four goal subtasks in order",
    ),
    "kitchen-partial": (
        ("microwave", "kettle", "light switch", "slide cabinet"),
        "kitchen-partial-v0",
        "kitchen_microwave_kettle_light_slider-v0",
        "undirected play demos; a subset solves the goal",
    ),
    "kitchen-mixed": (
        ("microwave", "kettle", "bottom burner", "light switch"),
        "kitchen-mixed-v0",
        "kitchen_microwave_kettle_bottomburner_light-v0",
        "undirected play demos; none solves the whole goal",
    ),
}

KITCHEN_TASKS: dict[str, TaskSpec] = {
    name: TaskSpec(
        name=name,
        suite="kitchen",
        obs_dim=OBS_DIM,
        action_dim=ACTION_DIM,
        max_episode_steps=D4RL_HORIZON,
        obs_keys=tuple(OBS_SLICES),
        extra={
            "subtasks": subtasks,
            "d4rl_id": d4rl_id,
            "d4rl_dataset": dataset,
            "dataset_note": note,
            "obs_slices": dict(OBS_SLICES),
            "obs_key_dims": {key: b - a for key, (a, b) in OBS_SLICES.items()},
            "proprio": OBS_SLICES["robot_qpos"],  # the robot's own state, for pixel observations
        },
    )
    for name, (subtasks, d4rl_id, dataset, note) in _SETS.items()
}


def _import_kitchen() -> type:
    try:
        from gymnasium_robotics.envs.franka_kitchen import KitchenEnv as RoboticsKitchenEnv
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError(
            "Franka Kitchen needs gymnasium-robotics (pip install 'otpr[kitchen]', "
            "gymnasium-robotics>=1.4,<1.5 with mujoco==3.3.0)"
        ) from e
    return RoboticsKitchenEnv


class KitchenEnv(gym.Env):
    """One D4RL kitchen task set on FrankaKitchen-v1 that follows envs/base.py."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 12}

    def __init__(
        self,
        task: str,
        seed: int,
        max_episode_steps: int = D4RL_HORIZON,
        terminate_on_success: bool = True,
        pixels: bool = False,
        image_size: int = 84,
        render_mode: str | None = None,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if task not in KITCHEN_TASKS:
            raise ValueError(
                f"unknown kitchen task {task!r}: expected one of {list(KITCHEN_TASKS)}"
            )
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8 pixels, got {image_size}")
        self.task = task
        self.spec_ = KITCHEN_TASKS[task]
        self.subtasks: tuple[str, ...] = self.spec_.extra["subtasks"]
        self.max_episode_steps = max_episode_steps
        self.terminate_on_success = terminate_on_success
        self.pixels = pixels
        self.render_mode = "rgb_array" if pixels or render_mode else None
        render: dict[str, Any] = {}
        if self.render_mode:
            choose_gl()
            render = {"render_mode": "rgb_array", "width": image_size, "height": image_size}
        robotics_env = _import_kitchen()
        self._sim_env = robotics_env(
            tasks_to_complete=list(self.subtasks),
            terminate_on_tasks_completed=False,  # decided here, from terminate_on_success
            remove_task_when_completed=True,
            **render,
        )
        if self.render_mode:
            fast_render_model(self._sim_env.model)
        self._seed = int(seed)
        self._seeded = False
        self._t = 0
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), dtype=np.float32)
        self.action_space.seed(self._seed)

    @property
    def sim_env(self) -> Any:
        """The gymnasium-robotics ``KitchenEnv`` (``.model``, ``.data``) for experts."""
        return self._sim_env

    @property
    def model(self) -> Any:
        return self._sim_env.model

    @property
    def data(self) -> Any:
        return self._sim_env.data

    def subtask_distances(self) -> dict[str, float]:
        """L2 distance of each goal subtask's joints to its goal (true state, no noise)."""
        from gymnasium_robotics.envs.franka_kitchen.kitchen_env import (
            OBS_ELEMENT_GOALS,
            OBS_ELEMENT_INDICES,
        )

        qpos = self._sim_env.data.qpos
        return {
            t: float(np.linalg.norm(qpos[OBS_ELEMENT_INDICES[t]] - OBS_ELEMENT_GOALS[t]))
            for t in self.subtasks
        }

    def _info(self, raw: dict[str, Any]) -> dict[str, Any]:
        done = list(raw.get("episode_task_completions", []))
        now = sum(d < COMPLETION_THRESHOLD for d in self.subtask_distances().values())
        return {
            "success": len(done) == len(self.subtasks),
            "num_subtasks": len(done),
            "num_subtasks_now": int(now),
            "completed_subtasks": tuple(done),
            "step_subtasks": tuple(raw.get("step_task_completions", [])),
        }

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        if seed is None and not self._seeded:
            seed = self._seed
        if seed is not None:
            self._seeded = True
        super().reset(seed=seed)
        raw, raw_info = self._sim_env.reset(seed=seed)
        self._t = 0
        return np.asarray(raw["observation"], dtype=np.float32), self._info(raw_info)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_DIM,):
            raise ValueError(
                f"{self.task}: action must have shape ({ACTION_DIM},) (7 arm + 2 finger joint "
                f"velocities in [-1, 1]), got {action.shape}"
            )
        raw, reward, _, _, raw_info = self._sim_env.step(np.clip(action, -1.0, 1.0))
        self._t += 1
        info = self._info(raw_info)
        terminated = bool(info["success"] and self.terminate_on_success)
        truncated = self._t >= self.max_episode_steps and not terminated
        obs = np.asarray(raw["observation"], dtype=np.float32)
        return obs, float(reward), terminated, truncated, info

    def render(self) -> np.ndarray:
        if self.render_mode is None:
            raise RuntimeError(
                f"{self.task}: render() needs the env built with pixels=True or "
                "render_mode='rgb_array'"
            )
        return np.asarray(self._sim_env.render(), dtype=np.uint8).copy()

    def close(self) -> None:
        self._sim_env.close()


def make_kitchen_env(
    task: str,
    seed: int,
    max_episode_steps: int | None = None,
    pixels: bool = False,
    image_size: int = 84,
    terminate_on_success: bool = True,
    render_mode: str | None = None,
) -> gym.Env:
    """Factory for :class:`KitchenEnv`; ``max_episode_steps=None`` takes D4RL's 280."""
    return KitchenEnv(
        task,
        seed,
        max_episode_steps=max_episode_steps or D4RL_HORIZON,
        terminate_on_success=terminate_on_success,
        pixels=pixels,
        image_size=image_size,
        render_mode=render_mode,
    )
