"""OTPR on executed advantages: ``algo=otpr_gae``.

DPPO's update (``otpr/algos/dppo.py``: PPO through the denoising chain, one GAE advantage per
executed decision from V(s) fitted to the rollout's returns) plus OTPR's guidance as a second
term of every policy step. The two signals divide the work:

- the executed advantage credits what the policy did, from the returns it earned: unbiased,
  noisy per decision, averaged over the rollout by the policy gradient;
- the OT plan ranks what the policy *could* do at a state: ``ot_states`` states of the
  iteration's rollout, ``num_samples`` fresh candidates of the trained network each, weighted by
  the L2-regularised plan between the state and its candidates with the action marginal
  relaxed (guidance Hc, ``otpr.sampler.conditional_plan``; cost -min target Q of an IQL critic
  trained on the replay, lam ``hc_lam`` in units of the within-state spread of Q): weights of
  mean 1 per state, exactly 0 for the candidates the critic ranks low. With ``ot_term=dsm``
  the term is ``ot_coef`` times the DSM loss of those candidates under these weights
  (``ot_weights=pull``: it pulls towards the kept ones; ``centred``: weights minus 1, pulling
  and pushing alike), on ``ot_batch_size`` of them per policy step; states outside the data's
  span (``actor_obs_bound``) get weight 0, as in ``algo=otpr``. With ``ot_term=advantage`` each
  executed chunk is ranked by the plan among itself and fresh candidates of its state, and its
  weight minus 1 (standardised, times ``ot_coef``) is added to its advantage: the plan then acts
  only through PPO's clipped ratio on what was executed. ``ot_scale=fitted`` further scales it
  by the slope of the rollout's advantages on it (clipped at 0): the critic's prediction of
  each chunk's advantage, as far as the returns the chunks earned confirm it.

``ot_coef=0`` is DPPO exactly (the candidates are then never drawn). What it measures
(docs/results.md): on Meta-World reach, where the critic ranks a state's candidates, the DSM
term lifts DPPO by +0.11 noise-free, the advantage way by +0.06-0.08 and the fitted advantage
way by +0.02 (5 seeds each); on Can, where that ranking is close to noise, every fixed variant
tried is below DPPO from the 20-demo BC after 60k env steps (0.40-0.58 against DPPO's 0.76, BC
0.78): a regression onto the policy's own samples compounds its errors there. The fitted scale
stays near 0 on Can and ties DPPO at 300k (0.865 against 0.8475 on 400 fresh episodes, one
seed each).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from envs.base import TaskSpec
from otpr.algos.base import Algorithm, Step, register_algo
from otpr.algos.chain_ppo import Regulariser, std_floor
from otpr.algos.dppo import DPPOConfig, GAERollout
from otpr.algos.otpr import candidate_q, expectile_weights, in_support, make_iql_critic
from otpr.buffer import TrainingData
from otpr.config import Config, _check, _one_of
from otpr.diagnose import actor_weight_stats, rank_corr, weight_spread
from otpr.sampler import conditional_plan


def fitted_slope(x: Tensor, y: Tensor) -> float:
    """Least-squares slope of y on x (0 when x is constant)."""
    xc = x - x.mean()
    var = float((xc * xc).sum())
    return float((xc * (y - y.mean())).sum()) / var if var > 0 else 0.0


@dataclass
class OTPRGAEConfig(DPPOConfig):
    """DPPO's settings plus the OT-guided term's and its IQL critic's."""

    name: str = "otpr_gae"
    """otpr_gae."""
    ot_coef: float = 1.0
    """Weight of the plan's term (``ot_term``; 0: DPPO)."""
    ot_states: int = 256
    """Rollout states per iteration whose candidates the plan weighs."""
    num_samples: int = 8
    """L: fresh candidates per state."""
    hc_lam: float = 2.0
    """The plan's L2 regulariser in units of the within-state std of Q (algo=otpr's)."""
    ot_batch_size: int = 256
    """Candidates per policy step in the term."""
    ot_min_std: float = 0.1
    """Floor of every denoising step's std while the term's candidates are drawn (0: none,
    the sampler's own noise; DPPO's collection floor is ``policy.min_std``, 0.1)."""
    ot_term: str = "dsm"
    """How the plan reaches the policy. dsm: the plan-weighted DSM term on fresh candidates
    (``ot_weights``). advantage: each executed chunk joins ``num_samples - 1`` fresh candidates
    of its state; its plan weight among them minus 1, standardised over the rollout, times
    ``ot_coef``, is added to its standardised GAE advantage: the plan acts only through PPO's
    clipped ratio on what was executed, never as a regression onto the policy's own samples."""
    ot_scale: str = "fixed"
    """ot_term=advantage only. fixed: the bonus is ``ot_coef`` x the standardised plan weight.
    fitted: it is further multiplied by the least-squares slope of the rollout's advantages on
    that standardised weight, clipped at 0, so that the term adds the critic's prediction of
    each chunk's advantage as far as the returns the chunks earned confirm it (a critic whose
    ranking of the executed chunks is unrelated to their returns adds nothing). Either way the
    rank correlation of the two is logged (``guidance/adv_rank_corr``)."""
    ot_weights: str = "pull"
    """pull: the DSM loss weighted by the plan (normalised over the batch): it pulls towards the
    kept candidates and, as any fit of the policy's own samples, narrows it. centred: weights
    minus 1 (0 for a state outside the span), so that a state's candidates' weights sum to 0:
    it pulls towards the kept candidates and pushes from the dropped ones as much, and a critic
    that ranks nothing (equal weights) moves nothing."""
    actor_obs_bound: float = 1.5
    """Candidates of states whose normalised observation leaves +-bound get weight 0 (0: off)."""
    critic_updates_per_iter: int = 200
    """IQL gradient steps per iteration (on the replay, from the first iteration)."""
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

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.ot_coef >= 0, "algo.ot_coef", "must be >= 0 (0: DPPO)")
        _one_of(self.ot_weights, "algo.ot_weights", ("pull", "centred"))
        _one_of(self.ot_term, "algo.ot_term", ("dsm", "advantage"))
        _one_of(self.ot_scale, "algo.ot_scale", ("fixed", "fitted"))
        _check(
            self.ot_scale == "fixed" or self.ot_term == "advantage",
            "algo.ot_scale",
            "fitted needs algo.ot_term=advantage (it scales the bonus on executed advantages)",
        )
        _check(self.ot_min_std >= 0, "algo.ot_min_std", "must be >= 0 (0: no floor)")
        for key in ("ot_states", "ot_batch_size", "critic_batch_size"):
            _check(getattr(self, key) >= 1, f"algo.{key}", "must be >= 1")
        _check(self.num_samples >= 2, "algo.num_samples", "must be >= 2 (the plan ranks them)")
        _check(self.hc_lam > 0, "algo.hc_lam", "must be > 0")
        _check(self.actor_obs_bound >= 0, "algo.actor_obs_bound", "must be >= 0 (0: no bound)")
        _check(self.critic_updates_per_iter >= 0, "algo.critic_updates_per_iter", "must be >= 0")
        _check(self.critic_lr > 0, "algo.critic_lr", "must be > 0")
        _check(0.5 <= self.expectile < 1.0, "algo.expectile", "must be in [0.5, 1)")
        _check(0.0 < self.polyak <= 1.0, "algo.polyak", "must be in (0, 1]")

    def shrink_for_debug(self) -> None:
        self.critic_updates_per_iter = min(self.critic_updates_per_iter, 5)
        self.critic_batch_size = min(self.critic_batch_size, 64)
        self.ot_states = min(self.ot_states, 16)
        self.ot_batch_size = min(self.ot_batch_size, 64)

    def describe(self, cfg: Config) -> dict[str, Any]:
        return {
            "guidance": "Hc",
            "ot_coef": self.ot_coef,
            "ot_term": self.ot_term,
            "ot_weights": self.ot_weights,
            "ot_scale": self.ot_scale,
        }


