"""CALVIN: :func:`read_calvin_episodes`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from otpr.data.dataset import (
    DatasetError,
    DatasetNotFoundError,
    DemoDataset,
    Episode,
    validate_episode,
)


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
