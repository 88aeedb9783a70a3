"""OTPR (optimal-transport-guided policy refinement): ``algo=otpr``.

Composes the diffusion policy, an IQL critic (``critics.IQLCritic``) and the L2-regularised OT
potentials (``potentials.NeuralPotentials``). One iteration's update (OTPR Algorithm 1, with the
potentials warm-started instead of rebuilt)::

    critic    critic_updates_per_iter IQL steps on replay                      (every iteration)
    ot        ot.steps_per_iter dual steps on replay states x actions   (every iteration, H only)
    actor     actor_updates_per_iter guidance-weighted DSM steps on replay (+ demo) pairs; pairs
              whose state leaves the demos' span are skipped                   (after warm-up)

Collection draws L = ``num_samples`` candidates per state in one batched call and resamples one
by the guidance weight.

Representations. The critic and the potentials see *normalised* quantities: the state is the
stacked observation history ``[T_o, obs_dim]`` flattened, and the action is the *executed* part
of the chunk (its first ``T_a`` steps) flattened, both min-max normalised with the statistics
stored in the policy. The policy still predicts and is trained on the whole ``H``-step chunk.

=========  ==========================================  ====================================
guidance   candidate / sample weight                   meaning
=========  ==========================================  ====================================
H          H(s,a) = (u(s)+v(a)-c(s,a))_+ / (2 lam)      OTPR (cost c = -min target Q)
Q          exp((Q(s,a) - max Q) / q_temperature)        value-greedy resampling
A          |tau - 1(Q(s,a) - V(s) < 0)|                  IDQL's expectile weight without 1/|A|
uniform    1                                            BC-style fine-tuning on own data
=========  ==========================================  ====================================
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from critics.iql import IQLCritic
from envs.base import TaskSpec
from otpr.algos.base import Algorithm, register_algo
from otpr.algos.chain_ppo import (
    ChainBatch,
    bc_regulariser,
    clip_schedule,
    floored_std,
    record_chain,
    update_chain_policy,
)
from otpr.buffer import TrainingData
from otpr.config import AlgoConfig, Config, _check, _one_of
from otpr.diagnose import actor_weight_stats, weight_spread
from otpr.sampler import CompatibilitySampler, conditional_plan, exp_q
from policies.diffusion import DiffusionPolicy
from potentials.neural import NeuralPotentials

GUIDANCES = ("H", "Hc", "Q", "A", "uniform")  # algo.guidance


@dataclass
class OTPRConfig(AlgoConfig):
    """OTPR: IQL critic, OT potentials, guidance-weighted DSM (the ``ot`` group sets the OT)."""

    name: str = "otpr"
    """otpr."""
    guidance: str = "H"
    """What weighs candidates and DSM samples: H (OTPR's compatibility) | Hc (the conditional
    plan over each state's candidates) | Q | A (expectile advantage) | uniform."""
    num_samples: int = 8
    """L: candidate chunks per state during collection."""
    sample_mode: str = "sample"
    """Collection choice among candidates: sample | argmax | softmax."""
    q_temperature: float = 0.25
    """Temperature of the exp(Q / temperature) weights of guidance Q, in the units of
    ``q_temperature_units``."""
    hc_lam: float = 0.5
    """Guidance Hc: the L2 regulariser lambda in units of the within-state std of Q (small:
    only the best candidates keep weight; large: nearly uniform)."""
    q_temperature_units: str = "within_state"
    """within_state: the temperature is multiplied by the std of Q over each state's candidates
    (over the batch for paired samples), so it means the same whatever Q's scale; absolute: Q's
    own units."""
    eval_mode: str = "single"
    """Evaluation: single (L = 1) | best (argmax of the guidance over eval_num_samples)."""
    eval_num_samples: int = 8
    """Candidates per state when eval_mode = best."""
    critic_updates_per_iter: int = 200
    """IQL gradient steps per iteration."""
    critic_batch_size: int = 256
    """IQL batch size."""
    critic_lr: float = 3e-4
    """IQL learning rate."""
    critic_hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    """Q and V MLP widths."""
    expectile: float = 0.7
    """IQL expectile tau."""
    polyak: float = 0.005
    """Target-Q Polyak rate."""
    actor_updates_per_iter: int = 300
    """Weighted-DSM gradient steps per iteration."""
    actor_batch_size: int = 256
    """Actor batch size (replay part + demo part)."""
    actor_targets: str = "replay"
    """What the actor fits. replay: replay (s, a) pairs weighted by the guidance. resampled
    (OTPR sec. 4.4): L fresh candidates per replay state, weights normalised per state."""
    actor_target_states: int = 2048
    """Replay states per iteration for which resampled targets are drawn."""
    actor_recent: int = 0
    """Draw the actor's replay part from the N newest transitions (0: the whole replay)."""
    demo_fraction: float = 0.25
    """Fraction of each actor batch drawn from the demo pairs (``TrainingData.demo_batch``)."""
    demo_weights: str = "guidance"
    """How the actor weighs its demo pairs. guidance: like replay pairs (the paper: the demos
    join the guidance-weighted DSM); uniform: weight 1 each, an unweighted behaviour-cloning
    anchor whose share of the batch's weight is ``demo_fraction``."""
    actor_obs_bound: float = 1.5
    """The actor fits only pairs whose normalised observation lies within +-bound in every dim
    (the demos span [-1, 1]); 0 fits all. The critic and potentials still see every state."""
    weight_norm: str = "batch_mean"
    """DSM weight normalisation: none | batch_mean."""
    weight_clip: float = 10.0
    """Cap on the batch-mean-normalised DSM weights (0: no cap)."""
    actor_update: str = "dsm"
    """How the actor learns from the guidance. dsm: the guidance-weighted DSM regression (it
    pulls towards the weighted candidates and can never push away from one). ppo: PPO's clipped
    surrogate through the denoising chain (otpr/algos/chain_ppo.py) on ``ppo_states`` replay
    states x ``ppo_num_candidates`` fresh candidates of the trained network, each candidate's
    advantage its plan weight minus 1 (the weights have mean 1 per state), standardised over
    the batch: the policy moves towards the candidates the guidance keeps and away from those
    it drops. The ``ppo_*`` keys set it; ``demo_fraction`` and ``demo_weights`` do not apply
    (``ppo_bc_coef`` does)."""
    ppo_states: int = 256
    """actor_update=ppo: replay states per iteration whose candidates the update ranks."""
    ppo_num_candidates: int = 8
    """actor_update=ppo: fresh candidates per state that the update ranks (independent of the
    collection's ``num_samples``, which may be 1)."""
    ppo_epochs: int = 5
    """actor_update=ppo: passes over each iteration's candidates."""
    ppo_minibatch_size: int = 500
    """actor_update=ppo: (candidate, denoising step) samples per policy gradient step."""
    ppo_clip: float = 0.01
    """actor_update=ppo: ratio clip range of the last denoising step (DPPO's)."""
    ppo_clip_base: float = 0.001
    """actor_update=ppo: ratio clip range of the first denoising step (DPPO's schedule between)."""
    ppo_denoising_gamma: float = 0.99
    """actor_update=ppo: a denoising step's advantage is discounted by this per step before the
    last (DPPO's)."""
    ppo_min_std: float = 0.1
    """actor_update=ppo: floor of every step's noise std while the update draws and scores its
    candidates (a step log-probability needs one; DPPO's 0.1). Collection keeps policy.min_std."""
    ppo_target_kl: float = 1.0
    """actor_update=ppo: stop an iteration's epochs once the mean approximate KL exceeds this
    (0: never)."""
    ppo_max_grad_norm: float = 1.0
    """actor_update=ppo: clip of the policy gradient norm (0: none)."""
    ppo_bc_coef: float = 0.0
    """actor_update=ppo: weight of an unweighted DSM term on ``actor_batch_size`` demo pairs
    (with ``success_to_demos``, also the run's successful episodes) added to every policy step
    (DPPO's ``algo.bc_coef``; 0: none)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _one_of(self.guidance, "algo.guidance", GUIDANCES)
        _check(self.hc_lam > 0, "algo.hc_lam", "must be > 0")
        _one_of(self.sample_mode, "algo.sample_mode", ("sample", "argmax", "softmax"))
        _one_of(self.eval_mode, "algo.eval_mode", ("single", "best"))
        _one_of(self.weight_norm, "algo.weight_norm", ("none", "batch_mean"))
        _one_of(self.actor_targets, "algo.actor_targets", ("resampled", "replay"))
        _one_of(self.demo_weights, "algo.demo_weights", ("guidance", "uniform"))
        for key in ("actor_target_states", "num_samples", "eval_num_samples"):
            _check(getattr(self, key) >= 1, f"algo.{key}", "must be >= 1")
        for key in ("critic_batch_size", "actor_batch_size"):
            _check(getattr(self, key) >= 1, f"algo.{key}", "must be >= 1")
        _check(self.q_temperature > 0, "algo.q_temperature", "must be > 0")
        _one_of(self.q_temperature_units, "algo.q_temperature_units", ("within_state", "absolute"))
        _check(0.5 <= self.expectile < 1.0, "algo.expectile", "must be in [0.5, 1)")
        _check(0.0 < self.polyak <= 1.0, "algo.polyak", "must be in (0, 1]")
        _check(0.0 <= self.demo_fraction < 1.0, "algo.demo_fraction", "must be in [0, 1)")
        for key in ("critic_updates_per_iter", "actor_updates_per_iter", "actor_recent"):
            _check(getattr(self, key) >= 0, f"algo.{key}", "must be >= 0")
        _check(self.actor_obs_bound >= 0, "algo.actor_obs_bound", "must be >= 0 (0: no bound)")
        _check(self.weight_clip >= 0, "algo.weight_clip", "must be >= 0 (0: no cap)")
        _check(self.critic_lr > 0, "algo.critic_lr", "must be > 0")
        _one_of(self.actor_update, "algo.actor_update", ("dsm", "ppo"))
        for key in ("ppo_states", "ppo_epochs", "ppo_minibatch_size"):
            _check(getattr(self, key) >= 1, f"algo.{key}", "must be >= 1")
        _check(self.ppo_num_candidates >= 2, "algo.ppo_num_candidates", "must be >= 2")
        _check(self.ppo_clip > 0, "algo.ppo_clip", "must be > 0")
        _check(
            0 < self.ppo_clip_base <= self.ppo_clip,
            "algo.ppo_clip_base",
            f"must be in (0, algo.ppo_clip={self.ppo_clip}]",
        )
        _check(0 <= self.ppo_denoising_gamma <= 1, "algo.ppo_denoising_gamma", "must be in [0, 1]")
        _check(self.ppo_min_std > 0, "algo.ppo_min_std", "must be > 0")
        for key in ("ppo_target_kl", "ppo_max_grad_norm", "ppo_bc_coef"):
            _check(getattr(self, key) >= 0, f"algo.{key}", "must be >= 0 (0: off)")

    def shrink_for_debug(self) -> None:
        self.critic_updates_per_iter = min(self.critic_updates_per_iter, 5)
        self.actor_updates_per_iter = min(self.actor_updates_per_iter, 5)
        self.ppo_states = min(self.ppo_states, 16)
        self.ppo_epochs = min(self.ppo_epochs, 2)
        self.ppo_minibatch_size = min(self.ppo_minibatch_size, 64)
        self.critic_batch_size = min(self.critic_batch_size, 64)
        self.actor_batch_size = min(self.actor_batch_size, 64)

    def describe(self, cfg: Config) -> dict[str, Any]:
        return {
            "guidance": self.guidance,
            "masked": cfg.ot.masked,
            "actor_targets": self.actor_targets,
            "actor_update": self.actor_update,
        }


def compute_actor_loss(
    policy: DiffusionPolicy,
    obs: Tensor,
    actions: Tensor,
    weights: Tensor,
    weight_norm: str,
    weight_clip: float | None,
) -> tuple[Tensor, dict[str, float]]:
    """OTPR eq. 10: the DSM loss of raw (obs, chunk) pairs weighted by the guidance."""
    return policy.compute_dsm_loss(
        obs, actions, weights=weights, weight_norm=weight_norm, weight_clip=weight_clip
    )


def make_iql_critic(cfg: Config, state_dim: int, exec_dim: int) -> IQLCritic:
    """The IQL critic of ``cfg.algo``'s critic keys (``critic_hidden``, ``expectile``,
    ``polyak``, ``critic_lr``) on the normalised flat state and executed action."""
    a = cfg.algo
    return IQLCritic(
        state_dim,
        exec_dim,
        hidden=tuple(a.critic_hidden),
        expectile=a.expectile,
        gamma=cfg.task.gamma,
        polyak=a.polyak,
        lr=a.critic_lr,
        device=cfg.device,
    )


def candidate_q(q_fn: Callable[[Tensor, Tensor], Tensor], states: Tensor, acts: Tensor) -> Tensor:
    """``q_fn`` (e.g. a critic's min target Q, elementwise over flat pairs) of each state's
    candidates: states [B, S], acts [B, L, E] -> [B, L]."""
    batch, num = acts.shape[:2]
    flat_s = states[:, None, :].expand(batch, num, states.shape[-1]).reshape(batch * num, -1)
    return q_fn(flat_s, acts.reshape(batch * num, -1)).reshape(batch, num)


def expectile_weights(q: Tensor, v: Tensor, tau: float) -> Tensor:
    """Guidance A: IQL's expectile weight of each candidate, tau where Q [B, L] >= V [B] and
    1 - tau below it."""
    return torch.where(q - v[:, None] < 0, 1.0 - tau, tau)


@torch.no_grad()
def in_support(policy: DiffusionPolicy, obs: Tensor, bound: float) -> Tensor:
    """1 where every normalised observation dim of a state [B, T_o, D] lies within ``bound``
    (the pretraining data span [-1, 1]), else 0; all ones if ``bound`` is 0."""
    if bound <= 0:
        return torch.ones(obs.shape[0], device=obs.device)
    inside = policy.normalizer.normalize_obs(obs).abs() <= bound
    return inside.flatten(1).all(dim=1).float()


@register_algo("otpr", OTPRConfig)
class OTPR(Algorithm):
    """Policy + IQL critic + OT potentials, with the update steps of OTPR's Algorithm 1."""

    guidances = GUIDANCES
    """What :meth:`candidate_weights` computes (``algo.guidance``; ``otpr-diagnose`` ranks each)."""

    def __init__(self, cfg: Config, spec: TaskSpec) -> None:
        super().__init__(cfg, spec)
        o = cfg.ot
        self.critic = make_iql_critic(cfg, self.state_dim, self.exec_dim)
        self.potentials = NeuralPotentials(
            self.state_dim,
            self.exec_dim,
            hidden=tuple(o.hidden),
            lam=o.lam,
            lr=o.lr,
            masked=o.masked,
            alpha=o.alpha if o.masked else 0.0,
            rho=o.rho,
            distance=o.distance,
            num_keypoints=o.num_keypoints,
            cost_normalization=o.cost_normalization,
            seed=cfg.seed,
            device=cfg.device,
        )
        self._spread: list[dict[str, float]] = []  # weight_spread of each collection decision

    def prepare(self, demo_obs: np.ndarray, demo_act: np.ndarray) -> None:
        """The expert keypoints of masked OT, in the normalised representation."""
        obs = torch.as_tensor(demo_obs, device=self.device)
        act = torch.as_tensor(demo_act, device=self.device)
        self.potentials.set_keypoints(self.state(obs), self.executed(act))

    def cost_fn(self, states: Tensor, actions: Tensor) -> Tensor:
        """The OT cost c(s, a) = -min target Q(s, a) on normalised flat inputs (elementwise)."""
        return -self.critic.target_q(states, actions)

    # ------------------------------------------------------------------ guidance weights
    @torch.no_grad()
    def pair_weights(self, obs: Tensor, actions: Tensor) -> Tensor:
        """Guidance weights for paired (obs [B, T_o, D], chunk [B, H, A]) -> [B], >= 0."""
        return self._weights(self.state(obs), self.executed(actions)[:, None, :])[:, 0]

    @torch.no_grad()
    def candidate_weights(
        self, obs: Tensor, candidates: Tensor, guidance: str | None = None
    ) -> Tensor:
        """Guidance weights for candidates [B, L, H, A] of each state -> [B, L], >= 0, under
        ``guidance`` (default ``algo.guidance``)."""
        return self._weights(self.state(obs), self.executed(candidates), guidance)

    def _weights(self, states: Tensor, acts: Tensor, guidance: str | None = None) -> Tensor:
        guidance = guidance or self.cfg.algo.guidance
        batch, num = acts.shape[:2]
        if guidance == "uniform":
            return torch.ones(batch, num, device=acts.device)
        if guidance == "H":
            return self.potentials.compatibility(states, acts, self.cost_fn)
        q = candidate_q(self.critic.target_q, states, acts)
        if guidance in ("Hc", "Q"):
            # over each state's candidates; paired samples (L = 1) over the batch, as one row
            rows = q if num > 1 else q.T
            a = self.cfg.algo
            if guidance == "Hc":
                w = conditional_plan(rows, a.hc_lam)
            else:
                w = exp_q(rows, a.q_temperature, a.q_temperature_units)
            return w if num > 1 else w.T
        return expectile_weights(q, self.critic.value(states), self.cfg.algo.expectile)

    # ------------------------------------------------------------------ acting
    def sample_fn(self, generator: torch.Generator) -> Callable[[Tensor, int], Tensor]:
        """``(obs, n) -> n candidate chunks per state``, drawing noise from ``generator``."""

        def sample(obs: Tensor, n: int) -> Tensor:
            return self.acting_policy.sample(obs, num_samples=n, generator=generator)

        return sample

    @torch.no_grad()
    def act(
        self, obs: np.ndarray, explore: bool, generator: torch.Generator | None = None
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Collection (``explore``) draws ``algo.num_samples`` candidates and resamples by the
        guidance weights; evaluation uses L = 1 or the best of ``eval_num_samples``."""
        a = self.cfg.algo
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        if explore:
            sampler = CompatibilitySampler(
                self.sample_fn(self.generator),
                self._collection_weights,
                num_samples=a.num_samples,
                mode=a.sample_mode,
                temperature=a.q_temperature,
                generator=self.generator,
            )
            actions, info = sampler(obs_t)
            return actions.cpu().numpy(), {
                "sampler/uniform_fallback": info.get("sampler/uniform_fallback", 0.0)
            }
        sample_fn = self.sample_fn(self.generator if generator is None else generator)
        num = a.eval_num_samples if a.eval_mode == "best" else 1
        sampler = CompatibilitySampler(sample_fn, self.candidate_weights, num, mode="argmax")
        actions, _ = sampler(obs_t)
        return actions.cpu().numpy(), {}

    def _collection_weights(self, obs: Tensor, candidates: Tensor) -> Tensor:
        """The guidance of collection, its spread recorded for the iteration's metrics."""
        weights = self.candidate_weights(obs, candidates)
        self._spread.append(weight_spread(weights))
        return weights

    def eval_settings(self) -> dict[str, Any]:
        a = self.cfg.algo
        return {
            "eval_mode": a.eval_mode,
            "eval_num_samples": a.eval_num_samples if a.eval_mode == "best" else 1,
        }

    # ------------------------------------------------------------------ updates
    def update_critic(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """One IQL step on a replay batch of raw chunk transitions."""
        return self.critic.update(self.transitions(batch))

    def update_potentials(self, obs: Tensor, actions: Tensor) -> dict[str, float]:
        """One dual step on independent state and action batches (a sample of mu x nu)."""
        return self.potentials.update(self.state(obs), self.executed(actions), self.cost_fn)

    @torch.no_grad()
    def resampled_targets(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """OTPR sec. 4.4: L fresh candidates per state, weighted by the guidance per state.

        Returns flat (obs [n L, T_o, D], chunks [n L, H, A], weights [n L]) where each state's
        weights are normalised to mean 1 over its L candidates (a state whose weights are all
        zero gets uniform ones), so that every state contributes equally and the weighted DSM
        fits pi'(a|s) ~ pi(a|s) w(s, a).
        """
        num = self.cfg.algo.num_samples
        cand = self.acting_policy.sample(obs, num_samples=num, generator=self.generator)
        w = self.candidate_weights(obs, cand)
        total = w.sum(dim=1, keepdim=True)
        w = torch.where(total > 0, w * num / total.clamp_min(1e-30), torch.ones_like(w))
        flat_obs = obs[:, None].expand(-1, num, *obs.shape[1:]).reshape(-1, *obs.shape[1:])
        return flat_obs, cand.reshape(-1, *cand.shape[2:]), w.reshape(-1)

    @torch.no_grad()
    def in_support(self, obs: Tensor) -> Tensor:
        """1 where every normalised observation dim of a state [B, T_o, D] lies within
        ``algo.actor_obs_bound`` (the pretraining data span [-1, 1]), else 0; all ones if 0.

        Beyond the data's span the pretrained score network is not self-consistent (on Can its
        DSM loss on its own samples at such states is ~200x the in-span loss, docs/results.md),
        so those few pairs would dominate every actor step and unlearn the in-span behaviour.
        """
        return in_support(self.policy, obs, self.cfg.algo.actor_obs_bound)

    def update_actor(
        self, obs: Tensor, actions: Tensor, weights: Tensor | None = None, num_demo: int = 0
    ) -> dict[str, float]:
        """One guidance-weighted DSM step (OTPR eq. 10) on raw (obs, chunk) pairs, the last
        ``num_demo`` of them demo pairs.

        ``weights=None`` weighs the pairs by the guidance (the ``replay`` variant). Pairs whose
        state leaves the pretraining data's span (``in_support``) get weight 0.
        """
        if weights is None:
            weights = self.pair_weights(obs, actions)
        a = self.cfg.algo
        in_support = self.in_support(obs)
        weights = weights * in_support
        loss, info = compute_actor_loss(
            self.policy, obs, actions, weights, a.weight_norm, a.weight_clip or None
        )
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_optimizer.step()
        self.after_policy_step()
        out = {k: v for k, v in info.items() if isinstance(v, (int, float))}
        out["actor/dsm"] = loss.item()
        out["actor/in_support_frac"] = float(in_support.mean())
        out["actor/guidance_weight_mean"] = float(weights.mean())
        out["actor/guidance_nonzero_frac"] = float((weights > 0).float().mean())
        stats = actor_weight_stats(weights, num_demo)
        out["actor/ess_frac"], out["actor/demo_weight_share"] = (
            stats["ess_frac"],
            stats["demo_weight_share"],
        )
        return out

    def update(self, data: TrainingData, iteration: int) -> dict[str, float]:
        """Critic and potentials, then (after the warm-up) the actor."""
        a, o = self.cfg.algo, self.cfg.ot
        metrics: dict[str, float] = {}
        if self._spread:  # how the collection's guidance spread over the iteration's decisions
            for key in self._spread[0]:
                metrics[f"guidance/{key}"] = float(np.mean([x[key] for x in self._spread]))
            self._spread = []
        timing: dict[str, float] = defaultdict(float)
        tic = time.perf_counter()
        for _ in range(a.critic_updates_per_iter):
            metrics.update(self.update_critic(data.batch(a.critic_batch_size)))
        timing["perf/time_critic_s"] = time.perf_counter() - tic
        if a.guidance == "H":
            # The potentials track the critic from the first iteration, so that H is fitted
            # (not 50 steps old) when the actor starts using it after the warm-up.
            tic = time.perf_counter()
            for _ in range(o.steps_per_iter):
                s = data.batch(o.batch_size)["obs"]
                act = data.batch(o.batch_size)["actions"]
                metrics.update(self.update_potentials(s, act))
            timing["perf/time_potentials_s"] = time.perf_counter() - tic
        if iteration < a.warmup_iterations:
            return {**metrics, **timing}
        tic = time.perf_counter()
        if a.actor_update == "ppo":
            states = data.batch(a.ppo_states, recent=a.actor_recent)["obs"]
            demos = lambda: data.demo_batch(a.actor_batch_size)  # noqa: E731
            metrics.update(self.update_actor_ppo(states, demos))
            timing["perf/time_actor_s"] = time.perf_counter() - tic
            return {**metrics, **timing}
        n_demo = int(round(a.demo_fraction * a.actor_batch_size))
        n_own = a.actor_batch_size - n_demo
        if a.actor_targets == "resampled":
            states = data.batch(a.actor_target_states, recent=a.actor_recent)["obs"]
            t_obs, t_act, t_w = self.resampled_targets(states)
            timing["perf/time_actor_targets_s"] = time.perf_counter() - tic
        for _ in range(a.actor_updates_per_iter):
            if a.actor_targets == "resampled":
                idx = torch.as_tensor(data.rng.integers(0, len(t_obs), n_own))
                obs, act, w = t_obs[idx], t_act[idx], t_w[idx]
            else:
                batch = data.batch(n_own, recent=a.actor_recent)
                obs, act, w = batch["obs"], batch["actions"], None
            if n_demo:
                d_obs, d_act = data.demo_batch(n_demo)
                d_obs, d_act = d_obs.to(obs.device), d_act.to(act.device)
                if a.demo_weights == "uniform":
                    w = self.pair_weights(obs, act) if w is None else w
                    w = torch.cat([w, torch.ones(n_demo, device=w.device)])
                elif w is not None:
                    w = torch.cat([w, self.pair_weights(d_obs, d_act)])
                obs, act = torch.cat([obs, d_obs]), torch.cat([act, d_act])
            # guided replay pairs: weights of the whole (replay + demo) batch in one call
            metrics.update(self.update_actor(obs, act, w, num_demo=n_demo))
        timing["perf/time_actor_s"] = time.perf_counter() - tic
        return {**metrics, **timing}

    @torch.no_grad()
    def ppo_candidates(self, obs: Tensor) -> ChainBatch:
        """``actor_update=ppo``'s batch: ``algo.ppo_num_candidates`` fresh candidates of the
        trained network per state (obs [n, T_o, D]), their chains and step log-probabilities
        recorded with every step's std floored at ``algo.ppo_min_std``; each candidate's
        advantage is its guidance weight normalised to mean 1 over its state's candidates,
        minus 1 (an all-zero state gets 0), standardised over the batch, and 0 for states
        outside the data's span (``in_support``).
        """
        a = self.cfg.algo
        n, num = obs.shape[0], a.ppo_num_candidates
        flat = obs[:, None].expand(-1, num, *obs.shape[1:]).reshape(-1, *obs.shape[1:])
        with floored_std(self.policy, a.ppo_min_std):
            chunks, xs, log_prob = record_chain(self.policy, flat, self.generator, self.act_steps)
        w = self.candidate_weights(obs, chunks.view(n, num, *chunks.shape[1:]))
        total = w.sum(dim=1, keepdim=True)
        w = torch.where(total > 0, w * num / total.clamp_min(1e-30), torch.ones_like(w))
        adv = (w - 1.0) * self.in_support(obs)[:, None]
        adv = adv.reshape(-1)
        if adv.numel() > 1 and float(adv.std()) > 0:
            adv = adv / adv.std()
        return ChainBatch(flat, xs, log_prob, adv)

    def update_actor_ppo(
        self, obs: Tensor, demo_batch: Callable[[], tuple[Tensor, Tensor]]
    ) -> dict[str, float]:
        """``actor_update=ppo``: ``algo.ppo_epochs`` passes of PPO's clipped surrogate through
        the chain (``chain_ppo.update_chain_policy``) on the candidates of ``ppo_candidates``,
        plus ``algo.ppo_bc_coef`` times the DSM loss of ``demo_batch()`` pairs when > 0."""
        a = self.cfg.algo
        batch = self.ppo_candidates(obs)
        num_k = batch.old_log_prob.shape[1]
        clips = clip_schedule(num_k, a.ppo_clip, a.ppo_clip_base, 3.0).to(batch.advantage)
        discount = a.ppo_denoising_gamma ** torch.arange(num_k - 1, -1, -1).to(batch.advantage)
        settings = SimpleNamespace(
            epochs=a.ppo_epochs,
            minibatch_size=a.ppo_minibatch_size,
            max_grad_norm=a.ppo_max_grad_norm,
            target_kl=a.ppo_target_kl,
        )
        regulariser = None
        if a.ppo_bc_coef > 0:
            regulariser = bc_regulariser(self.policy, demo_batch, a.ppo_bc_coef)
        with floored_std(self.policy, a.ppo_min_std):
            out = update_chain_policy(
                self.policy,
                self.actor_optimizer,
                batch,
                clips,
                discount,
                self.act_steps,
                settings,
                self.generator,
                regulariser=regulariser,
                after_step=self.after_policy_step,
            )
        out["actor/ppo_dropped_frac"] = float((batch.advantage < 0).float().mean())
        return out

    # ------------------------------------------------------------------ checkpoints
    def modules(self) -> dict[str, torch.nn.Module]:
        return {**super().modules(), "critic": self.critic, "potentials": self.potentials}

    def optimizers(self) -> dict[str, Any]:
        return {
            **super().optimizers(),
            "critic_q": self.critic.q_optimizer,
            "critic_v": self.critic.v_optimizer,
            "potentials": self.potentials.optimizer,
        }

    def generators(self) -> dict[str, torch.Generator]:
        return {**super().generators(), "potentials": self.potentials.generator}
