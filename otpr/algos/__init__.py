"""Fine-tuning algorithms, one module each, registered by name (``algo=<name>``).

=======  =================================================  ===========================
name     method                                             module
=======  =================================================  ===========================
otpr     OTPR: IQL critic + OT potentials, H-weighted DSM   ``otpr/algos/otpr.py``
dppo     DPPO (Ren et al. 2024): PPO through the denoising  ``otpr/algos/dppo.py``
         chain
otpr_gae DPPO's update on executed GAE advantages plus     ``otpr/algos/otpr_gae.py``
         OTPR's plan-weighted DSM on fresh candidates
idql     IDQL (Hansen-Estruch et al. 2023): IQL critic,     ``otpr/algos/idql.py``
         unweighted DSM, candidates resampled by the
         expectile implicit policy
dql      Diffusion-QL (Wang et al. 2022): twin-Q TD        ``otpr/algos/dql.py``
         critic, actor DSM - eta Q / mean|Q| through a
         short reverse chain
dsrl     DSRL (Wagenmaker et al. 2025): SAC over the        ``otpr/algos/dsrl.py``
         frozen policy's initial noise (DDIM eta 0);
         algo.variant=na: noise-aliased DSRL-NA
sodp     SODP (Fan et al. 2025): PPO on the denoising       ``otpr/algos/sodp.py``
         chain with the chunk's return, no critic, plus
         BC on the best recent episodes (or none, KL, PL)
bc       behaviour cloning only                             ``otpr/algos/bc.py``
=======  =================================================  ===========================

DPPO, OTPR-GAE and SODP share the chain's PPO pieces (``otpr/algos/chain_ppo.py``). Add one with
:func:`register_algo` (see ``otpr/algos/base.py``).
"""

from otpr.algos.base import (
    Algorithm,
    Step,
    algo_class,
    config_class,
    finite_or_raise,
    make_algorithm,
    register_algo,
    registered,
)

# the built-in algorithms register themselves on import
from otpr.algos import bc, dppo, dql, dsrl, idql, otpr, otpr_gae, sodp  # noqa: E402, F401  isort: skip

__all__ = [
    "Algorithm",
    "Step",
    "algo_class",
    "config_class",
    "finite_or_raise",
    "make_algorithm",
    "register_algo",
    "registered",
]
