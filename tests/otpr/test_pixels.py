"""Pixels (otpr/pixels.py): the demo feature cache, the replay of a pixel run, end to end.

Small frames (64 x 64), few keypoints, reach-v3 (the cheapest suite to render), debug budgets.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from otpr.config import ConfigError, apply_debug, from_dict
from otpr.data import DemoDataset, Episode, read_robomimic_hdf5
from otpr.pixels import encode_frames, feature_dataset

warnings.filterwarnings("ignore")
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("timm") is None, reason="needs timm (otpr[pixels])"
)

SIZE = 64
KEY = "agentview_image"


def _encoder(seed: int = 0, crop: float = 0.9):
    from otpr.pixels import freeze
    from policies.encoder import ImageEncoder

    torch.manual_seed(seed)
    return freeze(ImageEncoder(SIZE, num_keypoints=4, crop=crop))


def _image_demos(seed: int = 0, lengths: tuple[int, ...] = (5, 3)) -> DemoDataset:
    """Episodes of random frames and a 4-D low-dim state (proprio: its last 2 dims)."""
    rng = np.random.default_rng(seed)
    episodes = []
    for i, T in enumerate(lengths):
        episodes.append(
            Episode(
                obs=rng.normal(size=(T, 4)).astype(np.float32),
                actions=rng.uniform(-1, 1, (T, 2)).astype(np.float32),
                rewards=np.zeros(T, np.float32),
                dones=np.zeros(T, bool),
                name=f"demo_{i}",
                final_obs=rng.normal(size=4).astype(np.float32),
                images={KEY: rng.integers(0, 256, (T, SIZE, SIZE, 3), dtype=np.uint8)},
                final_images={KEY: rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)},
            )
        )
    return DemoDataset(episodes, source="/nowhere/demos.hdf5")


class CountingEncoder(torch.nn.Module):
    """Counts the frames the wrapped encoder is asked to encode."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.frames = 0
        self.image_size, self.crop_size, self.out_dim = (
            inner.image_size,
            inner.crop_size,
            inner.out_dim,
        )

    def state_dict(self, *args, **kwargs):
        return self.inner.state_dict(*args, **kwargs)

    def forward(self, frames: torch.Tensor, generator=None) -> torch.Tensor:
        self.frames += len(frames)
        return self.inner(frames, generator)


