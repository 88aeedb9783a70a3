"""Exponential moving average of a policy's weights (diffusion_policy's ``EMAModel``).

The averaged copy is what acts and what a checkpoint's policy loads as; the trained network
keeps taking the gradient steps. After each step::

    d      = min(decay, (1 + n) / (10 + n))          n: updates so far (warm-up)
    theta' = d * theta' + (1 - d) * theta            for every parameter
    buffers (the normaliser's statistics) are copied, not averaged
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """An averaged copy of ``source`` (``self.model``), updated by ``update(source)``.

    Args:
        source: the trained module; its copy starts equal to it.
        decay: the asymptotic decay in (0, 1); the averaging window is ~1 / (1 - decay) steps.
    """

    def __init__(self, source: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA: decay must lie in (0, 1), got {decay}")
        self.decay = float(decay)
        self.model = copy.deepcopy(source)
        self.model.requires_grad_(False)
        self.num_updates = 0

    def current_decay(self) -> float:
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, source: nn.Module) -> None:
        d = self.current_decay()
        for avg, p in zip(self.model.parameters(), source.parameters(), strict=True):
            avg.lerp_(p.detach(), 1.0 - d)
        for avg, b in zip(self.model.buffers(), source.buffers(), strict=True):
            avg.copy_(b)
        self.num_updates += 1

    @torch.no_grad()
    def reset_to(self, source: nn.Module) -> None:
        """Make the average equal ``source`` (a fresh start, e.g. from weights without one)."""
        self.model.load_state_dict(source.state_dict())

    def end_warmup(self) -> None:
        """Skip the warm-up: the average already holds many steps (loaded from a checkpoint)."""
        self.num_updates = max(self.num_updates, 100_000)

    # checkpoints keep the counter in training_state (the weights go to a safetensors file)
    def state_dict(self) -> dict[str, Any]:
        return {"num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.num_updates = int(state["num_updates"])
