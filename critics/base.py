"""The small base every critic follows."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor


class Critic(ABC):
    """Action values Q(s, a) and state values V(s) on flattened observations/action chunks."""

    @abstractmethod
    def q(self, obs: Tensor, act: Tensor) -> Tensor:
        """Q(s, a): obs [B, obs_dim], act [B, action_dim] -> [B] (min over twin critics)."""

    @abstractmethod
    def value(self, obs: Tensor) -> Tensor:
        """V(s): obs [B, obs_dim] -> [B]."""

    def target_q(self, obs: Tensor, act: Tensor) -> Tensor:
        """Slow-moving Q used as the OT cost c = -target_q (no grad). Defaults to :meth:`q`."""
        with torch.no_grad():
            return self.q(obs, act)
