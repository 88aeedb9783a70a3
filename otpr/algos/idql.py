"""IDQL (Hansen-Estruch et al. 2023, IDQL-Imp): ``algo=idql``.

*IDQL: Implicit Q-Learning as an Actor-Critic Method with Diffusion Policies.* The IQL critic
(``critics.IQLCritic``: twin Q, expectile V, Polyak target twins) defines an implicit policy
pi_imp(a|s) ~ mu(a|s) w(s, a); the diffusion policy is the behaviour model mu, trained by
UNWEIGHTED denoising score matching, and acting draws from pi_imp by resampling::

    critic    critic_updates_per_iter IQL steps on replay                      (every iteration)
    actor     actor_updates_per_iter plain DSM steps on replay + demo pairs    (after warm-up)
    act       N = num_samples candidate chunks per state in one batched call, one of them
              drawn with probability w_l / sum_j w_j (selection below)

=============  ==================================================  ==========================
selection      candidate weight w(s, a), A = Q(s, a) - V(s)         meaning
=============  ==================================================  ==========================
expectile      |tau - 1(A < 0)| / max(|A|, adv_floor)               IDQL-Imp: the implicit
                                                                    policy of expectile tau
exp            exp(beta A)                                          AWR-style advantage weight
greedy         argmax_l Q(s, a_l)  (no draw)                        IDQL's greedy variant
=============  ==================================================  ==========================

Q is the min of the TARGET twins (as IDQL's code scores candidates) and V the value network.
The expectile weight is the paper's: the implicit policy of the expectile loss puts the most
mass where Q(s, a) is near V(s), the tau-expectile of Q under mu; ``adv_floor`` bounds the
weight of a candidate whose Q equals V.

Evaluation uses the same selection (``algo.selection``) over ``algo.eval_num_samples``
candidates, its draws taken from the evaluation's generator, so an evaluation is a function of
the weights. The representations are OTPR's: the critic sees the normalised flat state and the
normalised executed part of the chunk (``Algorithm.transitions``); the policy fits whole chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from envs.base import TaskSpec
from otpr.algos.base import Algorithm, register_algo
from otpr.algos.otpr import make_iql_critic
from otpr.buffer import TrainingData
from otpr.config import AlgoConfig, Config, _check, _one_of
from otpr.sampler import CompatibilitySampler, exp_q
from policies.diffusion import DiffusionPolicy

SELECTIONS = ("expectile", "exp", "greedy")


@dataclass
class IDQLConfig(AlgoConfig):
    """IDQL-Imp: IQL critic, unweighted DSM actor, candidates resampled by the implicit policy."""

    name: str = "idql"
    """idql."""
    selection: str = "expectile"
    """How a state's candidates are chosen from: expectile (IDQL-Imp: |tau - 1(A < 0)| / |A|)
    | exp (exp(beta A)) | greedy (argmax Q); in collection and evaluation alike."""
    num_samples: int = 32
    """N: candidate chunks per state in collection (IDQL draws 32)."""
    eval_num_samples: int = 32
    """N in evaluation (the same selection)."""
    beta: float = 3.0
    """Inverse temperature of selection exp, in the units of Q."""
    adv_floor: float = 1e-3
    """Selection expectile: |A| is floored at this (Q's units), so a candidate with Q = V gets
    a finite weight."""
    critic_updates_per_iter: int = 200
    """IQL gradient steps per iteration."""
    critic_batch_size: int = 256
    """IQL batch size."""
    critic_lr: float = 3e-4
    """IQL learning rate."""
    critic_hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    """Q and V MLP widths."""
    expectile: float = 0.7
    """IQL expectile tau (also the tau of selection expectile)."""
    polyak: float = 0.005
    """Target-Q Polyak rate."""
    actor_updates_per_iter: int = 100
    """Unweighted DSM steps per iteration."""
    actor_batch_size: int = 256
    """Actor batch size (replay part + demo part)."""
    actor_recent: int = 0
    """Draw the actor's replay part from the N newest transitions (0: the whole replay)."""
    demo_fraction: float = 0.25
    """Fraction of each actor batch drawn from the demo pairs (``TrainingData.demo_batch``)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _one_of(self.selection, "algo.selection", SELECTIONS)
        for key in ("num_samples", "eval_num_samples", "critic_batch_size", "actor_batch_size"):
            _check(getattr(self, key) >= 1, f"algo.{key}", "must be >= 1")
        for key in ("critic_updates_per_iter", "actor_updates_per_iter", "actor_recent"):
            _check(getattr(self, key) >= 0, f"algo.{key}", "must be >= 0")
        for key in ("beta", "adv_floor", "critic_lr"):
            _check(getattr(self, key) > 0, f"algo.{key}", "must be > 0")
        _check(0.5 <= self.expectile < 1.0, "algo.expectile", "must be in [0.5, 1)")
        _check(0.0 < self.polyak <= 1.0, "algo.polyak", "must be in (0, 1]")
        _check(0.0 <= self.demo_fraction < 1.0, "algo.demo_fraction", "must be in [0, 1)")

    def shrink_for_debug(self) -> None:
        self.critic_updates_per_iter = min(self.critic_updates_per_iter, 5)
        self.actor_updates_per_iter = min(self.actor_updates_per_iter, 5)
        self.critic_batch_size = min(self.critic_batch_size, 64)
        self.actor_batch_size = min(self.actor_batch_size, 64)
        self.num_samples = min(self.num_samples, 8)
        self.eval_num_samples = min(self.eval_num_samples, 8)

    def describe(self, cfg: Config) -> dict[str, Any]:
        return {"selection": self.selection}


def compute_selection_weights(
    q: Tensor, v: Tensor, selection: str, expectile: float, beta: float, adv_floor: float
) -> Tensor:
    """IDQL's candidate weights [B, L] from Q [B, L] of each state's candidates and V [B].

    expectile: |tau - 1(A < 0)| / max(|A|, adv_floor); exp: exp(beta (A - max_l A)) (the row
    shift changes no probability); greedy: Q itself, a score for an argmax. A = Q - V(s).
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    if selection == "greedy":
        return q
    adv = q - v[:, None]
    if selection == "exp":
        return exp_q(adv, 1.0 / beta)
    tau = torch.where(adv < 0, 1.0 - expectile, expectile).to(adv.dtype)
    return tau / adv.abs().clamp_min(adv_floor)


def compute_actor_loss(
    policy: DiffusionPolicy, obs: Tensor, actions: Tensor
) -> tuple[Tensor, dict[str, float]]:
    """IDQL's behaviour model: the unweighted DSM loss of raw (obs, chunk) pairs."""
    return policy.compute_dsm_loss(obs, actions)


@register_algo("idql", IDQLConfig)
class IDQL(Algorithm):
    """Policy (the behaviour model) + IQL critic; acting resamples by the implicit policy."""

    def __init__(self, cfg: Config, spec: TaskSpec) -> None:
        super().__init__(cfg, spec)
        self.critic = make_iql_critic(cfg, self.state_dim, self.exec_dim)

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def candidate_weights(self, obs: Tensor, candidates: Tensor) -> Tensor:
        """Selection weights (scores for greedy) of candidates [B, L, H, A] -> [B, L]."""
        a = self.cfg.algo
        states = self.state(obs)
        batch, num = candidates.shape[:2]
        acts = self.executed(candidates).reshape(batch * num, -1)
        q = self.critic.target_q(states.repeat_interleave(num, dim=0), acts).view(batch, num)
        v = self.critic.value(states)
        return compute_selection_weights(q, v, a.selection, a.expectile, a.beta, a.adv_floor)

    @torch.no_grad()
    def act(
        self, obs: np.ndarray, explore: bool, generator: torch.Generator | None = None
    ) -> tuple[np.ndarray, dict[str, float]]:
        """N candidates per state from the acting policy, one selected by ``algo.selection``;
        collection draws from the algorithm's generator, evaluation (``eval_num_samples``
        candidates) from ``generator``."""
        a = self.cfg.algo
        gen = self.generator if explore or generator is None else generator
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)

        def sample(o: Tensor, n: int) -> Tensor:
            return self.acting_policy.sample(o, num_samples=n, generator=gen)

        sampler = CompatibilitySampler(
            sample,
            self.candidate_weights,
            num_samples=a.num_samples if explore else a.eval_num_samples,
            mode="argmax" if a.selection == "greedy" else "sample",
            generator=gen,
        )
        actions, info = sampler(obs_t)
        return actions.cpu().numpy(), {
            "sampler/uniform_fallback": info.get("sampler/uniform_fallback", 0.0)
        }

    def eval_settings(self) -> dict[str, Any]:
        a = self.cfg.algo
        out = {"eval_mode": a.selection, "eval_num_samples": a.eval_num_samples}
        if a.selection == "exp":
            out["beta"] = a.beta
        return out

    # ------------------------------------------------------------------ updates
    def update_critic(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """One IQL step (V, twin Q, Polyak) on a replay batch of raw chunk transitions."""
        return self.critic.update(self.transitions(batch))

    def update_actor(self, obs: Tensor, actions: Tensor) -> dict[str, float]:
        """One unweighted DSM step on raw (obs, chunk) pairs."""
        loss, info = compute_actor_loss(self.policy, obs, actions)
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_optimizer.step()
        self.after_policy_step()
        return {"actor/dsm": float(loss.detach())}

    def update(self, data: TrainingData, iteration: int) -> dict[str, float]:
        """The critic, then (after the warm-up) the behaviour model."""
        return self.critic_then_actor(data, iteration)

    # ------------------------------------------------------------------ checkpoints
    def modules(self) -> dict[str, torch.nn.Module]:
        return {**super().modules(), "critic": self.critic}

    def optimizers(self) -> dict[str, Any]:
        return {
            **super().optimizers(),
            "critic_q": self.critic.q_optimizer,
            "critic_v": self.critic.v_optimizer,
        }
