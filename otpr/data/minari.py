"""Minari: :func:`read_minari` (a dataset stored under a local ``MINARI_DATASETS_PATH``)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from otpr.data.dataset import (
    DatasetNotFoundError,
    DemoDataset,
    Episode,
    _check_consistent,
    _fail,
    numeric,
    validate_episode,
)


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


def _flatten_entry(value: Any, source: Path, key: str) -> np.ndarray:
    """``[T, ...]`` array or (nested) dict of them -> ``[T, d]``, dict entries in sorted order;
    anything else (a scalar, text, entries of different lengths) raises DatasetError."""
    if isinstance(value, Mapping):
        if not value:
            raise _fail(source, key, "expected observation entries, got an empty dict")
        parts = [_flatten_entry(value[k], source, f"{key}/{k}") for k in sorted(value)]
        rows = sorted({p.shape[0] for p in parts})
        if len(rows) > 1:
            raise _fail(source, key, f"expected entries of one length, got lengths {rows}")
        return np.concatenate(parts, axis=1)
    value = numeric(value, source, key)
    if value.ndim == 0:
        raise _fail(source, key, "expected a [T, ...] array, got a scalar")
    return value.reshape(value.shape[0], -1)


def _steps(
    value: Any, source: Path, key: str, T: int | None = None, ndim: tuple[int, ...] = (1, 2)
) -> np.ndarray:
    """A per-step array of an episode: numeric, finite, of one of the ``ndim`` dimensions, with
    ``T`` rows when given; anything else raises DatasetError naming ``key``."""
    arr = numeric(value, source, key)
    if arr.ndim not in ndim:
        want = " or ".join(("[T]", "[T, dim]")[n - 1] for n in ndim)
        raise _fail(source, key, f"expected one value per step ({want}), got shape {arr.shape}")
    if T is not None and arr.shape[0] != T:
        raise _fail(source, key, f"expected {T} steps (as rewards), got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        raise _fail(source, key, f"expected finite values, got NaN/inf at {bad}")
    return arr


def _minari_call(source: Path, key: str, what: str, call: Any) -> Any:
    """``call()`` into minari's own reader; what it raises on a damaged dataset (a missing
    metadata field, an unreadable hdf5 file, ...) becomes a DatasetError naming ``key`` and
    saying it expected ``what``."""
    try:
        return call()
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        message = f"expected {what}, got {type(e).__name__}: {first}"
        if isinstance(e, FileNotFoundError):
            raise DatasetNotFoundError(f"{source}: {key}: {message}") from e
        raise _fail(source, key, message) from e


def _episodes(ds: Any, source: Path) -> Iterator[Any]:
    """The dataset's episodes, read one at a time so that an error names the episode."""
    where = "data/main_data.hdf5"
    indices = _minari_call(
        source, where, "episode indices minari can read", lambda: list(ds.episode_indices)
    )
    for index in indices:
        yield _minari_call(
            source,
            f"episode_{index}",
            f"an episode minari can read from {where}",
            lambda i=index: next(iter(ds.iterate_episodes([i]))),
        )


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

    Anything malformed (minari cannot open it, an empty episode, a non-numeric or non-finite
    array, lengths that disagree) raises :class:`DatasetError` naming the dataset and the key.
    """
    import minari

    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"{root}: no such Minari datasets directory")
    source = root / dataset_id
    if not (source / "data").is_dir():
        raise DatasetNotFoundError(
            f"{source}: Minari dataset '{dataset_id}' not found under {root} "
            "(expected <root>/<dataset_id>/data)"
        )
    with _minari_root(root):
        ds = _minari_call(
            source,
            "data",
            "a dataset minari can open (metadata.json, main_data.hdf5)",
            lambda: minari.load_dataset(dataset_id, download=False),
        )
        episodes: list[Episode] = []
        used_keys: list[str] = []
        used_dims: list[int] = []
        for ep_data in _episodes(ds, source):
            prefix = f"episode_{ep_data.id}"
            o = ep_data.observations
            if isinstance(o, Mapping):
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
                parts = [
                    _flatten_entry(o[k], source, f"{prefix}/observations/{k}") for k in used_keys
                ]
                rows = sorted({p.shape[0] for p in parts})
                if len(rows) > 1:
                    raise _fail(
                        source,
                        f"{prefix}/observations",
                        f"expected entries {used_keys} of one length, got lengths {rows}",
                    )
                o = np.concatenate(parts, axis=1)
                used_dims = [p.shape[1] for p in parts]
            else:
                o = _steps(o, source, f"{prefix}/observations")
                o = o[:, None] if o.ndim == 1 else o
                used_keys, used_dims = ["observations"], [o.shape[1]]
            rewards = _steps(ep_data.rewards, source, f"{prefix}/rewards", ndim=(1,))
            T = len(rewards)
            if o.shape[0] != T + 1:
                raise _fail(
                    source,
                    f"{prefix}/observations",
                    f"expected {T + 1} rows (one more than the {T} rewards), got {o.shape[0]}",
                )
            actions = _steps(ep_data.actions, source, f"{prefix}/actions", T)
            actions = actions[:, None] if actions.ndim == 1 else actions
            truncations = _steps(ep_data.truncations, source, f"{prefix}/truncations", T, ndim=(1,))
            infos = ep_data.infos or {}
            success = None
            if isinstance(infos, Mapping) and "success" in infos:
                flags = _steps(infos["success"], source, f"{prefix}/infos/success")
                success = bool(np.any(flags))
            ep = Episode(
                obs=o[:T],
                actions=actions,
                rewards=rewards,
                dones=_steps(ep_data.terminations, source, f"{prefix}/terminations", T, ndim=(1,)),
                success=success,
                name=prefix,
                final_obs=o[T],
                extra={"truncations": truncations.astype(bool)},
            )
            episodes.append(validate_episode(ep, source, prefix, action_dim))
        spec = _minari_call(source, "data/metadata.json", "an env_spec", lambda: ds.spec.env_spec)
        env_args = {}
        if spec is not None:
            env_args = {"env_name": spec.id, "env_kwargs": dict(spec.kwargs)}
        total = _minari_call(
            source, "data/metadata.json", "total_episodes", lambda: ds.total_episodes
        )
    _check_consistent(episodes, source, [ep.name for ep in episodes])
    return DemoDataset(
        episodes=episodes,
        env_args=env_args,
        source=str(source),
        obs_keys=tuple(used_keys),
        obs_key_dims=tuple(used_dims),
        metadata={"format": "minari", "dataset_id": dataset_id, "total_episodes": total},
    )
