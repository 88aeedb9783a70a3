"""Are a fine-tuning run's successful episodes worth demonstrations? BC on demos + successes.

    python -m scripts.bc_on_successes --checkpoint runs/can_ft --out runs/bc_on_successes \
        [--episodes K] [--steps 20000] [--pairs starts.npz --set easy|hard]

Trains a fresh policy of the run's configuration by behaviour cloning (``algo.pretrain_*``, the
run's EMA) on the run's demo windows plus the replay pairs of its successful online episodes
(``algo.success_to_demos`` records them: ``success_ids``), the first ``--episodes`` of them
(0: all), then evaluates it as the run evaluates. Compare the result with BC on the demos alone
and on more expert demos: if the run's own successes lift BC no more than the policy's own
level, self-imitation of them cannot lift the policy either (docs/results.md, section 2f).

``--pairs`` takes the successful episodes from a ``scripts.retry_starts`` file instead of the
run's replay: ``--set easy`` those that succeeded on a fresh start, ``--set hard`` the retries
that solved a start the policy had failed (section 2g).

An episode's pairs are contiguous in ``success_ids`` (whole episodes are appended when they end)
and consecutive decisions of one env are ``num_envs`` insertions apart, so an episode ends at a
jump of any other size or at a terminated row. (Two back-to-back successes of one env member in
a task that does not end episodes on success would count as one episode.) Runs recorded before
session 6's fix of ``collect`` credited each episode's last decision to the next episode: their
split yields one-decision fragments, so ``--episodes`` miscounts on them, and each of their
episodes holds the previous episode's last decision instead of its own.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from otpr import checkpoint as ckpt_io
from otpr.config import Config, from_dict
from otpr.loop import Trainer


def success_episodes(ids: np.ndarray, terminated: np.ndarray, num_envs: int) -> list[np.ndarray]:
    """Split the replay ids of successful decisions into episodes (in the order they ended);
    ``terminated[k]`` is the terminated flag of id ``ids[k]``."""
    if len(ids) == 0:
        return []
    ends = (np.diff(ids) != num_envs) | (terminated[:-1] > 0)
    return np.split(ids, np.flatnonzero(ends) + 1)


def recorded_successes(ckpt: Path, cfg: Config) -> tuple[dict[str, Any], list[np.ndarray]]:
    """A checkpoint's replay arrays and the successful episodes it recorded that the replay ring
    still holds, as ring rows, in the order they ended ([] when it recorded none)."""
    saved = ckpt_io.load_training_state(ckpt)
    replay = saved["replay"]
    ids = np.asarray(saved["loop"].get("success_ids") or [], dtype=np.int64)
    if replay is None or len(ids) == 0:
        return {}, []
    ids = ids[ids >= replay["total_added"] - len(replay["arrays"]["obs"])]  # not overwritten
    rows = ids % cfg.algo.buffer_capacity
    episodes = success_episodes(ids, replay["arrays"]["terminated"][rows], cfg.task.num_envs)
    return replay["arrays"], [e % cfg.algo.buffer_capacity for e in episodes]


def episodes_from_pairs(
    path: str, which: str, first: int
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(obs windows, chunks, episode lengths) of the first ``first`` (0: all) episodes of set
    ``which`` in a ``scripts.retry_starts`` file."""
    saved = np.load(path)
    lengths = [int(n) for n in saved[f"{which}_len"]]
    if not lengths:
        raise SystemExit(f"{path}: no {which!r} episodes")
    if first:
        lengths = lengths[:first]
    n = sum(lengths)
    return saved[f"{which}_obs"][:n], saved[f"{which}_act"][:n], lengths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a run (its last checkpoint) or one")
    parser.add_argument("--out", required=True, help="run directory for the new policy")
    parser.add_argument("--episodes", type=int, default=0, help="first K successes (0: all)")
    parser.add_argument("--steps", type=int, default=20000, help="BC gradient steps")
    parser.add_argument("--pairs", help="a scripts.retry_starts npz instead of the replay")
    parser.add_argument("--set", choices=("easy", "hard"), help="which episodes of --pairs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if (args.pairs is None) != (args.set is None):
        parser.error("--pairs and --set go together")

    src = ckpt_io.resolve(args.checkpoint)
    cfg = from_dict(ckpt_io.read_config(src))
    if args.pairs:
        obs, act, episodes = episodes_from_pairs(args.pairs, args.set, args.episodes)
    else:
        replay, episodes = recorded_successes(src, cfg)
        if not episodes:
            raise SystemExit(f"{src}: no successful episodes recorded (no success_to_demos?)")
        if args.episodes:
            episodes = episodes[: args.episodes]
        ids = np.concatenate(episodes)
        obs, act = replay["obs"][ids], replay["actions"][ids]

    cfg.algo.pretrain_steps = args.steps
    trainer = Trainer(cfg, args.out)  # fresh weights; normaliser fitted on the demos
    num_windows = len(trainer.demo_obs)
    for name, extra, demo in (("obs", obs, trainer.demo_obs), ("act", act, trainer.demo_act)):
        if extra.shape[1:] != demo.shape[1:]:
            raise SystemExit(
                f"{args.pairs or src}: {name} windows have shape {extra.shape[1:]}, the run's "
                f"demo windows {demo.shape[1:]} (another task or horizon?)"
            )
    trainer.demo_obs = np.concatenate([trainer.demo_obs, obs.astype(trainer.demo_obs.dtype)])
    trainer.demo_act = np.concatenate([trainer.demo_act, act.astype(trainer.demo_act.dtype)])
    print(
        f"{num_windows} demo windows + {len(obs)} pairs of {len(episodes)} successful episodes",
        flush=True,
    )
    try:
        trainer.behaviour_cloning()
        result = trainer.evaluate()
    finally:
        trainer.close()
    print(json.dumps({**result, "successful_episodes": len(episodes), "pairs": len(obs)}))


if __name__ == "__main__":
    main()
