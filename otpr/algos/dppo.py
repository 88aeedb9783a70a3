"""DPPO (Ren et al. 2024), PPO through the denoising chain: ``algo=dppo``.

Two nested MDPs. Each env decision draws a chunk by K Gaussian denoising steps; every step
x_k -> x_{k+1} is an action of the inner MDP, with log-probability under the current network
(``DiffusionPolicy.step_mean_std``). The env decision earns the chunk's discounted reward. One
advantage per decision (GAE over decisions, V(s) from ``critics.StateValue``) is shared by its K
steps, discounted by ``algo.denoising_gamma`` per step before the last:

    decision t:   x_0 (noise) -> x_1 -> ... -> x_K = chunk -> env executes T_a steps -> r_t
    step k gets   A_t * gamma_d^(K - 1 - k)   and ratio clip c_k: clip_base (k = 0) -> clip (K - 1)

As DPPO computes them (``model/diffusion/diffusion_ppo.py``): a step's log-probability is the
MEAN over the executed part of the chunk (its first T_a rows, all action dims) of the
per-element Gaussian log-density clamped to [-5, 2], so ratios stay near 1 and the clip ranges
are per element; advantages are standardised over the rollout; the loss is the clipped surrogate
max(-A r, -A clip(r, 1 - c_k, 1 + c_k)), plus, with ``algo.bc_coef`` > 0, that weight
times the DSM loss on a fresh batch of demo (and successful-episode) pairs: SODP's
behaviour-cloning regulariser (eq. 14-15), off in plain DPPO. Every step's std is floored by
``policy.min_std``, in collection and in the log-probabilities alike. Evaluation samples
without noise (DDIM eta 0, no floor) under ``algo.eval_deterministic``, on in ``algo=dppo`` as
DPPO evaluates. All K steps are fine-tuned (DPPO can freeze the earliest ones with a copy of
the base network; this does not).

The chain's pieces (the step log-probabilities, the clip schedule, the clipped surrogate, the
behaviour-cloning term and the minibatch loop) are ``otpr/algos/chain_ppo.py``, shared with
SODP (``algo=sodp``). The loop (``otpr.loop.Trainer``) steps the envs; :class:`GAERollout`
records the chains, computes the advantages and updates the policy and V, a part that
``algo=dppo`` and ``algo=otpr_gae`` each own. Truncation is not
termination: a decision cut by the time limit bootstraps from V of its final observation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from critics.value import StateValue
from envs.base import TaskSpec
from otpr.algos.base import Algorithm, Step, register_algo
from otpr.algos.chain_ppo import (
    ChainBatch,
    Regulariser,
    bc_regulariser,
    clip_schedule,
    record_chain,
    sum_of,
    update_chain_policy,
)
from otpr.buffer import TrainingData
from otpr.config import AlgoConfig, Config, _check, _one_of


def gae(
    reward: Tensor,
    value: Tensor,
    next_value: Tensor,
    terminated: Tensor,
    done: Tensor,
    discount: Tensor,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimates over a rollout of T decisions x N envs (all [T, N]).

    delta_t = r_t + discount_t (1 - terminated_t) V(s'_t) - V(s_t), with s'_t the decision's
    true next observation (the final one when the episode ended there);
    A_t = delta_t + discount_t lam (1 - done_t) A_{t+1}, and A after the last decision is 0.
    ``discount_t`` is gamma ** (env steps the decision took). Returns (advantages, returns =
    advantages + values).
    """
    shapes = {tuple(x.shape) for x in (reward, value, next_value, terminated, done, discount)}
    if len(shapes) != 1 or reward.dim() != 2:
        raise ValueError(f"gae: every input must be the same [T, N] shape, got {sorted(shapes)}")
    delta = reward + discount * (1.0 - terminated) * next_value - value
    adv = torch.zeros_like(reward)
    running = torch.zeros_like(reward[0])
    for t in reversed(range(reward.shape[0])):
        running = delta[t] + discount[t] * lam * (1.0 - done[t]) * running
        adv[t] = running
    return adv, adv + value


