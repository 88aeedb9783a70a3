"""CALVIN (Mees et al., 2022): a gymnasium adapter for ``PlayTableSimEnv`` and an episode reader.

``calvin_env`` is not on the package index, so everything that needs the simulator sits behind
:func:`calvin_available`; without it :func:`make_calvin_env` raises
:class:`CalvinUnavailableError` saying what to install. The dataset reader
(:func:`read_calvin_segments`, wrapped into a ``DemoDataset`` by
``otpr.data.read_calvin_episodes``) needs only numpy.

Task names: ``calvin-<subtask>`` (e.g. ``calvin-open_drawer``), one of the 34 subtasks of
CALVIN's ``new_playtable_tasks.yaml`` (:data:`CALVIN_TASKS`); plain ``calvin`` takes the subtask
from the ``subtask`` argument.

Observation (39, float32): ``robot_obs`` (15) then ``scene_obs`` (24), as stored in the dataset::

    robot_obs  [0:3] tcp position, [3:6] tcp orientation (euler xyz), [6] gripper opening width,
               [7:14] arm joint angles, [14] last gripper action (-1 closed, 1 open)
    scene_obs  [0] sliding door, [1] drawer, [2] button, [3] switch, [4] lightbulb, [5] green
               light, [6:12] red block pos+euler, [12:18] blue block, [18:24] pink block

Action (7): CALVIN's ``rel_actions``: tcp position delta (3) and euler delta (3) in ``[-1, 1]``
(the simulator scales them by ``max_rel_pos = 0.02`` m and ``max_rel_orn = 0.05`` rad), and the
gripper, binarised here to ``-1`` (close) / ``1`` (open) by its sign, as the robot requires.

Reward and termination follow CALVIN's evaluation (``evaluate_policy.py``): the task oracle
compares the scene info at reset with the current one; reward is 1 on the step the subtask is
achieved, and that step is terminal (``terminate_on_success=True``); ``truncated`` is set on step
``max_episode_steps`` (default 360, CALVIN's ``EP_LEN``).
"""

from __future__ import annotations

import importlib.util
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from envs.base import TaskSpec

ROBOT_OBS_DIM = 15
SCENE_OBS_DIM = 24
OBS_DIM = ROBOT_OBS_DIM + SCENE_OBS_DIM
ACTION_DIM = 7
EP_LEN = 360

INSTALL_HINT = (
    "CALVIN needs calvin_env, which is not on PyPI: git clone --recurse-submodules "
    "https://github.com/mees/calvin && pip install -e calvin/calvin_env"
)

#: CALVIN's subtasks and their oracle definitions (``calvin_models/conf/callbacks/rollout/tasks/
#: new_playtable_tasks.yaml``): ``name -> [Tasks method, *arguments]``.
CALVIN_TASKS: dict[str, list[Any]] = {
    **{
        f"rotate_{c}_block_{d}": ["rotate_object", f"block_{c}", deg]
        for c in ("red", "blue", "pink")
        for d, deg in (("right", -60), ("left", 60))
    },
    **{
        f"push_{c}_block_{d}": ["push_object", f"block_{c}", dx, 0]
        for c in ("red", "blue", "pink")
        for d, dx in (("right", 0.1), ("left", -0.1))
    },
    "move_slider_left": ["move_door_rel", "base__slide", 0.15],
    "move_slider_right": ["move_door_rel", "base__slide", -0.15],
    "open_drawer": ["move_door_rel", "base__drawer", 0.12],
    "close_drawer": ["move_door_rel", "base__drawer", -0.12],
    **{
        f"lift_{c}_block_{s}": ["lift_object", f"block_{c}", dz, "table", link]
        for c in ("red", "blue", "pink")
        for s, dz, link in (
            ("table", 0.05, "base_link"),
            ("slider", 0.03, "plank_link"),
            ("drawer", 0.05, "drawer_link"),
        )
    },
    "place_in_slider": ["place_object", "table", "plank_link"],
    "place_in_drawer": ["place_object", "table", "drawer_link"],
    "stack_block": ["stack_objects"],
    "unstack_block": ["unstack_objects"],
    "turn_on_lightbulb": ["toggle_light", "lightbulb", 0, 1],
    "turn_off_lightbulb": ["toggle_light", "lightbulb", 1, 0],
    "turn_on_led": ["toggle_light", "led", 0, 1],
    "turn_off_led": ["toggle_light", "led", 1, 0],
    "push_into_drawer": [
        "push_object_into",
        ["block_red", "block_blue", "block_pink"],
        "table",
        "base_link",
        "table",
        "drawer_link",
    ],
}


