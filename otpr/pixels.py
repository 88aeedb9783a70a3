"""Learning from pixels (``task.pixels=true``): camera frames become feature vectors once, and
everything downstream (demo windows, normaliser, replay, critics, potentials) sees only those.

The state and pixel runs are one loop (``otpr.loop.Trainer``); they differ by its encoder,
``None`` or a :class:`PixelFeatures`::

    env member (envs.make(..., pixel_obs=True))     [frame.ravel(), proprio]   (H*W*3 + P)
      -> PixelFeatures (frozen ResNet-18, batched)   [features(frame), proprio] (2K + P)
      -> algo.act / replay / evaluation, as with a low-dim state of width 2K + P

    demo file (robomimic layout: obs/<camera>_image, next_obs/<camera>_image, low-dim obs/*)
      -> feature_dataset: every frame encoded once, in batches, cached on disk
      -> Episode.obs = [features, proprio]: make_windows, demo_transitions as for states

The features of a demo file are cached in ``<cache_dir>/<file stem>-<digest>.npz``, the digest
hashing what they are a function of: the episodes' frames (names, shapes, bytes) and the
encoder (every tensor of its state, its image size and crop). Other data or another encoder
(trained, or other weights) gives another file; the same ones read the cached features back.

Encoder modes (``policy.encoder``): frozen as loaded (random, or ImageNet ``weights`` from a
local file), or ``train=true``: trained with the policy during behaviour cloning on random
crops (:class:`PixelWindows`), then frozen, and the demos encoded again with it. A trained
encoder's features are normalised with their fixed range [-1, 1] (spatial-softmax
coordinates), since a range fitted on the untrained encoder's features would not hold after
training; a frozen encoder's are fitted on the demos like any observation.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from envs import split_pixel_obs
from envs.base import TaskSpec
from otpr.config import Config, ConfigError
from otpr.data import DemoDataset, Episode, window_indices

#: The camera ``task.camera=null`` means, per suite (robosuite's is a real camera name).
DEFAULT_CAMERA = {"robomimic": "agentview", "metaworld": "default", "kitchen": "default"}


def camera_of(cfg: Config, suite: str) -> str:
    return cfg.task.camera or DEFAULT_CAMERA.get(suite, "default")


def image_key(cfg: Config) -> str:
    """The demo file's image key of this run's camera, robomimic style: ``agentview_image``."""
    import envs

    return f"{camera_of(cfg, envs.suite_of(cfg.task.name))}_image"


def pixel_env_kwargs(cfg: Config) -> dict[str, Any]:
    """What the task factory is given to render the run's frames."""
    out: dict[str, Any] = {"image_size": cfg.task.image_size}
    if cfg.task.camera is not None:
        out["camera"] = cfg.task.camera
    return out


def check_pixels(cfg: Config, spec: TaskSpec) -> None:
    """One ``ConfigError`` line where ``task.pixels`` cannot work for this task."""
    if spec.suite not in DEFAULT_CAMERA:
        raise ConfigError(
            f"task.pixels: {spec.suite} tasks do not render here; pixels work on "
            f"{sorted(DEFAULT_CAMERA)}"
        )
    if cfg.task.camera is not None and spec.suite != "robomimic":
        raise ConfigError(
            f"task.camera: {spec.suite} renders its default camera only; set task.camera=null"
        )
    if cfg.task.proprio and "proprio" not in spec.extra:
        raise ConfigError(f"task.proprio: task {spec.name!r} names no proprioceptive state")


def proprio_slice(cfg: Config, spec: TaskSpec) -> tuple[int, int] | None:
    """The slice of the low-dim observation kept beside the features (None: images only)."""
    if not cfg.task.proprio:
        return None
    lo, hi = spec.extra["proprio"]
    return int(lo), int(hi)


def build_encoder(cfg: Config) -> Any:
    """A fresh ``policies.encoder.ImageEncoder`` of the ``policy.encoder`` settings, frozen
    (eval mode, no gradients) until behaviour cloning trains it."""
    from policies.encoder import ImageEncoder

    e = cfg.policy.encoder
    encoder = ImageEncoder(
        cfg.task.image_size, e.num_keypoints, e.crop, weights=e.weights, device=cfg.device
    )
    return freeze(encoder)


def freeze(encoder: torch.nn.Module) -> torch.nn.Module:
    encoder.eval()
    encoder.requires_grad_(False)
    return encoder


