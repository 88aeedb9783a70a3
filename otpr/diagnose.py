"""Guidance diagnostics: does a guidance weight tell a state's good candidate actions from bad?

Two kinds of numbers:

- :func:`weight_spread` and :func:`actor_weight_stats` need no simulator; OTPR logs them every
  iteration (``guidance/*`` from its collection, ``actor/ess_frac``, ``actor/demo_weight_share``).
- :func:`rank_stats` compares weights with an oracle, and :func:`probe` gets that oracle: from
  states the policy reaches, every candidate chunk is executed from the same simulator snapshot
  and scored by the task's dense shaped reward over its executed steps (a reward the learner
  never sees when it trains on the sparse one). ``otpr-diagnose`` prints it for a checkpoint::

      state s  --snapshot-->  candidate 1: T_a steps -> sum of shaped reward  --restore-->
                              candidate 2: ...                                --restore-->
                              ...                (then the policy's own sample is executed)

That oracle is myopic: it scores the next T_a steps. ``--oracle return`` scores each candidate
by the discounted task reward of executing it and then the policy until the episode ends,
from the same snapshot (``--rollouts`` continuations averaged): a Monte-Carlo Q of the policy,
what a critic should rank by, at the price of whole episodes per candidate (``--every N``
probes every N-th decision only). ``--save`` keeps the probe's arrays, so that other scorers
(``scripts/critic_ranking.py``: critics fitted otherwise on the run's replay) are ranked on
the same candidates without the simulator.

Meta-World and robosuite (Robomimic) tasks can be snapshotted (``MetaWorldEnv.snapshot``,
``RobomimicEnv.snapshot``; robosuite's shaped reward is its staged reach/grasp/lift/place
reward); Kitchen and CALVIN are refused with a message.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import torch

from otpr.errors import ERRORS_HELP, ArgumentParser, UsageError, run_command

PROG = "otpr-diagnose"
GUIDED = ("otpr", "otpr_gae")  # algorithms whose candidate_weights the probe ranks
ORACLES = ("chunk", "return")
SNAPSHOT_SUITES = ("metaworld", "robomimic")  # envs with snapshot() and last_shaped_reward


def weight_spread(weights: torch.Tensor) -> dict[str, float]:
    """How a batch of candidate weights ``[S, L]`` (S states x L candidates, >= 0) is spread.

    ``all_zero_frac``: states whose candidates all weigh 0 (resampling falls back to uniform);
    ``within_share``: the share of the weights' variance that lies between candidates of one
    state rather than between states (scale-free); only this part can choose among a state's
    candidates. 0 when the weights are constant.
    """
    w = weights.detach().double()
    zero = float((w.sum(dim=1) <= 0).double().mean())
    total = float(w.var(unbiased=False)) if w.numel() > 1 else 0.0
    if total <= 0:
        return {"all_zero_frac": zero, "within_share": 0.0}
    within = float(w.var(dim=1, unbiased=False).mean())
    return {"all_zero_frac": zero, "within_share": within / total}


def actor_weight_stats(weights: torch.Tensor, num_demo: int) -> dict[str, float]:
    """Of the actor's DSM weights ``[B]`` (the last ``num_demo`` on demo pairs): the effective
    sample size as a fraction of B, ``(sum w)^2 / (B sum w^2)``, and the demos' share of the
    total weight."""
    w = weights.detach().double()
    total, square = float(w.sum()), float(w.square().sum())
    if total <= 0:
        return {"ess_frac": 0.0, "demo_weight_share": 0.0}
    demo = float(w[len(w) - num_demo :].sum()) if num_demo else 0.0
    return {"ess_frac": total**2 / (len(w) * square), "demo_weight_share": demo / total}


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..L along each row of ``x`` [S, L]; ties share their mean rank."""
    out = np.empty(x.shape, np.float64)
    for i, row in enumerate(x):
        rank = np.empty(len(row))
        rank[np.argsort(row, kind="stable")] = np.arange(1, len(row) + 1)
        _, group = np.unique(row, return_inverse=True)
        out[i] = (np.bincount(group, rank) / np.bincount(group))[group]
    return out


