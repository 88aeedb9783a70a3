"""otpr: optimal-transport-guided RL fine-tuning of diffusion robot policies.

The public API for use in your own code::

    from otpr import CompatibilitySampler, load_policy

    policy = load_policy("runs/<run>")            # a trained diffusion policy, from its checkpoint
    sampler = CompatibilitySampler(lambda obs, n: policy.sample(obs, num_samples=n), weight_fn, 8)
    actions, info = sampler(obs)                  # one resampled chunk per state
"""

from otpr.checkpoint import load_policy
from otpr.sampler import (
    CompatibilitySampler,
    exp_q_weights,
    expectile_advantage_weights,
    uniform_weights,
)

__version__ = "0.1.0"

__all__ = [
    "CompatibilitySampler",
    "exp_q_weights",
    "expectile_advantage_weights",
    "load_policy",
    "uniform_weights",
]
