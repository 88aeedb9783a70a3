"""The in-memory format every loader returns, its errors and its checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np


class DatasetError(ValueError):
    """A dataset file is missing or malformed; the message is one line naming file and key."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """The dataset path does not exist."""


def _fail(source: str | Path, key: str, expected: str) -> DatasetError:
    return DatasetError(f"{source}: {key}: {expected}")


# ----------------------------------------------------------------------------------------------
# In-memory format
# ----------------------------------------------------------------------------------------------


@dataclass
class Episode:
    """One demonstration of ``T`` steps.

    ``obs[t]`` is the observation the action ``actions[t]`` was taken in; ``rewards[t]`` and
    ``dones[t]`` (true terminal state, not a time limit) follow that action. ``final_obs`` is the
    observation after the last action when the source stores it (Minari, robomimic
    ``next_obs``), else ``None``. ``images`` maps a camera key to ``[T, H, W, C]`` uint8 frames;
    ``final_images`` the same key to the frame after the last action, where the source has it.
    """

    obs: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    dones: np.ndarray
    success: bool | None = None
    name: str = ""
    final_obs: np.ndarray | None = None
    images: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    final_images: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.obs.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.obs.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])


@dataclass
class DemoDataset:
    """A list of episodes with the facts needed to rebuild the env that produced them.

    ``obs_keys``/``obs_key_dims`` say how the flat observation is made: the keys concatenated in
    this order, with these widths (``sum(obs_key_dims) == obs_dim``).
    """

    episodes: list[Episode]
    env_args: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    obs_keys: tuple[str, ...] = ()
    obs_key_dims: tuple[int, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, i: int) -> Episode:
        return self.episodes[i]

    def __iter__(self):
        return iter(self.episodes)

    @property
    def obs_dim(self) -> int:
        return self.episodes[0].obs_dim

    @property
    def action_dim(self) -> int:
        return self.episodes[0].action_dim

    @property
    def num_steps(self) -> int:
        return sum(len(ep) for ep in self.episodes)

    def subset(self, indices: Sequence[int]) -> DemoDataset:
        """The episodes at ``indices`` (in that order), sharing all metadata."""
        return replace(
            self, episodes=[self.episodes[int(i)] for i in indices], metadata=dict(self.metadata)
        )


def validate_episode(
    ep: Episode,
    source: str | Path,
    prefix: str,
    action_dim: int | None = None,
    keys: Mapping[str, str] | None = None,
) -> Episode:
    """Check one episode's shapes and values; raise :class:`DatasetError` naming the file key.

    A field ``f`` (``obs``, ``actions``, ``rewards``, ``dones``, ``final_obs``, an image key) is
    named ``keys[f]`` when given, else ``prefix/f`` (``prefix`` is the episode's key path in its
    file, e.g. ``data/demo_3``). Returns the episode with obs/actions/rewards as float32 and
    dones as bool.
    """
    keys = dict(keys or {})

    def key_of(f: str) -> str:
        return keys.get(f, f"{prefix}/{f}")

    obs = numeric(ep.obs, source, key_of("obs"))
    if obs.ndim != 2:
        raise _fail(source, key_of("obs"), f"expected a [T, obs_dim] array, got shape {obs.shape}")
    T = obs.shape[0]
    if T == 0:
        raise _fail(source, key_of("obs"), "expected a non-empty episode, got 0 steps")
    checks = {
        "actions": (numeric(ep.actions, source, key_of("actions")), 2),
        "rewards": (numeric(ep.rewards, source, key_of("rewards")), 1),
        "dones": (numeric(ep.dones, source, key_of("dones")), 1),
    }
    for key, (arr, ndim) in checks.items():
        if arr.ndim != ndim or arr.shape[0] != T:
            want = f"[{T}, dim]" if ndim == 2 else f"[{T}]"
            raise _fail(source, key_of(key), f"expected shape {want} (as obs), got {arr.shape}")
    actions = checks["actions"][0]
    if action_dim is not None and actions.shape[1] != action_dim:
        raise _fail(
            source,
            key_of("actions"),
            f"expected action dimension {action_dim}, got {actions.shape[1]}",
        )
    rewards, dones = checks["rewards"][0], checks["dones"][0]
    for key, arr in (("obs", obs), ("actions", actions), ("rewards", rewards), ("dones", dones)):
        if not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(arr))[0]
            raise _fail(source, key_of(key), f"expected finite values, got NaN/inf at {bad}")
    final_obs = ep.final_obs
    if final_obs is not None:
        final_obs = numeric(final_obs, source, key_of("final_obs")).astype(np.float32)
        if final_obs.shape != obs.shape[1:] or not np.all(np.isfinite(final_obs)):
            raise _fail(
                source,
                key_of("final_obs"),
                f"expected {obs.shape[1:]} finite values, got shape {final_obs.shape}",
            )
    for key, img in ep.images.items():
        img = np.asarray(img)
        if img.ndim == 0 or img.shape[0] != T:
            raise _fail(source, key_of(key), f"expected {T} frames (as obs), got {img.shape}")
    return replace(
        ep,
        obs=obs.astype(np.float32, copy=False),
        actions=actions.astype(np.float32, copy=False),
        rewards=rewards.astype(np.float32, copy=False),
        dones=dones.astype(bool, copy=False),
        final_obs=final_obs,
    )


def numeric(value: Any, source: str | Path, key: str) -> np.ndarray:
    """``value`` as a numeric array (bool, integer or float); strings, objects and complex
    numbers raise :class:`DatasetError` naming ``key``."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as e:  # ragged nested lists
        got = f"{type(value).__name__} ({e})"
        raise _fail(source, key, f"expected a numeric array, got {got}") from None
    if arr.dtype.kind not in "biuf":
        raise _fail(source, key, f"expected numbers (bool, int or float), got dtype {arr.dtype}")
    return arr


