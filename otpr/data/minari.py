"""Minari: :func:`read_minari` (a dataset stored under a local ``MINARI_DATASETS_PATH``)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
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
