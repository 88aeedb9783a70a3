"""Behaviour cloning alone: ``algo=bc`` pretrains on the demos, evaluates and stops.

It is the starting level every fine-tuning method is compared against; its checkpoint is the
``checkpoint=`` that ``otpr-finetune algo=<name>`` starts from.
"""

from __future__ import annotations

from dataclasses import dataclass

from otpr.algos.base import Algorithm, register_algo
from otpr.buffer import TrainingData
from otpr.config import AlgoConfig, _check


@dataclass
class BCConfig(AlgoConfig):
    """Behaviour cloning only (pretraining settings; no online iterations)."""

    name: str = "bc"
    """bc."""
    iterations: int = 0
    """Must be 0: behaviour cloning has no online phase."""

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(
            self.iterations == 0,
            "algo.iterations",
            f"must be 0 with algo=bc (it only pretrains), got {self.iterations}",
        )


@register_algo("bc", BCConfig)
class BC(Algorithm):
    """The diffusion policy and its behaviour-cloning step; nothing to update online."""

    def update(self, data: TrainingData, iteration: int) -> dict[str, float]:
        raise RuntimeError("algo=bc has no online update (algo.iterations must be 0)")