class CalvinUnavailableError(ImportError):
    """``calvin_env`` is not importable; the message says how to install it."""


def calvin_available() -> bool:
    """Whether ``calvin_env`` can be imported here."""
    return importlib.util.find_spec("calvin_env") is not None


def _subtask_of(task: str, subtask: str | None = None) -> str | None:
    m = re.fullmatch(r"calvin(?:[-/:](\w+))?", task)
    if m is None:
        raise ValueError(f"CALVIN task {task!r}: expected 'calvin' or 'calvin-<subtask>'")
    name = m.group(1) or subtask
    if name is not None and name not in CALVIN_TASKS:
        raise ValueError(
            f"CALVIN task {task!r}: unknown subtask {name!r}, "
            f"expected one of {sorted(CALVIN_TASKS)}"
        )
    return name


def calvin_spec(task: str = "calvin", max_episode_steps: int | None = None) -> TaskSpec:
    """Static facts of a CALVIN task (no simulator needed)."""
    sub = _subtask_of(task)
    return TaskSpec(
        name=task,
        suite="calvin",
        obs_dim=OBS_DIM,
        action_dim=ACTION_DIM,
        max_episode_steps=max_episode_steps or EP_LEN,
        obs_keys=("robot_obs", "scene_obs"),
        extra={"subtask": sub, "gripper_index": ACTION_DIM - 1},
    )


