"""Does a critic trained otherwise rank a state's candidates better than the run's own IQL?

Offline, on two files: an OTPR checkpoint (its replay, stored with its training state) and the
probe that ``otpr-diagnose --save`` wrote from it (the states its policy reaches, L candidates
each, every candidate scored from one simulator snapshot by the shaped reward of its executed
steps, or with ``--oracle return`` by the return it leads to). Each scorer ranks the saved
candidates; the numbers are those of ``otpr-diagnose`` (within-state rank correlation with the
oracle; the oracle z of the top candidate and of one resampled by the Hc plan of that
scorer's Q)::

    iql checkpoint   the run's own IQL target Q: what the guidance Hc ranked with
    iql refit        a fresh IQL critic with the run's settings, fitted on the final replay
    mc               twin Q regressed on each chunk's Monte-Carlo discounted return
    mc recent        the same on the newest quarter of the replay only (nearer the policy)

    python scripts/critic_ranking.py --checkpoint <otpr checkpoint> --probe <probe.npz> [...]

Fitted scorers are trained with ``--seeds`` seeds and reported as mean +- standard error, each
fit scored on every probe given (e.g. one with ``--oracle chunk`` and one with ``--oracle
return``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from critics.twin_q import TwinQ
from otpr.algos.otpr import candidate_q, make_iql_critic
from otpr.checkpoint import load_training_state
from otpr.diagnose import load_guided, rank_stats
from otpr.sampler import conditional_plan

REPLAY_KEYS = ("obs", "actions", "reward", "discount", "next_obs", "terminated")


def mc_returns(
    reward: np.ndarray,
    discount: np.ndarray,
    terminated: np.ndarray,
    obs: np.ndarray,
    next_obs: np.ndarray,
    streams: int,
) -> np.ndarray:
    """The discounted return of every replay row, in insertion order.

    The loop adds one row per env per decision, so rows ``i, i + streams, ...`` are one env's
    decisions. A row's return continues into row ``i + streams`` when that row starts where
    this one ended (its ``obs`` is this row's ``next_obs``) and this row did not terminate;
    otherwise the episode was reset after it (time limit, or the replay's end) and the rest
    counts 0: on a sparse task that ends at success, a truncated episode had no success left.
    """
    n = len(reward)
    nxt = np.arange(n) + streams
    cont = np.zeros(n, bool)
    inside = nxt < n
    same = np.all(next_obs[inside] == obs[nxt[inside]], axis=tuple(range(1, obs.ndim)))
    cont[inside] = same & (terminated[inside] == 0)
    out = np.zeros(n, np.float64)
    for i in range(n - 1, -1, -1):
        out[i] = reward[i] + (discount[i] * out[nxt[i]] if cont[i] else 0.0)
    return out


def load_replay(ckpt: Path) -> dict[str, np.ndarray]:
    """The replay a checkpoint stored, in insertion order (refused once the ring has wrapped:
    the streams of :func:`mc_returns` would no longer line up)."""
    replay = load_training_state(ckpt)["replay"]
    if replay is None:
        raise SystemExit(f"critic_ranking: {ckpt}: no replay stored with this checkpoint")
    size, total = replay["size"], replay["total_added"]
    if total != size:
        raise SystemExit(f"critic_ranking: {ckpt}: the replay wrapped ({total} added, {size} kept)")
    return {k: replay["arrays"][k][:size] for k in REPLAY_KEYS}


def fit_mc(algo, data: dict[str, np.ndarray], returns: np.ndarray, steps: int, seed: int):
    """Twin Q regressed on Monte-Carlo returns; returns a scorer (state, executed) -> Q."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    a = algo.cfg.algo
    q = TwinQ(algo.state_dim, algo.exec_dim, hidden=tuple(a.critic_hidden), lr=a.critic_lr)
    target = torch.as_tensor(returns, dtype=torch.float32)
    for _ in range(steps):
        idx = rng.integers(0, len(returns), a.critic_batch_size)
        s = algo.state(torch.as_tensor(data["obs"][idx]))
        x = algo.executed(torch.as_tensor(data["actions"][idx]))
        loss = (q(s, x) - target[idx]).square().mean()
        q.optimizer.zero_grad()
        loss.backward()
        q.optimizer.step()
    return lambda s, x: q(s, x).mean(0)


def fit_iql(algo, data: dict[str, np.ndarray], steps: int, seed: int):
    """A fresh IQL critic with the run's settings on the final replay; scorer: target Q."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    a = algo.cfg.algo
    critic = make_iql_critic(algo.cfg, algo.state_dim, algo.exec_dim)
    n = len(data["reward"])
    for _ in range(steps):
        idx = rng.integers(0, n, a.critic_batch_size)
        critic.update(algo.transitions({k: torch.as_tensor(v[idx]) for k, v in data.items()}))
    return critic.target_q


@torch.no_grad()
def score(algo, scorer, obs: np.ndarray, candidates: np.ndarray, oracle: np.ndarray) -> dict:
    """rank_stats of a scorer's Q over the saved candidates (spearman and top-1 from Q itself,
    the resampled z from the Hc plan of that Q with the run's lam)."""
    s = algo.state(torch.as_tensor(obs))
    q = candidate_q(scorer, s, algo.executed(torch.as_tensor(candidates)))
    by_q = rank_stats(q.numpy(), oracle)
    by_plan = rank_stats(conditional_plan(q, algo.cfg.algo.hc_lam).numpy(), oracle)
    return {"spearman": by_q["spearman"], "top1_z": by_q["top1_z"], "hc_z": by_plan["sampled_z"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="OTPR checkpoint with its replay")
    p.add_argument("--probe", required=True, nargs="+", help="otpr-diagnose --save outputs (.npz)")
    p.add_argument("--steps", type=int, default=20_000, help="gradient steps per fit")
    p.add_argument("--seeds", type=int, default=3, help="fits per fitted scorer")
    p.add_argument("--out", help="also write the numbers to this json file")
    args = p.parse_args(argv)
    ckpt, cfg, algo = load_guided(args.checkpoint)
    probes = {path: np.load(path) for path in args.probe}
    data = load_replay(ckpt)
    returns = mc_returns(
        data["reward"], data["discount"], data["terminated"], data["obs"], data["next_obs"],
        cfg.task.num_envs,
    )  # fmt: skip
    quarter = len(returns) // 4
    recent = {k: v[-quarter:] for k, v in data.items()}
    print(f"{ckpt}: replay {len(returns)} decisions (mean MC return {returns.mean():.3f})")

    def rank(scorer) -> dict[str, dict[str, float]]:
        return {
            path: score(algo, scorer, z["obs"], z["candidates"], z["oracle"])
            for path, z in probes.items()
        }

    results: dict[str, list[dict]] = {"iql checkpoint": [rank(algo.critic.target_q)]}
    fits = {
        "iql refit": lambda seed: fit_iql(algo, data, args.steps, seed),
        "mc": lambda seed: fit_mc(algo, data, returns, args.steps, seed),
        "mc recent": lambda seed: fit_mc(algo, recent, returns[-quarter:], args.steps, seed),
    }
    for name, fit in fits.items():
        results[name] = [rank(fit(seed)) for seed in range(args.seeds)]
        print(f"{name}: fitted {args.seeds} x {args.steps} steps", flush=True)
    for path, z in probes.items():
        print(f"\n{path}: {z['oracle'].shape[0]} states x {z['oracle'].shape[1]} candidates")
        print(f"{'scorer':<16}{'spearman':>18}{'top1_z':>18}{'hc_z':>18}")
        for name, runs in results.items():
            cells = []
            for key in ("spearman", "top1_z", "hc_z"):
                v = np.array([r[path][key] for r in runs])
                se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0
                cells.append(f"{v.mean():.3f} +- {se:.3f}")
            print(f"{name:<16}" + "".join(f"{c:>18}" for c in cells))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
