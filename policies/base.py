"""The base every score-based policy implements (after diffusion_policy's ``BaseLowdimPolicy``)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from policies.normalizer import MinMaxNormalizer


class ScorePolicy(nn.Module, ABC):
    """A policy over action chunks that owns its normaliser.

    Subclasses set ``self.normalizer`` (a ``MinMaxNormalizer``) in their constructor, so its
    statistics live in the policy's ``state_dict``.
    """

    normalizer: MinMaxNormalizer

    @abstractmethod
    def predict_action(self, obs: Tensor) -> Tensor:
        """Raw observations [B, T_o, obs_dim] -> raw actions [B, H, action_dim]."""

    def set_normalizer(self, normalizer: MinMaxNormalizer) -> None:
        """Copy a fitted normaliser's statistics into this policy's own normaliser."""
        if not isinstance(normalizer, MinMaxNormalizer):
            raise TypeError(f"set_normalizer: expected a MinMaxNormalizer, got {type(normalizer)}")
        if not normalizer.is_fitted:
            raise ValueError("set_normalizer: the normaliser has not been fitted")
        own = self.normalizer
        if (normalizer.obs_dim, normalizer.action_dim) != (own.obs_dim, own.action_dim):
            raise ValueError(
                "set_normalizer: normaliser has (obs_dim, action_dim) = "
                f"({normalizer.obs_dim}, {normalizer.action_dim}); the policy expects "
                f"({own.obs_dim}, {own.action_dim})"
            )
        own.load_state_dict(normalizer.state_dict())

    @property
    def device(self) -> torch.device:
        return self.normalizer.obs_min.device
