"""A bounded Gaussian policy: SAC's tanh-squashed Gaussian (Haarnoja et al. 2018, appendix C).

For a state s the network gives a mean m(s) and a log-std l(s) (clamped to ``LOG_STD_RANGE``);
an action is

    u = m(s) + exp(l(s)) * z,   z ~ N(0, I),        a = bound * tanh(u)   in (-bound, bound)^D

and its log-density is that of the squashed action tanh(u) in (-1, 1)^D (the constant
-D log(bound) of the scaling left out, as Stable-Baselines3 scales a Box action space), so an
entropy target does not depend on ``bound``:

    log p = sum_d [ log N(u_d; m_d, exp(l_d)^2) - log(1 - tanh(u_d)^2) ].

The deterministic action is bound * tanh(m(s)).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nets import mlp

LOG_STD_RANGE = (-5.0, 2.0)


def squashed_log_prob(u: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """log-density [B] of tanh(u) for u ~ N(mean, exp(log_std)^2) (all [B, D]); the Jacobian
    term uses the stable log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))."""
    gauss = -0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    log_jac = 2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))
    return (gauss - log_jac).sum(-1)


class TanhGaussianActor(nn.Module):
    """State [B, obs_dim] -> a bounded action [B, action_dim] with its log-density.

    Args:
        obs_dim: flattened state size.
        action_dim: action size D.
        hidden: MLP widths.
        bound: actions lie in (-bound, bound).
        device: torch device.

    The output layer starts at a hundredth of its default scale, so at first the mean action
    is ~0 and the std ~1 (before the squashing).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int] = (256, 256, 256),
        bound: float = 1.0,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        for name, val in (("obs_dim", obs_dim), ("action_dim", action_dim)):
            if not (isinstance(val, int) and val > 0):
                raise ValueError(f"TanhGaussianActor: {name} must be a positive int, got {val!r}")
        if not bound > 0:
            raise ValueError(f"TanhGaussianActor: bound must be > 0, got {bound!r}")
        self.obs_dim, self.action_dim, self.bound = obs_dim, action_dim, float(bound)
        self.net = mlp(obs_dim, hidden, out_dim=2 * action_dim)
        with torch.no_grad():
            self.net[-1].weight.mul_(0.01)
            self.net[-1].bias.zero_()
        self.to(device)

    def distribution(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, log_std) of the pre-squash Gaussian, each [B, action_dim]."""
        if obs.dim() != 2 or obs.shape[1] != self.obs_dim:
            raise ValueError(
                f"TanhGaussianActor: obs must be [B, {self.obs_dim}], got {tuple(obs.shape)}"
            )
        mean, log_std = self.net(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(*LOG_STD_RANGE)

    def forward(
        self, obs: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """A reparameterised sample: (action [B, D] in (-bound, bound), log-density [B]).
        ``z`` is drawn on the CPU from ``generator`` (any device's run draws the same)."""
        mean, log_std = self.distribution(obs)
        z = torch.randn(mean.shape, generator=generator).to(mean)
        u = mean + log_std.exp() * z
        return self.bound * torch.tanh(u), squashed_log_prob(u, mean, log_std)

    def mean_action(self, obs: Tensor) -> Tensor:
        """The deterministic action bound * tanh(mean) [B, D]."""
        return self.bound * torch.tanh(self.distribution(obs)[0])
