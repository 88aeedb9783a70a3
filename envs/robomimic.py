"""Robomimic tasks on robosuite 1.5.2: ``lift`` (Lift), ``can`` (PickPlaceCan), ``square``
(NutAssemblySquare), built with robosuite directly (robomimic's own wrapper needs ``mujoco_py``).

Robot and control. One Panda arm with the OSC_POSE controller as robomimic uses it (robosuite's
``default_panda.json``, the same as ``refactor_composite_controller_config(OSC_POSE, "Panda",
["right"])``), 20 Hz. Action (7, in [-1, 1])::

    [0:3]  eef position delta, x 0.05 m per unit (controller ``output_max``), base frame
    [3:6]  eef rotation delta as an axis-angle vector, x 0.5 rad per unit, base frame
    [6]    gripper: -1 open, +1 close

The Panda base is not rotated against the world in these tasks, so "base frame" is the world's
axes.

Observation (float32), robomimic's low-dim keys concatenated in this fixed order::

    object               robosuite's "object-state" (lift 10, can 14, square 14)
    robot0_eef_pos       3   (eef site position, world frame)
    robot0_eef_quat      4   (x, y, z, w)
    robot0_gripper_qpos  2   (finger joint positions)

so ``obs_dim`` is 19 (lift) or 23 (can, square). The object block is, in robosuite 1.5's order:

    lift:   cube_pos 3, cube_quat 4, gripper_to_cube_pos 3
    can:    Can_to_robot0_eef_pos 3, Can_to_robot0_eef_quat 4, Can_pos 3, Can_quat 4
    square: SquareNut_to_robot0_eef_pos 3, SquareNut_to_robot0_eef_quat 4, SquareNut_pos 3,
            SquareNut_quat 4

(robomimic's 1.2-era datasets put ``*_pos, *_quat`` first). The sub-keys and their slices of the
flat vector are in ``TaskSpec.extra["object_keys"]`` and ``extra["obs_slices"]``; the env checks
robosuite's order against them when it is built.

Observations are the state at the end of the control step. robosuite's ``step`` itself returns
observables sampled on the first physics substep (2 ms into the 50 ms step: one step stale, up to
~5 mm of eef motion) and computes the ``*_to_robot0_eef_*`` sensors from the previous pass's
cache (zeros right after a reset); here the observables are re-evaluated twice after every
reset and step (~0.5 ms), which is what robomimic's dataset extraction gets with
``force_update=True``.

Reward and episodes. Sparse: ``reward = 1.0`` on the steps where ``env._check_success()`` holds,
else 0; ``info["success"]`` is that flag. Episodes do not end on success unless
``terminate_on_success=True`` (``terminated`` then marks the first successful step). Robosuite's
own horizon is disabled (``ignore_done=True``); the time limit is applied here, and ``truncated``
is set on step ``max_episode_steps``. Default horizons: lift 200, can 300, square 400 steps
(10, 15 and 20 s). Robomimic's proficient-human demos take about 50, 120 and 150 steps, and
DPPO evaluates with 300 / 300 / 400; lift gets a shorter limit since it is done in ~50 steps.

Seeding. ``reset(seed=s)`` re-seeds, in place, the one ``numpy.random.Generator`` that robosuite
hands to its placement samplers and to the robot's joint initialisation noise, so the object
placement (position and yaw) and the initial arm pose are a function of ``s`` alone;
``reset()`` without a seed continues that generator. Resets are soft (``hard_reset=False``,
~4 ms instead of ~0.8 s): the model is built once, so model-level randomness drawn at build time
(Lift's cube size, uniform in [0.020, 0.022] m half-extent) is fixed by the construction seed.
``hard_reset=True`` (``task.env_kwargs.hard_reset=true``) rebuilds the model on every reset
instead. A soft reset leaves nothing behind that matters: an env that has run full
grasp-and-place episodes replays a seeded episode bit for bit like a fresh one (tested).

Pixels. ``pixels=True`` also renders a camera (``camera``, default ``agentview``;
``image_size`` square, uint8 HxWx3, flipped right side up: MuJoCo's rows come bottom-up) after
every reset and step, returned in ``info[camera]`` and by ``env.render()``; the observation
stays the low-dim vector (``envs.make(..., pixel_obs=True)`` makes the frame the observation).
``render_mode="rgb_array"`` alone builds the offscreen renderer and draws the agentview frame
only when ``env.render()`` is called (a video of some episodes costs only their frames).
Frames are drawn with reflections and multisampling off (``fast_render=True``,
``envs.render.fast_render_model``; robosuite's lights cast no shadows anyway): an 84x84
agentview frame costs ~30 ms instead of ~67 ms on two busy cores, and differs from robosuite's
default look by ~0.5 of 255 per pixel on average. A policy trained on images rendered with
robosuite's defaults (robomimic's released image datasets) should be fine-tuned with
``task.env_kwargs.fast_render=false``, so that it sees the same look.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np

from envs.base import TaskSpec
from envs.render import choose_gl, fast_render_model

ACTION_DIM = 7
CONTROL_FREQ = 20
ROBOT_KEYS: tuple[tuple[str, int], ...] = (
    ("robot0_eef_pos", 3),
    ("robot0_eef_quat", 4),
    ("robot0_gripper_qpos", 2),
)
# robosuite env class, default horizon, and the sub-keys of "object-state" in robosuite's order
_TASKS: dict[str, tuple[str, int, tuple[tuple[str, int], ...]]] = {
    "lift": ("Lift", 200, (("cube_pos", 3), ("cube_quat", 4), ("gripper_to_cube_pos", 3))),
    "can": (
        "PickPlaceCan",
        300,
        (
            ("Can_to_robot0_eef_pos", 3),
            ("Can_to_robot0_eef_quat", 4),
            ("Can_pos", 3),
            ("Can_quat", 4),
        ),
    ),
    "square": (
        "NutAssemblySquare",
        400,
        (
            ("SquareNut_to_robot0_eef_pos", 3),
            ("SquareNut_to_robot0_eef_quat", 4),
            ("SquareNut_pos", 3),
            ("SquareNut_quat", 4),
        ),
    ),
}


def _spec(task: str) -> TaskSpec:
    env_name, horizon, object_keys = _TASKS[task]
    object_dim = sum(d for _, d in object_keys)
    key_dims = (("object", object_dim),) + ROBOT_KEYS
    slices, start = {}, 0
    for key, dim in key_dims:
        slices[key] = (start, start + dim)
        start += dim
    start = 0
    for key, dim in object_keys:
        slices[key] = (start, start + dim)  # object sub-keys index the same flat vector
        start += dim
    return TaskSpec(
        name=task,
        suite="robomimic",
        obs_dim=sum(d for _, d in key_dims),
        action_dim=ACTION_DIM,
        max_episode_steps=horizon,
        obs_keys=tuple(k for k, _ in key_dims),
        extra={
            "robosuite_env": env_name,
            "robot": "Panda",
            "controller": "OSC_POSE",
            "control_freq": CONTROL_FREQ,
            "obs_key_dims": dict(key_dims),
            "object_keys": dict(object_keys),
            "obs_slices": slices,
            # the robot's own state (eef pose, gripper), for pixel observations
            "proprio": (object_dim, object_dim + sum(d for _, d in ROBOT_KEYS)),
        },
    )


ROBOMIMIC_TASKS: dict[str, TaskSpec] = {task: _spec(task) for task in _TASKS}


def osc_pose_controller_config() -> dict[str, Any]:
    """Robosuite 1.5 composite config: BASIC with OSC_POSE on the Panda's right (only) arm."""
    from robosuite.controllers import load_part_controller_config
    from robosuite.controllers.composite.composite_controller_factory import (
        refactor_composite_controller_config,
    )

    arm = load_part_controller_config(default_controller="OSC_POSE")
    return refactor_composite_controller_config(arm, "Panda", ["right"])


