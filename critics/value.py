"""State value V(s) regressed on returns: the critic of PPO-style fine-tuning (DPPO's
``CriticObs``), whose advantages need no action values."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nets import mlp


class StateValue(nn.Module):
    """An MLP V(s) on flattened states with its own Adam optimizer.

    Args:
        obs_dim: flattened state size.
        hidden: hidden widths.
        lr: Adam learning rate.
        device: torch device.
    """

    def __init__(
        self,
        obs_dim: int,
        hidden: Sequence[int] = (256, 256, 256),
        lr: float = 1e-3,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        if not (isinstance(obs_dim, int) and obs_dim > 0):
            raise ValueError(f"StateValue: obs_dim must be a positive int, got {obs_dim!r}")
        if not lr > 0:
            raise ValueError(f"StateValue: lr must be > 0, got {lr!r}")
        self.obs_dim = obs_dim
        self.net = mlp(obs_dim, hidden)
        self.to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)

    def forward(self, obs: Tensor) -> Tensor:
        """obs [B, obs_dim] -> V [B]."""
        if obs.dim() != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"StateValue: obs must be [B, {self.obs_dim}], got {tuple(obs.shape)}")
        return self.net(obs).squeeze(-1)

    def compute_loss(self, obs: Tensor, returns: Tensor) -> tuple[Tensor, dict[str, float]]:
        """0.5 mean (V(s) - return)^2."""
        v = self(obs)
        loss = 0.5 * (v - returns.to(v)).square().mean()
        return loss, {"value/loss": float(loss.detach()), "value/mean": float(v.detach().mean())}

    def update(self, obs: Tensor, returns: Tensor) -> dict[str, float]:
        loss, info = self.compute_loss(obs, returns)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return info