def pixel_spec(spec: TaskSpec, cfg: Config, feature_dim: int) -> TaskSpec:
    """The task as the policy sees it in a pixel run: observations ``[features, proprio]``."""
    proprio = proprio_slice(cfg, spec)
    width = 0 if proprio is None else proprio[1] - proprio[0]
    camera = camera_of(cfg, spec.suite)
    keys = (f"{camera}_features",) + (("proprio",) if proprio else ())
    extra = dict(
        spec.extra,
        state_obs_dim=spec.obs_dim,
        pixels={"camera": camera, "image_size": cfg.task.image_size, "proprio": proprio},
        obs_key_dims={keys[0]: feature_dim, **({"proprio": width} if proprio else {})},
    )
    return TaskSpec(
        name=spec.name,
        suite=spec.suite,
        obs_dim=feature_dim + width,
        action_dim=spec.action_dim,
        max_episode_steps=spec.max_episode_steps,
        obs_keys=keys,
        extra=extra,
    )


# ---------------------------------------------------------------------------------- encoding
@torch.no_grad()
def encode_frames(encoder: torch.nn.Module, frames: np.ndarray, batch_size: int) -> np.ndarray:
    """uint8 frames [N, H, W, 3] -> features [N, F] (float32), ``batch_size`` at a time."""
    out = []
    for start in range(0, len(frames), batch_size):
        batch = torch.as_tensor(frames[start : start + batch_size])
        out.append(encoder(batch).float().cpu().numpy())
    if not out:
        return np.zeros((0, encoder.out_dim), np.float32)
    return np.concatenate(out)


class PixelFeatures:
    """The loop's encoder: raw pixel observations ``[..., H*W*3 + P]`` (``envs.make(...,
    pixel_obs=True)``) -> ``[..., F + P]``, every frame of a call encoded in batches."""

    def __init__(self, encoder: torch.nn.Module, image_size: int, batch_size: int) -> None:
        self.encoder = encoder
        self.image_size = image_size
        self.batch_size = batch_size

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        frames, proprio = split_pixel_obs(np.asarray(obs), self.image_size)
        lead = frames.shape[:-3]
        flat = frames.reshape(-1, *frames.shape[-3:])
        feats = encode_frames(self.encoder, flat, self.batch_size).reshape(*lead, -1)
        return np.concatenate([feats, proprio], axis=-1)


# ---------------------------------------------------------------------------------- the cache
def _hash_array(h: Any, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr)
    h.update(f"{arr.dtype.str}{arr.shape}".encode())
    h.update(memoryview(arr).cast("B"))


def data_digest(dataset: DemoDataset, key: str) -> str:
    """sha256 of what the encoder reads of ``dataset``: each episode's name and frames."""
    h = hashlib.sha256(key.encode())
    for ep in dataset:
        h.update(ep.name.encode())
        _hash_array(h, ep.images[key])
        if key in ep.final_images:
            _hash_array(h, ep.final_images[key])
    return h.hexdigest()


def encoder_digest(encoder: torch.nn.Module) -> str:
    """sha256 of every tensor of the encoder's state and its image size and crop."""
    h = hashlib.sha256(f"{encoder.image_size}/{encoder.crop_size}".encode())
    for name, tensor in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        _hash_array(h, tensor.detach().cpu().contiguous().numpy())
    return h.hexdigest()


def cache_path(dataset: DemoDataset, key: str, encoder: torch.nn.Module, cache_dir: Path) -> Path:
    digest = hashlib.sha256((data_digest(dataset, key) + encoder_digest(encoder)).encode())
    stem = Path(dataset.source).stem or "demos"
    return Path(cache_dir) / f"{stem}-{key}-{digest.hexdigest()[:20]}.npz"


def default_cache_dir(cfg: Config, dataset: DemoDataset) -> Path:
    if cfg.policy.encoder.cache_dir is not None:
        return Path(cfg.policy.encoder.cache_dir)
    return Path(dataset.source).parent / "features"


def _frames_of(dataset: DemoDataset, key: str) -> tuple[np.ndarray, list[tuple[int, int, bool]]]:
    """Every frame of ``dataset`` in one array (per episode its T frames, then its final frame
    where there is one) and per episode (start row, T, has a final frame)."""
    rows, layout, start = [], [], 0
    for ep in dataset:
        if key not in ep.images:
            raise ConfigError(f"task.pixels: demo {ep.name or '?'} has no {key!r} frames")
        frames = ep.images[key]
        final = key in ep.final_images
        rows.append(frames)
        if final:
            rows.append(ep.final_images[key][None])
        layout.append((start, len(frames), final))
        start += len(frames) + int(final)
    return np.concatenate(rows), layout


