"""Training windows, per-episode splits and statistics of a :class:`DemoDataset`."""

from __future__ import annotations

import numpy as np

from otpr.data.dataset import DemoDataset


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