class CalvinTaskEnv(gym.Env):
    """One CALVIN subtask on a ``PlayTableSimEnv``-like simulator, following ``envs/base.py``.

    ``sim`` needs the old-gym API of ``calvin_env.envs.play_table_env.PlayTableSimEnv``:
    ``reset(robot_obs=None, scene_obs=None) -> obs dict``, ``step(a) -> (obs, r, done, info)``,
    ``get_info()``, ``render(mode)``, ``close()``; ``task_oracle`` that of
    ``calvin_env.envs.tasks.Tasks`` (``get_task_info_for_set(start_info, info, {task})``).

    The start state is, in order: ``reset(options={"robot_obs": ..., "scene_obs": ...})``, a row
    of ``initial_states`` ([K, 39], e.g. first observations of dataset segments for this subtask,
    drawn with the env's seeded generator), or the scene's default.
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(
        self,
        sim: Any,
        task: str,
        task_oracle: Any,
        max_episode_steps: int = EP_LEN,
        initial_states: np.ndarray | None = None,
        terminate_on_success: bool = True,
    ) -> None:
        if task not in CALVIN_TASKS:
            raise ValueError(
                f"unknown CALVIN subtask {task!r}, expected one of {sorted(CALVIN_TASKS)}"
            )
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}")
        if initial_states is not None:
            initial_states = np.asarray(initial_states, dtype=np.float64)
            if initial_states.ndim != 2 or initial_states.shape[1] != OBS_DIM:
                raise ValueError(
                    f"initial_states: expected shape [K, {OBS_DIM}], got {initial_states.shape}"
                )
        self.sim = sim
        self.task = task
        self.task_oracle = task_oracle
        self.max_episode_steps = max_episode_steps
        self.initial_states = initial_states
        self.terminate_on_success = terminate_on_success
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), dtype=np.float32)
        self._t = 0
        self._start_info: Any = None
        self._frame: np.ndarray | None = None

    def _obs(self, raw: Mapping[str, Any]) -> np.ndarray:
        rgb = raw.get("rgb_obs") or {}
        self._frame = rgb.get("rgb_static")
        return np.concatenate(
            [np.asarray(raw["robot_obs"]).reshape(-1), np.asarray(raw["scene_obs"]).reshape(-1)]
        ).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        options = options or {}
        robot_obs, scene_obs = options.get("robot_obs"), options.get("scene_obs")
        if robot_obs is None and scene_obs is None and self.initial_states is not None:
            state = self.initial_states[int(self.np_random.integers(len(self.initial_states)))]
            robot_obs, scene_obs = state[:ROBOT_OBS_DIM], state[ROBOT_OBS_DIM:]
        raw = self.sim.reset(robot_obs=robot_obs, scene_obs=scene_obs)
        self._start_info = self.sim.get_info()
        self._t = 0
        return self._obs(raw), {"success": False, "task_name": self.task}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"CALVIN action: expected shape ({ACTION_DIM},), got {action.shape}")
        # A fresh array: the robot scales the relative action in place.
        action = np.clip(action, -1.0, 1.0)
        action[-1] = 1.0 if action[-1] >= 0 else -1.0
        raw, _, _, info = self.sim.step(action)
        self._t += 1
        done = self.task_oracle.get_task_info_for_set(self._start_info, info, {self.task})
        success = self.task in done
        terminated = success and self.terminate_on_success
        truncated = self._t >= self.max_episode_steps and not terminated
        out = {"success": success, "task_name": self.task}
        return self._obs(raw), float(success), terminated, truncated, out

    def render(self) -> np.ndarray:
        if self._frame is not None:
            return np.asarray(self._frame)
        return np.asarray(self.sim.render(mode="rgb_array"))

    def close(self) -> None:
        self.sim.close()


def make_calvin_env(
    task: str,
    seed: int,
    max_episode_steps: int | None = None,
    pixels: bool = False,
    dataset_path: str | Path | None = None,
    subtask: str | None = None,
    initial_states: np.ndarray | None = None,
    terminate_on_success: bool = True,
    render_mode: str | None = None,
    image_size: int | None = None,
) -> gym.Env:
    """Build :class:`CalvinTaskEnv` on a real ``PlayTableSimEnv``.

    ``dataset_path`` (or ``$CALVIN_DATASET_PATH``) is a CALVIN split folder (e.g.
    ``task_D_D/validation``) whose ``.hydra/merged_config.yaml`` describes the scene, as
    ``calvin_env.envs.play_table_env.get_env`` needs. The static camera renders at every step
    (CALVIN always renders its cameras), so ``pixels`` and ``render_mode`` only document intent
    here, and ``image_size`` is ignored: ``render()`` gives the static camera's own size.
    """
    if not calvin_available():
        raise CalvinUnavailableError(INSTALL_HINT)
    name = _subtask_of(task, subtask)
    if name is None:
        raise ValueError(f"CALVIN task {task!r}: name a subtask ('calvin-open_drawer' or subtask=)")
    path = dataset_path or os.environ.get("CALVIN_DATASET_PATH")
    if path is None:
        raise ValueError(
            "CALVIN: dataset_path (or $CALVIN_DATASET_PATH) must name a split folder with "
            ".hydra/merged_config.yaml"
        )
    path = Path(path)
    if not (path / ".hydra" / "merged_config.yaml").is_file():
        raise FileNotFoundError(
            f"{path / '.hydra' / 'merged_config.yaml'}: not found (CALVIN scene config)"
        )
    from calvin_env.envs.play_table_env import get_env
    from calvin_env.envs.tasks import Tasks

    sim = get_env(path, show_gui=False)
    sim.seed(seed)
    env = CalvinTaskEnv(
        sim,
        name,
        Tasks(CALVIN_TASKS),
        max_episode_steps=max_episode_steps or EP_LEN,
        initial_states=initial_states,
        terminate_on_success=terminate_on_success,
    )
    env.reset(seed=seed)
    return env


# ----------------------------------------------------------------------------------------------
# Dataset reader (numpy only; ``otpr.data.read_calvin_episodes`` wraps it into a DemoDataset)
# ----------------------------------------------------------------------------------------------


class CalvinDatasetError(ValueError):
    """A CALVIN dataset file is malformed; one line naming the file, the key and the expectation."""


class CalvinDatasetNotFoundError(CalvinDatasetError, FileNotFoundError):
    """A CALVIN dataset folder or file does not exist."""


@dataclass
class CalvinSegment:
    """Consecutive steps ``start..end`` (inclusive) of a CALVIN split."""

    robot_obs: np.ndarray
    scene_obs: np.ndarray
    actions: np.ndarray
    start: int
    end: int
    images: dict[str, np.ndarray] = field(default_factory=dict)
    task: str | None = None
    instruction: str | None = None


_SHAPES = {"robot_obs": (ROBOT_OBS_DIM,), "scene_obs": (SCENE_OBS_DIM,)}


def read_calvin_segments(
    root: str | Path,
    action_key: str = "rel_actions",
    image_keys: Sequence[str] = (),
    segments: str = "episodes",
    subtasks: Sequence[str] | None = None,
    max_episodes: int | None = None,
) -> list[CalvinSegment]:
    """Read CALVIN's per-step ``episode_XXXXXXX.npz`` files, one segment at a time.

    ``root`` is a split folder (``training/`` or ``validation/``). ``segments="episodes"``: the
    rows ``[start, end]`` (both inclusive) of ``ep_start_end_ids.npy``, long stretches of play.
    ``segments="lang"``: the language-annotated windows of ``lang_annotations/
    auto_lang_ann.npy`` (``info/indx``, inclusive ends, each ending with its subtask achieved),
    only those whose ``language/task`` is in ``subtasks`` when given; ``task`` and
    ``instruction`` (``language/ann``) are filled in. Step ``i`` is ``episode_{i:07d}.npz``;
    its ``robot_obs`` (15), ``scene_obs`` (24) and ``action_key`` (7: ``rel_actions`` or the
    absolute ``actions``) are checked for shape and finiteness; ``image_keys`` (e.g.
    ``rgb_static``) are stacked as they are.
    """
    root = Path(root)
    if not root.is_dir():
        raise CalvinDatasetNotFoundError(f"{root}: no such CALVIN split folder")
    if segments == "episodes":
        bounds = _read_start_end(root)
        labels: list[tuple[str, str] | None] = [None] * len(bounds)
    elif segments == "lang":
        bounds, labels = _read_lang(root, subtasks)
    else:
        raise ValueError(f"segments must be 'episodes' or 'lang', got {segments!r}")
    if max_episodes is not None:
        bounds, labels = bounds[:max_episodes], labels[:max_episodes]
    want = {**_SHAPES, action_key: (ACTION_DIM,)}
    out = []
    for (start, end), label in zip(bounds, labels):
        steps: dict[str, list[np.ndarray]] = {k: [] for k in (*want, *image_keys)}
        for i in range(start, end + 1):
            fname = f"episode_{i:07d}.npz"
            if not (root / fname).is_file():
                raise CalvinDatasetNotFoundError(
                    f"{root / fname}: missing step {i} of segment [{start}, {end}]"
                )
            for key, value in _read_step(root / fname, steps).items():
                if key in want:
                    _check_step_value(value, want[key], fname, key)
                elif steps[key] and value.shape != steps[key][0].shape:
                    raise CalvinDatasetError(
                        f"{fname}: {key}: expected shape {steps[key][0].shape} (as step "
                        f"{start}), got {value.shape}"
                    )
                steps[key].append(value)
        out.append(
            CalvinSegment(
                robot_obs=np.stack(steps["robot_obs"]),
                scene_obs=np.stack(steps["scene_obs"]),
                actions=np.stack(steps[action_key]),
                start=start,
                end=end,
                images={k: np.stack(steps[k]) for k in image_keys},
                task=None if label is None else label[0],
                instruction=None if label is None else label[1],
            )
        )
    if not out:
        raise CalvinDatasetError(f"{root}: segments: expected at least one segment, got none")
    return out


#: What numpy raises on a damaged .npy/.npz file (truncated, not a zip, a pickled member).
_NPY_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile)


def _read_step(path: Path, keys: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` of one step file; a damaged file or a missing key raises
    :class:`CalvinDatasetError` naming it."""
    fname = path.name
    try:
        step = np.load(path)
    except _NPY_ERRORS as e:
        raise CalvinDatasetError(f"{fname}: expected a readable .npz file, got {e}") from None
    if not isinstance(step, np.lib.npyio.NpzFile):
        raise CalvinDatasetError(f"{fname}: expected an .npz archive of arrays, got one array")
    with step:
        values = {}
        for key in keys:
            if key not in step.files:
                raise CalvinDatasetError(
                    f"{fname}: {key}: expected a key, file has {sorted(step.files)}"
                )
            try:
                values[key] = step[key]
            except _NPY_ERRORS as e:
                raise CalvinDatasetError(
                    f"{fname}: {key}: expected a readable array, got {e}"
                ) from None
    return values


