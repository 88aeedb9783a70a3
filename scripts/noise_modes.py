"""Does a policy need fresh noise at every decision? Evaluate it with the noise held or averaged.

    python -m scripts.noise_modes --checkpoint runs/can_bc --mode episode --out runs/nm_episode

Runs the run's own evaluation (``Trainer.evaluate``: its seeds, episodes and sampler) with the
acting policy drawing each decision's chunk as follows:

- ``fresh``: a new x_T per decision, as the run acts (with ``--eta 0`` the control for
  ``episode``);
- ``episode``: one x_T per episode and env member, drawn at its first decision and reused until
  the episode ends; with DDIM eta = 0 (forced) the policy is then deterministic within an
  episode, a fixed function of the observation;
- ``median``: the per-coordinate median of ``--samples`` chunks drawn for the state.

An episode's first decision is recognised by its padded history (the wrapper repeats the first
observation), so ``episode`` needs T_o >= 2. On Can's 20-demo BC, both ``episode`` and
``median`` collapse success (docs/results.md, section 2g).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from otpr import checkpoint as ckpt_io
from otpr.config import from_dict
from otpr.loop import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--mode", choices=("fresh", "episode", "median"), required=True)
    parser.add_argument("--eta", type=float, help="DDIM eta (default: the run's; episode: 0)")
    parser.add_argument("--samples", type=int, default=8, help="chunks per state for median")
    parser.add_argument("--out", required=True, help="directory for the evaluation's logs")
    args = parser.parse_args()
    torch.set_num_threads(1)

    cfg = from_dict(ckpt_io.read_config(ckpt_io.resolve(args.checkpoint)))
    if args.mode == "episode":
        if cfg.task.obs_history < 2:
            raise SystemExit("--mode episode needs task.obs_history >= 2 to see episode starts")
        if cfg.policy.sampler == "euler_maruyama":
            raise SystemExit("--mode episode: Euler-Maruyama injects noise at every step")
        if cfg.policy.sampler == "ddim":
            cfg.policy.eta = 0.0
    if args.eta is not None:
        cfg.policy.eta = args.eta
    trainer = Trainer(cfg, args.out)
    trainer.restore(args.checkpoint, weights_only=True)
    policy = trainer.agent.acting_policy
    held: torch.Tensor | None = None

    @torch.no_grad()
    def act(obs: np.ndarray, explore: bool, generator: torch.Generator | None = None):
        nonlocal held
        obs_t = torch.as_tensor(obs, dtype=torch.float32)
        if args.mode == "median":
            chunks = policy.sample(obs_t, args.samples, generator=generator)
            return chunks.median(dim=1).values.numpy(), {}
        if args.mode == "fresh":
            return policy.sample(obs_t, 1, generator=generator)[:, 0].numpy(), {}
        shape = (len(obs), 1, policy.horizon, policy.action_dim)
        draw = torch.randn(shape, generator=generator) * policy.temperature
        first = (obs_t[:, 0] == obs_t[:, -1]).flatten(1).all(dim=1)  # padded: a new episode
        held = draw if held is None else torch.where(first[:, None, None, None], draw, held)
        return policy.sample(obs_t, 1, generator=generator, x_T=held)[:, 0].numpy(), {}

    trainer.agent.act = act  # evaluate() calls agent.act(obs, explore=False, generator=...)
    try:
        result = trainer.evaluate()
    finally:
        trainer.close()
    settings = {"mode": args.mode, "eta": cfg.policy.eta}
    if args.mode == "median":
        settings["samples"] = args.samples
    print(json.dumps({"checkpoint": args.checkpoint, **settings, **result}))


if __name__ == "__main__":
    main()
