"""OT dual potentials: the L2-regularised dual, keypoint masking, neural potentials."""

from potentials.base import CostFn, Potentials
from potentials.dual import compatibility, dual_loss
from potentials.masked import (
    guided_cost,
    guided_cost_paired,
    js_divergence,
    js_divergence_paired,
    keypoint_mask,
    relation_vectors,
)
from potentials.neural import NeuralPotentials

__all__ = [
    "CostFn",
    "NeuralPotentials",
    "Potentials",
    "compatibility",
    "dual_loss",
    "guided_cost",
    "guided_cost_paired",
    "js_divergence",
    "js_divergence_paired",
    "keypoint_mask",
    "relation_vectors",
]