def _check_step_value(value: np.ndarray, shape: tuple[int, ...], fname: str, key: str) -> None:
    if value.dtype.kind not in "biuf":
        raise CalvinDatasetError(f"{fname}: {key}: expected numbers, got dtype {value.dtype}")
    if value.shape != shape:
        raise CalvinDatasetError(f"{fname}: {key}: expected shape {shape}, got {value.shape}")
    if not np.all(np.isfinite(value)):
        raise CalvinDatasetError(f"{fname}: {key}: expected finite values, got NaN/inf")


def _load_npy(path: Path, what: str, allow_pickle: bool = False) -> Any:
    """``np.load(path)``; a damaged file raises :class:`CalvinDatasetError` naming it."""
    try:
        return np.load(path, allow_pickle=allow_pickle)
    except Exception as e:  # unpickling can raise anything
        raise CalvinDatasetError(
            f"{path.name}: expected a readable .npy file ({what}), got {type(e).__name__}: {e}"
        ) from None


def _check_bounds(bounds: np.ndarray, fname: str, key: str) -> list[tuple[int, int]]:
    bounds = np.asarray(bounds)
    if bounds.ndim != 2 or bounds.shape[1] != 2 or not np.issubdtype(bounds.dtype, np.integer):
        raise CalvinDatasetError(
            f"{fname}: {key}: expected an integer [K, 2] array, got {bounds.dtype} {bounds.shape}"
        )
    for start, end in bounds:
        if start < 0 or end < start:
            raise CalvinDatasetError(
                f"{fname}: {key}: expected 0 <= start <= end, got [{start}, {end}]"
            )
    return [(int(s), int(e)) for s, e in bounds]


