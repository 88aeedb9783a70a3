"""Does a critic trained on several runs' data pick better chunks? Best-of-N by a pooled critic.

    python -m scripts.pooled_critic --bc runs/can_bc --runs runs/ft_a runs/ft_b ... \
        --out runs/pooled_critic [--steps 20000 --expectile 0.5 --n 8 4 --save critic.pt]

Trains a fresh IQL critic (3 x ``--hidden``, expectile ``--expectile``) of the BC run's shapes,
through the BC run's agent (its normaliser and executed-chunk input), for ``--steps`` batches of
256 drawn from the replay buffers of ``--runs`` pooled, then evaluates the BC policy as the run
evaluates, acting by the best of N candidates by that critic (``algo.eval_mode=best
algo.guidance=Q``) for each N of ``--n``. The pooled runs must share the BC run's task and
shapes. On Can, five fine-tuning runs near the BC's level (112k decisions, ~2,000 episodes)
gave a critic whose best of 8 scores 0.86 against the BC's 0.82 (docs/results.md, section 2h).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from critics.iql import IQLCritic
from otpr import checkpoint as ckpt_io
from otpr.config import from_dict
from otpr.loop import Trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bc", required=True, help="the policy to act (a run or checkpoint)")
    p.add_argument("--runs", nargs="+", required=True, help="runs whose replay is pooled")
    p.add_argument("--steps", type=int, default=20000, help="critic batches of 256")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--expectile", type=float, default=0.5)
    p.add_argument("--n", type=int, nargs="+", default=[8], help="candidates per decision")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--out", required=True, help="directory for the evaluations' logs")
    p.add_argument("--save", help="write the critic's weights here")
    p.add_argument("--load", help="evaluate with these critic weights instead of training")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = from_dict(ckpt_io.read_config(ckpt_io.resolve(args.bc)))
    cfg.task.eval_episodes = args.episodes
    trainer = Trainer(cfg, args.out)
    trainer.restore(args.bc, weights_only=True)
    agent = trainer.agent
    old = agent.critic
    critic = IQLCritic(
        old.obs_dim, old.action_dim, (args.hidden,) * 3, expectile=args.expectile, gamma=old.gamma
    )
    agent.critic = critic
    if args.load:
        critic.load_state_dict(torch.load(args.load))
    else:
        parts = []
        for run in args.runs:
            replay = ckpt_io.load_training_state(ckpt_io.resolve(run))["replay"]
            if replay is None:
                raise SystemExit(f"{run}: its checkpoint holds no replay")
            n = min(replay["size"], len(replay["arrays"]["obs"]))
            arrays = {k: v[:n] for k, v in replay["arrays"].items()}
            for key in ("obs", "actions"):
                want = trainer.buffer.data[key].shape[1:]
                if arrays[key].shape[1:] != want:
                    raise SystemExit(
                        f"{run}: replay {key} has shape {arrays[key].shape[1:]}, the BC run's "
                        f"{want} (another task or horizon?)"
                    )
            parts.append(arrays)
            print(f"{run}: {n} decisions, {int(arrays['terminated'].sum())} terminal", flush=True)
        pool = {k: torch.as_tensor(np.concatenate([a[k] for a in parts])) for k in parts[0]}
        size = len(pool["obs"])
        print(f"pool: {size} decisions", flush=True)
        g = torch.Generator().manual_seed(0)
        t0 = time.time()
        for i in range(args.steps):
            idx = torch.randint(size, (256,), generator=g)
            info = agent.update_critic({k: v[idx] for k, v in pool.items()})
            if i % 2000 == 0 or i == args.steps - 1:
                print(i, {k: round(v, 4) for k, v in info.items()}, f"{time.time() - t0:.0f} s")
        if args.save:
            torch.save(critic.state_dict(), args.save)
    cfg.algo.guidance, cfg.algo.eval_mode = "Q", "best"
    try:
        for n in args.n:
            cfg.algo.eval_num_samples = n
            t0 = time.time()
            result = trainer.evaluate()
            print(json.dumps({"n": n, **result, "s": round(time.time() - t0)}), flush=True)
    finally:
        trainer.close()


if __name__ == "__main__":
    main()