def feature_dataset(
    dataset: DemoDataset,
    encoder: torch.nn.Module,
    key: str,
    proprio: tuple[int, int] | None,
    batch_size: int,
    cache_dir: str | Path | None,
) -> tuple[DemoDataset, dict[str, Any]]:
    """``dataset`` with every observation ``[features of its frame, obs[proprio]]`` and no
    images; features from the cache when it has this data and encoder, else encoded in batches
    and cached (``cache_dir`` None: no cache). Returns the dataset and what happened
    (``cache``: hit | miss | off, ``path``, ``frames``, ``encode_s``)."""
    import time

    path = None if cache_dir is None else cache_path(dataset, key, encoder, Path(cache_dir))
    frames, layout = _frames_of(dataset, key)
    info: dict[str, Any] = {"path": None if path is None else str(path), "frames": len(frames)}
    feats = None
    if path is not None and path.is_file():
        try:
            with np.load(path) as stored:
                feats = stored["features"]
            if feats.shape != (len(frames), encoder.out_dim):
                feats = None  # not what this data gives: encode anew (and overwrite)
        except (OSError, ValueError, KeyError):
            feats = None  # an unreadable file is a miss
    if feats is not None:
        info.update(cache="hit", encode_s=0.0)
    else:
        tic = time.perf_counter()
        feats = encode_frames(encoder, frames, batch_size)
        info.update(cache="off" if path is None else "miss", encode_s=time.perf_counter() - tic)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npz")
            np.savez(tmp, features=feats)
            os.replace(tmp, path)
    episodes = []
    for ep, (start, T, final) in zip(dataset, layout, strict=True):
        obs = _with_proprio(feats[start : start + T], ep.obs, proprio)
        final_obs = None
        if final and ep.final_obs is not None:
            final_obs = _with_proprio(feats[start + T][None], ep.final_obs[None], proprio)[0]
        episodes.append(
            Episode(
                obs=obs,
                actions=ep.actions,
                rewards=ep.rewards,
                dones=ep.dones,
                success=ep.success,
                name=ep.name,
                final_obs=final_obs,
                extra=dict(ep.extra),
            )
        )
    out = DemoDataset(
        episodes=episodes,
        env_args=dataset.env_args,
        source=dataset.source,
        obs_keys=(f"{key[: -len('_image')]}_features",) + (("proprio",) if proprio else ()),
        metadata=dict(dataset.metadata, features=info),
    )
    return out, info


def _with_proprio(feats: np.ndarray, obs: np.ndarray, proprio: tuple[int, int] | None):
    if proprio is None:
        return feats.astype(np.float32)
    return np.concatenate([feats, obs[:, proprio[0] : proprio[1]]], axis=1).astype(np.float32)


# ---------------------------------------------------------------------------------- training
class PixelWindows:
    """The demo windows as frames, for behaviour cloning that trains the encoder: row ``i`` is
    the same window as row ``i`` of ``make_windows`` on the feature dataset (same episodes,
    same ``window_indices``); :meth:`obs` encodes a batch of them with gradients, each frame
    randomly cropped (the encoder in training mode)."""

    def __init__(
        self, dataset: DemoDataset, key: str, proprio: tuple[int, int] | None, obs_horizon: int
    ) -> None:
        self.frames = np.concatenate([ep.images[key] for ep in dataset])
        obs = np.concatenate([ep.obs for ep in dataset]).astype(np.float32)
        width = 0 if proprio is None else proprio[1] - proprio[0]
        self.proprio = obs[:, proprio[0] : proprio[1]] if proprio else obs[:, :width]
        self.obs_idx, _ = window_indices(dataset, obs_horizon, 1)

    def __len__(self) -> int:
        return len(self.obs_idx)

    def obs(
        self, idx: np.ndarray, encoder: torch.nn.Module, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Windows ``idx`` as ``[B, T_o, F + P]`` features of randomly cropped frames."""
        rows = self.obs_idx[idx]  # [B, T_o]
        device = encoder.mean.device
        frames = torch.as_tensor(self.frames[rows.reshape(-1)], device=device)
        feats = encoder(frames, generator).reshape(*rows.shape, -1)
        proprio = torch.as_tensor(self.proprio[rows], device=device)
        return torch.cat([feats, proprio], dim=-1)


def fix_feature_range(normalizer: Any, feature_dim: int) -> None:
    """Normalise the first ``feature_dim`` observation dims with the fixed range [-1, 1] (a
    trained encoder's spatial-softmax coordinates) instead of the fitted one."""
    with torch.no_grad():
        normalizer.obs_min[:feature_dim] = -1.0
        normalizer.obs_max[:feature_dim] = 1.0
