"""Twin action-value networks with Polyak target copies: the critic of SAC-style learners.

Q_1, Q_2 are MLPs on concat(obs, act); ``forward`` returns both heads ``[2, B]`` so a learner
can regress each on its own target and take the minimum for a backup or an actor (clipped double
Q, Fujimoto et al. 2018). The target copies follow by Polyak averaging,
theta' <- (1 - polyak) theta' + polyak theta. The TD targets themselves are the learner's: this
module only scores (obs, act) pairs, from anywhere.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nets import mlp


class TwinQ(nn.Module):
    """Two Q MLPs on concat(obs, act), optionally with target copies, and their Adam optimizer.

    Args:
        obs_dim: flattened observation (state) size.
        action_dim: flattened action size.
        hidden: hidden widths of each MLP.
        lr: Adam learning rate of both heads.
        polyak: target update weight of the online networks, in (0, 1].
        targets: keep Polyak target copies (a critic that is only regressed on another
            network's values, not bootstrapped, needs none).
        device: torch device.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (256, 256, 256),
        lr: float = 3e-4,
        polyak: float = 0.005,
        targets: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        for name, val in (("obs_dim", obs_dim), ("action_dim", action_dim)):
            if not (isinstance(val, int) and val > 0):
                raise ValueError(f"TwinQ: {name} must be a positive int, got {val!r}")
        if not lr > 0:
            raise ValueError(f"TwinQ: lr must be > 0, got {lr!r}")
        if not 0.0 < polyak <= 1.0:
            raise ValueError(f"TwinQ: polyak must be in (0, 1], got {polyak!r}")
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.polyak = float(polyak)
        self.heads = nn.ModuleList([mlp(obs_dim + action_dim, hidden) for _ in range(2)])
        self.target_heads = copy.deepcopy(self.heads).requires_grad_(False) if targets else None
        self.to(device)
        self.optimizer = torch.optim.Adam(self.heads.parameters(), lr=lr)

    def _input(self, obs: Tensor, act: Tensor) -> Tensor:
        if obs.dim() != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(f"TwinQ: obs must be [B, {self.obs_dim}], got {tuple(obs.shape)}")
        if act.shape != (obs.shape[0], self.action_dim):
            raise ValueError(
                f"TwinQ: act must be [B={obs.shape[0]}, {self.action_dim}], got {tuple(act.shape)}"
            )
        return torch.cat([obs, act], dim=-1)

    def forward(self, obs: Tensor, act: Tensor) -> Tensor:
        """Both heads: obs [B, obs_dim], act [B, action_dim] -> [2, B]."""
        x = self._input(obs, act)
        return torch.stack([head(x).squeeze(-1) for head in self.heads])

    @torch.no_grad()
    def target(self, obs: Tensor, act: Tensor) -> Tensor:
        """Both target heads (no grad): [2, B]."""
        if self.target_heads is None:
            raise RuntimeError("TwinQ.target: this critic keeps no target copies (targets=False)")
        x = self._input(obs, act)
        return torch.stack([head(x).squeeze(-1) for head in self.target_heads])

    @torch.no_grad()
    def update_targets(self) -> None:
        """Polyak: theta' <- (1 - polyak) theta' + polyak theta."""
        if self.target_heads is None:
            return
        for p, tp in zip(self.heads.parameters(), self.target_heads.parameters(), strict=True):
            tp.mul_(1.0 - self.polyak).add_(p, alpha=self.polyak)