@dataclass
class DPPOConfig(AlgoConfig):
    """DPPO: PPO through the denoising chain, V(s) as the critic. Defaults follow DPPO's
    Robomimic configs (clip ranges, denoising gamma, GAE lambda, learning rates, 10 epochs)."""

    name: str = "dppo"
    """dppo."""
    steps_per_iter: int = 75
    """Decisions per env per iteration: the rollout PPO updates on."""
    actor_lr: float = 1e-5
    """Learning rate of the policy."""
    eval_deterministic: bool = True
    """Evaluate noise-free (DDIM eta 0, no floor), as DPPO's ``deterministic=True``."""
    epochs: int = 10
    """Passes over each iteration's rollout."""
    minibatch_size: int = 500
    """(decision, denoising step) samples per policy gradient step."""
    clip: float = 0.01
    """Ratio clip range of the last denoising step (DPPO's ``clip_ploss_coef``)."""
    clip_base: float = 0.001
    """Ratio clip range of the first denoising step; the steps between follow DPPO's
    exponential schedule with rate ``clip_rate``."""
    clip_rate: float = 3.0
    """Curvature of the clip schedule (``clip_ploss_coef_rate``)."""
    gae_lambda: float = 0.95
    """GAE lambda over decisions."""
    denoising_gamma: float = 0.99
    """An earlier denoising step's advantage is discounted by this per step before the last."""
    norm_advantages: bool = True
    """Standardise the rollout's advantages."""
    target_kl: float = 1.0
    """Stop an iteration's epochs once the mean approximate KL exceeds this (0: never)."""
    max_grad_norm: float = 1.0
    """Clip of the policy gradient norm (0: none)."""
    value_lr: float = 1e-3
    """Learning rate of V(s)."""
    value_hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    """V(s) MLP widths."""
    bc_coef: float = 0.0
    """Weight of a behaviour-cloning term (unweighted DSM on ``bc_batch_size`` demo pairs, and
    with ``algo.success_to_demos`` the run's successful episodes) added to every policy step:
    SODP's regulariser (eq. 14-15). 0: plain DPPO."""
    bc_batch_size: int = 256
    """Pairs per behaviour-cloning term."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.bc_coef >= 0, "algo.bc_coef", "must be >= 0")
        for key in ("epochs", "minibatch_size", "bc_batch_size"):
            _check(getattr(self, key) >= 1, f"algo.{key}", "must be >= 1")
        for key in ("clip", "value_lr"):
            _check(getattr(self, key) > 0, f"algo.{key}", "must be > 0")
        _check(
            0 < self.clip_base <= self.clip,
            "algo.clip_base",
            f"must be in (0, algo.clip={self.clip}]",
        )
        _check(self.clip_rate > 0, "algo.clip_rate", "must be > 0")
        for key in ("gae_lambda", "denoising_gamma"):
            _check(0 <= getattr(self, key) <= 1, f"algo.{key}", "must be in [0, 1]")
        for key in ("target_kl", "max_grad_norm"):
            _check(getattr(self, key) >= 0, f"algo.{key}", "must be >= 0 (0: off)")

    def check(self, cfg: Config) -> None:
        _one_of(cfg.policy.sampler, "policy.sampler (algo=dppo)", ("ddim", "euler_maruyama"))
        _check(
            cfg.policy.min_std > 0,
            "policy.min_std",
            "must be > 0 with algo=dppo (every denoising step needs a log-probability)",
        )


class GAERollout:
    """DPPO's collection and update, a part an algorithm owns (``algo=dppo``, ``otpr_gae``):
    the chains the owner's trained weights drew in one iteration and the env's answers to them
    (``rows``, lists of [N, ...] per decision), V(s) fitted to their returns, and the PPO
    update of the owner's policy on their GAE advantages. The owner lends its policy, actor
    optimizer, collection generator, state map and after-step hook."""

    KEYS = ("obs", "xs", "log_prob", "reward", "discount", "terminated", "done", "next")

    def __init__(self, owner: Algorithm) -> None:
        cfg, a = owner.cfg, owner.cfg.algo
        self.owner = owner
        self.value = StateValue(owner.state_dim, a.value_hidden, a.value_lr, cfg.device)
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)  # minibatch order
        self.clear()

    def clear(self) -> None:
        self.rows: dict[str, list[Tensor]] = {k: [] for k in self.KEYS}

    @torch.no_grad()
    def record(self, obs: np.ndarray) -> np.ndarray:
        """One chunk [N, H, A] per member from the owner's trained weights, its chain kept."""
        o = self.owner
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=o.device)
        chunks, xs, log_prob = record_chain(o.policy, obs_t, o.generator, o.act_steps)
        self.rows["obs"].append(obs_t)
        self.rows["xs"].append(xs)
        self.rows["log_prob"].append(log_prob)
        return chunks.cpu().numpy()

    def observe(self, step: Step) -> None:
        dev = self.owner.device
        for key, x in (
            ("reward", step.reward),
            ("discount", step.discount),
            ("terminated", step.terminated),
            ("done", step.done),
        ):
            self.rows[key].append(torch.as_tensor(np.asarray(x, np.float32), device=dev))
        self.rows["next"].append(torch.as_tensor(step.next_obs, dtype=torch.float32, device=dev))

    def update(
        self,
        train_actor: bool,
        bc_batch: Callable[[], tuple[Tensor, Tensor]] | None = None,
        regulariser: Regulariser | None = None,
        advantage_bonus: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> dict[str, float]:
        """Advantages of the recorded rollout, then ``epochs`` passes of V and (when
        ``train_actor``) policy minibatch steps; clears the rollout. ``bc_batch`` draws the raw
        (obs, chunk) pairs of the behaviour-cloning term, needed when ``algo.bc_coef`` > 0;
        ``regulariser`` is a further term added to every policy step, and ``advantage_bonus``
        maps the rollout's raw observations [T N, T_o, D] and its (standardised) advantages
        [T N] to a term added to each decision's advantage (``algo=otpr_gae``'s advantage way)."""
        o = self.owner
        a = o.cfg.algo
        if a.bc_coef > 0 and bc_batch is None:
            raise ValueError("GAERollout.update: algo.bc_coef > 0 needs bc_batch")
        rows = {k: torch.stack(v) for k, v in self.rows.items() if v}  # [T, N, ...]
        self.clear()
        if "obs" not in rows:
            return {}
        t_len, n = rows["reward"].shape
        obs = rows["obs"].flatten(0, 1)
        states = o.state(obs)
        with torch.no_grad():
            value = self.value(states).view(t_len, n)
            next_value = self.value(o.state(rows["next"].flatten(0, 1))).view(t_len, n)
        adv, ret = gae(
            rows["reward"],
            value,
            next_value,
            rows["terminated"],
            rows["done"],
            rows["discount"],
            a.gae_lambda,
        )
        adv, ret = adv.flatten(), ret.flatten()
        raw_adv_std = float(adv.std()) if adv.numel() > 1 else 0.0
        if a.norm_advantages and adv.numel() > 1:
            adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        if advantage_bonus is not None:
            adv = adv + advantage_bonus(obs, adv)
        old = rows["log_prob"]
        num_k = old.shape[-1]
        clips = clip_schedule(num_k, a.clip, a.clip_base, a.clip_rate).to(adv)
        step_discount = a.denoising_gamma ** torch.arange(num_k - 1, -1, -1).to(adv)
        batch = ChainBatch(obs, rows["xs"].flatten(0, 1), old.flatten(0, 1), adv)
        out = update_chain_policy(
            o.policy,
            o.actor_optimizer,
            batch,
            clips,
            step_discount,
            o.act_steps,
            a,
            self.generator,
            regulariser=sum_of(
                bc_regulariser(o.policy, bc_batch, a.bc_coef) if a.bc_coef > 0 else None,
                regulariser,
            ),
            before_step=lambda b: self.value.update(states[b], ret[b]),
            after_step=o.after_policy_step,
            train_actor=train_actor,
        )
        out.update({"ppo/advantage_std": raw_adv_std, "ppo/return_mean": float(ret.mean())})
        return out

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"value": self.value}

    def optimizers(self) -> dict[str, Any]:
        return {"value": self.value.optimizer}

    def generators(self) -> dict[str, torch.Generator]:
        return {"ppo": self.generator}


