"""Implicit Q-learning critic (Kostrikov et al. 2022), split like ``robomimic/algo/iql.py``.

Value step (IQL eq. 5): V(s) regresses on min(Q1', Q2')(s, a) of the TARGET twins with the
asymmetric expectile loss, so V approaches an upper expectile over dataset actions.

Q step (IQL eq. 6): both online twins regress on r + discount * (1 - terminated) * V(s'), with V
detached. Only ``terminated`` stops bootstrapping: a truncated step (time limit) still bootstraps
from V of its final observation. For an action chunk of k env steps, pass the per-sample
``discount = gamma**k`` (and the summed discounted reward of the chunk).

Targets follow by Polyak averaging: theta' <- (1 - polyak) theta' + polyak theta.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from critics.base import Critic
from nets import mlp


def expectile_loss(diff: Tensor, tau: float) -> Tensor:
    """Asymmetric squared loss mean(|tau - 1(diff < 0)| * diff^2) (IQL eq. 5, L_2^tau).

    Minimising E[loss(x - v)] over v gives the tau-expectile of x.
    """
    if not 0.0 < tau < 1.0:
        raise ValueError(f"expectile_loss: tau (expectile) must be in (0, 1), got {tau!r}")
    weight = torch.where(diff < 0, 1.0 - tau, tau)
    return (weight * diff.square()).mean()


class IQLCritic(Critic, nn.Module):
    """Twin Q networks on concat(obs, act), a V network, and Polyak target copies of the Qs.

    Args:
        obs_dim: flattened observation size.
        action_dim: flattened action (chunk) size.
        hidden: hidden widths of every MLP.
        expectile: IQL tau in (0, 1); 0.5 is plain mean regression.
        gamma: default per-sample discount (for a chunk of k steps pass ``discount`` = gamma**k).
        polyak: target update weight of the online networks, in (0, 1].
        lr: Adam learning rate for Q and V.
        device: torch device.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (256, 256, 256),
        expectile: float = 0.7,
        gamma: float = 0.99,
        polyak: float = 0.005,
        lr: float = 3e-4,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        for name, val in (("obs_dim", obs_dim), ("action_dim", action_dim)):
            if not (isinstance(val, int) and val > 0):
                raise ValueError(f"IQLCritic: {name} must be a positive int, got {val!r}")
        if not 0.0 < expectile < 1.0:
            raise ValueError(f"IQLCritic: expectile must be in (0, 1), got {expectile!r}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"IQLCritic: gamma must be in [0, 1], got {gamma!r}")
        if not 0.0 < polyak <= 1.0:
            raise ValueError(f"IQLCritic: polyak must be in (0, 1], got {polyak!r}")
        if not lr > 0:
            raise ValueError(f"IQLCritic: lr must be > 0, got {lr!r}")
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.expectile = float(expectile)
        self.gamma = float(gamma)
        self.polyak = float(polyak)
        self.device = torch.device(device)

        self.q1 = mlp(obs_dim + action_dim, hidden)
        self.q2 = mlp(obs_dim + action_dim, hidden)
        self.v_net = mlp(obs_dim, hidden)
        self.q1_target = copy.deepcopy(self.q1).requires_grad_(False)
        self.q2_target = copy.deepcopy(self.q2).requires_grad_(False)
        self.to(self.device)
        self.q_optimizer = torch.optim.Adam([*self.q1.parameters(), *self.q2.parameters()], lr=lr)
        self.v_optimizer = torch.optim.Adam(self.v_net.parameters(), lr=lr)

    # ------------------------------------------------------------------ shapes
    def _flat(self, x: Tensor, dim: int, name: str) -> Tensor:
        """[B, dim] or [B, *shape] with prod(shape) == dim -> [B, dim] float on self.device."""
        if not isinstance(x, Tensor) or x.dim() < 2 or x[0].numel() != dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"IQLCritic: {name} must have shape [B, {dim}] (or [B, ...] with {dim} entries "
                f"per sample), got {shape}"
            )
        return x.reshape(x.shape[0], dim).to(self.device, torch.float32)

    def _per_sample(self, x: Tensor, batch: int, name: str) -> Tensor:
        """[B] or [B, 1] -> [B] float."""
        if not isinstance(x, Tensor) or x.numel() != batch or x.dim() > 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"IQLCritic: {name} must have shape [B] = [{batch}], got {shape}")
        return x.reshape(batch).to(self.device, torch.float32)

    # ------------------------------------------------------------------ values
    def _q_pair(
        self, nets: tuple[nn.Module, nn.Module], obs: Tensor, act: Tensor
    ) -> tuple[Tensor, Tensor]:
        x = torch.cat([obs, act], dim=-1)
        return nets[0](x).squeeze(-1), nets[1](x).squeeze(-1)

    def q(self, obs: Tensor, act: Tensor) -> Tensor:
        obs = self._flat(obs, self.obs_dim, "obs")
        act = self._flat(act, self.action_dim, "act")
        q1, q2 = self._q_pair((self.q1, self.q2), obs, act)
        return torch.minimum(q1, q2)

    def value(self, obs: Tensor) -> Tensor:
        return self.v_net(self._flat(obs, self.obs_dim, "obs")).squeeze(-1)

    @torch.no_grad()
    def target_q(self, obs: Tensor, act: Tensor) -> Tensor:
        """min of the target twins (no grad); the OT cost is c = -target_q."""
        obs = self._flat(obs, self.obs_dim, "obs")
        act = self._flat(act, self.action_dim, "act")
        q1, q2 = self._q_pair((self.q1_target, self.q2_target), obs, act)
        return torch.minimum(q1, q2)

    # ------------------------------------------------------------------ losses
    def compute_value_loss(self, obs: Tensor, act: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Expectile regression of V(s) on min target Q(s, a) (IQL eq. 5)."""
        target = self.target_q(obs, act)
        v = self.value(obs)
        loss = expectile_loss(target - v, self.expectile)
        return loss, {
            "critic/v_loss": float(loss.detach()),
            "critic/v_mean": float(v.detach().mean()),
        }

    def compute_q_loss(
        self,
        obs: Tensor,
        act: Tensor,
        reward: Tensor,
        next_obs: Tensor,
        terminated: Tensor,
        discount: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, float]]:
        """Both twins towards r + discount * (1 - terminated) * V(s') (IQL eq. 6, V detached).

        ``discount`` is per sample ([B], e.g. gamma**k for a k-step chunk); None means gamma.
        Truncation is not termination: pass ``terminated`` only.
        """
        obs = self._flat(obs, self.obs_dim, "obs")
        act = self._flat(act, self.action_dim, "act")
        next_obs = self._flat(next_obs, self.obs_dim, "next_obs")
        b = obs.shape[0]
        if act.shape[0] != b or next_obs.shape[0] != b:
            raise ValueError(
                f"IQLCritic: obs, act and next_obs need the same batch size, got {b}, "
                f"{act.shape[0]}, {next_obs.shape[0]}"
            )
        reward = self._per_sample(reward, b, "reward")
        terminated = self._per_sample(terminated, b, "terminated")
        if discount is None:
            discount_t = torch.full((b,), self.gamma, device=self.device)
        else:
            discount_t = self._per_sample(discount, b, "discount")
        with torch.no_grad():
            target = reward + discount_t * (1.0 - terminated) * self.value(next_obs)
        q1, q2 = self._q_pair((self.q1, self.q2), obs, act)
        loss = (q1 - target).square().mean() + (q2 - target).square().mean()
        info = {
            "critic/q_loss": float(loss.detach()),
            "critic/q_mean": float(torch.minimum(q1, q2).detach().mean()),
            "critic/target_mean": float(target.mean()),
        }
        return loss, info

    # ------------------------------------------------------------------ updates
    @torch.no_grad()
    def update_targets(self) -> None:
        """Polyak: theta' <- (1 - polyak) theta' + polyak theta."""
        for online, target in ((self.q1, self.q1_target), (self.q2, self.q2_target)):
            for p, tp in zip(online.parameters(), target.parameters(), strict=True):
                tp.mul_(1.0 - self.polyak).add_(p, alpha=self.polyak)

    def update_value(self, obs: Tensor, act: Tensor) -> dict[str, float]:
        loss, info = self.compute_value_loss(obs, act)
        self.v_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.v_optimizer.step()
        return info

    def update_q(
        self,
        obs: Tensor,
        act: Tensor,
        reward: Tensor,
        next_obs: Tensor,
        terminated: Tensor,
        discount: Tensor | None = None,
    ) -> dict[str, float]:
        loss, info = self.compute_q_loss(obs, act, reward, next_obs, terminated, discount)
        self.q_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.q_optimizer.step()
        return info

    def update(self, batch: dict[str, Tensor]) -> dict[str, float]:
        """One V step, one Q step, one Polyak update.

        ``batch`` keys: obs, act, reward, next_obs, terminated, and optionally discount. Any
        "truncated" key is ignored on purpose (truncated steps bootstrap).
        """
        required = ("obs", "act", "reward", "next_obs", "terminated")
        missing = [k for k in required if k not in batch]
        if missing:
            raise KeyError(
                f"IQLCritic.update: batch is missing {missing}; expected keys {list(required)} "
                "(+ optional 'discount')"
            )
        info = self.update_value(batch["obs"], batch["act"])
        info.update(
            self.update_q(
                batch["obs"],
                batch["act"],
                batch["reward"],
                batch["next_obs"],
                batch["terminated"],
                batch.get("discount"),
            )
        )
        self.update_targets()
        return info
