"""Fine-tuning cost per env step, and warm-started vs rebuilt potentials.

Prints, in one run on the default task (or ``--task``):

1. Wall time of OTPR fine-tuning per env step over the wall time of stepping the *same* vector
   env for the same number of env steps with random actions (the simulation-only floor), with
   the per-env-step breakdown: simulate, sample (L candidates + weights), critic, potentials,
   actor. The 1.3x target applies where simulation dominates (robosuite); Meta-World simulates
   in ~0.4 ms/step, so there policy compute dominates and the breakdown says where it goes.
2. The potentials' update per iteration warm-started (networks and optimizer persist, as the
   loop does) over rebuilt from scratch (the published code), each run until it reaches the
   same dual value on a fixed evaluation batch.

    python -m benchmarks.bench_loop [--task reach] [--iterations 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

import numpy as np
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from otpr.loop import Trainer

warnings.filterwarnings("ignore")


def make_config(task: str, overrides: list[str]):
    from otpr import cli  # noqa: F401  registers the structured-config schemas

    with initialize_config_module("configs", version_base="1.3"):
        raw = compose("config", overrides=[f"task={task}", *overrides])
    return OmegaConf.to_object(raw)


def dual_value(trainer: Trainer, states: torch.Tensor, actions: torch.Tensor) -> float:
    pot = trainer.algo.potentials
    with torch.no_grad():
        cost = pot.pairwise_cost(states, actions, trainer.algo.cost_fn)
        loss, _ = pot.compute_dual_loss(states, actions, cost, None)
    return -float(loss)


def steps_to_reach(trainer: Trainer, target: float, eval_s, eval_a, max_steps: int, check: int):
    """Dual steps (and seconds) until the fixed-batch dual value reaches ``target``."""
    ob = trainer.cfg.ot.batch_size
    elapsed, steps = 0.0, 0
    while steps < max_steps:
        tic = time.perf_counter()
        for _ in range(check):
            s = trainer.data.batch(ob)["obs"]
            a = trainer.data.batch(ob)["actions"]
            trainer.algo.update_potentials(s, a)
        elapsed += time.perf_counter() - tic
        steps += check
        if dual_value(trainer, eval_s, eval_a) >= target:
            return steps, elapsed, True
    return steps, elapsed, False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="reach")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-rebuild-steps", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    run_dir = tempfile.mkdtemp(prefix="bench_loop_")
    cfg = make_config(
        args.task,
        [
            "algo.pretrain_steps=300",
            "algo.warmup_iterations=0",
            f"algo.iterations={args.iterations}",
            "algo.eval_every=1000",
            "algo.checkpoint_every=1000",
            "progress=false",
            "tensorboard=false",
            f"threads={args.threads}",
        ],
    )
    trainer = Trainer(cfg, run_dir)
    a = cfg.algo
    trainer.behaviour_cloning()  # a short one: timing needs no good policy, and no evaluation
    _ = trainer.train_env
    # one untimed iteration to warm everything up (critic, potentials, caches)
    trainer.collect()
    trainer.algo.update(trainer.data, trainer.state.iteration)
    trainer.state.iteration += 1

    totals: dict[str, float] = {}
    steps0 = trainer.state.env_steps
    tic = time.perf_counter()
    for _ in range(args.iterations):
        for key, value in {
            **trainer.collect(),
            **trainer.algo.update(trainer.data, trainer.state.iteration),
        }.items():
            if key.startswith("perf/time_"):
                totals[key] = totals.get(key, 0.0) + value
        trainer.state.iteration += 1
    wall = time.perf_counter() - tic
    env_steps = trainer.state.env_steps - steps0

    # the floor: the same vector env, the same number of env steps, random actions
    venv = trainer.train_env
    venv.reset(seed=123)
    rng = np.random.default_rng(0)
    t = cfg.task
    done_steps = 0
    tic = time.perf_counter()
    while done_steps < env_steps:
        acts = rng.uniform(-1, 1, (t.num_envs, t.act_steps, trainer.spec.action_dim))
        _, _, term, trunc, info = venv.step(acts.astype(np.float32))
        steps = np.array(info["steps"]) if "steps" in info else np.zeros(t.num_envs, int)
        if (term | trunc).any():
            for i in np.flatnonzero(term | trunc):
                steps[i] = info["final_info"]["steps"][i]
        done_steps += int(steps.sum())
    random_wall = time.perf_counter() - tic

    per_step = 1e3 / env_steps
    print(
        f"task {cfg.task.name}: {env_steps} env steps over {args.iterations} iterations "
        f"({t.num_envs} envs, L={a.num_samples}, {cfg.policy.num_steps} denoising steps)"
    )
    print(
        f"fine-tuning wall / random-action stepping wall: {wall / random_wall:.2f}x "
        f"(target <= 1.3x where simulation dominates)"
    )
    print(f"  fine-tuning      {wall * per_step:8.3f} ms / env step")
    print(f"  random stepping  {random_wall * 1e3 / done_steps:8.3f} ms / env step")
    labels = {
        "perf/time_env_s": "simulate",
        "perf/time_sample_s": "sample (L candidates + weights)",
        "perf/time_critic_s": "critic (IQL)",
        "perf/time_potentials_s": "potentials (OT dual)",
        "perf/time_actor_s": "actor (weighted DSM)",
    }
    accounted = 0.0
    for key, label in labels.items():
        v = totals.get(key, 0.0)
        accounted += v
        print(f"  {label:34s} {v * per_step:8.3f} ms / env step  ({100 * v / wall:5.1f}%)")
    print(
        f"  {'other (buffer, bookkeeping)':34s} {(wall - accounted) * per_step:8.3f} ms / env step"
    )

    # warm-started vs rebuilt potentials, to the same dual value on a fixed batch
    ob = cfg.ot.batch_size
    eval_s = trainer.algo.state(trainer.data.batch(4 * ob)["obs"])
    eval_a = trainer.algo.executed(trainer.data.batch(4 * ob)["actions"])
    for _ in range(cfg.algo.critic_updates_per_iter):  # the critic moves on, as in a new iteration
        trainer.algo.update_critic(trainer.data.batch(cfg.algo.critic_batch_size))
    state = {k: v.clone() for k, v in trainer.algo.potentials.state_dict().items()}
    opt_state = trainer.algo.potentials.optimizer.state_dict()
    k = cfg.ot.steps_per_iter
    warm_steps, warm_time, _ = steps_to_reach(trainer, -np.inf, eval_s, eval_a, k, k)
    target = dual_value(trainer, eval_s, eval_a)
    trainer.algo.potentials.load_state_dict(state)
    trainer.algo.potentials.optimizer.load_state_dict(opt_state)
    trainer.algo.potentials.reset_parameters()
    cold_steps, cold_time, reached = steps_to_reach(
        trainer, target, eval_s, eval_a, args.max_rebuild_steps, max(k // 5, 1)
    )
    print(
        f"potentials per iteration, warm-started: {warm_steps} steps, {warm_time:.2f} s "
        f"-> dual {target:.4f} on a fixed batch"
    )
    note = "" if reached else f" (did not reach it within {args.max_rebuild_steps} steps)"
    print(
        f"rebuilt from scratch to the same dual value: {cold_steps} steps, {cold_time:.2f} s{note}"
    )
    print(
        f"warm-started / rebuilt: {warm_time / cold_time:.3f}x time, "
        f"{warm_steps / cold_steps:.3f}x steps"
    )
    trainer.close()


if __name__ == "__main__":
    main()