def rank_corr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman rank correlation of two [B] tensors (ties share their mean rank; 0 when either
    is constant)."""
    rx, ry = (_ranks(v.detach().double().cpu().numpy()[None])[0] for v in (x, y))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = float(np.sqrt((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum()) / den if den > 0 else 0.0


def rank_stats(weights: np.ndarray, oracle: np.ndarray) -> dict[str, float]:
    """How weights ``[S, L]`` rank the candidates against an oracle score ``[S, L]``.

    Per state, with the oracle standardised over its L candidates (z-scores; states where the
    oracle is constant are left out): ``spearman`` is the rank correlation of weight and
    oracle (states with constant weights count 0: they rank nothing), ``top1_z`` the oracle z
    of the highest-weighted candidate (ties: the first), ``sampled_z`` the expected z when one
    candidate is drawn with probability proportional to its weight (uniform if all are 0),
    ``best_z`` the z of the best candidate there was (what a perfect ranking would get); all
    averaged over states. A uniform choice has z 0 on average.
    """
    w, o = np.asarray(weights, np.float64), np.asarray(oracle, np.float64)
    if w.shape != o.shape or w.ndim != 2:
        raise ValueError(f"weights {w.shape} and oracle {o.shape} must be the same [S, L]")
    spread = o.std(axis=1)
    keep = spread > 1e-12
    w, o = w[keep], o[keep]
    out: dict[str, float] = {"states": float(keep.sum()), **weight_spread(torch.as_tensor(w))}
    if not keep.any():
        return out
    z = (o - o.mean(axis=1, keepdims=True)) / o.std(axis=1, keepdims=True)
    rw, ro = _ranks(w), _ranks(o)
    rw_c, ro_c = rw - rw.mean(1, keepdims=True), ro - ro.mean(1, keepdims=True)
    den = np.sqrt((rw_c**2).sum(1) * (ro_c**2).sum(1))
    rho = np.where(den > 0, (rw_c * ro_c).sum(1) / np.where(den > 0, den, 1.0), 0.0)
    total = w.sum(axis=1, keepdims=True)
    p = np.where(total > 0, w / np.where(total > 0, total, 1.0), 1.0 / w.shape[1])
    top = np.argmax(w, axis=1)
    out.update(
        {
            "spearman": float(rho.mean()),
            "top1_z": float(z[np.arange(len(z)), top].mean()),
            "sampled_z": float((p * z).sum(axis=1).mean()),
            "best_z": float(z.max(axis=1).mean()),
        }
    )
    return out


def load_guided(checkpoint: str | Path) -> tuple[Path, Any, Any]:
    """The directory, config and algorithm of a checkpoint whose algorithm weighs candidates
    (``algo=otpr`` or ``otpr_gae``: its ``guidances``), its networks loaded and, for OTPR, the
    masked cost's demo keypoints prepared, as the probe scores with it."""
    from otpr import checkpoint as ckpt_io
    from otpr.algos import make_algorithm
    from otpr.config import from_dict
    from otpr.data import make_windows
    from otpr.demos import load_demos, task_spec_of

    ckpt = ckpt_io.resolve(checkpoint)
    meta = ckpt_io.read_meta(ckpt)
    cfg = from_dict(ckpt_io.read_config(ckpt))
    if meta.get("algo") not in GUIDED:
        raise UsageError(
            f"{ckpt}: algo={meta.get('algo')} has no guidance weights to diagnose "
            f"(algo={' or '.join(GUIDED)})"
        )
    cfg.progress = False
    spec = task_spec_of(cfg)
    algo = make_algorithm(cfg, spec)
    ckpt_io.load_modules(ckpt, algo.modules())
    if hasattr(algo, "potentials"):  # the masked cost's keypoints
        demos = load_demos(cfg, spec, progress=False)
        algo.prepare(*make_windows(demos, cfg.task.obs_history, cfg.task.horizon))
    return ckpt, cfg, algo