@register_algo("otpr_gae", OTPRGAEConfig)
class OTPRGAE(Algorithm):
    """DPPO's rollout, advantages and V (:class:`GAERollout`), with an IQL critic and the
    plan's term."""

    guidances = ("Hc", "A", "uniform")
    """What :meth:`candidate_weights` computes (``otpr-diagnose`` ranks each)."""

    def __init__(self, cfg: Config, spec: TaskSpec) -> None:
        super().__init__(cfg, spec)
        self.rollout = GAERollout(self)
        self.critic = make_iql_critic(cfg, self.state_dim, self.exec_dim)
        self.ot_generator = torch.Generator().manual_seed(cfg.seed + 2)  # the term's draws
        self._executed: list[Tensor] = []  # the rollout's raw chunks (ot_term=advantage)

    @torch.no_grad()
    def act(
        self, obs: np.ndarray, explore: bool, generator: torch.Generator | None = None
    ) -> tuple[np.ndarray, dict[str, float]]:
        """DPPO's: collection records the chain (with ``ot_term=advantage`` it also keeps the
        executed chunks); evaluation draws one sample of the acting policy."""
        if not explore:
            return super().act(obs, explore, generator)
        actions = self.rollout.record(obs)
        if self.cfg.algo.ot_term == "advantage" and self.cfg.algo.ot_coef > 0:
            self._executed.append(torch.as_tensor(actions, device=self.device))
        return actions, {}

    def observe(self, step: Step) -> None:
        self.rollout.observe(step)

    @torch.no_grad()
    def draw_candidates(self, obs: Tensor, num: int) -> Tensor:
        """``num`` fresh chunks of the trained network per state [n, num, H, A], every step's
        std floored at ``ot_min_std`` (the policy's own floor restored afterwards)."""
        with std_floor(self.policy, self.cfg.algo.ot_min_std):
            return self.policy.sample(obs, num_samples=num, generator=self.generator)

    @torch.no_grad()
    def plan_weights(self, obs: Tensor, chunks: Tensor) -> Tensor:
        """The plan Hc over each state's chunks [n, L, H, A] (raw states obs [n, T_o, D]):
        weights [n, L] of mean 1 per state, 0 for every chunk of a state outside the span."""
        a = self.cfg.algo
        q = candidate_q(self.critic.target_q, self.state(obs), self.executed(chunks))
        return (
            conditional_plan(q, a.hc_lam) * in_support(self.policy, obs, a.actor_obs_bound)[:, None]
        )

    @torch.no_grad()
    def candidate_weights(self, obs: Tensor, candidates: Tensor, guidance: str = "Hc") -> Tensor:
        """For ``otpr-diagnose``: the weights of candidates [B, L, H, A] of raw states obs
        [B, T_o, D] -> [B, L] under ``guidance``: Hc, the plan the term uses
        (:meth:`plan_weights`); A, IQL's expectile weights of the same critic; uniform, ones."""
        if guidance == "Hc":
            return self.plan_weights(obs, candidates)
        if guidance == "A":
            states = self.state(obs)
            q = candidate_q(self.critic.target_q, states, self.executed(candidates))
            return expectile_weights(q, self.critic.value(states), self.cfg.algo.expectile)
        if guidance == "uniform":
            return torch.ones(candidates.shape[:2], device=candidates.device)
        raise ValueError(f"guidance must be one of {self.guidances}, got {guidance!r}")

    @torch.no_grad()
    def executed_bonus(
        self, obs: Tensor, executed: Tensor, adv: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """``ot_term=advantage``: for each executed chunk [B, H, A] of raw states obs
        [B, T_o, D], its plan weight among itself and ``num_samples - 1`` fresh candidates
        minus 1 (0 outside the data's span), standardised over the rollout, times ``ot_coef``
        (and, with ``ot_scale=fitted``, times the slope of the advantages adv [B] on it,
        clipped at 0); and its metrics (the plans' spread, the fit to adv, the scale)."""
        a = self.cfg.algo
        cand = self.draw_candidates(obs, a.num_samples - 1)
        w = self.plan_weights(obs, torch.cat([executed[:, None], cand], dim=1))
        bonus = torch.where(w.sum(dim=1) > 0, w[:, 0] - 1.0, 0.0)  # 0 outside the span
        if bonus.numel() > 1 and float(bonus.std()) > 0:
            bonus = bonus / bonus.std()
        slope = fitted_slope(bonus, adv)
        scale = a.ot_coef * (max(slope, 0.0) if a.ot_scale == "fitted" else 1.0)
        stats = {
            **weight_spread(w),
            "adv_rank_corr": rank_corr(bonus, adv),
            "adv_slope": slope,
            "bonus_scale": scale,
        }
        return scale * bonus, stats

    @torch.no_grad()
    def plan_targets(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``num_samples`` fresh candidates of the trained network per state (obs [n, T_o, D]),
        drawn with every step's std floored at ``ot_min_std``, and their plan weights: flat
        (obs [n L, T_o, D], chunks [n L, H, A], weights [n L]), mean 1 over a state's
        candidates, 0 for a state outside the data's span."""
        a = self.cfg.algo
        n, num = obs.shape[0], a.num_samples
        cand = self.draw_candidates(obs, num)
        w = self.plan_weights(obs, cand)
        flat = obs[:, None].expand(-1, num, *obs.shape[1:]).reshape(-1, *obs.shape[1:])
        return flat, cand.reshape(n * num, *cand.shape[2:]), w.reshape(-1)

    def plan_regulariser(self, obs: Tensor, chunks: Tensor, weights: Tensor) -> Regulariser:
        """``ot_coef`` times the plan-weighted DSM loss of ``ot_batch_size`` of the targets,
        a fresh draw per policy step (logs ``ppo/ot_loss`` before the weight). ``weights`` are
        :meth:`plan_targets`'; with ``ot_weights=centred`` each is used minus 1 (and 0 outside
        the span), the loss the batch mean of weight x per-sample DSM loss."""
        a = self.cfg.algo
        policy, gen = self.policy, self.ot_generator
        if a.ot_weights == "centred":
            rows = weights.view(-1, a.num_samples)
            kept = rows.sum(dim=1, keepdim=True) > 0  # a state inside the span
            weights = torch.where(kept, rows - 1.0, 0.0).reshape(-1)

        def term(b: Tensor, k: Tensor, mean: Tensor, std: Tensor) -> tuple[Tensor, dict]:
            idx = torch.randint(0, len(obs), (a.ot_batch_size,), generator=gen)
            idx = idx.to(obs.device)
            if a.ot_weights == "centred":
                per_sample = policy.per_sample_dsm_loss(obs[idx], chunks[idx], generator=gen)
                loss = (weights[idx] * per_sample).mean()
            else:
                loss, _ = policy.compute_dsm_loss(
                    obs[idx],
                    chunks[idx],
                    weights[idx],
                    "batch_mean",
                    generator=gen,
                    weight_clip=10.0,
                )
            return a.ot_coef * loss, {"ppo/ot_loss": float(loss.detach())}

        return term

    def update(self, data: TrainingData, iteration: int) -> dict[str, float]:
        """IQL on the replay, the plan's targets at the rollout's states, then DPPO's update
        of V and (after the warm-up) the policy with the term added to every step."""
        a = self.cfg.algo
        metrics: dict[str, float] = {}
        tic = time.perf_counter()
        for _ in range(a.critic_updates_per_iter):
            metrics.update(self.critic.update(self.transitions(data.batch(a.critic_batch_size))))
        metrics["perf/time_critic_s"] = time.perf_counter() - tic
        train_actor = iteration >= a.warmup_iterations
        regulariser = bonus = None
        executed, self._executed = self._executed, []
        if train_actor and a.ot_coef > 0 and a.ot_term == "advantage" and executed:

            def bonus(obs: Tensor, adv: Tensor) -> Tensor:
                term, stats = self.executed_bonus(obs, torch.cat(executed), adv)
                metrics.update({f"guidance/{k}": v for k, v in stats.items()})
                return term

        elif train_actor and a.ot_coef > 0 and a.ot_term == "dsm" and self.rollout.rows["obs"]:
            states = torch.cat(self.rollout.rows["obs"])
            pick = torch.randperm(len(states), generator=self.ot_generator)[: a.ot_states]
            obs, chunks, w = self.plan_targets(states[pick.to(states.device)])
            regulariser = self.plan_regulariser(obs, chunks, w)
            spread = weight_spread(w.view(-1, a.num_samples))
            metrics["guidance/all_zero_frac"] = spread["all_zero_frac"]
            metrics["guidance/within_share"] = spread["within_share"]
            metrics["actor/ess_frac"] = actor_weight_stats(w, 0)["ess_frac"]
        tic = time.perf_counter()
        out = self.rollout.update(
            train_actor=train_actor,
            bc_batch=lambda: data.demo_batch(a.bc_batch_size),
            regulariser=regulariser,
            advantage_bonus=bonus,
        )
        return {**metrics, **out, "perf/time_actor_s": time.perf_counter() - tic}

    # ------------------------------------------------------------------ checkpoints
    def modules(self) -> dict[str, torch.nn.Module]:
        return {**super().modules(), **self.rollout.modules(), "critic": self.critic}

    def optimizers(self) -> dict[str, Any]:
        return {
            **super().optimizers(),
            **self.rollout.optimizers(),
            "critic_q": self.critic.q_optimizer,
            "critic_v": self.critic.v_optimizer,
        }

    def generators(self) -> dict[str, torch.Generator]:
        return {**super().generators(), **self.rollout.generators(), "ot": self.ot_generator}
