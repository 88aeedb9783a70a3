"""The small base every OT-potentials implementation follows."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from torch import Tensor

CostFn = Callable[[Tensor, Tensor], Tensor]
"""Elementwise transport cost: ``cost_fn(states [k, ds], actions [k, da]) -> [k]``.

The caller builds it (e.g. ``lambda s, a: -critic.target_q(s, a)``); potentials never import a
critic.
"""


class Potentials(ABC):
    """Dual potentials u(s), v(a) of an L2-regularised OT problem and their compatibility H.

    H(s, a) = (u(s) + v(a) - c(s, a))_+ / (2 lam) (OTPR eq. 6 / eq. 15) is the density of the
    plan against mu x nu, used to reweight sampled actions.
    """

    lam: float

    @abstractmethod
    def u(self, states: Tensor) -> Tensor:
        """Source potential, states [n, ds] -> [n]."""

    @abstractmethod
    def v(self, actions: Tensor) -> Tensor:
        """Target potential, actions [m, da] -> [m]."""

    @abstractmethod
    def compatibility(self, states: Tensor, actions: Tensor, cost_fn: CostFn) -> Tensor:
        """H for paired (s, a): states [B, ds], actions [B, L, da] or [B, da] -> [B, L] or [B]."""
