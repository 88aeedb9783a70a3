"""Per-dimension min/max normaliser for observations and actions, stored in the policy's state.

Each dimension is mapped affinely so that [min, max] -> [-1, 1]:

    y = (x - c) * 2 / (max - min),    c = (max + min) / 2.

A constant dimension (max == min) maps to 0 and un-normalises back to its constant value. The
statistics are registered buffers, so they travel in ``state_dict`` with the network weights and
an evaluation can never use other statistics than training did.

Observations met online can leave the demonstrations' range by far: a dimension that barely
moves in a few demos (an object quaternion that varies by 1e-5 while the object rests) would be
blown up by 1e5 once the object moves. As in diffusion_policy's normaliser (``range_eps``),
observation dimensions whose range is below ``obs_range_eps`` are only centred, not scaled, and
normalised observations are clipped to ``[-obs_clip, obs_clip]`` as a last guard. Actions keep
the plain min-max map (the policy's output range is [-1, 1] in normalised units).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

CONSTANT_RANGE = 1e-8  # ranges at or below this count as constant dimensions


class MinMaxNormalizer(nn.Module):
    """Min/max normaliser to [-1, 1] for observations [..., obs_dim] and actions [..., action_dim].

    Fit with ``fit(obs, actions)`` before use; any transform before that raises.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        obs_range_eps: float = 1e-2,
        obs_clip: float = 10.0,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        if obs_range_eps < 0 or obs_clip <= 0:
            raise ValueError(
                f"MinMaxNormalizer: need obs_range_eps >= 0 and obs_clip > 0, got "
                f"{obs_range_eps}, {obs_clip}"
            )
        if obs_dim < 1 or action_dim < 1:
            raise ValueError(
                "MinMaxNormalizer: obs_dim and action_dim must be >= 1, got "
                f"{obs_dim}, {action_dim}"
            )
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.register_buffer("obs_min", torch.zeros(obs_dim, device=device))
        self.register_buffer("obs_max", torch.zeros(obs_dim, device=device))
        self.register_buffer("action_min", torch.zeros(action_dim, device=device))
        self.register_buffer("action_max", torch.zeros(action_dim, device=device))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool, device=device))
        self.register_buffer("obs_range_eps", torch.tensor(float(obs_range_eps), device=device))
        self.register_buffer("obs_clip", torch.tensor(float(obs_clip), device=device))

    @property
    def is_fitted(self) -> bool:
        return bool(self.fitted)

    @torch.no_grad()
    def fit(self, obs: np.ndarray | Tensor, actions: np.ndarray | Tensor) -> MinMaxNormalizer:
        """Fit per-dim min/max over every leading axis of obs [..., obs_dim], actions [..., act]."""
        obs_t = self._as_tensor(obs, self.obs_dim, "obs")
        act_t = self._as_tensor(actions, self.action_dim, "actions")
        for name, v in (("obs", obs_t), ("actions", act_t)):
            if v.numel() == 0:
                raise ValueError(f"MinMaxNormalizer.fit: {name} is empty")
            if not torch.isfinite(v).all():
                raise ValueError(f"MinMaxNormalizer.fit: {name} contains NaN or inf")
        obs_flat = obs_t.reshape(-1, self.obs_dim)
        act_flat = act_t.reshape(-1, self.action_dim)
        self.obs_min.copy_(obs_flat.min(dim=0).values)
        self.obs_max.copy_(obs_flat.max(dim=0).values)
        self.action_min.copy_(act_flat.min(dim=0).values)
        self.action_max.copy_(act_flat.max(dim=0).values)
        self.fitted.fill_(True)
        return self

    def normalize_obs(self, obs: Tensor) -> Tensor:
        """Raw observations [..., obs_dim] -> [-1, 1] per dim on the data's range.

        Dims with a range below ``obs_range_eps`` are centred only; the result is clipped to
        ``[-obs_clip, obs_clip]``.
        """
        self._check(obs, self.obs_dim, "obs")
        center = 0.5 * (self.obs_max + self.obs_min)
        half_range = 0.5 * (self.obs_max - self.obs_min)
        narrow = 2 * half_range < self.obs_range_eps
        scale = torch.where(narrow, torch.ones_like(half_range), 1.0 / half_range.clamp_min(1e-30))
        out = (obs - center.to(obs.dtype)) * scale.to(obs.dtype)
        clip = float(self.obs_clip)
        return out.clamp(-clip, clip)

    def normalize_action(self, actions: Tensor) -> Tensor:
        """Raw actions [..., action_dim] -> [-1, 1] per dim (constant dims -> 0)."""
        return self._normalize(actions, self.action_min, self.action_max, "actions")

    def unnormalize_action(self, actions: Tensor) -> Tensor:
        """Normalised actions [..., action_dim] -> raw units (constant dims -> their value)."""
        self._check(actions, self.action_dim, "actions")
        center, half_range, _ = self._affine(self.action_min, self.action_max)
        return actions * half_range.to(actions.dtype) + center.to(actions.dtype)

    # --- helpers ----------------------------------------------------------------------------
    def _normalize(self, x: Tensor, lo: Tensor, hi: Tensor, name: str) -> Tensor:
        self._check(x, lo.shape[0], name)
        center, _, inv_half_range = self._affine(lo, hi)
        return (x - center.to(x.dtype)) * inv_half_range.to(x.dtype)

    @staticmethod
    def _affine(lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        half_range = 0.5 * (hi - lo)
        constant = half_range <= 0.5 * CONSTANT_RANGE
        half_range = torch.where(constant, torch.zeros_like(half_range), half_range)
        inv = torch.where(constant, torch.zeros_like(half_range), 1.0 / half_range.clamp_min(1e-30))
        return 0.5 * (hi + lo), half_range, inv

    def _check(self, x: Tensor, dim: int, name: str) -> None:
        if not self.is_fitted:
            raise RuntimeError(
                "MinMaxNormalizer: used before fit(); call fit(obs, actions) on the dataset or "
                "load a state_dict that holds fitted statistics"
            )
        if not isinstance(x, Tensor):
            raise TypeError(f"MinMaxNormalizer: {name} must be a torch.Tensor, got {type(x)}")
        if x.shape[-1] != dim:
            raise ValueError(
                f"MinMaxNormalizer: {name} last dim must be {dim}, got shape {list(x.shape)}"
            )

    def _as_tensor(self, x: np.ndarray | Tensor, dim: int, name: str) -> Tensor:
        t = torch.as_tensor(np.asarray(x) if not isinstance(x, Tensor) else x)
        if t.dim() < 1 or t.shape[-1] != dim:
            raise ValueError(
                f"MinMaxNormalizer.fit: {name} must have shape [..., {dim}], got {list(t.shape)}"
            )
        return t.to(device=self.obs_min.device, dtype=self.obs_min.dtype)
