"""The L2-regularised optimal transport dual and its compatibility function.

OTPR (paper 004) eq. 5 / eq. 14 maximise over potentials u(s), v(a)

    E_{(s,a) ~ mu x nu} [ u(s) + v(a) - 1/(4 lam) * m(s,a) * (u(s) + v(a) - c(s,a))_+^2 ]

and recover the plan from the first-order conditions (eq. 6 / eq. 15):

    d gamma(s, a) = H(s, a) d mu(s) d nu(a),    H(s, a) = (u(s) + v(a) - c(s,a))_+ / (2 lam).

H is a density ratio against mu x nu: it is dimensionless and E_{a ~ nu}[H(s, a)] = 1 at the
optimum. ``lam`` has the units of the cost c.

Correspondence with POT (exact, derived here)
---------------------------------------------
POT's ``ot.smooth.smooth_ot_dual(a, b, C, reg, reg_type='l2')`` (Blondel et al. 2018, eq. 7 with
the squared-L2 regulariser ``Omega(T) = reg/2 ||T||^2``) maximises

    alpha . a + beta . b - 1/(2 reg) * sum_ij (alpha_i + beta_j - C_ij)_+^2

and returns the plan ``G_ij = (alpha_i + beta_j - C_ij)_+ / reg``. On a discrete problem with
uniform marginals a_i = 1/n, b_j = 1/m our objective (the negative of :func:`dual_loss`) reads

    1/n sum_i u_i + 1/m sum_j v_j - 1/(4 lam) * 1/(n m) * sum_ij (u_i + v_j - c_ij)_+^2.

With alpha = u, beta = v the linear terms agree, and the penalties agree iff
1/(2 reg) = 1/(4 lam n m), i.e. ``reg = 2 * lam * n * m``. Both problems then have the same
maximisers, and POT's plan is

    G_ij = (u_i + v_j - c_ij)_+ / (2 lam n m) = H_ij / (n m),

which is the discrete form of d gamma = H d mu d nu with mu_i = 1/n, nu_j = 1/m.
``tests/potentials/test_dual.py`` checks this against POT to 1e-3 relative L1 error.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check_lam(lam: float) -> None:
    if not (isinstance(lam, int | float) and math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam must be a finite float > 0 (the L2 regularisation), got {lam!r}")


def _check_finite(name: str, x: Tensor) -> None:
    if not bool(torch.isfinite(x).all()):
        raise FloatingPointError(
            f"dual_loss: {name} is not finite ({int((~torch.isfinite(x)).sum())} bad entries); "
            "check the potentials' learning rate, lam, and the cost scale"
        )


def dual_loss(
    u: Tensor,
    v: Tensor,
    cost: Tensor,
    lam: float,
    mask: Tensor | None = None,
) -> Tensor:
    """Negative L2-regularised OT dual (OTPR eq. 5, masked: eq. 14), a scalar to minimise.

    ``-(mean_i u_i + mean_j v_j - 1/(4 lam) * mean_ij m_ij (u_i + v_j - c_ij)_+^2)``.

    The penalty is computed as ``mean(m * ((u + v - c)_+ / (2 sqrt(lam)))^2)``, which equals
    ``1/(4 lam) mean(m (u+v-c)_+^2)`` but never forms ``1/(4 lam)`` times a large square, so it
    stays finite in float32 for lam down to 1e-5 on realistic inputs.

    Args:
        u: [n] source potentials u(s_i).
        v: [m] target potentials v(a_j).
        cost: [n, m] cost c(s_i, a_j).
        lam: regularisation > 0, in units of the cost.
        mask: optional [n, m] 0/1 mask (masked OT, OTPR eq. 14); None means all ones.

    Raises:
        ValueError: lam <= 0 or wrong shapes.
        FloatingPointError: u, v, cost or the penalty is not finite (the message names which).
    """
    _check_lam(lam)
    if u.dim() != 1 or v.dim() != 1:
        raise ValueError(
            f"dual_loss: u and v must be 1-D, got u {tuple(u.shape)} and v {tuple(v.shape)}"
        )
    n, m = u.shape[0], v.shape[0]
    if cost.shape != (n, m):
        raise ValueError(
            f"dual_loss: cost must have shape [n, m] = [{n}, {m}], got {tuple(cost.shape)}"
        )
    if mask is not None and mask.shape != (n, m):
        raise ValueError(
            f"dual_loss: mask must have shape [n, m] = [{n}, {m}], got {tuple(mask.shape)}"
        )
    _check_finite("u", u)
    _check_finite("v", v)
    _check_finite("cost", cost)
    slack = torch.relu(u[:, None] + v[None, :] - cost) / (2.0 * math.sqrt(lam))
    sq = slack.square()
    if mask is not None:
        sq = sq * mask.to(sq.dtype)
    penalty = sq.mean()
    _check_finite("penalty", penalty)
    return -(u.mean() + v.mean() - penalty)


def compatibility(u: Tensor, v: Tensor, cost: Tensor, lam: float) -> Tensor:
    """Compatibility H = (u + v - c)_+ / (2 lam) (OTPR eq. 6 / eq. 15).

    Broadcasts over any leading dimensions, e.g. u [B, 1], v [B, L], cost [B, L] -> [B, L], or
    u [n, 1], v [1, m], cost [n, m] -> [n, m].
    """
    _check_lam(lam)
    return torch.relu(u + v - cost) / (2.0 * lam)
