"""Score-based diffusion policies: VP-SDE, noise-prediction networks, normaliser, samplers."""

from policies.base import ScorePolicy
from policies.diffusion import ChainResult, DiffusionPolicy
from policies.factory import build_policy
from policies.networks import ResidualMLPScoreNet, TemporalUnet1D
from policies.normalizer import MinMaxNormalizer
from policies.samplers import (
    ddim_sample,
    ddim_step,
    dpm_solver_pp_2m_sample,
    euler_maruyama_sample,
    euler_maruyama_step,
    gaussian_log_prob,
    time_grid,
)
from policies.sde import VPSDE

__all__ = [
    "VPSDE",
    "ChainResult",
    "DiffusionPolicy",
    "MinMaxNormalizer",
    "ResidualMLPScoreNet",
    "ScorePolicy",
    "TemporalUnet1D",
    "build_policy",
    "ddim_sample",
    "ddim_step",
    "dpm_solver_pp_2m_sample",
    "euler_maruyama_sample",
    "euler_maruyama_step",
    "gaussian_log_prob",
    "time_grid",
]
