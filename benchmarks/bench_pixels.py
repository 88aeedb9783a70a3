"""What learning from pixels costs (``task.pixels=true``, otpr/pixels.py), in one run.

1. Frames/s rendered: a 1-member ``envs.make(..., pixel_obs=True)`` env (the frame is the
   observation) against the same env without pixels, stepped with the same actions.
2. Frames/s encoded by the frozen ResNet-18: one frame per call (as one env member would) and
   in batches (as the demos are encoded, ``policy.encoder.batch_size``).
3. Bytes per replay transition: the replay a pixel run keeps (features and proprio) against
   one that kept the frames (float32 as the replay stores observations, and as uint8).
4. Pretraining with a warm feature cache over a cold one: building the run (demos read,
   encoded or read back from the cache, windows, replay) and behaviour cloning.

    python -m benchmarks.bench_pixels [--task lift] [--image-size 84] [--frames 200]
                                      [--demos 5] [--pretrain-steps 100]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import envs

warnings.filterwarnings("ignore")


def render_rate(task: str, image_size: int, frames: int) -> tuple[float, float]:
    """(pixel env steps/s = frames/s, state env steps/s) over the same random actions."""
    rng = np.random.default_rng(0)
    spec = envs.task_spec(task)
    actions = rng.uniform(-1, 1, (frames, 1, 1, spec.action_dim)).astype(np.float32)
    rates = []
    for pixel in (True, False):
        kwargs = {"pixel_obs": True, "proprio": spec.extra["proprio"]} if pixel else {}
        venv = envs.make(
            task, seed=0, max_episode_steps=frames + 1, image_size=image_size, **kwargs
        )
        venv.reset(seed=0)
        tic = time.perf_counter()
        for a in actions:
            venv.step(a)
        rates.append(frames / (time.perf_counter() - tic))
        venv.close()
    return rates[0], rates[1]


def encode_rate(encoder: torch.nn.Module, frames: np.ndarray, batch: int) -> tuple[float, float]:
    """(frames/s one at a time, frames/s in batches of ``batch``)."""
    from otpr.pixels import encode_frames

    encode_frames(encoder, frames[:2], 2)  # warm-up
    rates = []
    for size in (1, batch):
        tic = time.perf_counter()
        encode_frames(encoder, frames, size)
        rates.append(len(frames) / (time.perf_counter() - tic))
    return rates[0], rates[1]


def replay_bytes(obs_history: int, horizon: int, action_dim: int, widths: dict[str, int]) -> dict:
    """Bytes per transition of ``otpr.buffer.ReplayBuffer`` for each observation width."""
    from otpr.buffer import ReplayBuffer

    out = {}
    for name, width in widths.items():
        buf = ReplayBuffer(1, (obs_history, width), (horizon, action_dim))
        out[name] = sum(a.nbytes for a in buf.data.values())
    return out


def _cfg(task: str, image_size: int, demos: int, steps: int, cache: Path):
    from otpr.config import from_dict

    return from_dict(
        {
            "task": {
                "name": task,
                "pixels": True,
                "image_size": image_size,
                "max_episode_steps": 80,
                "demos": {"num_episodes": demos, "quality": "near_optimal"},
            },
            "algo": {"name": "bc", "pretrain_steps": steps, "pretrain_batch_size": 64},
            "policy": {"encoder": {"cache_dir": str(cache)}},
            "progress": False,
            "tensorboard": False,
            "video": 0,
        }
    )


def pretrain_time(task: str, image_size: int, demos: int, steps: int, work: Path) -> dict:
    """Seconds to build the run and behaviour-clone it with a cold, then a warm, cache (the
    demos themselves are rendered once before, untimed)."""
    from otpr.loop import Trainer
    from otpr.pixels import build_encoder, image_key

    cache = work / "features"
    cfg = _cfg(task, image_size, demos, steps, cache)
    first = Trainer(cfg, work / "warmup")  # renders the demo file (and fills the cache)
    frames = np.concatenate([ep.images[image_key(cfg)] for ep in first.image_demos])
    first.close()
    out: dict = {"demo_frames": len(frames)}
    for name in ("cold", "warm"):
        if name == "cold":
            for f in cache.glob("*.npz"):
                f.unlink()
        tic = time.perf_counter()
        trainer = Trainer(cfg, work / name)
        built = time.perf_counter() - tic
        trainer.behaviour_cloning()
        out[name] = {
            "total_s": time.perf_counter() - tic,
            "build_s": built,
            "cache": trainer.feature_info["cache"],
        }
        trainer.close()
    out["frames"] = frames
    out["encoder"] = build_encoder(cfg)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="lift")
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--frames", type=int, default=200, help="frames rendered (part 1)")
    parser.add_argument("--demos", type=int, default=5, help="demo episodes (parts 2 and 4)")
    parser.add_argument("--pretrain-steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=128, help="encoding batch size")
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    size = args.image_size
    print(f"task {args.task}, {size}x{size} frames, torch threads {torch.get_num_threads()}")

    pix, state = render_rate(args.task, size, args.frames)
    print(
        f"rendered:   {pix:7.1f} frames/s (pixel env steps/s; the same env without pixels "
        f"{state:.1f} steps/s, x{state / pix:.2f} faster)"
    )

    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)  # the demo file goes to ./data
        try:
            pre = pretrain_time(args.task, size, args.demos, args.pretrain_steps, Path(tmp))
        finally:
            os.chdir(cwd)
    one, batched = encode_rate(pre["encoder"], pre["frames"], args.batch)
    print(
        f"encoded:    {batched:7.1f} frames/s in batches of {args.batch} "
        f"({one:.1f} frames/s one at a time, x{batched / one:.2f}); ResNet-18 + spatial softmax"
    )

    enc = pre["encoder"]
    spec = envs.task_spec(args.task)
    lo, hi = spec.extra["proprio"]
    features = enc.out_dim + hi - lo
    pixels = size * size * 3 + hi - lo
    sizes = replay_bytes(1, 8, spec.action_dim, {"features": features, "frames": pixels})
    uint8 = 2 * size * size * 3 + (sizes["features"] - 2 * 4 * enc.out_dim)
    print(
        f"replay:     {sizes['features']} bytes/transition with features ({features} floats "
        f"per observation); with frames {sizes['frames']} as float32 "
        f"(x{sizes['frames'] / sizes['features']:.0f}), {uint8} as uint8 "
        f"(x{uint8 / sizes['features']:.0f})  [T_o 1, H 8]"
    )
    cold, warm = pre["cold"], pre["warm"]
    print(
        f"pretrain:   warm cache {warm['total_s']:.2f} s / cold {cold['total_s']:.2f} s = "
        f"{warm['total_s'] / cold['total_s']:.2f} (building the run {warm['build_s']:.2f} s "
        f"[{warm['cache']}] vs {cold['build_s']:.2f} s [{cold['cache']}]; "
        f"{pre['demo_frames']} demo frames, {args.pretrain_steps} BC steps)"
    )


if __name__ == "__main__":
    main()
