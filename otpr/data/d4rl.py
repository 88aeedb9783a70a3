"""D4RL hdf5: :func:`read_d4rl_hdf5`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from otpr.data.dataset import (
    DemoDataset,
    Episode,
    _fail,
    _hdf5_array,
    _hdf5_get,
    _open_hdf5,
    _require_file,
    validate_episode,
)


def read_d4rl_hdf5(path: str | Path, action_dim: int | None = None) -> DemoDataset:
    """Read a D4RL-layout hdf5 file and split it into episodes at ``terminals | timeouts``.

    An episode ends at (and includes) every step flagged terminal or timeout; ``dones`` holds the
    terminal flags only (a timeout is a truncation) and ``extra["truncations"]`` the timeouts.
    Steps after the last flag form a final, unfinished episode. When the file has
    ``next_observations``, each episode's ``final_obs`` is the next observation of its last step.
    Anything malformed raises :class:`DatasetError` naming the file, the key and what was
    expected.
    """
    path = _require_file(path)
    name = path.name
    with _open_hdf5(path) as f:
        keys = ("observations", "actions", "rewards", "terminals", "timeouts")
        arrays = {key: _hdf5_array(f, key, name, key) for key in keys}
        next_obs = None
        if _hdf5_get(f, "next_observations", name, "next_observations") is not None:
            next_obs = _hdf5_array(f, "next_observations", name, "next_observations")
    obs = arrays["observations"]
    if obs.ndim != 2:
        raise _fail(name, "observations", f"expected a [N, obs_dim] array, got {obs.shape}")
    N = obs.shape[0]
    if N == 0:
        raise _fail(name, "observations", "expected a non-empty dataset, got 0 steps")
    for key in ("actions", "rewards", "terminals", "timeouts"):
        a = arrays[key]
        ndim = 2 if key == "actions" else 1
        want = f"[{N}, action_dim]" if ndim == 2 else f"[{N}]"
        if a.ndim != ndim or a.shape[0] != N:
            raise _fail(name, key, f"expected shape {want} (as observations), got {a.shape}")
    for key in ("terminals", "timeouts"):  # flags: the others are checked per episode below
        if not np.all(np.isfinite(arrays[key])):
            bad = np.flatnonzero(~np.isfinite(arrays[key]))[0]
            raise _fail(name, key, f"expected finite flags, got NaN/inf at {bad}")
    if next_obs is not None and next_obs.shape != obs.shape:
        raise _fail(name, "next_observations", f"expected shape {obs.shape}, got {next_obs.shape}")
    if next_obs is not None and not np.all(np.isfinite(next_obs)):
        bad = np.argwhere(~np.isfinite(next_obs))[0]
        raise _fail(name, "next_observations", f"expected finite values, got NaN/inf at {bad}")
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