class RobomimicEnv(gym.Env):
    """One robosuite task (lift, can, square) that follows envs/base.py; see the module doc."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_FREQ}

    def __init__(
        self,
        task: str,
        seed: int,
        max_episode_steps: int | None = None,
        pixels: bool = False,
        image_size: int = 84,
        terminate_on_success: bool = False,
        hard_reset: bool = False,
        render_mode: str | None = None,
        camera: str = "agentview",
        fast_render: bool = True,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if task not in ROBOMIMIC_TASKS:
            raise ValueError(f"unknown robomimic task {task!r}: expected one of {list(_TASKS)}")
        spec = ROBOMIMIC_TASKS[task]
        if max_episode_steps is None:
            max_episode_steps = spec.max_episode_steps
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8 pixels, got {image_size}")
        self.render_mode = "rgb_array" if pixels or render_mode else None
        if self.render_mode:
            choose_gl()  # before robosuite's import, which fixes its backend (egl if unset)
        import robosuite

        self.task = task
        self.spec_ = spec
        self.max_episode_steps = int(max_episode_steps)
        self.pixels = pixels
        self.terminate_on_success = terminate_on_success
        self._sim_env = robosuite.make(
            spec.extra["robosuite_env"],
            robots="Panda",
            controller_configs=osc_pose_controller_config(),
            has_renderer=False,
            has_offscreen_renderer=self.render_mode is not None,
            use_camera_obs=False,  # frames are rendered in _observe, after the step
            reward_shaping=False,
            control_freq=CONTROL_FREQ,
            ignore_done=True,
            hard_reset=bool(hard_reset),
            seed=int(seed),
        )
        self.image_size = int(image_size)
        cameras = list(self._sim_env.sim.model.camera_names)
        if camera not in cameras:
            raise ValueError(f"{task}: no camera {camera!r}; robosuite has {cameras}")
        self.camera = camera
        self.fast_render = bool(fast_render)
        self._object_keys = tuple(spec.extra["object_keys"])
        self._check_layout()
        self._t = 0
        self._started = False
        self._frame: np.ndarray | None = None  # the agentview frame of the current state
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (spec.obs_dim,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), dtype=np.float32)

    @property
    def sim_env(self) -> Any:
        """The robosuite env (``.sim``, ``.robots``, object body ids) for experts and rendering."""
        return self._sim_env

    def _check_layout(self) -> None:
        env = self._sim_env
        active = [
            name
            for name, obs in env._observables.items()
            if obs.modality == "object" and obs.is_active() and obs.is_enabled()
        ]
        if tuple(active) != self._object_keys:
            raise RuntimeError(
                f"robosuite's object-state for {self.task!r} is {active}, but envs/robomimic.py "
                f"documents {list(self._object_keys)}: update _TASKS for this robosuite version"
            )
        if env.action_dim != ACTION_DIM:
            raise RuntimeError(f"expected a {ACTION_DIM}-D OSC_POSE action, got {env.action_dim}")

    def _flat(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        parts = [raw["object-state"]] + [raw[k] for k, _ in ROBOT_KEYS]
        return np.concatenate(parts).astype(np.float32)

    def _observe(self, info: dict[str, Any]) -> np.ndarray:
        """The flat observation of the current sim state (and the agentview frame if pixels).

        robosuite's own step returns observables sampled on the first physics substep of the
        control step (one control step stale) and its relative sensors read the previous cache;
        two forced passes give the state at the end of the step, as robomimic's dataset
        extraction (``force_update=True``) does.
        """
        self._sim_env._get_observations(force_update=True)
        raw = self._sim_env._get_observations(force_update=True)
        self._frame = None
        if self.pixels:
            self._frame = self._agentview()
            info[self.camera] = self._frame
        return self._flat(raw)

    def _agentview(self) -> np.ndarray:
        size = self.image_size
        frame = self._sim_env.sim.render(width=size, height=size, camera_name=self.camera)
        return np.ascontiguousarray(frame[::-1])  # MuJoCo's rows run bottom-up

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if seed is not None:
            # robosuite's samplers and robot hold references to this one Generator: re-seed it
            # in place rather than replacing it.
            fresh = np.random.default_rng(int(seed))
            self._sim_env.rng.bit_generator.state = fresh.bit_generator.state
        self._sim_env.reset()
        if (
            self.fast_render
            and self.render_mode
            and (self._sim_env.hard_reset or not self._started)
        ):
            fast_render_model(self._sim_env.sim.model)  # a hard reset has built a new model
        self._t = 0
        self._started = True
        info: dict[str, Any] = {"success": bool(self._sim_env._check_success())}
        return self._observe(info), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_DIM,):
            raise ValueError(
                f"{self.task}: action must have shape ({ACTION_DIM},) (OSC_POSE delta pose + "
                f"gripper), got {action.shape}"
            )
        self._sim_env.step(np.clip(action, -1.0, 1.0))
        self._t += 1
        success = bool(self._sim_env._check_success())
        terminated = success and self.terminate_on_success
        truncated = self._t >= self.max_episode_steps and not terminated
        info: dict[str, Any] = {"success": success}
        return self._observe(info), float(success), terminated, truncated, info

    @property
    def last_shaped_reward(self) -> float:
        """robosuite's dense staged reward (reach, grasp, lift / place) of the current state,
        whatever the training reward: the oracle ``otpr-diagnose`` scores candidates with."""
        env = self._sim_env
        shaping, env.reward_shaping = env.reward_shaping, True
        try:
            return float(env.reward())
        finally:
            env.reward_shaping = shaping

    def _stateful(self) -> list[Any]:
        """The Python objects that carry state between control steps besides the simulator:
        the env's counters, the robot, its controllers (OSC goals, interpolators) and grippers
        (the gripper's ``current_action`` moves by a fixed speed per step)."""
        robot = self._sim_env.robots[0]
        return [self._sim_env, robot, *robot.part_controllers.values(), *robot.gripper.values()]

    def snapshot(self) -> dict[str, Any]:
        """Everything a :meth:`restore` needs to continue this episode from here exactly: the
        simulator's integration state and every numeric attribute of the objects that carry
        state between steps (:meth:`_stateful`); for probing several actions from one state."""
        import mujoco

        sim = self._sim_env.sim
        kind = mujoco.mjtState.mjSTATE_INTEGRATION
        physics = np.empty(mujoco.mj_stateSize(sim.model._model, kind))
        mujoco.mj_getState(sim.model._model, sim.data._data, physics, kind)
        numeric = (np.ndarray, np.generic, float, int, bool)
        attrs = [
            {k: copy.deepcopy(v) for k, v in vars(o).items() if isinstance(v, numeric)}
            for o in self._stateful()
        ]
        return {"task": self.task, "physics": physics, "attrs": attrs, "t": self._t}

    def restore(self, snap: dict[str, Any]) -> None:
        """Return to a :meth:`snapshot` of the current episode."""
        import mujoco

        if snap["task"] != self.task:
            raise ValueError(f"snapshot of task {snap['task']!r}, env is on {self.task!r}")
        sim = self._sim_env.sim
        kind = mujoco.mjtState.mjSTATE_INTEGRATION
        model, data = sim.model._model, sim.data._data
        mujoco.mj_setState(model, data, snap["physics"], kind)
        mujoco.mj_forward(model, data)  # positions, contacts, sensors of the restored state
        # mj_forward overwrote the solver's warm start with its own accelerations; the next
        # step must start from the snapshot's, or contact-rich steps differ by ~1e-6
        mujoco.mj_setState(model, data, snap["physics"], kind)
        for obj, attrs in zip(self._stateful(), snap["attrs"], strict=True):
            for k, v in attrs.items():
                setattr(obj, k, copy.deepcopy(v))
        self._t = snap["t"]
        self._frame = None  # another state: render() draws it anew

    def render(self) -> np.ndarray:
        if self.render_mode is None:
            raise RuntimeError(
                f"{self.task}: render() needs the env built with pixels=True or "
                "render_mode='rgb_array' (agentview camera)"
            )
        if not self._started:
            raise RuntimeError(f"{self.task}: render() called before reset()")
        if self._frame is None:
            self._frame = self._agentview()  # drawn on demand, kept until the next step
        return self._frame

    def close(self) -> None:
        self._sim_env.close()


def make_robomimic_env(
    task: str,
    seed: int,
    max_episode_steps: int | None = None,
    pixels: bool = False,
    image_size: int = 84,
    terminate_on_success: bool = False,
    hard_reset: bool = False,
    render_mode: str | None = None,
    camera: str = "agentview",
    fast_render: bool = True,
) -> gym.Env:
    """Factory for :class:`RobomimicEnv`; ``max_episode_steps=None`` takes the task's horizon."""
    return RobomimicEnv(
        task,
        seed,
        max_episode_steps=max_episode_steps,
        pixels=pixels,
        image_size=image_size,
        terminate_on_success=terminate_on_success,
        hard_reset=hard_reset,
        render_mode=render_mode,
        camera=camera,
        fast_render=fast_render,
    )
