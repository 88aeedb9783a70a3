"""robomimic hdf5: :func:`read_robomimic_hdf5`, :func:`write_robomimic_hdf5`."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from otpr.data.dataset import (
    _HDF5_ERRORS,
    DatasetError,
    DemoDataset,
    Episode,
    _check_consistent,
    _fail,
    _hdf5_array,
    _hdf5_get,
    _hdf5_group,
    _int_attr,
    _json_attr,
    _open_hdf5,
    _read_attr,
    _require_file,
    numeric,
    validate_episode,
)
from otpr.data.windows import _split_indices

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
    in ``mask/<filter_key>``. ``image_keys`` are kept, unconcatenated, in ``Episode.images``
    (and the last frame of ``next_obs/<key>``, where the file has it, in ``final_images``).
    ``action_dim``, when given, is checked against every demo's actions. A demo's ``success``
    and ``task`` attributes (the task class of a multi-task episode) become ``Episode.success``
    and ``Episode.extra["task"]``: metadata for analysis, never part of the observation.

    Anything malformed (a missing or empty demo, a non-numeric or non-finite array, lengths
    that disagree, an attribute of the wrong type, a damaged file) raises :class:`DatasetError`
    naming the file, the key and what was expected.
    """
    path = _require_file(path)
    name = path.name
    with _open_hdf5(path) as f:
        data = _hdf5_group(f, "data", name, "data")
        env_args = _json_attr(data.attrs, "env_args", name, "data.attrs[env_args]", dict) or {}
        generation = _json_attr(
            data.attrs, GENERATION_ATTR, name, f"data.attrs[{GENERATION_ATTR}]", object
        )
        if filter_key is not None:
            demos = _filter_demos(f, data, filter_key, name)
        else:
            demos = list(data.keys())
        demos = sorted(demos, key=_demo_sort_key)
        if not demos:
            raise _fail(name, "data", "expected at least one demo, got none")

        if obs_keys is None:
            obs_keys = _json_attr(
                data.attrs, OBS_KEYS_ATTR, name, f"data.attrs[{OBS_KEYS_ATTR}]", list
            )
            if obs_keys is None:
                first = f"data/{demos[0]}/obs"
                group = _hdf5_group(f, first, name, first)
                obs_keys = sorted(k for k in group if getattr(group[k], "ndim", None) == 2)
            elif not all(isinstance(k, str) for k in obs_keys):
                raise _fail(
                    name, f"data.attrs[{OBS_KEYS_ATTR}]", f"expected key names, got {obs_keys}"
                )
        obs_keys = list(obs_keys)
        if not obs_keys:
            raise _fail(name, f"data/{demos[0]}/obs", "expected at least one low-dim obs key")

        episodes, key_dims = [], None
        for demo in demos:
            prefix = f"data/{demo}"
            g = _hdf5_group(data, demo, name, prefix)
            arrays = {
                k: _hdf5_array(g, k, name, f"{prefix}/{k}") for k in ("actions", "rewards", "dones")
            }
            parts, nexts = [], []
            for k in obs_keys:
                a = _hdf5_array(g, f"obs/{k}", name, f"{prefix}/obs/{k}")
                a = a.reshape(a.shape[0], -1) if a.ndim == 1 else a
                if a.ndim != 2:
                    raise _fail(
                        name, f"{prefix}/obs/{k}", f"expected a [T, dim] array, got {a.shape}"
                    )
                if a.shape[0] == 0:
                    raise _fail(
                        name, f"{prefix}/obs/{k}", "expected a non-empty episode, got 0 steps"
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
                if _hdf5_get(g, f"next_obs/{k}", name, f"{prefix}/next_obs/{k}") is not None:
                    nexts.append(_next_obs(g, k, a, name, prefix))
            dims = tuple(int(p.shape[1]) for p in parts)
            if key_dims is None:
                key_dims = dims
            elif dims != key_dims:
                raise _fail(name, f"{prefix}/obs", f"expected key widths {key_dims}, got {dims}")
            obs = np.concatenate(parts, axis=1)
            images = {k: _hdf5_array(g, f"obs/{k}", name, f"{prefix}/obs/{k}") for k in image_keys}
            final_images = {
                k: _last_frame(g, k, images[k], name, prefix)
                for k in image_keys
                if _hdf5_get(g, f"next_obs/{k}", name, f"{prefix}/next_obs/{k}") is not None
            }
            success = _int_attr(g.attrs, "success", name, f"{prefix}.attrs[success]")
            task = _str_attr(g.attrs, "task", name, f"{prefix}.attrs[task]")
            ep = Episode(
                obs=obs,
                actions=arrays["actions"],
                rewards=arrays["rewards"],
                dones=arrays["dones"],
                success=None if success is None else bool(success),
                name=demo,
                final_obs=np.concatenate(nexts) if len(nexts) == len(obs_keys) else None,
                images=images,
                extra={} if task is None else {"task": task},
                final_images=final_images,
            )
            episodes.append(validate_episode(ep, name, prefix, action_dim))
            n = _int_attr(g.attrs, "num_samples", name, f"{prefix}.attrs[num_samples]")
            if n is not None and n != obs.shape[0]:
                raise _fail(
                    name, f"{prefix}.attrs[num_samples]", f"expected {obs.shape[0]}, got {n}"
                )
        _check_consistent(episodes, name, [f"data/{d}" for d in demos])
        total = _int_attr(data.attrs, "total", name, "data.attrs[total]")
        if filter_key is None and total is not None:
            if total != sum(len(ep) for ep in episodes):
                raise _fail(
                    name,
                    "data.attrs[total]",
                    f"expected {sum(len(ep) for ep in episodes)} (sum of demo lengths), "
                    f"got {total}",
                )
        filters = {}
        if _hdf5_get(f, "mask", name, "mask") is not None:
            mask = _hdf5_group(f, "mask", name, "mask")
            filters = {k: len(_mask_names(mask, k, name)) for k in mask}
    return DemoDataset(
        episodes=episodes,
        env_args=env_args,
        source=str(path),
        obs_keys=tuple(obs_keys),
        obs_key_dims=tuple(key_dims or ()),
        metadata={"format": "robomimic", "generation": generation, "filters": filters},
    )


def _str_attr(attrs: Any, key: str, source: str, name: str) -> str | None:
    """The text attribute ``attrs[key]`` (str or UTF-8 bytes), None where it is absent."""
    value = _read_attr(attrs, key, source, name)
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise _fail(source, name, f"expected UTF-8 text, got {value!r:.80}") from None
    if not isinstance(value, str):
        raise _fail(source, name, f"expected text, got {value!r:.80}")
    return value


def _mask_names(mask: Any, key: str, source: str) -> list[str]:
    """The demo names listed in ``mask/<key>`` (bytes or text, a 1-D dataset)."""
    import h5py

    name = f"mask/{key}"
    obj = _hdf5_get(mask, key, source, name)
    if not isinstance(obj, h5py.Dataset):
        raise _fail(source, name, f"expected a dataset of demo names, got a {type(obj).__name__}")
    try:
        names = obj[()]
    except _HDF5_ERRORS as e:
        raise _fail(source, name, f"expected readable data, got an error ({e})") from None
    names = np.asarray(names)
    if names.ndim != 1 or names.dtype.kind not in "SUO":
        raise _fail(
            source, name, f"expected a 1-D list of demo names, got {names.dtype} {names.shape}"
        )
    out = []
    for d in names:
        try:
            out.append(d.decode() if isinstance(d, bytes) else str(d))
        except UnicodeDecodeError:
            raise _fail(source, name, f"expected UTF-8 demo names, got {d!r}") from None
    return out


def _filter_demos(f: Any, data: Any, filter_key: str, source: str) -> list[str]:
    """The demos ``mask/<filter_key>`` lists, each checked to be in ``data``."""
    mask_key = f"mask/{filter_key}"
    if _hdf5_get(f, mask_key, source, mask_key) is None:
        mask = _hdf5_get(f, "mask", source, "mask")
        have = sorted(mask.keys()) if hasattr(mask, "keys") else []
        raise _fail(source, mask_key, f"expected a filter key, file has {have}")
    demos = _mask_names(_hdf5_group(f, "mask", source, "mask"), filter_key, source)
    for d in demos:
        if _hdf5_get(data, d, source, mask_key) is None:
            raise _fail(source, mask_key, f"expected demos in 'data', got '{d}', which is not")
    return demos


def _next_obs(g: Any, key: str, obs: np.ndarray, source: str, prefix: str) -> np.ndarray:
    """The last row of ``next_obs/<key>``: the observation after the demo's last action."""
    name = f"{prefix}/next_obs/{key}"
    nxt = _hdf5_array(g, f"next_obs/{key}", source, name)
    nxt = nxt.reshape(nxt.shape[0], -1) if nxt.ndim == 1 else nxt
    if nxt.shape != obs.shape:
        raise _fail(source, name, f"expected shape {obs.shape} (as obs/{key}), got {nxt.shape}")
    if not np.all(np.isfinite(nxt)):
        bad = np.argwhere(~np.isfinite(nxt))[0]
        raise _fail(source, name, f"expected finite values, got NaN/inf at {bad}")
    return nxt[-1]


def _last_frame(g: Any, key: str, frames: np.ndarray, source: str, prefix: str) -> np.ndarray:
    """The last frame of ``next_obs/<key>`` (read alone): the image after the last action."""
    import h5py

    name = f"{prefix}/next_obs/{key}"
    obj = _hdf5_get(g, f"next_obs/{key}", source, name)
    if not isinstance(obj, h5py.Dataset) or obj.shape != frames.shape:
        got = obj.shape if isinstance(obj, h5py.Dataset) else type(obj).__name__
        raise _fail(source, name, f"expected shape {frames.shape} (as obs/{key}), got {got}")
    try:
        return numeric(obj[-1], source, name)
    except _HDF5_ERRORS as e:
        raise _fail(source, name, f"expected readable data, got an error ({e})") from None


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
    ``Episode.success`` to the demo's ``success`` attr and ``Episode.extra["task"]`` (the task
    class of a multi-task episode) to its ``task`` attr. ``filters`` maps a filter name to episode
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
    if len(dims) != len(keys):
        raise DatasetError(
            f"{path}: obs_keys: expected one width per key of {keys}, got widths {dims}"
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
                if "task" in ep.extra:  # analysis metadata, never part of the observation
                    g.attrs["task"] = str(ep.extra["task"])
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
                    if k in ep.final_images:  # robomimic's next_obs frames: shifted by one
                        nxt = np.concatenate([img[1:], ep.final_images[k][None]], axis=0)
                        g.create_dataset(f"next_obs/{k}", data=nxt, compression="gzip")
            for fname, idx in filters.items():
                names = [f"demo_{int(i)}" for i in idx]
                f.create_dataset(f"mask/{fname}", data=np.array(names, dtype="S"))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