def test_cached_features_equal_a_fresh_encode(tmp_path: Path) -> None:
    demos = _image_demos()
    enc = CountingEncoder(_encoder())
    first, info = feature_dataset(demos, enc, KEY, (2, 4), 4, tmp_path)
    assert info["cache"] == "miss" and Path(info["path"]).is_file()
    assert enc.frames == 5 + 1 + 3 + 1  # every frame and each episode's final frame, once
    again, info2 = feature_dataset(demos, enc, KEY, (2, 4), 4, tmp_path)
    assert info2 == dict(info, cache="hit", encode_s=0.0)
    assert enc.frames == 10  # read back, not encoded again
    for ep, got, raw in zip(first, again, demos, strict=True):
        fresh = encode_frames(enc.inner, raw.images[KEY], batch_size=4)
        fresh_final = encode_frames(enc.inner, raw.final_images[KEY][None], batch_size=4)[0]
        np.testing.assert_array_equal(got.obs, ep.obs)
        np.testing.assert_allclose(got.obs[:, :8], fresh, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(got.obs[:, 8:], raw.obs[:, 2:4])  # proprio kept as is
        np.testing.assert_allclose(got.final_obs[:8], fresh_final, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(got.final_obs[8:], raw.final_obs[2:4])
        assert got.images == {} and got.obs.shape == (len(raw), 8 + 2)
    assert (np.abs(first[0].obs[:, :8]) <= 1).all()  # spatial-softmax coordinates


def test_cache_is_invalidated_when_the_data_or_the_encoder_change(tmp_path: Path) -> None:
    demos = _image_demos()
    enc = _encoder()
    _, base = feature_dataset(demos, enc, KEY, None, 8, tmp_path)
    # one pixel of one frame
    changed = _image_demos()
    changed[1].images[KEY][2, 10, 10, 0] ^= 1
    _, info = feature_dataset(changed, enc, KEY, None, 8, tmp_path)
    assert info["cache"] == "miss" and info["path"] != base["path"]
    # one frame: its features are the new frame's
    changed = _image_demos()
    changed[1].images[KEY][2] = 255 - changed[1].images[KEY][2]
    out, info = feature_dataset(changed, enc, KEY, None, 8, tmp_path)
    assert info["cache"] == "miss"
    assert not np.array_equal(
        out[1].obs[2], feature_dataset(demos, enc, KEY, None, 8, None)[0][1].obs[2]
    )
    # one weight of the encoder (as behaviour cloning changes it)
    other = _encoder()
    with torch.no_grad():
        other.head.proj.bias[0] += 0.5
    _, info = feature_dataset(demos, other, KEY, None, 8, tmp_path)
    assert info["cache"] == "miss" and info["path"] != base["path"]
    # another crop of the same weights
    _, info = feature_dataset(demos, _encoder(crop=1.0), KEY, None, 8, tmp_path)
    assert info["cache"] == "miss" and info["path"] != base["path"]
    # and the original pair still reads its own file
    _, info = feature_dataset(demos, _encoder(), KEY, None, 8, tmp_path)
    assert info["cache"] == "hit" and info["path"] == base["path"]
    assert len(list(tmp_path.glob("*.npz"))) == 5


def _pixel_cfg(**policy_encoder):
    cfg = from_dict(
        {
            "task": {
                "name": "reach-v3",
                "pixels": True,
                "image_size": SIZE,
                "env_kwargs": {"reward": "sparse", "terminate_on_success": True},
            },
            "algo": {"name": "otpr", "pretrain_batch_size": 16},
            "policy": {"hidden": [32, 32, 32], "encoder": {"num_keypoints": 4, **policy_encoder}},
            "debug": True,
            "progress": False,
            "tensorboard": False,
            "video": 0,
        }
    )
    return apply_debug(cfg)


def test_pixel_debug_run_from_the_command_line_stores_features(tmp_path: Path, monkeypatch):
    """``otpr task.pixels=true debug=true`` completes and films its final policy; its demo file
    has robomimic's image layout, its replay and episodes hold features (no image arrays), its
    checkpoint holds the encoder, and it resumes from that checkpoint."""
    run_dir = tmp_path / "run"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "otpr.cli",
            "task=reach",
            "task.pixels=true",
            f"task.image_size={SIZE}",
            "policy.encoder.num_keypoints=4",
            "policy.hidden=[32,32,32]",
            "debug=true",
            "progress=false",
            "video=1",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["iterations"] == 3 and summary["env_steps"] > 0
    assert len(list(run_dir.glob("final_episode_000_*.mp4"))) == 1  # filmed from pixels too

    (demo_file,) = (tmp_path / "data").glob("*.hdf5")
    with h5py.File(demo_file) as f:
        frames = f["data/demo_0/obs/default_image"]
        assert frames.dtype == np.uint8 and frames.shape[1:] == (SIZE, SIZE, 3)
        assert f["data/demo_0/next_obs/default_image"].shape == frames.shape
    demos = read_robomimic_hdf5(demo_file, image_keys=["default_image"])
    assert demos[0].images["default_image"].shape[0] == len(demos[0])
    assert demos[0].final_images["default_image"].shape == (SIZE, SIZE, 3)
    assert len(list((tmp_path / "data" / "features").glob("*.npz"))) == 1

    ckpt = run_dir / "checkpoints" / (run_dir / "checkpoints" / "last").read_text().strip()
    meta = json.loads((ckpt / "meta.json").read_text())
    width = 2 * 4 + 4  # 4 keypoints (x, y) and Meta-World's hand xyz + gripper
    assert meta["obs_dim"] == width
    assert (ckpt / "encoder.safetensors").is_file()
    with np.load(ckpt / "training_state" / "replay.npz") as replay:
        replay_size = replay["size"]
        assert int(replay_size) > 0
        for key in ("arr/obs", "arr/next_obs"):
            assert replay[key].shape[1:] == (1, width)  # T_o = 1 (reach) stacked features
        per_row = [replay[k][0].size for k in replay.files if k.startswith("arr/")]
        assert max(per_row) < SIZE * SIZE  # no field could hold a frame
    episodes = json.loads((ckpt / "training_state" / "episodes.json").read_text())
    assert np.asarray(episodes["obs"]).shape[-1] == width

    # the run resumes: its encoder is loaded, the demos' features read back from the cache, and
    # each member's episode replayed from frames re-creates the stored features exactly
    import yaml

    from otpr.config import from_dict
    from otpr.loop import Trainer

    monkeypatch.chdir(tmp_path)
    cfg = from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()))
    trainer = Trainer(cfg, tmp_path / "resumed")
    try:
        trainer.restore(run_dir)  # a replay that differs would raise CheckpointError
        assert trainer.feature_info["cache"] == "hit"
        assert trainer.state.iteration == 3 and len(trainer.buffer) == int(replay_size)
        np.testing.assert_array_equal(trainer._obs, np.asarray(episodes["obs"], np.float32))
    finally:
        trainer.close()


def test_a_trained_encoder_is_frozen_and_the_demos_encoded_again(tmp_path: Path, monkeypatch):
    """``policy.encoder.train``: behaviour cloning changes the encoder, then the demo windows
    and the replay's demo rows are the trained encoder's features (a second cache file)."""
    from otpr.loop import Trainer
    from otpr.pixels import encoder_digest

    monkeypatch.chdir(tmp_path)
    cfg = _pixel_cfg(train=True)
    cfg.algo.pretrain_steps = 2
    trainer = Trainer(cfg, tmp_path / "run")
    try:
        net = trainer.encoder.encoder
        before = encoder_digest(net)
        first_path = trainer.feature_info["path"]
        trainer.behaviour_cloning()
        assert encoder_digest(net) != before
        assert not net.training and not any(p.requires_grad for p in net.parameters())
        assert (
            trainer.feature_info["cache"] == "miss" and trainer.feature_info["path"] != first_path
        )
        frames = trainer.image_demos[0].images["default_image"]
        fresh = encode_frames(net, frames, 64)
        np.testing.assert_allclose(trainer.demos[0].obs[:, :8], fresh, rtol=0, atol=1e-6)
        np.testing.assert_array_equal(trainer.demo_obs[0, -1], trainer.demos[0].obs[0])
        assert trainer.data.demo_obs is trainer.demo_obs and trainer.data.buffer is trainer.buffer
        np.testing.assert_array_equal(trainer.buffer.data["obs"][0, -1], trainer.demos[0].obs[0])
        # its features are normalised on their fixed range, [-1, 1]
        norm = trainer.algo.policy.normalizer
        assert norm.obs_min[:8].eq(-1).all() and norm.obs_max[:8].eq(1).all()
    finally:
        trainer.close()


def test_camera_on_a_suite_without_cameras_is_one_line(tmp_path: Path, monkeypatch) -> None:
    from otpr.loop import Trainer

    monkeypatch.chdir(tmp_path)
    cfg = _pixel_cfg()
    cfg.task.camera = "corner"
    with pytest.raises(ConfigError, match=r"^task.camera: metaworld renders its default camera"):
        Trainer(cfg, tmp_path / "run")