@torch.no_grad()
def probe(
    checkpoint: str | Path,
    episodes: int = 5,
    num_candidates: int = 8,
    seed: int = 300_000,
    guidances: tuple[str, ...] | None = None,
    progress: bool = False,
    oracle_kind: str = "chunk",
    rollouts: int = 1,
    every: int = 1,
) -> dict[str, Any]:
    """Guidance weights and the oracle of ``num_candidates`` candidates at every ``every``-th
    decision of ``episodes`` episodes of a checkpoint's (acting) policy, seeds ``seed + i``.

    ``oracle_kind``: ``chunk``, the task's shaped reward summed over the candidate's executed
    steps (myopic: it sees the next T_a steps only); ``return``, the discounted task reward of
    executing the candidate and then the policy to the episode's end, averaged over
    ``rollouts`` continuations from the same snapshot (a Monte-Carlo Q of the policy: what a
    critic should rank by, at the cost of whole episodes per candidate).

    Returns ``{"rank": {guidance: rank_stats}, ...}`` and the raw arrays: per decision the
    observation window ``obs`` [D, T_o, obs_dim] (raw, as the policy takes it), the
    ``candidates`` [D, L, H, A], their ``oracle`` scores [D, L] and each guidance's weights
    [D, L], so that another scorer (a critic trained otherwise) can be ranked on the same
    candidates without the simulator (``otpr-diagnose --save``)."""
    import envs

    if oracle_kind not in ORACLES:
        raise ValueError(f"oracle_kind must be one of {ORACLES}, got {oracle_kind!r}")
    ckpt, cfg, algo = load_guided(checkpoint)
    if envs.suite_of(cfg.task.name) not in SNAPSHOT_SUITES:
        raise UsageError(
            f"task.name={cfg.task.name!r}: the oracle needs simulator snapshots and a shaped "
            f"reward, which only the {' and '.join(SNAPSHOT_SUITES)} tasks provide here"
        )
    trained_with = cfg.algo.describe(cfg)["guidance"]
    guidances = guidances or algo.guidances
    t, gamma = cfg.task, cfg.task.gamma
    policy = algo.acting_policy.eval()
    generator = torch.Generator().manual_seed(seed)
    env = envs.make_single(t.name, seed, max_episode_steps=t.max_episode_steps, **t.env_kwargs)
    weights: dict[str, list[np.ndarray]] = {g: [] for g in guidances}
    oracle: list[np.ndarray] = []
    states: list[np.ndarray] = []
    candidates: list[np.ndarray] = []
    successes = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        history = deque([obs] * t.obs_history, maxlen=t.obs_history)
        done, success, decision = False, False, -1
        while not done:
            decision += 1
            obs_t = torch.as_tensor(
                np.stack(history)[None], dtype=torch.float32, device=algo.device
            )
            if decision % every:  # not probed: the policy's own sample only
                own = policy.sample(obs_t, num_samples=1, generator=generator)
                done, success = _act(env, own[0, 0, : t.act_steps].cpu().numpy(), history, success)
                continue
            cand = policy.sample(obs_t, num_samples=num_candidates, generator=generator)
            for g in guidances:
                weights[g].append(algo.candidate_weights(obs_t, cand, g)[0].cpu().numpy())
            chunks = cand[0, :, : t.act_steps].cpu().numpy()
            snap = env.snapshot()
            scores = np.zeros(num_candidates)
            for i, chunk in enumerate(chunks):
                if oracle_kind == "return":
                    for _ in range(rollouts):
                        scores[i] += (
                            _return_to_go(
                                env, policy, history, chunk, t.act_steps, gamma, generator
                            )
                            / rollouts
                        )
                        env.restore(snap)
                    continue
                for action in chunk:
                    _, _, term, trunc, _ = env.step(action)
                    scores[i] += env.last_shaped_reward
                    if term or trunc:
                        break
                env.restore(snap)
            oracle.append(scores)
            states.append(obs_t[0].cpu().numpy())
            candidates.append(cand[0].cpu().numpy())
            # the policy's own sample (the first candidate): its state distribution
            done, success = _act(env, chunks[0], history, success)
        successes.append(success)
        if progress:
            print(f"episode {ep + 1}/{episodes}: success {success}", file=sys.stderr)
    env.close()
    o = np.stack(oracle)
    rank = {g: rank_stats(np.stack(w), o) for g, w in weights.items()}
    return {
        "checkpoint": str(ckpt),
        "task": t.name,
        "oracle": oracle_kind if oracle_kind == "chunk" else f"return ({rollouts} rollouts)",
        "guidance_trained": trained_with,
        "episodes": episodes,
        "decisions": len(o),
        "num_candidates": num_candidates,
        "policy_success": float(np.mean(successes)),
        "rank": rank,
        "arrays": {
            "obs": np.stack(states),
            "candidates": np.stack(candidates),
            "oracle": o,
            **{g: np.stack(w) for g, w in weights.items()},
        },
    }


def _act(env, chunk: np.ndarray, history: deque, success: bool) -> tuple[bool, bool]:
    """Execute a chunk, appending its observations to ``history``; (episode over, success)."""
    for action in chunk:
        obs, _, term, trunc, info = env.step(action)
        history.append(obs)
        success = success or bool(info["success"])
        if term or trunc:
            return True, success
    return False, success


