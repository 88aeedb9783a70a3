"""Expert demos at the starts a policy fails (or solves): does coverage of those starts matter?

    python -m scripts.expert_at_starts --checkpoint runs/can_bc --starts runs/starts.npz \
        --which failed --count 30 --out runs/demos_failed.hdf5
    otpr-pretrain task=can task.demos.path=runs/demos_failed.hdf5 <the BC's other settings>

Writes a robomimic hdf5 holding the checkpoint's demos followed by ``--count`` scripted expert
episodes (the task's expert, quality ``expert``) started from the reset seeds that a
``scripts.retry_starts`` file records as failed on the first try (``--which failed``) or solved
on it (``--which first_try``), in the order the run first played them. A seed whose expert
episode fails is skipped. BC on the two files tells whether the policy's failures come from the
states its demos miss (the ``failed`` file would then lift it more) or from the demos' number
(docs/results.md, 2g).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from otpr import checkpoint as ckpt_io
from otpr.config import from_dict
from otpr.data import write_robomimic_hdf5
from otpr.demos import Quality, load_demos, rollout_expert


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="whose demos come first")
    parser.add_argument("--starts", required=True, help="a scripts.retry_starts npz")
    parser.add_argument("--which", choices=("failed", "first_try"), required=True)
    parser.add_argument("--count", type=int, default=30)
    parser.add_argument("--out", required=True, help="hdf5 file to write")
    args = parser.parse_args()

    cfg = from_dict(ckpt_io.read_config(ckpt_io.resolve(args.checkpoint)))
    t = cfg.task
    dataset = load_demos(cfg, progress=False)
    stats = json.loads(str(np.load(args.starts)["stats"]))
    want_failed = args.which == "failed"
    seeds = [int(s) for s, outcomes in stats.items() if (not outcomes[0]) == want_failed]
    env, used, expert_failed = None, [], 0
    for seed in seeds:
        episode, env = rollout_expert(
            t.name, seed, Quality.preset("expert"), t.max_episode_steps, dict(t.env_kwargs), env
        )
        if not episode.success:
            expert_failed += 1
            continue
        episode.name = f"demo_{len(dataset.episodes)}"
        dataset.episodes.append(episode)
        used.append(seed)
        if len(used) == args.count:
            break
    if env is not None:
        env.close()
    if len(used) < args.count:
        raise SystemExit(
            f"{args.starts}: only {len(used)} {args.which} starts with an expert success"
        )
    write_robomimic_hdf5(args.out, dataset)
    print(json.dumps({"which": args.which, "seeds": used, "expert_failed": expert_failed}))


if __name__ == "__main__":
    main()
