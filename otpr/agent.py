"""The OTPR agent: composes a score policy, an IQL critic and OT potentials.

Representations. The critic and the potentials see *normalised* quantities: the state is the
stacked observation history ``[T_o, obs_dim]`` flattened, and the action is the *executed* part
of the chunk (its first ``T_a`` steps) flattened, both min-max normalised with the statistics
stored in the policy. The policy still predicts and is trained on the whole ``H``-step chunk.

Guidance (``algo.guidance``) decides how candidates are resampled during collection and how
replay pairs are weighted in the denoising score-matching loss:

=========  ==========================================  ====================================
guidance   candidate / sample weight                   meaning
=========  ==========================================  ====================================
H          H(s,a) = (u(s)+v(a)-c(s,a))_+ / (2 lam)      OTPR (cost c = -min target Q)
Q          exp((Q(s,a) - max Q) / q_temperature)        value-greedy resampling
A          |tau - 1(Q(s,a) - V(s) < 0)|                  IDQL's expectile advantage weights
uniform    1                                            BC-style fine-tuning on own data
=========  ==========================================  ====================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from critics.iql import IQLCritic
from envs.base import TaskSpec
from otpr.config import Config, PolicyConfig
from otpr.sampler import CompatibilitySampler
from policies.diffusion import DiffusionPolicy
from policies.ema import EMA
from policies.networks import ResidualMLPScoreNet, TemporalUnet1D
from policies.sde import VPSDE
from potentials.neural import NeuralPotentials


def build_policy(
    cfg: PolicyConfig, obs_dim: int, action_dim: int, obs_horizon: int, horizon: int, device: str
) -> DiffusionPolicy:
    """A fresh diffusion policy from its config group."""
    cond_dim = obs_dim * obs_horizon
    if cfg.name == "mlp":
        net = ResidualMLPScoreNet(
            action_dim=action_dim,
            horizon=horizon,
            cond_dim=cond_dim,
            hidden=tuple(cfg.hidden),
            time_dim=cfg.time_emb_dim,
            device=device,
        )
    else:
        net = TemporalUnet1D(
            action_dim=action_dim,
            horizon=horizon,
            cond_dim=cond_dim,
            down_dims=tuple(cfg.unet_down_dims),
            kernel_size=cfg.unet_kernel_size,
            time_dim=cfg.time_emb_dim,
            device=device,
        )
    sde = VPSDE(
        schedule=cfg.schedule, beta_min=cfg.beta_min, beta_max=cfg.beta_max, t_min=cfg.t_min
    )
    return DiffusionPolicy(
        obs_dim=obs_dim,
        action_dim=action_dim,
        obs_horizon=obs_horizon,
        horizon=horizon,
        net=net,
        sde=sde,
        sampler=cfg.sampler,
        num_steps=cfg.num_steps,
        eta=cfg.eta,
        min_std=cfg.min_std,
        temperature=cfg.temperature,
        device=device,
    )


class OTPRAgent:
    """Policy + critic + potentials, with the update steps of OTPR's Algorithm 1."""

    def __init__(self, cfg: Config, spec: TaskSpec) -> None:
        self.cfg = cfg
        self.spec = spec
        self.device = torch.device(cfg.device)
        t, a, o = cfg.task, cfg.algo, cfg.ot
        self.obs_horizon, self.horizon, self.act_steps = t.obs_history, t.horizon, t.act_steps
        self.policy = build_policy(
            cfg.policy, spec.obs_dim, spec.action_dim, t.obs_history, t.horizon, cfg.device
        )
        self.state_dim = t.obs_history * spec.obs_dim
        self.exec_dim = t.act_steps * spec.action_dim
        self.critic = IQLCritic(
            self.state_dim,
            self.exec_dim,
            hidden=tuple(a.critic_hidden),
            expectile=a.expectile,
            gamma=t.gamma,
            polyak=a.polyak,
            lr=a.critic_lr,
            device=cfg.device,
        )
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
        self.actor_optimizer = torch.optim.Adam(self.policy.parameters(), lr=a.actor_lr)
        # The averaged copy shares the normaliser: it is fitted once, on the demos, for both.
        self.ema = EMA(self.policy, a.ema_decay) if a.ema_decay > 0 else None
        if self.ema is not None:
            self.ema.model.normalizer = self.policy.normalizer
        self.generator = torch.Generator(device="cpu").manual_seed(cfg.seed)

    @property
    def acting_policy(self) -> DiffusionPolicy:
        """The weights that act (collection, evaluation, resampled targets): the EMA copy when
        ``algo.ema_decay > 0``, else the trained network itself."""
        return self.policy if self.ema is None else self.ema.model

    def after_policy_step(self) -> None:
        """Fold the trained weights into the average (after every policy gradient step)."""
        if self.ema is not None:
            self.ema.update(self.policy)

    # ------------------------------------------------------------------ representations
    def state(self, obs: Tensor) -> Tensor:
        """Raw obs [B, T_o, obs_dim] -> normalised flat state [B, T_o * obs_dim]."""
        return self.policy.normalizer.normalize_obs(obs).flatten(1)

    def executed(self, actions: Tensor) -> Tensor:
        """Raw chunks [..., H, action_dim] -> normalised executed part [..., T_a * action_dim]."""
        part = self.policy.normalizer.normalize_action(actions[..., : self.act_steps, :])
        return part.flatten(-2)

    def cost_fn(self, states: Tensor, actions: Tensor) -> Tensor:
        """The OT cost c(s, a) = -min target Q(s, a) on normalised flat inputs (elementwise)."""
        return -self.critic.target_q(states, actions)

    # ------------------------------------------------------------------ guidance weights
    @torch.no_grad()
    def pair_weights(self, obs: Tensor, actions: Tensor) -> Tensor:
        """Guidance weights for paired (obs [B, T_o, D], chunk [B, H, A]) -> [B], >= 0."""
        return self._weights(self.state(obs), self.executed(actions)[:, None, :])[:, 0]

    @torch.no_grad()
    def candidate_weights(self, obs: Tensor, candidates: Tensor) -> Tensor:
        """Guidance weights for candidates [B, L, H, A] of each state -> [B, L], >= 0."""
        return self._weights(self.state(obs), self.executed(candidates))

    def _weights(self, states: Tensor, acts: Tensor) -> Tensor:
        guidance = self.cfg.algo.guidance
        batch, num = acts.shape[:2]
        if guidance == "uniform":
            return torch.ones(batch, num, device=acts.device)
        if guidance == "H":
            return self.potentials.compatibility(states, acts, self.cost_fn)
        flat_s = states[:, None, :].expand(batch, num, states.shape[-1]).reshape(batch * num, -1)
        q = self.critic.target_q(flat_s, acts.reshape(batch * num, -1)).reshape(batch, num)
        if guidance == "Q":
            # Over candidates (num > 1) the max is per state; for paired samples, per batch.
            ref = q.max(dim=1, keepdim=True).values if num > 1 else q.max()
            return torch.exp((q - ref) / self.cfg.algo.q_temperature)
        adv = q - self.critic.value(states)[:, None]
        tau = self.cfg.algo.expectile
        return torch.where(adv < 0, 1.0 - tau, tau)

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
        """Chunks [B, H, A] for raw observations [B, T_o, D].

        Collection (``explore``) draws ``algo.num_samples`` candidates and resamples by the
        guidance weights; evaluation uses L = 1 or the best of ``eval_num_samples``. Collection
        draws its noise from the agent's generator; evaluation from ``generator`` if given
        (the loop passes one seeded per evaluation, so evaluations leave the training stream
        alone and the same weights always score the same).
        """
        a = self.cfg.algo
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        if explore:
            sampler = CompatibilitySampler(
                self.sample_fn(self.generator),
                self.candidate_weights,
                num_samples=a.num_samples,
                mode=a.sample_mode,
                temperature=a.q_temperature,
                generator=self.generator,
            )
        else:
            sample_fn = self.sample_fn(self.generator if generator is None else generator)
            if a.eval_mode == "best":
                sampler = CompatibilitySampler(
                    sample_fn, self.candidate_weights, a.eval_num_samples, mode="argmax"
                )
            else:
                sampler = CompatibilitySampler(sample_fn, self.candidate_weights, 1)
        actions, info = sampler(obs_t)
        return actions.cpu().numpy(), info

    # ------------------------------------------------------------------ updates
    def pretrain_step(
        self, obs: Tensor, actions: Tensor, optimizer: torch.optim.Optimizer
    ) -> dict[str, float]:
        """One behaviour-cloning DSM step (unweighted)."""
        loss, info = self.policy.compute_dsm_loss(obs, actions)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        self.after_policy_step()
        out = {"pretrain/dsm": loss.item()}
        out.update({f"pretrain/{k.split('/')[-1]}": v for k, v in info.items() if "/" in k})
        return out

    def update_critic(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """One IQL step on a replay batch of raw chunk transitions."""
        return self.critic.update(
            {
                "obs": self.state(batch["obs"]),
                "act": self.executed(batch["actions"]),
                "reward": batch["reward"],
                "next_obs": self.state(batch["next_obs"]),
                "terminated": batch["terminated"],
                "discount": batch["discount"],
            }
        )

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

        Beyond the data's span the pretrained score network is not self-consistent: on Can, its
        DSM loss on its *own* samples at such states (a tipped can, a tilted gripper) is ~200x
        the loss at in-span states (6.67 vs 0.035; docs/results.md section 2d, printed by
        ``scripts/diagnose_guidance.py``), so those few pairs would dominate every actor step
        and unlearn the in-span behaviour.
        """
        bound = self.cfg.algo.actor_obs_bound
        if bound <= 0:
            return torch.ones(obs.shape[0], device=obs.device)
        inside = self.policy.normalizer.normalize_obs(obs).abs() <= bound
        return inside.flatten(1).all(dim=1).float()

    def update_actor(
        self, obs: Tensor, actions: Tensor, weights: Tensor | None = None
    ) -> dict[str, float]:
        """One guidance-weighted DSM step (OTPR eq. 10) on raw (obs, chunk) pairs.

        ``weights=None`` weighs the pairs by the guidance (the ``replay`` variant). Pairs whose
        state leaves the pretraining data's span (``in_support``) get weight 0.
        """
        if weights is None:
            weights = self.pair_weights(obs, actions)
        a = self.cfg.algo
        in_support = self.in_support(obs)
        weights = weights * in_support
        loss, info = self.policy.compute_dsm_loss(
            obs,
            actions,
            weights=weights,
            weight_norm=a.weight_norm,
            weight_clip=a.weight_clip or None,
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
        return out

    # ------------------------------------------------------------------ state
    def modules(self) -> dict[str, torch.nn.Module]:
        """Networks saved as safetensors in checkpoints (``policy_ema``: the acting weights
        when ``algo.ema_decay > 0``)."""
        out = {"policy": self.policy, "critic": self.critic, "potentials": self.potentials}
        if self.ema is not None:
            out["policy_ema"] = self.ema.model
        return out

    def optimizers(self) -> dict[str, Any]:
        """Objects with ``state_dict`` / ``load_state_dict`` kept in ``training_state``."""
        out: dict[str, Any] = {
            "actor": self.actor_optimizer,
            "critic_q": self.critic.q_optimizer,
            "critic_v": self.critic.v_optimizer,
            "potentials": self.potentials.optimizer,
        }
        if self.ema is not None:
            out["policy_ema"] = self.ema
        return out


def finite_or_raise(metrics: dict[str, float]) -> dict[str, float]:
    """Refuse to continue on a non-finite training metric, naming it."""
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"non-finite training metrics: {bad}")
    return metrics
