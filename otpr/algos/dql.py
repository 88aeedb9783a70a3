"""Diffusion-QL (Wang, Hunt, Zhou 2022) for online fine-tuning: ``algo=dql``.

*Diffusion Policies as an Expressive Policy Class for Offline Reinforcement Learning.* The
policy is trained as a behaviour-regularised actor: its loss is the DSM loss (behaviour cloning)
on replay + demo pairs minus a Q term on chunks the policy itself draws, back-propagated
through the reverse chain; twin Q networks (``critics.TwinQ``) learn by TD::

    critic  y = r + discount (1 - terminated) min_i Q'_i(s', a'),   a' ~ target policy (no grad)
            loss = sum_i mean (Q_i(s, a) - y)^2, then Polyak targets   (every iteration)
    actor   loss = DSM(replay + demo pairs) - eta mean Q(s, a_theta) / sg(mean |Q(s, a_theta)|)
            a_theta = the acting reverse chain WITH gradients (after the warm-up)

Q(s, a_theta) is the min of the two online heads; the normaliser mean |Q| is detached
(Diffusion-QL's alpha = eta / E|Q|), so eta is the Q term's weight whatever Q's scale. The
target policy is the averaged policy (``algo.ema_decay`` > 0, as the paper's ``ema_model``),
else the trained one. Both a_theta and a' are drawn by the policy's sampler on the grid it acts
with (``algo.chain_steps`` 0: ``policy.num_steps``), as Diffusion-QL trains, backs up and acts
with one chain (N = 5 there, ``policy.num_steps=5`` here). A shorter training chain than the
acting one is a mismatch, not a saving: the Q term then shapes the network only at the short
grid's times, whose outputs drift to the action bounds while the acting chain's do not, and the
target actions a' come from those out-of-distribution corners (on push with 5 of 10 steps:
67% of a_theta's coordinates at +-1 against 0.2% of the acting chain's, the critic's mean Q
rising to 1.8-2.4 against a maximum return of 1, success 0.76 -> 0).

The critic sees the normalised flat state and the normalised executed part of the chunk
(``Algorithm.transitions``), like every critic here; the policy fits and draws whole chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from critics.twin_q import TwinQ
from envs.base import TaskSpec
from otpr.algos.base import Algorithm, register_algo
from otpr.buffer import TrainingData
from otpr.config import AlgoConfig, Config, _check


@dataclass
class DQLConfig(AlgoConfig):
    """Diffusion-QL: twin-Q TD critic, DSM + normalised Q actor through a short reverse chain."""

    name: str = "dql"
    """dql."""
    eta: float = 0.05
    """Weight of the Q term relative to the DSM term (Q normalised by its mean |Q|)."""
    chain_steps: int = 0
    """Denoising steps of the differentiable chain drawing a_theta, and of the target actions
    a' (0: policy.num_steps, the acting chain; another value trains a chain that never acts).
    Memory and time of an actor step grow with it."""
    ema_decay: float = 0.995
    """EMA of the policy's weights (Diffusion-QL's ema_model): the target policy of the TD
    backup, the acting and the evaluated policy (0: the trained weights do all three)."""
    critic_updates_per_iter: int = 200
    """TD gradient steps per iteration."""
    critic_batch_size: int = 256
    """TD batch size."""
    critic_lr: float = 3e-4
    """Learning rate of the twin Q."""
    critic_hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    """Q MLP widths."""
    polyak: float = 0.005
    """Target-Q Polyak rate."""
    actor_updates_per_iter: int = 100
    """Actor gradient steps per iteration."""
    actor_batch_size: int = 256
    """Actor batch size (replay part + demo part; a_theta is drawn for all its states)."""
    actor_recent: int = 0
    """Draw the actor's replay part from the N newest transitions (0: the whole replay)."""
    demo_fraction: float = 0.25
    """Fraction of each actor batch drawn from the demo pairs (``TrainingData.demo_batch``)."""
    max_grad_norm: float = 1.0
    """Clip of the actor's gradient norm (0: none)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.eta >= 0, "algo.eta", "must be >= 0")
        _check(self.chain_steps >= 0, "algo.chain_steps", "must be >= 0 (0: policy.num_steps)")
        for key in ("critic_batch_size", "actor_batch_size"):
            _check(getattr(self, key) >= 1, f"algo.{key}", "must be >= 1")
        for key in ("critic_updates_per_iter", "actor_updates_per_iter", "actor_recent"):
            _check(getattr(self, key) >= 0, f"algo.{key}", "must be >= 0")
        _check(self.critic_lr > 0, "algo.critic_lr", "must be > 0")
        _check(0.0 < self.polyak <= 1.0, "algo.polyak", "must be in (0, 1]")
        _check(0.0 <= self.demo_fraction < 1.0, "algo.demo_fraction", "must be in [0, 1)")
        _check(self.max_grad_norm >= 0, "algo.max_grad_norm", "must be >= 0 (0: off)")

    def shrink_for_debug(self) -> None:
        self.critic_updates_per_iter = min(self.critic_updates_per_iter, 5)
        self.actor_updates_per_iter = min(self.actor_updates_per_iter, 5)
        self.critic_batch_size = min(self.critic_batch_size, 64)
        self.actor_batch_size = min(self.actor_batch_size, 64)

    def describe(self, cfg: Config) -> dict[str, Any]:
        return {"eta": self.eta, "chain_steps": self.chain_steps or cfg.policy.num_steps}


def compute_critic_loss(
    q: Tensor, next_q: Tensor, reward: Tensor, discount: Tensor, terminated: Tensor
) -> tuple[Tensor, dict[str, float]]:
    """TD with clipped double Q: ``q`` [2, B] the online heads at (s, a), ``next_q`` [2, B] the
    target heads at (s', a'); y = r + discount (1 - terminated) min_i next_q_i (no grad) and
    loss = sum_i mean (q_i - y)^2. Only ``terminated`` stops the bootstrap."""
    with torch.no_grad():
        target = reward + discount * (1.0 - terminated) * next_q.min(dim=0).values
    loss = (q - target).square().mean(dim=1).sum()
    info = {
        "critic/q_loss": float(loss.detach()),
        "critic/q_mean": float(q.detach().min(dim=0).values.mean()),
        "critic/target_mean": float(target.mean()),
    }
    return loss, info


def compute_actor_loss(dsm: Tensor, q_pi: Tensor, eta: float) -> tuple[Tensor, dict[str, float]]:
    """Diffusion-QL's actor loss dsm - eta mean(q_pi) / sg(mean |q_pi|): ``dsm`` the (scalar)
    behaviour-cloning loss, ``q_pi`` [B] Q at the policy's own differentiable samples."""
    scale = q_pi.detach().abs().mean().clamp_min(1e-8)
    q_term = q_pi.mean() / scale
    loss = dsm - eta * q_term
    info = {
        "actor/loss": float(loss.detach()),
        "actor/dsm": float(dsm.detach()),
        "actor/q_pi": float(q_pi.detach().mean()),
        "actor/q_scale": float(scale),
    }
    return loss, info


