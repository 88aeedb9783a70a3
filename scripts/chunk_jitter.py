"""How smooth are a policy's chunks next to the demos'? Jitter, spread and error at demo states.

    python -m scripts.chunk_jitter --checkpoint runs/can_bc [--states 200] \
        [--temperatures 1 0.5 0]

At ``--states`` demo windows (the run's own demos, reloaded as the run loaded them), draws 8
chunks per state from the checkpoint's acting policy at each temperature and prints, per action
dimension over the executed ``act_steps``:

- ``jitter``: mean |a_{k+1} - a_k| of one chunk (the demos' own chunks give the reference row),
- ``spread``: the standard deviation across the 8 chunks of a state,
- ``error``: mean |a - a_demo| against the demo's chunk at that state.

When the run recorded successful online episodes (``algo.success_to_demos``), the jitter of
those recorded chunks is printed too. Units are raw actions (Can: OSC_POSE deltas and gripper).
docs/results.md section 2f reads these for Can.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from otpr import checkpoint as ckpt_io
from otpr.config import from_dict
from otpr.data import make_windows
from otpr.demos import load_demos
from scripts.bc_on_successes import recorded_successes


def jitter(chunks: np.ndarray, steps: int) -> np.ndarray:
    """Mean |a_{k+1} - a_k| per action dimension over the first ``steps`` actions of [N, H, A]."""
    return np.abs(np.diff(chunks[:, :steps], axis=1)).mean(axis=(0, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--states", type=int, default=200)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 0.5, 0.0])
    args = parser.parse_args()
    torch.set_num_threads(1)

    ckpt = ckpt_io.resolve(args.checkpoint)
    cfg = from_dict(ckpt_io.read_config(ckpt))
    t = cfg.task
    demo_obs, demo_act = make_windows(load_demos(cfg), t.obs_history, t.horizon)
    idx = np.random.default_rng(0).choice(len(demo_obs), min(args.states, len(demo_obs)), False)
    obs, ref = torch.as_tensor(demo_obs[idx]), demo_act[idx]
    policy = ckpt_io.load_policy(ckpt)
    k = t.act_steps

    def row(name: str, values: np.ndarray) -> None:
        print(f"{name:28s}" + " ".join(f"{v:6.3f}" for v in values))

    print(f"{len(idx)} demo states of {ckpt}; columns: action dimensions 0..{ref.shape[-1] - 1}")
    row("demos: jitter", jitter(ref, k))
    for tau in args.temperatures:
        policy.temperature = tau
        chunks = policy.sample(obs, 8, generator=torch.Generator().manual_seed(0)).numpy()
        row(f"tau {tau:g}: jitter", jitter(chunks[:, 0], k))
        row(f"tau {tau:g}: spread", chunks[:, :, :k].std(axis=1).mean(axis=(0, 1)))
        row(f"tau {tau:g}: error", np.abs(chunks[:, :, :k] - ref[:, None, :k]).mean(axis=(0, 1, 2)))
    replay, episodes = recorded_successes(ckpt, cfg)
    if episodes:
        rows = np.concatenate(episodes)
        row(f"recorded successes: jitter ({len(rows)} chunks)", jitter(replay["actions"][rows], k))


if __name__ == "__main__":
    main()
