"""robomimic hdf5: :func:`read_robomimic_hdf5`, :func:`write_robomimic_hdf5`."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from otpr.data.dataset import (
    DatasetError,
    DemoDataset,
    Episode,
    _check_consistent,
    _fail,
    _open_hdf5,
    _require_file,
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
    in ``mask/<filter_key>``. ``image_keys`` are kept, unconcatenated, in ``Episode.images``.
    ``action_dim``, when given, is checked against every demo's actions.
    """
    path = _require_file(path)
    name = path.name
    with _open_hdf5(path) as f:
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