@register_algo("dppo", DPPOConfig)
class DPPO(Algorithm):
    """DPPO: the trained weights collect (PPO's ratio is taken against them) and learn on the
    rollout's GAE advantages (:class:`GAERollout`); V(s) sees the normalised flat state."""

    def __init__(self, cfg: Config, spec: TaskSpec) -> None:
        super().__init__(cfg, spec)
        self.rollout = GAERollout(self)

    # ------------------------------------------------------------------ collection
    def act(
        self, obs: np.ndarray, explore: bool, generator: torch.Generator | None = None
    ) -> tuple[np.ndarray, dict[str, float]]:
        """Collection: one chunk [N, H, A] per member from the trained weights, its chain
        recorded; evaluation: one sample of the acting policy."""
        if not explore:
            return super().act(obs, explore, generator)
        return self.rollout.record(obs), {}

    def observe(self, step: Step) -> None:
        self.rollout.observe(step)

    # ------------------------------------------------------------------ update
    def update(self, data: TrainingData, iteration: int) -> dict[str, float]:
        """V and (after the warm-up) PPO on the iteration's rollout, then clear it."""
        a = self.cfg.algo
        tic = time.perf_counter()
        out = self.rollout.update(
            train_actor=iteration >= a.warmup_iterations,
            bc_batch=lambda: data.demo_batch(a.bc_batch_size),
        )
        return {**out, "perf/time_actor_s": time.perf_counter() - tic}

    # ------------------------------------------------------------------ checkpoints
    def modules(self) -> dict[str, torch.nn.Module]:
        return {**super().modules(), **self.rollout.modules()}

    def optimizers(self) -> dict[str, Any]:
        return {**super().optimizers(), **self.rollout.optimizers()}

    def generators(self) -> dict[str, torch.Generator]:
        return {**super().generators(), **self.rollout.generators()}