def _check_consistent(episodes: list[Episode], source: str | Path, names: list[str]) -> None:
    if not episodes:
        raise _fail(source, "episodes", "expected at least one episode, got none")
    d_obs, d_act = episodes[0].obs_dim, episodes[0].action_dim
    for ep, name in zip(episodes, names):
        if ep.obs_dim != d_obs:
            raise _fail(source, f"{name}/obs", f"expected obs_dim {d_obs}, got {ep.obs_dim}")
        if ep.action_dim != d_act:
            raise _fail(
                source, f"{name}/actions", f"expected action_dim {d_act}, got {ep.action_dim}"
            )


def _require_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: no such dataset file")
    return path


def _open_hdf5(path: Path) -> Any:
    """An existing file opened read-only as hdf5 (an ``h5py.File``); an unreadable one raises
    a DatasetError naming it."""
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(f"{path}: not a readable hdf5 file ({e})") from None


#: What h5py raises on an object it cannot open or read (a damaged or truncated file).
_HDF5_ERRORS = (OSError, KeyError, RuntimeError, TypeError, ValueError)


def _hdf5_get(group: Any, key: str, source: str | Path, name: str) -> Any:
    """``group[key]`` (an h5py object) or None where it does not exist; an object that cannot
    be opened raises :class:`DatasetError` naming ``name``."""
    try:
        return group.get(key)
    except _HDF5_ERRORS as e:
        raise _fail(source, name, f"expected a readable object, got an error ({e})") from None


def _hdf5_group(group: Any, key: str, source: str | Path, name: str) -> Any:
    """The hdf5 group ``group[key]``; missing, or not a group, raises :class:`DatasetError`."""
    import h5py

    obj = _hdf5_get(group, key, source, name)
    if obj is None:
        raise _fail(source, name, "expected a group, not found")
    if not isinstance(obj, h5py.Group):
        raise _fail(source, name, f"expected a group, got a {type(obj).__name__}")
    return obj


def _hdf5_array(group: Any, key: str, source: str | Path, name: str) -> np.ndarray:
    """The hdf5 dataset ``group[key]`` read into memory as a numeric array; missing, not a
    dataset, unreadable or not numeric raises :class:`DatasetError` naming ``name``."""
    import h5py

    obj = _hdf5_get(group, key, source, name)
    if obj is None:
        raise _fail(source, name, "expected a dataset, not found")
    if not isinstance(obj, h5py.Dataset):
        raise _fail(source, name, f"expected a dataset, got a {type(obj).__name__}")
    try:
        value = obj[()]
    except _HDF5_ERRORS as e:
        raise _fail(source, name, f"expected readable data, got an error ({e})") from None
    return numeric(value, source, name)


def _read_attr(attrs: Any, key: str, source: str | Path, name: str) -> Any:
    """``attrs[key]``, None where it is absent; an unreadable one raises DatasetError."""
    try:
        return attrs[key] if key in attrs else None
    except _HDF5_ERRORS as e:
        raise _fail(source, name, f"expected a readable attribute, got an error ({e})") from None


def _int_attr(attrs: Any, key: str, source: str | Path, name: str) -> int | None:
    """The attribute ``attrs[key]`` as an int (a bool counts as 0/1), None where it is absent;
    a value that is not one integer raises :class:`DatasetError` naming ``name``."""
    value = _read_attr(attrs, key, source, name)
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "biu":
        raise _fail(source, name, f"expected one integer, got {value!r:.80}")
    return int(arr.reshape(()).item())


def _json_attr(attrs: Any, key: str, source: str | Path, name: str, kind: type) -> Any:
    """The attribute ``attrs[key]`` parsed as JSON of type ``kind`` (``object``: any), None
    where it is absent; anything else raises :class:`DatasetError` naming ``name``."""
    import json

    value = _read_attr(attrs, key, source, name)
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):  # not text, not JSON, not UTF-8
        raise _fail(source, name, f"expected a JSON {kind.__name__}, got {value!r:.80}") from None
    if not isinstance(parsed, kind):
        raise _fail(source, name, f"expected a JSON {kind.__name__}, got {type(parsed).__name__}")
    return parsed