def _read_start_end(root: Path) -> list[tuple[int, int]]:
    path = root / "ep_start_end_ids.npy"
    if not path.is_file():
        raise CalvinDatasetNotFoundError(f"{path}: not found (CALVIN episode boundaries)")
    return _check_bounds(_load_npy(path, "episode boundaries"), path.name, "ep_start_end_ids")


def _read_lang(
    root: Path, subtasks: Sequence[str] | None
) -> tuple[list[tuple[int, int]], list[tuple[str, str] | None]]:
    path = root / "lang_annotations" / "auto_lang_ann.npy"
    if not path.is_file():
        raise CalvinDatasetNotFoundError(f"{path}: not found (CALVIN language annotations)")
    ann = np.asarray(_load_npy(path, "language annotations", allow_pickle=True))
    ann = ann.item() if ann.shape == () else None
    if not isinstance(ann, Mapping):
        raise CalvinDatasetError(f"{path.name}: expected a pickled dict of annotations")
    for outer, inner in (("info", "indx"), ("language", "task"), ("language", "ann")):
        if not isinstance(ann.get(outer), Mapping) or inner not in ann[outer]:
            raise CalvinDatasetError(f"{path.name}: {outer}/{inner}: expected a key, not found")
    try:
        indx = np.asarray(ann["info"]["indx"])
    except ValueError as e:  # ragged
        raise CalvinDatasetError(
            f"{path.name}: info/indx: expected [K, 2] integers ({e})"
        ) from None
    bounds = _check_bounds(indx, path.name, "info/indx")
    tasks, texts = ann["language"]["task"], ann["language"]["ann"]
    for key, entries in (("language/task", tasks), ("language/ann", texts)):
        if isinstance(entries, str | bytes) or not isinstance(entries, Sequence | np.ndarray):
            raise CalvinDatasetError(
                f"{path.name}: {key}: expected a list of strings, got {type(entries).__name__}"
            )
    tasks, texts = list(tasks), list(texts)
    if not len(tasks) == len(texts) == len(bounds):
        raise CalvinDatasetError(
            f"{path.name}: language/task: expected {len(bounds)} entries (as info/indx), "
            f"got {len(tasks)} tasks and {len(texts)} instructions"
        )
    if subtasks is not None:
        unknown = sorted(set(subtasks) - set(CALVIN_TASKS))
        if unknown:
            raise ValueError(f"subtasks: unknown {unknown}, expected names from CALVIN_TASKS")
    keep = [i for i, t in enumerate(tasks) if subtasks is None or t in subtasks]
    return [bounds[i] for i in keep], [(str(tasks[i]), str(texts[i])) for i in keep]