@register_algo("dql", DQLConfig)
class DQL(Algorithm):
    """Policy (with its average as target policy) + twin Q trained by TD."""

    def __init__(self, cfg: Config, spec: TaskSpec) -> None:
        super().__init__(cfg, spec)
        a = cfg.algo
        self.critic = TwinQ(
            self.state_dim,
            self.exec_dim,
            hidden=tuple(a.critic_hidden),
            lr=a.critic_lr,
            polyak=a.polyak,
            device=cfg.device,
        )
        self.chain_steps = a.chain_steps or cfg.policy.num_steps

    # ------------------------------------------------------------------ updates
    def update_critic(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """One TD step on a replay batch of raw chunk transitions, a' drawn from the target
        policy at s', then one Polyak update of the target heads."""
        tr = self.transitions(batch)
        with torch.no_grad():
            next_chunk = self.acting_policy.rsample(
                batch["next_obs"], generator=self.generator, num_steps=self.chain_steps
            )[:, 0]
            next_q = self.critic.target(tr["next_obs"], self.executed(next_chunk))
        q = self.critic(tr["obs"], tr["act"])
        loss, info = compute_critic_loss(q, next_q, tr["reward"], tr["discount"], tr["terminated"])
        self.critic.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.critic.optimizer.step()
        self.critic.update_targets()
        return info

    def update_actor(self, obs: Tensor, actions: Tensor) -> dict[str, float]:
        """One step of DSM on raw (obs, chunk) pairs minus the normalised Q of chunks drawn for
        the same states through the differentiable chain."""
        a = self.cfg.algo
        dsm, _ = self.policy.compute_dsm_loss(obs, actions)
        chunk = self.policy.rsample(obs, generator=self.generator, num_steps=self.chain_steps)
        self.critic.heads.requires_grad_(False)  # the gradient flows to a_theta only
        try:
            q_pi = self.critic(self.state(obs), self.executed(chunk[:, 0])).min(dim=0).values
        finally:
            self.critic.heads.requires_grad_(True)
        loss, info = compute_actor_loss(dsm, q_pi, a.eta)
        self.actor_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if a.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.policy.parameters(), a.max_grad_norm)
            info["actor/grad_norm"] = float(norm)
        self.actor_optimizer.step()
        self.after_policy_step()
        return info

    def update(self, data: TrainingData, iteration: int) -> dict[str, float]:
        """The critic, then (after the warm-up) the actor."""
        return self.critic_then_actor(data, iteration)

    # ------------------------------------------------------------------ checkpoints
    def modules(self) -> dict[str, torch.nn.Module]:
        return {**super().modules(), "critic": self.critic}

    def optimizers(self) -> dict[str, Any]:
        return {**super().optimizers(), "critic": self.critic.optimizer}
