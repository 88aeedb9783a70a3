"""Shared helpers for the potentials tests."""

import pytest
import torch

from potentials.dual import dual_loss


def _solve_tabular(cost: torch.Tensor, lam: float, mask: torch.Tensor | None = None):
    """Maximise our dual over tabular potentials (float64, L-BFGS); return u, v."""
    n, m = cost.shape
    u = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    v = torch.zeros(m, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [u, v],
        lr=1.0,
        max_iter=500,
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
        history_size=50,
        line_search_fn="strong_wolfe",
    )

    def closure():
        opt.zero_grad()
        loss = dual_loss(u, v, cost, lam, mask)
        loss.backward()
        return loss

    opt.step(closure)
    return u.detach(), v.detach()


@pytest.fixture
def solve_tabular():
    """Tabular maximiser of the (masked) dual: ``solve_tabular(cost, lam, mask=None) -> (u, v)``."""
    return _solve_tabular