def _return_to_go(
    env,
    policy,
    history: deque,
    chunk: np.ndarray,
    act_steps: int,
    gamma: float,
    generator: torch.Generator,
) -> float:
    """The discounted task reward of executing ``chunk`` from the env's current state and
    then ``policy`` (one sample per decision) until the episode ends."""
    hist = deque(history, maxlen=history.maxlen)
    ret, disc, device = 0.0, 1.0, next(policy.parameters()).device
    while True:
        for action in chunk:
            obs, reward, term, trunc, _ = env.step(action)
            ret += disc * float(reward)
            disc *= gamma
            hist.append(obs)
            if term or trunc:
                return ret
        obs_t = torch.as_tensor(np.stack(hist)[None], dtype=torch.float32, device=device)
        chunk = policy.sample(obs_t, num_samples=1, generator=generator)[0, 0, :act_steps]
        chunk = chunk.cpu().numpy()


def _table(result: dict[str, Any]) -> str:
    cols = ("spearman", "top1_z", "sampled_z", "best_z", "all_zero_frac", "within_share")
    lines = [f"{'guidance':<9}" + "".join(f"{c:>14}" for c in cols)]
    for g, stats in result["rank"].items():
        lines.append(f"{g:<9}" + "".join(f"{stats.get(c, float('nan')):>14.3f}" for c in cols))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``otpr-diagnose``; exit status 2 with one line on stderr (``otpr.errors``) where the
    arguments are wrong or the checkpoint is missing, not OTPR's or not a Meta-World or
    robosuite task's."""
    return run_command(PROG, lambda: _main(argv))


def _main(argv: list[str] | None) -> int:
    parser = ArgumentParser(
        prog=PROG,
        description=(
            "Does the guidance rank actions? From the states an OTPR (algo=otpr or otpr_gae) "
            "checkpoint's policy reaches (Meta-World or robosuite), every candidate chunk is "
            "executed from the same simulator snapshot and scored by the task's shaped reward; "
            "prints, per guidance (otpr: H, Hc, Q, A, uniform; otpr_gae: Hc, A, uniform), the "
            "within-state rank correlation of weight and score, the score z of "
            "the top-weighted and of the resampled candidate, the best z there was, the share "
            "of states whose weights are all 0 and the within-state share of the weights' "
            "variance."
        ),
        epilog=f"example: {PROG} --checkpoint runs/reach-v3/otpr/<run> --episodes 10\n\n"
        + ERRORS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--checkpoint", required=True, help="run or checkpoint dir (algo=otpr or otpr_gae)"
    )
    parser.add_argument("--episodes", type=int, default=5, help="episodes to probe (default 5)")
    parser.add_argument("--candidates", type=int, default=8, help="L per state (default 8)")
    parser.add_argument("--seed", type=int, default=300_000, help="first episode seed")
    parser.add_argument(
        "--oracle",
        choices=ORACLES,
        default="chunk",
        help="chunk: the shaped reward over the executed steps (default); return: the "
        "discounted task reward of the candidate and then the policy to the episode's end",
    )
    parser.add_argument(
        "--rollouts", type=int, default=1, help="--oracle return: continuations per candidate"
    )
    parser.add_argument("--every", type=int, default=1, help="probe every N-th decision")
    parser.add_argument("--out", help="also write the numbers to this json file")
    parser.add_argument(
        "--save",
        help="also write the probe's arrays (obs, candidates, oracle, weights) to this .npz",
    )
    args = parser.parse_args(argv)
    if min(args.episodes, args.rollouts, args.every) < 1 or args.candidates < 2:
        raise UsageError(
            f"--episodes, --rollouts and --every must be >= 1 and --candidates >= 2, got "
            f"{args.episodes}, {args.rollouts}, {args.every} and {args.candidates}"
        )
    result = probe(
        args.checkpoint,
        args.episodes,
        args.candidates,
        args.seed,
        progress=True,
        oracle_kind=args.oracle,
        rollouts=args.rollouts,
        every=args.every,
    )
    print(
        f"{result['task']}: {result['decisions']} states x {result['num_candidates']} "
        f"candidates, oracle {result['oracle']}, policy success "
        f"{result['policy_success']:.2f} (guidance trained with: {result['guidance_trained']})"
    )
    print(_table(result))
    if args.out:
        summary = {k: v for k, v in result.items() if k != "arrays"}
        Path(args.out).write_text(json.dumps(summary, indent=2))
    if args.save:
        np.savez_compressed(args.save, **result["arrays"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
