"""Demonstration datasets: one in-memory format, readers/writers for the formats we meet, windows.

Everything is read from a LOCAL path; nothing here downloads.

- :class:`Episode` / :class:`DemoDataset` are the in-memory format every loader returns.
- robomimic hdf5 (:func:`read_robomimic_hdf5`, :func:`write_robomimic_hdf5`): the layout of
  robomimic's ``SequenceDataset`` (``data/demo_i/{obs/<key>, next_obs/<key>, actions, rewards,
  dones}``, ``data.attrs["env_args"]`` as JSON, ``data.attrs["total"]``, per-demo
  ``num_samples``, ``mask/<filter>`` as lists of demo names in bytes).
- D4RL hdf5 (:func:`read_d4rl_hdf5`): flat ``observations/actions/rewards/terminals/timeouts``.
- Minari (:func:`read_minari`): a dataset stored under a local ``MINARI_DATASETS_PATH``.

A malformed file raises :class:`DatasetError` (a ``ValueError``) with one line naming the file,
the key and what was expected, e.g.
``demos.hdf5: data/demo_3/actions: expected 120 rows (as obs), got 119``.

:func:`make_windows` cuts (observation-history, action-chunk) training pairs with the
diffusion_policy convention; :func:`split_episodes` splits per episode.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "DemoDataset",
    "Episode",
    "dataset_stats",
    "make_windows",
    "read_calvin_episodes",
    "read_d4rl_hdf5",
    "read_minari",
    "read_robomimic_hdf5",
    "split_episodes",
    "window_indices",
    "write_robomimic_hdf5",
]


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
    ``next_obs``), else ``None``. ``images`` maps a camera key to ``[T, H, W, C]`` uint8 frames.
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

    obs = np.asarray(ep.obs)
    if obs.ndim != 2:
        raise _fail(source, key_of("obs"), f"expected a [T, obs_dim] array, got shape {obs.shape}")
    T = obs.shape[0]
    if T == 0:
        raise _fail(source, key_of("obs"), "expected a non-empty episode, got 0 steps")
    checks = {
        "actions": (np.asarray(ep.actions), 2),
        "rewards": (np.asarray(ep.rewards), 1),
        "dones": (np.asarray(ep.dones), 1),
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
    for key, arr in (("obs", obs), ("actions", actions), ("rewards", checks["rewards"][0])):
        if not np.all(np.isfinite(arr)):
            bad = np.argwhere(~np.isfinite(arr))[0]
            raise _fail(source, key_of(key), f"expected finite values, got NaN/inf at {bad}")
    final_obs = ep.final_obs
    if final_obs is not None:
        final_obs = np.asarray(final_obs, dtype=np.float32)
        if final_obs.shape != obs.shape[1:] or not np.all(np.isfinite(final_obs)):
            raise _fail(
                source,
                key_of("final_obs"),
                f"expected {obs.shape[1:]} finite values, got shape {final_obs.shape}",
            )
    for key, img in ep.images.items():
        if np.asarray(img).shape[0] != T:
            raise _fail(source, key_of(key), f"expected {T} frames (as obs), got {np.shape(img)}")
    return replace(
        ep,
        obs=obs.astype(np.float32, copy=False),
        actions=actions.astype(np.float32, copy=False),
        rewards=checks["rewards"][0].astype(np.float32, copy=False),
        dones=checks["dones"][0].astype(bool, copy=False),
        final_obs=final_obs,
    )


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


# ----------------------------------------------------------------------------------------------
# robomimic hdf5
# ----------------------------------------------------------------------------------------------

#: Attribute of the ``data`` group holding the JSON list of low-dim obs keys in concat order.
OBS_KEYS_ATTR = "otpr_obs_keys"
#: Attribute of the ``data`` group holding the JSON record of how the demos were generated.
GENERATION_ATTR = "otpr_generation"


def _demo_sort_key(name: str) -> tuple[int, str]:
    # robomimic orders demos by the integer after "demo_" (demo_10 after demo_9).
    suffix = name[5:] if name.startswith("demo_") else ""
    return (int(suffix), name) if suffix.isdigit() else (1 << 62, name)


def read_robomimic_hdf5(
    path: str | Path,
    obs_keys: Sequence[str] | None = None,
    filter_key: str | None = None,
    image_keys: Sequence[str] = (),
    action_dim: int | None = None,
) -> DemoDataset:
    """Read a robomimic-layout hdf5 file.

    The flat observation concatenates ``obs_keys`` in the given order. The default is the order
    stored in ``data.attrs["otpr_obs_keys"]`` (written by :func:`write_robomimic_hdf5`), else the
    sorted low-dim keys (2-D datasets) of the first demo. ``filter_key`` selects the demos listed
    in ``mask/<filter_key>``. ``image_keys`` are kept, unconcatenated, in ``Episode.images``.
    ``action_dim``, when given, is checked against every demo's actions.
    """
    import h5py

    path = _require_file(path)
    name = path.name
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(f"{path}: not a readable hdf5 file ({e})") from None
    with f:
        if "data" not in f:
            raise _fail(name, "data", "expected the robomimic group 'data', not found")
        data = f["data"]
        env_args: dict[str, Any] = {}
        if "env_args" in data.attrs:
            try:
                env_args = json.loads(data.attrs["env_args"])
            except (TypeError, json.JSONDecodeError):
                raise _fail(name, "data.attrs[env_args]", "expected a JSON string") from None
        generation = None
        if GENERATION_ATTR in data.attrs:
            try:
                generation = json.loads(data.attrs[GENERATION_ATTR])
            except (TypeError, json.JSONDecodeError):
                raise _fail(name, f"data.attrs[{GENERATION_ATTR}]", "expected JSON") from None

        if filter_key is not None:
            mask_key = f"mask/{filter_key}"
            if mask_key not in f:
                have = sorted(f["mask"].keys()) if "mask" in f else []
                raise _fail(name, mask_key, f"expected a filter key, file has {have}")
            demos = [d.decode() if isinstance(d, bytes) else str(d) for d in f[mask_key][()]]
            for d in demos:
                if d not in data:
                    raise _fail(name, mask_key, f"lists '{d}', which is not in 'data'")
        else:
            demos = list(data.keys())
        demos = sorted(demos, key=_demo_sort_key)
        if not demos:
            raise _fail(name, "data", "expected at least one demo, got none")

        if obs_keys is None:
            if OBS_KEYS_ATTR in data.attrs:
                obs_keys = json.loads(data.attrs[OBS_KEYS_ATTR])
            else:
                first = f"data/{demos[0]}/obs"
                if first not in f:
                    raise _fail(name, first, "expected an obs group, not found")
                obs_keys = sorted(k for k in f[first] if f[first][k].ndim == 2)
        obs_keys = list(obs_keys)
        if not obs_keys:
            raise _fail(name, f"data/{demos[0]}/obs", "expected at least one low-dim obs key")

        episodes, key_dims = [], None
        for demo in demos:
            g = data[demo]
            prefix = f"data/{demo}"
            arrays = {}
            for key in ("actions", "rewards", "dones"):
                if key not in g:
                    raise _fail(name, f"{prefix}/{key}", "expected a dataset, not found")
                arrays[key] = g[key][()]
            parts, nexts = [], []
            for k in obs_keys:
                if f"obs/{k}" not in g:
                    raise _fail(name, f"{prefix}/obs/{k}", "expected an obs key, not found")
                a = g["obs"][k][()]
                a = a.reshape(a.shape[0], -1) if a.ndim == 1 else a
                if a.ndim != 2:
                    raise _fail(
                        name, f"{prefix}/obs/{k}", f"expected a [T, dim] array, got {a.shape}"
                    )
                if parts and a.shape[0] != parts[0].shape[0]:
                    raise _fail(
                        name,
                        f"{prefix}/obs/{k}",
                        f"expected {parts[0].shape[0]} rows (as obs/{obs_keys[0]}), "
                        f"got {a.shape[0]}",
                    )
                if not np.all(np.isfinite(a)):
                    bad = np.argwhere(~np.isfinite(a))[0]
                    raise _fail(
                        name, f"{prefix}/obs/{k}", f"expected finite values, got NaN/inf at {bad}"
                    )
                parts.append(a)
                if "next_obs" in g and k in g["next_obs"]:
                    nexts.append(g["next_obs"][k][-1].reshape(-1))
            dims = tuple(int(p.shape[1]) for p in parts)
            if key_dims is None:
                key_dims = dims
            elif dims != key_dims:
                raise _fail(name, f"{prefix}/obs", f"expected key widths {key_dims}, got {dims}")
            obs = np.concatenate(parts, axis=1)
            images = {}
            for k in image_keys:
                if f"obs/{k}" not in g:
                    raise _fail(name, f"{prefix}/obs/{k}", "expected an image key, not found")
                images[k] = g["obs"][k][()]
            success = bool(g.attrs["success"]) if "success" in g.attrs else None
            ep = Episode(
                obs=obs,
                actions=arrays["actions"],
                rewards=arrays["rewards"],
                dones=arrays["dones"],
                success=success,
                name=demo,
                final_obs=np.concatenate(nexts) if len(nexts) == len(obs_keys) else None,
                images=images,
            )
            episodes.append(validate_episode(ep, name, prefix, action_dim))
            n = int(g.attrs.get("num_samples", obs.shape[0]))
            if n != obs.shape[0]:
                raise _fail(
                    name, f"{prefix}.attrs[num_samples]", f"expected {obs.shape[0]}, got {n}"
                )
        _check_consistent(episodes, name, [f"data/{d}" for d in demos])
        if filter_key is None and "total" in data.attrs:
            total = int(data.attrs["total"])
            if total != sum(len(ep) for ep in episodes):
                raise _fail(
                    name,
                    "data.attrs[total]",
                    f"expected {sum(len(ep) for ep in episodes)} (sum of demo lengths), "
                    f"got {total}",
                )
        filters = {k: len(f["mask"][k]) for k in f["mask"]} if "mask" in f else {}
    return DemoDataset(
        episodes=episodes,
        env_args=env_args,
        source=str(path),
        obs_keys=tuple(obs_keys),
        obs_key_dims=tuple(key_dims or ()),
        metadata={"format": "robomimic", "generation": generation, "filters": filters},
    )


def _atomic_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_robomimic_hdf5(
    path: str | Path,
    dataset: DemoDataset,
    obs_keys: Sequence[str] | Mapping[str, int] | None = None,
    env_args: Mapping[str, Any] | None = None,
    generation: Mapping[str, Any] | None = None,
    filters: Mapping[str, Sequence[int]] | None = None,
    val_fraction: float = 0.1,
    split_seed: int = 0,
) -> Path:
    """Write ``dataset`` in robomimic's hdf5 layout, atomically (temp name, then rename).

    Demos are named ``demo_0, demo_1, ...`` in dataset order. The flat observation is split back
    into ``obs/<key>`` datasets: ``obs_keys`` maps key -> width, or names keys whose widths come
    from ``dataset.obs_key_dims`` (a single key takes the whole observation). ``next_obs/<key>``
    is ``obs`` shifted by one, ending in ``final_obs`` (or the last obs when unknown), as
    robomimic loads it. ``env_args`` (default ``dataset.env_args``) goes to
    ``data.attrs["env_args"]`` as JSON, ``generation`` to ``data.attrs["otpr_generation"]``,
    ``Episode.success`` to the demo's ``success`` attr. ``filters`` maps a filter name to episode
    indices (``mask/<name>``); by default ``mask/train``/``mask/valid`` come from
    :func:`split_episodes` with ``val_fraction`` and ``split_seed``.
    """
    import h5py

    path = Path(path)
    if len(dataset) == 0:
        raise DatasetError(f"{path}: episodes: expected at least one episode to write, got none")
    if obs_keys is None:
        obs_keys = dataset.obs_keys or ("obs",)
    if isinstance(obs_keys, Mapping):
        keys, dims = list(obs_keys.keys()), [int(v) for v in obs_keys.values()]
    else:
        keys = list(obs_keys)
        if len(keys) == 1:
            dims = [dataset.obs_dim]
        elif tuple(keys) == tuple(dataset.obs_keys) and dataset.obs_key_dims:
            dims = list(dataset.obs_key_dims)
        else:
            raise DatasetError(
                f"{path}: obs_keys: widths of {keys} unknown; pass a mapping key -> width"
            )
    if sum(dims) != dataset.obs_dim:
        raise DatasetError(
            f"{path}: obs_keys: expected widths summing to obs_dim {dataset.obs_dim}, "
            f"got {dict(zip(keys, dims))}"
        )
    bounds = np.cumsum([0, *dims])
    if filters is None:
        train, val = _split_indices(len(dataset), val_fraction, split_seed)
        filters = {"train": train, "valid": val}
    for fname, idx in filters.items():
        bad = [int(i) for i in idx if not 0 <= int(i) < len(dataset)]
        if bad:
            raise DatasetError(
                f"{path}: mask/{fname}: expected episode indices in [0, {len(dataset)}), got {bad}"
            )

    episodes = [validate_episode(ep, path.name, f"episodes[{i}]") for i, ep in enumerate(dataset)]
    _check_consistent(episodes, path.name, [f"episodes[{i}]" for i in range(len(episodes))])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _atomic_path(path)
    try:
        with h5py.File(tmp, "w") as f:
            data = f.create_group("data")
            data.attrs["env_args"] = json.dumps(dict(env_args or dataset.env_args))
            data.attrs["total"] = int(sum(len(ep) for ep in episodes))
            data.attrs[OBS_KEYS_ATTR] = json.dumps(keys)
            if generation is not None:
                data.attrs[GENERATION_ATTR] = json.dumps(dict(generation))
            for i, ep in enumerate(episodes):
                g = data.create_group(f"demo_{i}")
                g.attrs["num_samples"] = len(ep)
                if ep.success is not None:
                    g.attrs["success"] = bool(ep.success)
                g.create_dataset("actions", data=ep.actions)
                g.create_dataset("rewards", data=ep.rewards)
                g.create_dataset("dones", data=ep.dones.astype(np.int64))
                last = ep.final_obs if ep.final_obs is not None else ep.obs[-1]
                next_obs = np.concatenate([ep.obs[1:], last[None]], axis=0)
                for k, lo, hi in zip(keys, bounds[:-1], bounds[1:]):
                    g.create_dataset(f"obs/{k}", data=ep.obs[:, lo:hi])
                    g.create_dataset(f"next_obs/{k}", data=next_obs[:, lo:hi])
                for k, img in ep.images.items():
                    g.create_dataset(f"obs/{k}", data=img, compression="gzip")
            for fname, idx in filters.items():
                names = [f"demo_{int(i)}" for i in idx]
                f.create_dataset(f"mask/{fname}", data=np.array(names, dtype="S"))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# ----------------------------------------------------------------------------------------------
# D4RL hdf5
# ----------------------------------------------------------------------------------------------


def read_d4rl_hdf5(path: str | Path, action_dim: int | None = None) -> DemoDataset:
    """Read a D4RL-layout hdf5 file and split it into episodes at ``terminals | timeouts``.

    An episode ends at (and includes) every step flagged terminal or timeout; ``dones`` holds the
    terminal flags only (a timeout is a truncation) and ``extra["truncations"]`` the timeouts.
    Steps after the last flag form a final, unfinished episode. When the file has
    ``next_observations``, each episode's ``final_obs`` is the next observation of its last step.
    """
    import h5py

    path = _require_file(path)
    name = path.name
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(f"{path}: not a readable hdf5 file ({e})") from None
    with f:
        arrays = {}
        for key in ("observations", "actions", "rewards", "terminals", "timeouts"):
            if key not in f:
                raise _fail(name, key, "expected a top-level dataset, not found")
            arrays[key] = f[key][()]
        next_obs = f["next_observations"][()] if "next_observations" in f else None
    obs = arrays["observations"]
    if obs.ndim != 2:
        raise _fail(name, "observations", f"expected a [N, obs_dim] array, got {obs.shape}")
    N = obs.shape[0]
    if N == 0:
        raise _fail(name, "observations", "expected a non-empty dataset, got 0 steps")
    for key in ("actions", "rewards", "terminals", "timeouts"):
        a = arrays[key]
        want_ndim = 2 if key == "actions" else 1
        if a.ndim != want_ndim or a.shape[0] != N:
            raise _fail(name, key, f"expected {N} rows (as observations), got shape {a.shape}")
    if next_obs is not None and next_obs.shape != obs.shape:
        raise _fail(name, "next_observations", f"expected shape {obs.shape}, got {next_obs.shape}")
    terminals = arrays["terminals"].astype(bool)
    timeouts = arrays["timeouts"].astype(bool)
    ends = np.flatnonzero(terminals | timeouts) + 1
    if ends.size == 0 or ends[-1] != N:
        ends = np.append(ends, N)
    starts = np.concatenate([[0], ends[:-1]])
    episodes = []
    for s, e in zip(starts, ends):
        ep = Episode(
            obs=obs[s:e],
            actions=arrays["actions"][s:e],
            rewards=arrays["rewards"][s:e],
            dones=terminals[s:e],
            name=f"steps[{s}:{e}]",
            final_obs=None if next_obs is None else next_obs[e - 1],
            extra={"truncations": timeouts[s:e]},
        )
        # Errors name the flat dataset and the episode's row range in it.
        where = f"[{s}:{e}]"
        keys = {
            "obs": f"observations{where}",
            "actions": f"actions{where}",
            "rewards": f"rewards{where}",
            "dones": f"terminals{where}",
            "final_obs": f"next_observations[{e - 1}]",
        }
        episodes.append(validate_episode(ep, name, "", action_dim, keys))
    return DemoDataset(
        episodes=episodes,
        source=str(path),
        obs_keys=("observations",),
        obs_key_dims=(obs.shape[1],),
        metadata={"format": "d4rl"},
    )


# ----------------------------------------------------------------------------------------------
# Minari
# ----------------------------------------------------------------------------------------------


@contextmanager
def _minari_root(root: Path):
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def _flatten_entry(value: Any) -> np.ndarray:
    """``[T, ...]`` array or (nested) dict of them -> ``[T, d]``, dict entries in sorted order."""
    if isinstance(value, Mapping):
        return np.concatenate([_flatten_entry(value[k]) for k in sorted(value)], axis=1)
    value = np.asarray(value)
    return value.reshape(value.shape[0], -1)


def read_minari(
    dataset_id: str,
    root: str | Path,
    obs_key: str | Sequence[str] | None = "observation",
    action_dim: int | None = None,
) -> DemoDataset:
    """Read a Minari dataset stored locally under ``root`` (never downloads).

    ``minari.load_dataset(dataset_id, download=False)`` runs with ``MINARI_DATASETS_PATH=root``;
    the variable is restored afterwards. Minari stores ``T + 1`` observations per episode: the
    first ``T`` become ``obs`` and the last ``final_obs``; ``dones`` are the terminations and
    ``extra["truncations"]`` the truncations.

    Dict observations: the flat observation concatenates the entries named by ``obs_key`` in
    order. The default ``"observation"`` is the robot-and-object state of goal-conditioned
    datasets such as ``D4RL/kitchen/*`` (59 numbers for FrankaKitchen-v1: 9 arm+gripper joint
    positions, 9 velocities, 21 object positions, 20 object velocities); their
    ``achieved_goal``/``desired_goal`` entries describe the task, not the state, and are left out.
    ``None`` concatenates every entry in sorted key order (nested dicts, such as Kitchen's
    per-task goals, are flattened the same way). Box observations ignore ``obs_key``.
    ``Episode.success`` is ``any(infos["success"])`` when the dataset recorded it, else ``None``.
    """
    import minari

    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"{root}: no such Minari datasets directory")
    source = root / dataset_id
    with _minari_root(root):
        try:
            ds = minari.load_dataset(dataset_id, download=False)
        except FileNotFoundError:
            raise DatasetNotFoundError(
                f"{source}: Minari dataset '{dataset_id}' not found under {root} "
                "(expected <root>/<dataset_id>/data)"
            ) from None
        episodes: list[Episode] = []
        used_keys: list[str] = []
        used_dims: list[int] = []
        for ep_data in ds.iterate_episodes():
            prefix = f"episode_{ep_data.id}"
            o = ep_data.observations
            if isinstance(o, dict):
                if obs_key is None:
                    used_keys = sorted(o)
                else:
                    used_keys = [obs_key] if isinstance(obs_key, str) else list(obs_key)
                for k in used_keys:
                    if k not in o:
                        raise _fail(
                            source,
                            f"{prefix}/observations/{k}",
                            f"expected a dict observation entry, dataset has {sorted(o)}",
                        )
                parts = [_flatten_entry(o[k]) for k in used_keys]
                used_dims = [p.shape[1] for p in parts]
                o = np.concatenate(parts, axis=1)
            o = np.asarray(o)
            if o.ndim == 1:
                o = o[:, None]
            if not isinstance(ep_data.observations, dict):
                used_keys, used_dims = ["observations"], [o.shape[1]]
            T = len(ep_data.rewards)
            if o.shape[0] != T + 1:
                raise _fail(
                    source, f"{prefix}/observations", f"expected {T + 1} rows, got {o.shape[0]}"
                )
            actions = np.asarray(ep_data.actions)
            actions = actions[:, None] if actions.ndim == 1 else actions
            infos = ep_data.infos or {}
            success = bool(np.any(infos["success"])) if "success" in infos else None
            ep = Episode(
                obs=o[:T],
                actions=actions,
                rewards=np.asarray(ep_data.rewards),
                dones=np.asarray(ep_data.terminations),
                success=success,
                name=prefix,
                final_obs=o[T],
                extra={"truncations": np.asarray(ep_data.truncations, dtype=bool)},
            )
            episodes.append(validate_episode(ep, source, prefix, action_dim))
        spec = ds.spec.env_spec
        env_args = {}
        if spec is not None:
            env_args = {"env_name": spec.id, "env_kwargs": dict(spec.kwargs)}
        total = ds.total_episodes
    _check_consistent(episodes, source, [ep.name for ep in episodes])
    return DemoDataset(
        episodes=episodes,
        env_args=env_args,
        source=str(source),
        obs_keys=tuple(used_keys),
        obs_key_dims=tuple(used_dims),
        metadata={"format": "minari", "dataset_id": dataset_id, "total_episodes": total},
    )


# ----------------------------------------------------------------------------------------------
# Windows, splits, statistics
# ----------------------------------------------------------------------------------------------


def window_indices(
    dataset: DemoDataset, obs_horizon: int, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices into the concatenated steps of ``dataset`` for every training window.

    Returns ``(obs_idx [N, T_o], act_idx [N, H])`` with one window per time step
    (``N = dataset.num_steps``); rows index ``np.concatenate([ep.obs for ep in dataset])`` (and
    the same for actions or images), so image windows can be gathered lazily. The layout is the
    one drawn in :func:`make_windows`.
    """
    if obs_horizon < 1 or horizon < 1:
        raise ValueError(
            f"window: expected obs_horizon >= 1 and horizon >= 1, got {obs_horizon}, {horizon}"
        )
    obs_rows, act_rows, offset = [], [], 0
    for ep in dataset:
        T = len(ep)
        t = np.arange(T)[:, None]
        o = np.clip(t + np.arange(-obs_horizon + 1, 1)[None], 0, T - 1)
        a = np.clip(t + np.arange(horizon)[None], 0, T - 1)
        obs_rows.append(o + offset)
        act_rows.append(a + offset)
        offset += T
    return np.concatenate(obs_rows), np.concatenate(act_rows)


def make_windows(
    dataset: DemoDataset, obs_horizon: int, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cut every (observation history, action chunk) pair, diffusion_policy style.

    The window at time ``t`` of an episode of length ``T`` (drawn for ``T_o = 2``, ``H = 4``)::

        step      t-2   t-1    t    t+1   t+2   t+3   t+4
        obs              o     o                            T_o observations, ending at t
        actions                a     a     a     a          H actions, starting at t

    At the episode edges, steps outside ``0..T-1`` repeat the nearest step of the episode::

        t = 0:     obs      o_0  o_0                          (o_{-1} -> o_0)
        t = T-2:   actions  a_{T-2}  a_{T-1}  a_{T-1}  a_{T-1}  (a_T, a_{T+1} -> a_{T-1})

    Windows never cross episodes. Returns ``obs [N, T_o, obs_dim]`` and
    ``actions [N, H, action_dim]``, float32, one window per time step.
    """
    obs_idx, act_idx = window_indices(dataset, obs_horizon, horizon)
    obs = np.concatenate([ep.obs for ep in dataset]).astype(np.float32, copy=False)
    act = np.concatenate([ep.actions for ep in dataset]).astype(np.float32, copy=False)
    return obs[obs_idx], act[act_idx]


def _split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"split: val_fraction must be in [0, 1), got {val_fraction}")
    n_val = min(int(round(val_fraction * n)), n - 1) if n > 1 else 0
    perm = np.random.default_rng(seed).permutation(n)
    val = sorted(int(i) for i in perm[:n_val])
    train = sorted(int(i) for i in perm[n_val:])
    return train, val


def split_episodes(
    dataset: DemoDataset, val_fraction: float, seed: int
) -> tuple[DemoDataset, DemoDataset]:
    """Split per episode into (train, val); the same seed gives the same split.

    ``round(val_fraction * n)`` episodes (at most ``n - 1``) go to validation, drawn by a
    permutation from ``np.random.default_rng(seed)``; both halves keep dataset order and record
    their episode indices in ``metadata["episode_indices"]``.
    """
    train_idx, val_idx = _split_indices(len(dataset), val_fraction, seed)
    train, val = dataset.subset(train_idx), dataset.subset(val_idx)
    train.metadata["episode_indices"] = train_idx
    val.metadata["episode_indices"] = val_idx
    return train, val


def dataset_stats(dataset: DemoDataset) -> dict[str, np.ndarray]:
    """Per-dimension ``obs_min/obs_max/act_min/act_max`` over all steps (float32)."""
    obs = np.concatenate([ep.obs for ep in dataset])
    act = np.concatenate([ep.actions for ep in dataset])
    return {
        "obs_min": obs.min(0).astype(np.float32),
        "obs_max": obs.max(0).astype(np.float32),
        "act_min": act.min(0).astype(np.float32),
        "act_max": act.max(0).astype(np.float32),
    }


# ----------------------------------------------------------------------------------------------
# CALVIN
# ----------------------------------------------------------------------------------------------


def read_calvin_episodes(
    root: str | Path,
    action_key: str = "rel_actions",
    image_keys: Sequence[str] = (),
    segments: str = "episodes",
    subtasks: Sequence[str] | None = None,
    max_episodes: int | None = None,
    action_dim: int | None = None,
) -> DemoDataset:
    """CALVIN's ``episode_XXXXXXX.npz`` steps as a :class:`DemoDataset`.

    The files are read by :func:`envs.calvin.read_calvin_segments` (see it for ``segments``,
    ``subtasks`` and the checks). ``obs = concat(robot_obs, scene_obs)`` (39), actions are
    ``action_key`` (``rel_actions`` by default), ``image_keys`` go to ``Episode.images``.
    ``segments="episodes"`` (play data): rewards 0, no terminal step, ``success=None``.
    ``segments="lang"``: each window ends with its subtask achieved, so its last step has reward
    1 and is terminal (as ``envs.calvin.CalvinTaskEnv`` scores it), ``success=True``, and
    ``extra`` holds ``task`` and ``instruction``. ``final_obs`` is ``None`` (no step follows).
    """
    from envs.calvin import (
        ROBOT_OBS_DIM,
        SCENE_OBS_DIM,
        CalvinDatasetError,
        CalvinDatasetNotFoundError,
        read_calvin_segments,
    )

    try:
        segs = read_calvin_segments(root, action_key, image_keys, segments, subtasks, max_episodes)
    except CalvinDatasetNotFoundError as e:
        raise DatasetNotFoundError(str(e)) from None
    except CalvinDatasetError as e:
        raise DatasetError(str(e)) from None
    episodes = []
    for seg in segs:
        T = seg.end - seg.start + 1
        rewards, dones = np.zeros(T, np.float32), np.zeros(T, bool)
        extra: dict[str, Any] = {"frame_ids": (seg.start, seg.end)}
        if seg.task is not None:
            rewards[-1], dones[-1] = 1.0, True
            extra.update(task=seg.task, instruction=seg.instruction)
        name = f"episode_{seg.start:07d}..{seg.end:07d}"
        ep = Episode(
            obs=np.concatenate([seg.robot_obs, seg.scene_obs], axis=1),
            actions=seg.actions,
            rewards=rewards,
            dones=dones,
            success=True if seg.task is not None else None,
            name=name,
            images=seg.images,
            extra=extra,
        )
        episodes.append(validate_episode(ep, Path(root).name, name, action_dim))
    return DemoDataset(
        episodes=episodes,
        source=str(root),
        obs_keys=("robot_obs", "scene_obs"),
        obs_key_dims=(ROBOT_OBS_DIM, SCENE_OBS_DIM),
        metadata={"format": "calvin", "segments": segments, "action_key": action_key},
    )
