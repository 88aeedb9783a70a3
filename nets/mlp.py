"""The scalar-output MLP behind every critic and potential network."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int = 1) -> nn.Sequential:
    """``Linear -> ReLU`` per width in ``hidden``, then a linear head to ``out_dim``."""
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), nn.ReLU()]
        d = h
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)
